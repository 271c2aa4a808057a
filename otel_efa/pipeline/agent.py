"""The agent: collect once per interval on a monotonic schedule, build its Interval, hand it to every exporter."""
import logging
import os
import resource as rlimit
import signal
import tempfile
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, List, Optional, Sequence

from otel_efa.config import Config, ConfigError
from otel_efa.exporters import Exporter, ExporterContext, registry
from otel_efa.node.attribution import Attribution
from otel_efa.node.imds import ImdsClient
from otel_efa.node.resource import build_resource
from otel_efa.node.sysfs import SysfsReader
from otel_efa.node.sysfs_trust import untrusted
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.pipeline.stats import AgentStats
from otel_efa.pipeline.stop_flag import StopFlag

if TYPE_CHECKING:  # the simulator is imported only when a run simulates; the SDK's metrics with a reader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.metrics.view import View
    from opentelemetry.sdk.resources import Resource

    from otel_efa.tools.simulator import Simulator
    from otel_efa.tools.simulator.running import RunningSimulator

log = logging.getLogger(__name__)
SHUTDOWN_BUDGET_S = 4.0  # SIGTERM to exit within 5 s, flushes included


def raise_open_file_limit(wanted: int = 65536) -> None:
    """A p5 node has ~1,200 counter files kept open; systemd's default soft limit is 1024."""
    soft, hard = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    target = wanted if hard == rlimit.RLIM_INFINITY else min(wanted, hard)
    if soft != rlimit.RLIM_INFINITY and soft < target:
        rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (target, hard))


def _sdk_self_metrics_views() -> List["View"]:
    """Keep the SDK's own metrics out of the user's backends unless asked for: releases for Python 3.9
    record them on every reader (newer ones only with OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED)."""
    if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").lower() == "true":
        return []
    from opentelemetry.sdk.metrics.view import DropAggregation, View

    return [View(instrument_name="*", meter_name="opentelemetry-sdk", aggregation=DropAggregation())]


