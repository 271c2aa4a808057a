"""Rail balance gauges follow the simulator: an idle rail, an overloaded rail, an idle node."""
import urllib.request

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from otel_efa.config import Config, PrometheusConfig
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.pipeline.rails import IDLE_FRACTION


def _truth(simulator):
    """Imbalance and idle count from the simulator's own per-device rates (rx + tx)."""
    loads = [2 * simulator.device_bytes_per_second(d) for d in simulator.device_names]
    mean = sum(loads) / len(loads)
    return max(loads) / mean, sum(1 for load in loads if load < IDLE_FRACTION * mean)


def _gauges(reader):
    values = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name.startswith("efa_node_"):
                    values[metric.name] = [p.value for p in metric.data.data_points]
    return values


class _Node:
    """Simulator, collector and instruments on one hand-driven clock: rates are exact."""

    def __init__(self, make_simulator, profile):
        self.now = 1000.0
        self.simulator = make_simulator(profile, clock=lambda: self.now)
        self.reader_ = SysfsReader(self.simulator.root)
        self.collector = Collector(self.reader_, profile, clock=lambda: self.now)
        self.metrics = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[self.metrics])
        self.instrumentor = EfaInstrumentor()
        self.instrumentor.instrument(provider)
        self.instrumentor.interval(self.collector.collect())

    def interval(self, seconds=10.0):
        self.now += seconds
        self.simulator.advance(self.now)
        self.instrumentor.interval(self.collector.collect())
        return _gauges(self.metrics)

    def close(self):
        self.reader_.close()


def test_idle_and_overloaded_rails_are_seen_exactly(make_simulator):
    node = _Node(make_simulator, "p4d.24xlarge")
    try:
        gauges = node.interval()
        assert abs(gauges["efa_node_rail_imbalance_ratio"][0] - 1.0) < 1e-9 and gauges["efa_node_idle_rails"] == [0]

        idle = node.simulator.device_names[2]
        node.simulator.set_device_level(idle, 0)
        gauges = node.interval()
        imbalance, idle_count = _truth(node.simulator)
        assert idle_count == 1
        assert abs(gauges["efa_node_rail_imbalance_ratio"][0] - imbalance) < 1e-6
        assert gauges["efa_node_idle_rails"] == [idle_count]

        node.simulator.set_device_level(idle, 1)
        node.simulator.set_device_level(node.simulator.device_names[0], 3)  # one rail carries 3x
        gauges = node.interval()
        imbalance, idle_count = _truth(node.simulator)
        assert abs(gauges["efa_node_rail_imbalance_ratio"][0] - imbalance) < 1e-6 and imbalance == 2.0
        assert gauges["efa_node_idle_rails"] == [0]

        for name in node.simulator.device_names:  # the node stops: no ratio, no idle-rail alarm
            node.simulator.set_device_level(name, 0)
        gauges = node.interval()
        assert gauges.get("efa_node_rail_imbalance_ratio", []) == []
        assert gauges["efa_node_idle_rails"] == [0]
    finally:
        node.close()


def test_quiet_node_is_not_busy(make_simulator):
    """Below 1 % of line rate on average the node counts as idle: no idle-rail alarm."""
    node = _Node(make_simulator, "p5.48xlarge")
    try:
        simulator = node.simulator
        for name in simulator.device_names:
            simulator.set_device_level(name, 0.001 / 0.4)  # 0.1 % of line rate
        simulator.set_device_level(simulator.device_names[0], 0)
        gauges = node.interval()
        assert gauges["efa_node_idle_rails"] == [0]
        assert gauges.get("efa_node_rail_imbalance_ratio", []) == []
    finally:
        node.close()


def _scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("efa_node_")}


def test_agent_shows_an_idle_rail_on_prometheus(make_simulator, run_agent):
    """The whole agent on a running p5 simulation: one of 32 rails goes idle, then comes back."""
    simulator = make_simulator("p5.48xlarge")
    # A p5 advance takes ~13 ms, so ticks land 20-30 ms apart: over 1.5 s intervals that jitters each
    # rate by about 2 %, where 0.5 s intervals let the max of 31 rates stray past the bound below.
    config = Config(sysfs=simulator.root, interval=1.5, instance_type="p5.48xlarge", exporters=["prometheus"],
                    prometheus=PrometheusConfig(address="127.0.0.1:0"))
    with simulator.start(tick=0.02):
        running = run_agent(config, resource=Resource.create({"service.name": "otel-efa"}))
        port = running.agent.exporters[0].port

        def scrape_until(condition, timeout=30.0):
            """The first scrape that satisfies ``condition``."""
            def matching():
                values = _scrape(port)
                return values if condition(values) else None

            return wait_until(matching, timeout, "a scrape showing what was expected")

        scrape_until(lambda v: v.get("efa_node_idle_rails") == 0 and "efa_node_rail_imbalance_ratio" in v)
        simulator.set_device_level(simulator.device_names[5], 0)
        imbalance, idle_count = _truth(simulator)
        scrape_until(lambda v: v.get("efa_node_idle_rails") == idle_count == 1)
        settled = running.agent.collector.latest.collections + 2  # an interval wholly after the change
        values = scrape_until(lambda v: running.agent.collector.latest.collections >= settled)
        assert values["efa_node_idle_rails"] == 1
        # Sampled rates jitter by a few simulator ticks per interval, and the max of 31 jittering rates
        # rides high: a sanity bound here (ground truth 32/31); the exact test above checks the value.
        assert abs(values["efa_node_rail_imbalance_ratio"] - imbalance) < 0.15 * imbalance
        simulator.set_device_level(simulator.device_names[5], 1)
        scrape_until(lambda v: v.get("efa_node_idle_rails") == 0)
