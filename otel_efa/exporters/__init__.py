"""Exporters: each is handed the immutable Interval of every collection (otel_efa/pipeline/interval.py).

An exporter gets everything it may use when it is made, in an :class:`ExporterContext`; it never reads
sysfs and never blocks the collection loop: one that talks to a network does its sending on its own
thread. Which exporters exist is the registry's business (registry.py): the built-ins and any plugin
installed with an ``otel_efa.exporters`` entry point.
"""
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Tuple

from otel_efa.config import Config
from otel_efa.pipeline.stats import AgentStats

if TYPE_CHECKING:  # config validation imports this package for the registry: keep that import light
    from opentelemetry.sdk.resources import Resource

    from otel_efa.pipeline.interval import Interval


def no_jobs() -> Tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class ExporterContext:
    """What the agent gives an exporter at construction."""

    config: Config
    resource: "Resource"
    # The agent's own counters, shared with the instrumentor: an exporter adds what it had to drop.
    stats: AgentStats = field(default_factory=AgentStats)
    clock: Callable[[], float] = time.monotonic  # for durations and ages; never the wall clock
    # The exporter's logger: for a built-in, its module's (the same object as its module-level ``log``).
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))
    # The Slurm jobs on the node now (empty unless job attribution is on), for exporters that label by job.
    jobs: Callable[[], Tuple[str, ...]] = no_jobs


class Exporter:
    name = "exporter"

    def __init__(self, context: ExporterContext):
        self.context = context

    @property
    def stats(self) -> AgentStats:
        return self.context.stats

    def job_ids(self) -> Tuple[str, ...]:
        """The Slurm jobs on the node now (empty unless job attribution is on)."""
        return self.context.jobs()

    def start(self) -> None:
        """Called once every exporter is made; open sockets and threads here."""

    def export(self, interval: "Interval") -> None:
        """Called after every collection with its Interval (shared: never modify it). Must not block."""

    def shutdown(self, timeout: float) -> None:
        """Flush what is pending and stop, within ``timeout`` seconds."""
