"""FrameSource: one frame per Snapshot (and per set of instruments), the instruments' points, a broken
instrument costing only its own metric."""
import logging

from opentelemetry.sdk.metrics import MeterProvider

from otel_efa import catalog
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.frame import FrameSource
from otel_efa.pipeline.instruments import EfaInstrumentor


def _instrumented(simulator):
    collector = Collector(SysfsReader(simulator.root), "p4d.24xlarge")
    instrumentor = EfaInstrumentor(collector)
    provider = MeterProvider()
    instrumentor.instrument(provider)
    return collector, instrumentor, provider


def test_one_frame_per_snapshot_with_the_snapshot_s_values(make_simulator):
    simulator = make_simulator("p4d.24xlarge")
    collector, instrumentor, provider = _instrumented(simulator)
    try:
        frames = FrameSource(instrumentor)
        snapshot = collector.collect()
        first = frames.current()
        assert frames.current() is first and first.snapshot is snapshot
        simulator.advance_by(1.0)
        later = collector.collect()
        second = frames.current()
        assert second is not first and second.snapshot is later
        rx = dict((attributes[catalog.ATTR_DEVICE], value)
                  for spec, points in second.metrics if spec.name == "efa_rx_bytes" for attributes, value in points)
        assert rx == {device: simulator.value(device, "rx_bytes") for device in simulator.device_names}
        instrumentor.register_new_counters(later)  # nothing new: the same series, the same frame
        assert frames.current() is second
        instrumentor._register(catalog.port_counter_spec("future_bytes"), lambda _snapshot: [])
        assert frames.current() is not second  # a new instrument: a new frame, even for the same Snapshot
    finally:
        provider.shutdown()
        collector.reader.close()


def test_a_broken_callback_loses_its_metric_only_and_is_logged_once(make_simulator, caplog):
    simulator = make_simulator("p4d.24xlarge")
    collector, instrumentor, provider = _instrumented(simulator)
    broken = catalog.port_counter_spec("broken_bytes")

    def explode(_snapshot):
        raise RuntimeError("boom")

    try:
        instrumentor._register(broken, explode)
        frames = FrameSource(instrumentor)
        for _ in range(3):
            collector.collect()
            names = {spec.name for spec, _ in frames.current().metrics}
            assert broken.name not in names and "efa_rx_bytes" in names
    finally:
        provider.shutdown()
        collector.reader.close()
    logged = [r for r in caplog.records if broken.name in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
