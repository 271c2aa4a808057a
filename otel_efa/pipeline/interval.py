"""One collection interval as every exporter receives it: immutable, built once by the agent loop.

The loop collects a :class:`~otel_efa.pipeline.snapshot.Snapshot`, the instrumentor turns it into an
:class:`Interval` (otel_efa/pipeline/instruments.py: the one definition of every series), and the loop
hands that same object to every exporter's ``export(interval)``. Nothing downstream reads sysfs or the
Collector, and nothing can change what another exporter sees.
"""
from typing import Any, Mapping, NamedTuple, Tuple

from otel_efa.catalog import MetricSpec
from otel_efa.pipeline.snapshot import Snapshot

# (attributes, value). The attributes mapping is cached per port, device or node by the instrumentor and
# shared by every interval until the series change, so an encoder may key what it derives from it on its
# identity for as long as it holds the mapping.
Point = Tuple[Mapping[str, Any], Any]
Metrics = Tuple[Tuple[MetricSpec, Tuple[Point, ...]], ...]


class Interval(NamedTuple):
    snapshot: Snapshot  # the collection's values: devices, ports, counters, rates, read errors
    # The prepared values: per metric with points, in registration order, its (attributes, value) points.
    metrics: Metrics
    # Changes whenever the set of series changes: a metric registered, a metric or a point (a device, a port,
    # an attribute value) appearing or going. Equal versions mean the same metrics in the same order with
    # the same attribute mappings (the same objects) in the same order: only the values differ.
    series_version: int
    # Every metric registered so far, in registration order, whether it has points this interval or not
    # (the Prometheus page names metrics in that order, so a name once given never moves).
    specs: Tuple[MetricSpec, ...]


def same_series(previous: Metrics, current: Metrics) -> bool:
    """True when ``current`` has the metrics and attribute mappings of ``previous``, object for object."""
    if len(previous) != len(current):
        return False
    for (spec, points), (earlier_spec, earlier_points) in zip(current, previous):
        if spec is not earlier_spec or len(points) != len(earlier_points):
            return False
        for (attributes, _), (earlier, _) in zip(points, earlier_points):
            if attributes is not earlier:
                return False
    return True
