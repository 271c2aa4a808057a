"""One interval's values as plain data: per registered instrument, its (attributes, value) pairs.

The OTel instruments stay the one definition of every series (otel_efa/pipeline/instruments.py); this module
takes the points their callbacks observe, without the SDK's per-measurement work (attribute hashing and
cleaning, exemplar reservoirs, aggregation objects), because the agent's own exporters need nothing of it:
the values are observed once per interval and cumulative already. A frame is built at most once per Snapshot, whichever
exporter asks first, and shared read-only by all of them (Prometheus scrapes, the OTLP worker).
"""
import logging
import threading
from typing import Any, Mapping, NamedTuple, Optional, Tuple

from otel_efa.catalog import MetricSpec
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.pipeline.snapshot import Snapshot

log = logging.getLogger(__name__)

# (attributes, value): the attributes mapping is the callback's own (cached per port/device), so an
# encoder may cache what it derives from it, keyed by identity, for as long as it holds the mapping.
Point = Tuple[Mapping[str, Any], Any]


class Frame(NamedTuple):
    snapshot: Optional[Snapshot]
    series: tuple  # the instrumentor's series the frame was built from (identity tells a new registration)
    metrics: Tuple[Tuple[MetricSpec, Tuple[Point, ...]], ...]  # only metrics with points, in registration order


class FrameSource:
    """Builds the frame of ``collector.latest`` on first demand; later calls return the same object."""

    def __init__(self, instrumentor: EfaInstrumentor):
        self.instrumentor = instrumentor
        self._lock = threading.Lock()
        self._frame: Optional[Frame] = None
        self._failing = set()  # metrics whose callback raised, logged once until it works again

    def current(self) -> Frame:
        snapshot = self.instrumentor.collector.latest
        series = self.instrumentor.series
        frame = self._frame
        if frame is not None and frame.snapshot is snapshot and frame.series is series:
            return frame
        with self._lock:
            frame = self._frame
            if frame is None or frame.snapshot is not snapshot or frame.series is not series:
                for _ in range(3):  # a collection finishing mid-build would mix two Snapshots: build again
                    frame = self._build(snapshot, series)
                    latest = self.instrumentor.collector.latest
                    if latest is snapshot:
                        break
                    snapshot = latest
                self._frame = frame
            return frame

    def _build(self, snapshot: Optional[Snapshot], series) -> Frame:
        metrics = []
        for spec, points_of in series:
            try:
                points = tuple(points_of(snapshot))
            except Exception:  # as the SDK does: one broken callback loses its metric, not the others
                if spec.name not in self._failing:
                    log.exception("observing %s failed; it is left out until it works again", spec.name)
                    self._failing.add(spec.name)
                continue
            self._failing.discard(spec.name)
            if points:
                metrics.append((spec, points))
        return Frame(snapshot, series, tuple(metrics))
