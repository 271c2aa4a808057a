"""Shared fixtures: a simulated node, free loopback ports, an agent running in a thread."""
import os
import socket
import tempfile
import threading
import time
from typing import Iterator, List

import pytest

from otel_efa.config import Config
from otel_efa.pipeline.agent import Agent
from otel_efa.tools.simulator import Simulator


def pytest_configure(config):
    """Before any test imports grpc: this process forks peers (Prometheus, agents) while gRPC receivers
    run, and gRPC's fork handlers make some of those children abort before exec on grpcio 1.80 (Python
    3.9). The agent's own sender sets the same (tests/test_otlp_fork.py)."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    _temporary_files_in_memory()


def _temporary_files_in_memory(mounts: str = "/proc/mounts", memory: str = "/dev/shm") -> None:
    """Temporary files (pytest's tmp_path, tempfile's: simulated trees, Prometheus' TSDBs, venvs, logs)
    in tmpfs at /dev/shm instead of /tmp, when it is tmpfs and allows exec (a venv's scripts run from it).

    The suite creates and deletes tens of thousands of small files: on a disk mounted with online discard,
    each unlink waited on the device (a p5 tree took tens of seconds to delete while other work shared the
    disk). A TMPDIR the caller set wins; the workers of pytest-xdist inherit this one.
    """
    if "TMPDIR" in os.environ:
        return
    try:
        with open(mounts) as f:
            found = [line.split() for line in f if line.split()[1:2] == [memory]]
    except OSError:
        return
    if found and found[-1][2] == "tmpfs" and "noexec" not in found[-1][3].split(",") and os.access(memory, os.W_OK):
        os.environ["TMPDIR"] = memory
        tempfile.tempdir = None  # tempfile caches the directory it chose first


# Under pytest-xdist (pyproject.toml: -n 4 --dist loadfile), a module's tests run on one worker, in order,
# so its module-scoped servers start once. These modules measure the agent's RSS or its missed intervals:
# they form one group, so they run one after another and never beside each other.
FOOTPRINT_MODULES = ("test_otlp_garbage.py", "test_otlp_outage.py", "test_soak.py")
# The groups that take longest (seconds of real time each) go first, so that no worker is left alone
# with one of them at the end of the run. Only an order: a module missing here runs after these.
# Measured per module with 4 workers (three busy loops beside them, 2026-12-03): 66, 51, 51, 25, 17, 17, 17,
# 16, 15, 15, 12, 11, 10, 10 s.
LONGEST_FIRST = ("footprint", "test_faults_exporters.py", "test_parallelcluster_install.py",
                 "test_faults_inputs.py", "test_grafana_dashboard.py", "test_fuzz.py", "test_cloudwatch_exporter.py",
                 "test_otel_sdk.py", "test_hostile_tree.py", "test_prometheus_e2e.py", "test_doctor.py",
                 "test_cloudwatch_alarms.py", "test_top.py", "test_deploy_upload.py")


def work_group(nodeid: str) -> str:
    """The worker's unit of work a test belongs to: its module, or "footprint"."""
    module = nodeid.split("::", 1)[0]
    return "footprint" if module.rsplit("/", 1)[-1] in FOOTPRINT_MODULES else module


def pytest_collection_modifyitems(config, items):
    """The longest groups first; otherwise the collection order (the sort is stable)."""
    def rank(item) -> int:
        name = work_group(item.nodeid).rsplit("/", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile's scheduling with the footprint modules as one unit, in the collection's order.

    (pytest-xdist's --dist loadgroup would do this from xdist_group marks, but does not group at all
    with pytest 9.2's node ids: pytest-xdist issue 1386.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            config.option.loadscopereorder = False  # keep LONGEST_FIRST's order, not the test count's

        def _split_scope(self, nodeid: str) -> str:
            return work_group(nodeid)

    return ModuleScheduling(config, log)


@pytest.fixture(autouse=True)
def _imds_on_loopback(monkeypatch):
    """Keep every test's IMDS traffic on loopback: by default IMDS is a closed port (refused at once).

    A test with a fake IMDS server sets AWS_EC2_METADATA_SERVICE_ENDPOINT itself, which wins.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{closed}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_simulator(tmp_path) -> Iterator:
    """make_simulator(profile, **kwargs) -> Simulator on a fresh tree under tmp_path; closed afterwards."""
    made: List[Simulator] = []

    def make(profile: str = "p4d.24xlarge", **kwargs) -> Simulator:
        root = tmp_path / f"sys{len(made)}"
        root.mkdir()
        simulator = Simulator(profile, str(root), **kwargs)
        made.append(simulator)
        return simulator

    yield make
    for simulator in made:
        simulator.close()


class RunningAgent:
    """An Agent on its own thread; ``stop()`` flushes it like SIGTERM would."""

    def __init__(self, config: Config, resource=None, metric_readers=()):
        self.agent = Agent(config, resource=resource, metric_readers=metric_readers)
        self.agent.setup()
        self.thread = threading.Thread(target=self.agent.run, name="agent", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "agent did not stop within 10 s"


@pytest.fixture
def run_agent() -> Iterator:
    """run_agent(config) -> RunningAgent, stopped at the end of the test."""
    agents: List[RunningAgent] = []

    def start(config: Config, resource=None, metric_readers=()) -> RunningAgent:
        agent = RunningAgent(config, resource, metric_readers)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if agent.thread.is_alive():
            agent.stop()


class Pipeline:
    """Collector + instrumentor + an in-memory OTel reader: the Interval every exporter is fed, inspectable.

    ``points()`` returns {(metric name, frozenset of attributes): value} for the last collection.
    ``clock``: the collector's monotonic clock (a test that moves time itself passes its own).
    """

    def __init__(self, root: str, instance_type=None, clock=None):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from otel_efa.node.sysfs import SysfsReader
        from otel_efa.pipeline.collector import Collector
        from otel_efa.pipeline.instruments import EfaInstrumentor

        self.collector = Collector(SysfsReader(root), instance_type, clock=clock or time.monotonic)
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.instrumentor = EfaInstrumentor()
        self.instrumentor.instrument(self.provider)
        self.metrics = {}

    def collect(self):
        snapshot = self.collector.collect()
        self.instrumentor.interval(snapshot)  # as the agent loop does: the instruments serve it
        self.metrics = {}
        points = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name != "otel_efa":  # newer SDKs add their own self-metrics
                    continue
                for metric in scope_metrics.metrics:
                    self.metrics[metric.name] = metric
                    for point in metric.data.data_points:
                        points[(metric.name, frozenset(point.attributes.items()))] = point.value
        return points

    def close(self):
        self.provider.shutdown()
        self.collector.reader.close()


def port_key(name: str, device: str, port: str = "1"):
    return (name, frozenset({("aws.efa.device", device), ("aws.efa.port", port)}))


@pytest.fixture
def make_pipeline():
    made = []

    def make(root: str, instance_type=None, clock=None) -> Pipeline:
        pipeline = Pipeline(root, instance_type, clock)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.close()
