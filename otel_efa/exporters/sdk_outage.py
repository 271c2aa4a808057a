"""The otel-sdk path's OTLP exporter, quiet during an outage as the fast exporter is.

The SDK's OTLP exporters log every failed export (an ERROR) and every retry (a WARNING): a collector away
for an hour at a 1 s interval writes thousands of lines to the journal. :class:`QuietOutageExporter` wraps the
SDK exporter; the lines its loggers write during an export are held, and the export's result decides:
the first failure of an outage is one warning quoting the SDK's own reason, the first success after it one
more (otlp.py's :class:`OutageReporter`, so both paths read alike), and what the SDK said in between is
dropped. Lines logged outside an export (at start-up, say) pass as they are.
"""
import logging
import threading
from typing import Dict, List, Optional

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from otel_efa.exporters.otlp import OutageReporter
from otel_efa.exporters.otlp_transport import short

SDK_EXPORTER_LOGGERS = "opentelemetry.exporter.otlp"  # the prefix of every logger the SDK's exporters write to


class _HeldDuringExport(logging.Filter):
    """Holds the records logged in this thread while an export runs (and lets the others through)."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def start(self) -> None:
        self._local.held = []

    def stop(self) -> List[logging.LogRecord]:
        held, self._local.held = getattr(self._local, "held", None) or [], None
        return held

    def filter(self, record: logging.LogRecord) -> bool:
        held: Optional[List[logging.LogRecord]] = getattr(self._local, "held", None)
        if held is None:
            return True
        held.append(record)
        return False


def _reason(records: List[logging.LogRecord]) -> str:
    """The SDK's last ERROR (its final verdict), else its last line, on one short line."""
    if not records:
        return ""
    last = next((r for r in reversed(records) if r.levelno >= logging.ERROR), records[-1])
    return short(" ".join(last.getMessage().split()))


class QuietOutageExporter(MetricExporter):
    """Delegates to the SDK's OTLP exporter ``inner``; reports outages as two warnings (see the module)."""

    def __init__(self, inner: MetricExporter, endpoint: str,
                 preferred_temporality: Dict[type, AggregationTemporality]):
        super().__init__(preferred_temporality=preferred_temporality)
        self._inner = inner
        cumulative = all(t is AggregationTemporality.CUMULATIVE for t in preferred_temporality.values())
        self.outage = OutageReporter(endpoint, cumulative=cumulative)
        self._held = _HeldDuringExport()
        # The SDK exporter's modules are imported by now, so their loggers exist.
        self._loggers = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
                         if name.startswith(SDK_EXPORTER_LOGGERS)]
        for logger in self._loggers:
            logger.addFilter(self._held)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self._held.start()
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        finally:
            held = self._held.stop()
        if result is MetricExportResult.SUCCESS:
            self.outage.succeeded()
        else:
            self.outage.failed(_reason(held))
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.outage.shut.set()  # the last export's failure is the shutdown's news, not an outage
        try:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
        finally:
            for logger in self._loggers:
                logger.removeFilter(self._held)
