"""The agent's OTLP output, checked by real OTLP receivers (gRPC MetricsService and http/protobuf)."""
import logging
import time

import pytest
from conftest import free_port
from fake_imds import FakeImds
from otlp_receiver import GrpcReceiver, HttpReceiver, points, resource_attributes
from waiting import wait_until

from otel_efa import catalog
from otel_efa.catalog import Kind, Scope
from otel_efa.config import Config, ConfigError, OtlpConfig
from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.node.topology import info_attributes, read_topology
from otel_efa.pipeline.rails import rail_balance

PROFILE = "trn1.32xlarge"  # every catalog counter exists on it (RDMA write, retransmit group)
CUMULATIVE = 2  # AggregationTemporality.CUMULATIVE in the OTLP protocol


def _receiver(protocol: str):
    return GrpcReceiver() if protocol == "grpc" else HttpReceiver()


def _otlp_config(simulator, endpoint: str, protocol: str, interval: float = 0.3) -> Config:
    config = Config(interval=interval, sysfs=simulator.root, exporters=["otlp"], instance_type=PROFILE)
    config.otlp = OtlpConfig(endpoint=endpoint, protocol=protocol)
    return config


def _expected(simulator, snapshot, missed_intervals):
    """(name, attributes) -> value: counters from the simulator's ground truth; gauges the interval's
    values (rates are the collector's; link speed from the instance table); the intervals the agent
    skipped as it counted them (a busy test machine may make it skip some)."""
    expected = {}
    link = INSTANCE_TYPES[PROFILE].device_bytes_per_second
    truth = simulator.values()
    for device in snapshot.devices:
        device_attrs = frozenset({(catalog.ATTR_DEVICE, device.name)})
        for spec in catalog.DEVICE_COUNTERS:
            expected[(spec.name, device_attrs)] = truth[(device.name, spec.kernel_name)]
        for port in device.ports:
            attrs = frozenset({(catalog.ATTR_DEVICE, device.name), (catalog.ATTR_PORT, port.port)})
            for spec in catalog.PORT_COUNTERS:
                expected[(spec.name, attrs)] = truth[(device.name, spec.kernel_name)]
            for name, kernel in catalog.RATE_SOURCES.items():
                expected[(name, attrs)] = port.rates[kernel]
            expected[("efa_port_up", attrs)] = 1
            expected[("efa_port_phys_state", attrs)] = 5  # the simulator's ports are "5: LinkUp"
            expected[("efa_link_speed", attrs)] = link
            expected[("efa_rx_utilization_ratio", attrs)] = port.rates["rx_bytes"] / link
            expected[("efa_tx_utilization_ratio", attrs)] = port.rates["tx_bytes"] / link
    topology = read_topology(simulator.root)  # checked against the simulator's layout in test_topology
    for device in snapshot.devices:
        info = {catalog.ATTR_DEVICE: device.name, **info_attributes(topology[device.name])}
        expected[("efa_device_info", frozenset(info.items()))] = 1
    balance = rail_balance(snapshot)
    if balance.imbalance is not None:  # absent while the node is idle (the last interval may be)
        expected[("efa_node_rail_imbalance_ratio", frozenset())] = balance.imbalance
    expected[("efa_node_idle_rails", frozenset())] = balance.idle_rails
    for name, spec in catalog.NODE_TOTAL_SOURCES.items():
        expected[(name, frozenset())] = sum(truth[(d.name, k)] for d in snapshot.devices for k in spec.kernel_names
                                            if (d.name, k) in truth)
    for reason, count in snapshot.read_errors.items():
        expected[("otel_efa_read_errors", frozenset({(catalog.ATTR_REASON, reason)}))] = count
    expected[("otel_efa_collections", frozenset())] = snapshot.collections
    expected[("otel_efa_dropped_datapoints", frozenset())] = 0  # OTLP buffers nothing: cumulative state
    expected[("otel_efa_missed_intervals", frozenset())] = missed_intervals
    expected[("efa_expected_devices", frozenset())] = INSTANCE_TYPES[PROFILE].efa_devices
    expected[("otel_efa_collection_duration", frozenset())] = snapshot.duration
    return expected


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_catalog_metric_arrives_with_ground_truth(protocol, make_simulator, run_agent, monkeypatch, caplog):
    """Counters advance, then stop; the agent's last export must carry the simulator's exact totals, every
    catalog metric with its name, kind, unit and attributes, and the resource from OTEL_RESOURCE_ATTRIBUTES."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.id=i-0123456789abcdef0,deployment.environment=test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-efa-test=yes")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")  # must be ignored, once
    caplog.set_level(logging.INFO)
    simulator = make_simulator(PROFILE)
    receiver = _receiver(protocol)
    try:
        running = simulator.start(tick=0.02)
        agent = run_agent(_otlp_config(simulator, receiver.endpoint, protocol))
        receiver.wait_for(3, timeout=20)
        running.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: agent.agent.collector.latest.monotonic > stopped_at, 5, "a collection after the stop")
        agent.stop()  # the final flush exports the latest Snapshot
        snapshot = agent.agent.collector.latest
        requests = receiver.wait_for(1, timeout=1)
        last = requests[-1]
    finally:
        receiver.stop()

    assert snapshot.monotonic > stopped_at
    received = {(p.name, p.attributes): p for p in points(last)}
    expected = _expected(simulator, snapshot, agent.agent.stats.missed_intervals)
    idle = {"efa_node_rail_imbalance_ratio"} if rail_balance(snapshot).imbalance is None else set()
    assert {name for name, _ in received} == {spec.name for spec in catalog.METRICS} - idle
    assert set(received) == set(expected)
    for key, value in expected.items():
        point = received[key]
        spec = catalog.BY_NAME[point.name]
        assert point.value == value, key
        assert point.unit == spec.unit, key
        if point.name == "efa_device_info":  # the topology attributes a device has (no GPUs on trn)
            assert {k for k, _ in point.attributes} <= set(spec.attributes), key
            continue
        assert {k for k, _ in point.attributes} == set(spec.attributes if spec.scope is not Scope.AGENT
                                                        or point.name != "otel_efa_read_errors"
                                                        else (catalog.ATTR_REASON,)), key
        if spec.kind is Kind.COUNTER:
            assert (point.kind, point.monotonic, point.temporality) == ("sum", True, CUMULATIVE), key
        else:
            assert point.kind == "gauge", key
    # The traffic moved while the agent watched, so the comparisons above are not between constants.
    first = {(p.name, p.attributes): p.value for p in points(requests[0])}
    assert all(first[key] < value for key, value in expected.items() if key[0] == "efa_rx_bytes")
    assert any(p.value > 0 for r in requests[:-1] for p in points(r) if p.name == "efa_rx_throughput")

    resource = resource_attributes(last)
    assert resource["service.name"] == "otel-efa"
    assert resource["host.id"] == "i-0123456789abcdef0"
    assert resource["deployment.environment"] == "test"
    assert receiver.headers[-1].get("x-efa-test") == "yes"
    delta_warnings = [r for r in caplog.records if "TEMPORALITY_PREFERENCE" in r.getMessage()]
    assert len(delta_warnings) == 1 and delta_warnings[0].levelno == logging.WARNING


def test_resource_comes_from_imdsv2_without_otel_resource_attributes(make_simulator, run_agent, monkeypatch):
    document = {"instanceId": "i-0fedcba9876543210", "instanceType": PROFILE, "region": "us-east-2",
                "availabilityZone": "us-east-2b", "accountId": "123456789012", "imageId": "ami-0abc"}
    imds = FakeImds(document)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint)
    receiver = GrpcReceiver()
    try:
        agent = run_agent(_otlp_config(make_simulator(PROFILE), receiver.endpoint, "grpc"))
        requests = receiver.wait_for(1, timeout=15)
        agent.stop()
    finally:
        receiver.stop()
        imds.stop()
    assert requests, "no export arrived"
    resource = resource_attributes(requests[0])
    assert resource["service.name"] == "otel-efa"
    assert resource["host.id"] == "i-0fedcba9876543210"
    assert resource["host.type"] == PROFILE
    assert resource["cloud.region"] == "us-east-2"
    assert resource["cloud.availability_zone"] == "us-east-2b"
    assert ("PUT", "/latest/api/token") in {c[:2] for c in imds.calls}
    assert ("GET", "/latest/dynamic/instance-identity/document", "token-1") in imds.calls


def test_shutdown_with_the_collector_gone_finishes_within_the_timeout(make_simulator, run_agent, caplog):
    """Nothing listens on the port: one warning, no SDK retry lines, and stop() within otlp.timeout."""
    caplog.set_level(logging.INFO)
    simulator = make_simulator("p4d.24xlarge")
    config = _otlp_config(simulator, f"http://127.0.0.1:{free_port()}", "grpc", interval=0.5)
    config.otlp.timeout = 2.0
    agent = run_agent(config)
    exporter = agent.agent.exporters[0]
    wait_until(lambda: exporter.reporter.failing_since is not None, 10, "the first failed export")
    wait_until(lambda: exporter.reporter.failed_exports >= 2, 10, "a second failed export")  # it keeps trying
    started = time.monotonic()
    agent.stop()
    took = time.monotonic() - started
    assert took < config.otlp.timeout + 0.5, f"shutdown took {took:.1f} s"  # 0.5 s: thread scheduling
    failing = [r for r in caplog.records if "is failing" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.WARNING
    assert "UNAVAILABLE" in failing[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


def test_bad_otlp_keys_name_the_key():
    from otel_efa import config

    for variable, value, key in [("OTEL_EFA_OTLP_COMPRESSION", "zstd", "otlp.compression"),
                                 ("OTEL_EFA_OTLP_ENDPOINT", "localhost", "otlp.endpoint"),
                                 ("OTEL_EFA_OTLP_HEADERS", "=x", "otlp.headers"),
                                 ("OTEL_EFA_OTLP_INSECURE", "maybe", "otlp.insecure")]:
        with pytest.raises(ConfigError) as raised:
            config.load(None, environ={variable: value})
        assert raised.value.key == key
