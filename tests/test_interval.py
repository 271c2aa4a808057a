"""The Interval: built once per collection from the Snapshot it is given, with that Snapshot's values; its
series_version moves exactly when the series change; a broken definition costs only its own metric."""
import logging

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_efa import catalog
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor


def _points(interval, name):
    return {attributes.get(catalog.ATTR_DEVICE): value
            for spec, points in interval.metrics if spec.name == name for attributes, value in points}


def test_each_interval_has_its_snapshot_s_values_and_the_instruments_serve_the_latest(make_simulator):
    simulator = make_simulator("p4d.24xlarge")
    collector = Collector(SysfsReader(simulator.root), "p4d.24xlarge")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrumentor = EfaInstrumentor()
    instrumentor.instrument(provider)
    try:
        first_snapshot = collector.collect()
        first = instrumentor.interval(first_snapshot)
        simulator.advance_by(1.0)
        later = collector.collect()
        second = instrumentor.interval(later)
        assert first.snapshot is first_snapshot and second.snapshot is later and instrumentor.latest is second
        expected = {device: simulator.value(device, "rx_bytes") for device in simulator.device_names}
        assert _points(second, "efa_rx_bytes") == expected
        assert _points(first, "efa_rx_bytes") != expected  # the first one kept its own values
        assert [spec for spec, _ in second.metrics] == [s for s in second.specs if s.name in
                                                         {spec.name for spec, _ in second.metrics}]
        sdk = {p.attributes[catalog.ATTR_DEVICE]: p.value for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics if m.name == "efa_rx_bytes" for p in m.data.data_points}
        assert sdk == expected  # the OTel instruments serve the latest Interval, not the Collector
    finally:
        provider.shutdown()
        collector.reader.close()


def test_series_version_moves_exactly_when_the_series_change(make_simulator):
    simulator = make_simulator("p4d.24xlarge")
    collector = Collector(SysfsReader(simulator.root), "p4d.24xlarge")
    instrumentor = EfaInstrumentor()
    try:
        first = instrumentor.interval(collector.collect())
        simulator.advance_by(1.0)
        second = instrumentor.interval(collector.collect())  # rates appear: new points
        assert second.series_version != first.series_version
        simulator.advance_by(1.0)
        third = instrumentor.interval(collector.collect())  # the same series, new values
        assert third.series_version == second.series_version and third.specs is second.specs
        for (spec, points), (earlier_spec, earlier_points) in zip(third.metrics, second.metrics):
            assert spec is earlier_spec
            assert [a for a, _ in points] == [a for a, _ in earlier_points]
            assert all(a is b for (a, _), (b, _) in zip(points, earlier_points))  # the same mappings
        instrumentor.forget_attributes()  # attributes changed (an ENI id, a job)
        fourth = instrumentor.interval(collector.collect())
        assert fourth.series_version != third.series_version
        instrumentor._register(catalog.port_counter_spec("future_bytes"), lambda _snapshot: ())
        fifth = instrumentor.interval(collector.collect())  # a new metric, even without points
        assert fifth.series_version != fourth.series_version and len(fifth.specs) == len(fourth.specs) + 1
        simulator.remove_device(simulator.device_names[-1])
        sixth = instrumentor.interval(collector.collect())  # a device gone
        assert sixth.series_version != fifth.series_version
    finally:
        collector.reader.close()


def test_a_broken_definition_loses_its_metric_only_and_is_logged_once(make_simulator, caplog):
    simulator = make_simulator("p4d.24xlarge")
    collector = Collector(SysfsReader(simulator.root), "p4d.24xlarge")
    instrumentor = EfaInstrumentor()
    broken = catalog.port_counter_spec("broken_bytes")

    def explode(_snapshot):
        raise RuntimeError("boom")

    try:
        instrumentor._register(broken, explode)
        for _ in range(3):
            names = {spec.name for spec, _ in instrumentor.interval(collector.collect()).metrics}
            assert broken.name not in names and "efa_rx_bytes" in names
    finally:
        collector.reader.close()
    logged = [r for r in caplog.records if broken.name in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