class Agent:
    def __init__(self, config: Config, resource: Optional["Resource"] = None,
                 metric_readers: Sequence["MetricReader"] = ()):
        """``metric_readers``: OTel SDK readers to attach beside the exporters (embedding, tests): their
        instruments serve each Interval the exporters are handed."""
        self.config = config
        self._extra_readers = list(metric_readers)
        self._stop = StopFlag()  # its wait is on the monotonic clock, also on Python 3.9
        self._resource = resource
        self._simulator: Optional[Simulator] = None
        self._simulation: Optional[RunningSimulator] = None
        self._simulation_dir: Optional[tempfile.TemporaryDirectory[str]] = None
        self.collector: Optional[Collector] = None
        self.exporters: List[Exporter] = []
        self.meter_provider: Optional[MeterProvider] = None
        self.attribution: Optional[Attribution] = None
        self.stats = AgentStats()  # counters about the agent itself, shared with exporters
        self.ready = threading.Event()  # set once every exporter has started (tests wait on it)

    def stop(self) -> None:
        self._stop.set()

    def _sysfs_root(self) -> str:
        if not self.config.simulate:
            return self.config.sysfs
        from otel_efa.tools.simulator import Simulator

        self._simulation_dir = tempfile.TemporaryDirectory(prefix="otel-efa-sim-")
        self._simulator = Simulator(self.config.simulate, self._simulation_dir.name,
                                    faults=self.config.simulate_faults)
        log.info("simulating a %s node under %s%s", self.config.simulate, self._simulation_dir.name,
                 "; faults: " + ", ".join(self.config.simulate_faults) if self.config.simulate_faults else "")
        return self._simulation_dir.name

    def _instance_type(self, resource: "Resource") -> Optional[str]:
        host_type = resource.attributes.get("host.type")
        return self.config.instance_type or self.config.simulate or (str(host_type) if host_type else None)

    def setup(self) -> None:
        """Build everything; ConfigError (exit 2) for a counter tree that is not root's (sysfs_trust.py)."""
        if not self.config.simulate and not self.config.allow_untrusted_sysfs:
            problem = untrusted(self.config.sysfs)
            if problem:
                raise ConfigError("sysfs", problem)
        raise_open_file_limit()
        resource = self._resource or build_resource(ImdsClient(), cluster_name=self.config.cluster_name)
        sysfs_root = self._sysfs_root()
        self.collector = Collector(SysfsReader(sysfs_root), self._instance_type(resource))
        attribution = self.attribution = Attribution(self.config, sysfs_root)
        context = ExporterContext(config=self.config, resource=resource, stats=self.stats, clock=time.monotonic,
                                  jobs=lambda: attribution.job_ids)
        self.exporters = [registry.create(name, context) for name in self.config.exporters]
        self.instrumentor = EfaInstrumentor(device_attributes=attribution.device_attributes,
                                            node_attributes=attribution.node_attributes,
                                            device_info=attribution.device_info, stats=self.stats)
        if self._extra_readers:
            from opentelemetry.sdk.metrics import MeterProvider

            self.meter_provider = MeterProvider(resource=resource, metric_readers=self._extra_readers,
                                                views=_sdk_self_metrics_views())
            self.instrumentor.instrument(self.meter_provider)
        attribution.start(lambda: self.collector.latest if self.collector else None,
                          on_change=self.instrumentor.forget_attributes)
        for exporter in self.exporters:
            exporter.start()
        if self._simulator is not None:
            # Started last: imports above can hold the GIL long enough to leave the first values stale.
            self._simulator.advance()
            self._simulation = self._simulator.start(tick=min(0.05, self.config.interval / 20))
        self.ready.set()

    def run(self) -> int:
        """Collect until stopped (or ``count`` collections), then flush every exporter."""
        if self.collector is None:
            self.setup()
        assert self.collector is not None
        interval = self.config.interval
        deadline = time.monotonic()
        failing = set()
        while not self._stop.is_set():
            snapshot = self.collector.collect()
            if self.attribution is not None and self.attribution.place(snapshot):  # a device not placed yet
                self.instrumentor.forget_attributes()
            collected = self.instrumentor.interval(snapshot)  # built once, shared by every exporter
            for exporter in self.exporters:
                try:
                    exporter.export(collected)
                    failing.discard(exporter.name)
                except Exception:  # one exporter's bug must not stop collection or the others
                    if exporter.name not in failing:
                        log.exception("%s exporter failed; collection goes on", exporter.name)
                    failing.add(exporter.name)
            if self.config.count is not None and snapshot.collections >= self.config.count:
                break
            deadline += interval
            now = time.monotonic()
            if deadline < now:  # a slow cycle or a suspended process: skip, never burst
                missed = int((now - deadline) // interval) + 1
                log.warning("collection fell %d interval(s) behind; skipping ahead", missed)
                self.stats.add_missed_intervals(missed)
                deadline += missed * interval
            self._stop.wait(deadline - now)
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        started = time.monotonic()
        if self.attribution is not None:
            self.attribution.stop(timeout=0.5)  # kills an squeue still running
            self.attribution = None
        for exporter in self.exporters:
            remaining = max(0.1, SHUTDOWN_BUDGET_S - (time.monotonic() - started))
            try:
                exporter.shutdown(remaining)
            except Exception:
                log.exception("%s exporter failed to shut down cleanly", exporter.name)
        if self.meter_provider is not None:
            remaining = max(0.1, SHUTDOWN_BUDGET_S - (time.monotonic() - started))
            try:
                self.meter_provider.shutdown(timeout_millis=remaining * 1000)
            except Exception as e:  # exiting anyway; the exporters have flushed above
                log.debug("meter provider shutdown: %s", e)
            self.meter_provider = None
        if self.collector is not None:
            self.collector.reader.close()
        if self._simulation is not None:
            self._simulation.stop()
            self._simulation = None
        if self._simulator is not None:
            self._simulator.close()
            self._simulator = None
        if self._simulation_dir is not None:
            self._simulation_dir.cleanup()
            self._simulation_dir = None
        self._stop.close()  # a later stop() only sets the flag


def install_signal_handlers(agent: Agent) -> None:
    """SIGTERM/SIGINT: flush and exit 0. SIGHUP: noted, nothing to reload (the log file reopens itself)."""
    def stop(signum: int, _frame: Optional[FrameType]) -> None:
        log.info("%s: flushing and stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda *_: log.info("SIGHUP: the log file is reopened when rotated; "
                                                      "restart the service to reload the configuration"))
