"""Counters about the agent itself that exporters add to and the instrumentor reports.

The agent owns one :class:`AgentStats` and hands it to the instrumentor and to every exporter, so an
exporter can count what it had to give up (``otel_efa_dropped_datapoints``) without knowing about
OpenTelemetry instruments, and the count reaches every reader like any other metric. The agent's own
loop counts the intervals it had to skip (``otel_efa_missed_intervals``) here too.
"""
import threading


class AgentStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dropped_datapoints = 0
        self._missed_intervals = 0

    def add_dropped_datapoints(self, count: int) -> None:
        with self._lock:
            self._dropped_datapoints += count

    @property
    def dropped_datapoints(self) -> int:
        with self._lock:
            return self._dropped_datapoints

    def add_missed_intervals(self, count: int) -> None:
        with self._lock:
            self._missed_intervals += count

    @property
    def missed_intervals(self) -> int:
        with self._lock:
            return self._missed_intervals
