"""Exporters: each takes the shared Snapshot after a collection (and its frame, see otel_efa/pipeline/frame.py).

An exporter never reads sysfs and never blocks the collection loop: one that talks to a network does
its sending on its own thread.
"""
import importlib
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from opentelemetry.sdk.resources import Resource

from otel_efa.config import Config
from otel_efa.pipeline.snapshot import Snapshot
from otel_efa.pipeline.stats import AgentStats

if TYPE_CHECKING:
    from otel_efa.pipeline.frame import FrameSource


class Exporter:
    name = "exporter"
    stats: Optional[AgentStats] = None  # the agent's counters, given by attach_stats()
    frames: Optional["FrameSource"] = None  # the interval's values as plain data, given by attach_frames()

    def attach_stats(self, stats: AgentStats) -> None:
        """The agent's shared counters; an exporter adds what it drops to them."""
        self.stats = stats

    def attach_frames(self, frames: "FrameSource") -> None:
        """Where an exporter that encodes by itself (Prometheus text, OTLP) gets the interval's values."""
        self.frames = frames

    def job_ids(self) -> Tuple[str, ...]:
        """The Slurm jobs on the node now (empty unless job attribution is on); see attach_jobs()."""
        return ()

    def attach_jobs(self, job_ids: Callable[[], Tuple[str, ...]]) -> None:
        """Where the agent's attribution tells the running jobs (for exporters that label by job)."""
        self.job_ids = job_ids  # type: ignore[method-assign]

    def start(self) -> None:
        """Called once the MeterProvider exists; open sockets and threads here."""

    def export(self, snapshot: Snapshot) -> None:
        """Called after every collection with the interval's values. Must not block."""

    def shutdown(self, timeout: float) -> None:
        """Flush what is pending and stop, within ``timeout`` seconds."""


# name -> "module:factory"; modules are imported only when their exporter is chosen.
_FACTORIES = {
    "prometheus": "otel_efa.exporters.prometheus:PrometheusExporter",
    "log": "otel_efa.exporters.logline:LogLineExporter",
    "console": "otel_efa.exporters.console:ConsoleExporter",
    "otlp": "otel_efa.exporters.otlp:OtlpExporter",
    "cloudwatch": "otel_efa.exporters.cloudwatch:CloudWatchExporter",
    "otel-sdk": "otel_efa.exporters.otel_sdk:OtelSdkExporter",
}


def create(name: str, config: Config, resource: Resource) -> Exporter:
    module_name, _, factory = _FACTORIES[name].partition(":")
    return getattr(importlib.import_module(module_name), factory)(config, resource)
