"""What the OTel instruments carry, checked against the simulator's ground truth."""
from conftest import port_key
from opentelemetry.sdk.metrics.export import Gauge, Sum

from otel_efa import catalog
from otel_efa.node.sysfs import U64_MAX


def test_totals_equal_ground_truth_exactly_up_to_u64_max(make_simulator, make_pipeline):
    """Exact ints up to 2**63-1 (OTLP's as_int is an int64); above, the nearest double (counter_value)."""
    sim = make_simulator("p5en.48xlarge")
    big = sim.devices[3].name
    sim.advance_by(7.3)
    sim.set_value(big, "rx_bytes", U64_MAX)
    sim.set_value(big, "tx_pkts", (1 << 53) + 1)  # not representable in a float64
    sim.set_value(big, "rx_pkts", (1 << 63) - 1)  # the largest that stays an int
    pipeline = make_pipeline(sim.root, "p5en.48xlarge")
    points = pipeline.collect()
    checked = 0
    for device in sim.devices:
        for counter in device.port_counters:
            value = points[port_key(catalog.port_counter_spec(counter).name, device.name)]
            if (device.name, counter) == (big, "rx_bytes"):
                continue
            assert value == sim.value(device.name, counter) and isinstance(value, int), (device.name, counter)
            checked += 1
        for counter in device.device_counters:
            key = (catalog.device_counter_spec(counter).name, frozenset({("aws.efa.device", device.name)}))
            assert points[key] == sim.value(device.name, counter)
            checked += 1
    above_int64 = points[port_key("efa_rx_bytes", big)]
    assert above_int64 == float(U64_MAX) and isinstance(above_int64, float)
    assert checked == 16 * (22 + 12) - 1


def test_kinds_units_and_every_catalog_metric_present(make_simulator, make_pipeline):
    sim = make_simulator("p5.48xlarge")
    clock = [0.0]
    pipeline = make_pipeline(sim.root, "p5.48xlarge", clock=lambda: clock[0])  # a second of traffic takes a second
    pipeline.collect()
    sim.advance_by(1.0)
    clock[0] += 1.0
    pipeline.collect()
    needs_attribution = {"efa_device_info"}  # from the topology hook the agent wires in (test_topology)
    assert set(pipeline.metrics) == {spec.name for spec in catalog.METRICS} - needs_attribution
    for spec in catalog.METRICS:
        if spec.name in needs_attribution:
            continue
        metric = pipeline.metrics[spec.name]
        assert metric.unit == spec.unit and metric.description == spec.description
        if spec.kind is catalog.Kind.COUNTER:
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic
            assert metric.data.aggregation_temporality.name == "CUMULATIVE"
        else:
            assert isinstance(metric.data, Gauge)


def test_rates_link_speed_and_utilization(make_simulator, make_pipeline):
    sim = make_simulator("p5en.48xlarge", gbps=1600)  # 100 Gbps of each 200 Gbps device
    clock = [1000.0]
    pipeline = make_pipeline(sim.root, "p5en.48xlarge", clock=lambda: clock[0])
    pipeline.collect()
    assert not any(name == "efa_rx_throughput" for name, _ in pipeline.collect())  # first sample: no rate
    sim.advance_by(2.5)
    clock[0] += 2.5
    points = pipeline.collect()
    device = sim.devices[0].name
    assert points[port_key("efa_rx_throughput", device)] == sim.expected_rate(device, "rx_bytes")
    assert points[port_key("efa_link_speed", device)] == 200e9 / 8
    assert abs(points[port_key("efa_rx_utilization_ratio", device)] - 0.5) < 1e-9
    assert points[port_key("efa_port_up", device)] == 1


def test_old_kernel_rate_file_is_corrected_by_the_instance_type(make_simulator, make_pipeline):
    from otel_efa.tools.simulator import OLD_KERNEL

    sim = make_simulator("p5en.48xlarge", flavour=OLD_KERNEL)  # rate file says 100 Gb/sec
    device = sim.devices[0].name
    assert make_pipeline(sim.root, "p5en.48xlarge").collect()[port_key("efa_link_speed", device)] == 200e9 / 8
    assert make_pipeline(sim.root, None).collect()[port_key("efa_link_speed", device)] == 100e9 / 8


def test_port_down_and_new_kernel_counters(make_simulator, make_pipeline):
    import os

    sim = make_simulator("p4d.24xlarge")
    device = sim.devices[2]
    sim.set_port_state(device.name, "1: DOWN")
    with open(os.path.join(device.port_dir, "future_pkts"), "w") as f:
        f.write("5\n")
    pipeline = make_pipeline(sim.root)
    points = pipeline.collect()
    assert points[port_key("efa_port_up", device.name)] == 0
    assert points[port_key("efa_future_pkts", device.name)] == 5
    assert points[port_key("efa_port_up", sim.devices[0].name)] == 1


def test_hostile_counter_and_device_names_become_valid_instruments(tmp_path, make_pipeline):
    """Any file or directory name (tests/hostile_names.py): instrument creation never raises, every
    series reaches the SDK under a valid, unique name, and the SDK's own OTLP encoding succeeds."""
    import os

    from hostile_names import DEVICE_COUNTERS, PORT_COUNTERS, hostile_node
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.metrics._internal.instrument import _name_regex

    from otel_efa.names import escape

    sim, devices = hostile_node(str(tmp_path))
    try:
        pipeline = make_pipeline(sim.root, "p4d.24xlarge")
        points = pipeline.collect()
        encode_metrics(pipeline.reader.get_metrics_data()).SerializeToString()  # raised on bytes not UTF-8
        names = {spec.name for spec, _ in pipeline.instrumentor.series}
        assert all(_name_regex.fullmatch(n) for n in names)
        assert len({n.lower() for n in names}) == len(pipeline.instrumentor.series)
        by_value = {}
        for (name, attributes), value in points.items():
            device = dict(attributes).get("aws.efa.device")
            if device is not None:
                by_value.setdefault(value, set()).add((name, device))
        for values in (PORT_COUNTERS, DEVICE_COUNTERS):
            for kernel_name, value in values.items():
                found = by_value.get(value, set())
                # one instrument per counter file, on every device, the device name escaped
                assert {d for _, d in found} == {escape(d) for d in devices}, (kernel_name, found)
                assert len({n for n, _ in found}) == 1, (kernel_name, found)
        expected = os.fsdecode(b"efa_new-counter.x")
        assert any(n == expected for n in names)  # a valid instrument name is kept as it is
    finally:
        sim.close()
