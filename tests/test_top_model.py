"""What ``top`` computes, without a terminal: errors since start, resets, sorting, the 80x24 layout; and the
``efa_expected_devices`` gauge the alert rules compare device counts with."""
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.node.sysfs import SysfsReader, natural_key
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.tools.top.model import TopModel
from otel_efa.tools.top.view import CHROME_LINES, screen_lines


def _collect(simulator, collector, model, at):
    simulator.advance(at)
    model.update(collector.collect())


def test_errors_count_from_start_survive_resets_and_sort_first(make_simulator):
    simulator = make_simulator("p4d.24xlarge", clock=lambda: 0.0)  # advanced by hand to the collector's times
    clock = iter(range(100)).__next__
    with SysfsReader(simulator.root) as reader:
        collector = Collector(reader, "p4d.24xlarge", clock=lambda: float(clock()))
        model = TopModel(INSTANCE_TYPES["p4d.24xlarge"])
        first, last = simulator.device_names[0], simulator.device_names[-1]
        simulator.set_value(last, "rx_drops", 1000)  # errors from before top started do not count
        _collect(simulator, collector, model, 1.0)
        assert all(r.errors == 0 and not r.fault for r in model.rows)
        simulator.set_value(last, "rx_drops", 1003)
        simulator.set_value(last, "unresponsive_remote_events", 2)
        _collect(simulator, collector, model, 2.0)
        rows = {r.name: r for r in model.rows}
        assert rows[last].errors == 5 and rows[last].errors_rising and rows[last].fault
        model.sort_by("errors")
        assert model.sorted_rows()[0].name == last
        _collect(simulator, collector, model, 3.0)
        assert {r.name: r for r in model.rows}[last].errors_rising is False  # still shown, no longer rising
        simulator.reset([last])  # a driver reload: counting restarts, never negative
        _collect(simulator, collector, model, 4.0)
        assert {r.name: r for r in model.rows}[last].errors == 0
        middle = simulator.device_names[1]
        tx_pkts_per_interval = simulator.expected_rate(middle, "tx_pkts") * 0.5
        simulator.set_value(middle, "retrans_pkts", simulator.value(middle, "retrans_pkts") + 1)
        _collect(simulator, collector, model, 4.5)
        assert not {r.name: r for r in model.rows}[middle].fault  # a retransmit now and then is normal
        retransmits = simulator.value(middle, "retrans_pkts") + int(tx_pkts_per_interval / 10)
        simulator.set_value(middle, "retrans_pkts", retransmits)
        _collect(simulator, collector, model, 5.0)
        retransmitting = {r.name: r for r in model.rows}[middle]
        assert retransmitting.retransmitting and retransmitting.fault and retransmitting.errors == 0
        simulator.set_port_state(first, "1: DOWN")
        _collect(simulator, collector, model, 6.0)
        assert model.sorted_rows()[0].name == first and model.sorted_rows()[0].up is False


def test_a_p5_fits_80x24_by_scrolling(make_simulator):
    simulator = make_simulator("p5.48xlarge")
    with SysfsReader(simulator.root) as reader:
        model = TopModel(INSTANCE_TYPES["p5.48xlarge"])
        collector = Collector(reader, "p5.48xlarge")
        model.update(collector.collect())
        seen = set()
        offset = 0
        for _ in range(3):
            lines, offset = screen_lines(model, 1.0, 24, 80, offset)
            assert len(lines) == 24 and all(len(text) < 80 for text, _ in lines)
            seen |= {text.split()[0].lstrip("!") for text, _ in lines[CHROME_LINES - 1:-1] if text.strip()}
            offset += 20
        assert seen == set(simulator.device_names)
    assert sorted(["rdmap100s0", "rdmap16s0", "efa_10", "efa_2"], key=natural_key) == [
        "efa_2", "efa_10", "rdmap16s0", "rdmap100s0"]


def _exported(reader: InMemoryMetricReader, name: str):
    data = reader.get_metrics_data()
    return [p.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for p in m.data.data_points]


def test_expected_devices_gauge_comes_from_the_instance_type(make_simulator):
    simulator = make_simulator("trn1.32xlarge")
    for instance_type, expected in (("trn1.32xlarge", [INSTANCE_TYPES["trn1.32xlarge"].efa_devices]),
                                     ("x9.unknown", [])):
        with SysfsReader(simulator.root) as sysfs:
            collector = Collector(sysfs, instance_type)
            reader = InMemoryMetricReader()
            instrumentor = EfaInstrumentor()
            instrumentor.instrument(MeterProvider(metric_readers=[reader]))
            instrumentor.interval(collector.collect())
            assert _exported(reader, "efa_expected_devices") == expected
