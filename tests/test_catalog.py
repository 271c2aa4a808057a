"""The catalog is the single source of names: it must match the kernel and the upstream receiver."""
import re

from otel_efa import catalog
from otel_efa.simulator.tree import BASE_PORT_COUNTERS, DEVICE_COUNTER_NAMES, RDMA_WRITE_COUNTERS, RETRANS_COUNTERS


def test_every_kernel_port_counter_has_an_upstream_name():
    kernel = set(BASE_PORT_COUNTERS + RDMA_WRITE_COUNTERS + RETRANS_COUNTERS)
    assert kernel == set(catalog.PORT_COUNTER_BY_KERNEL)
    assert len(catalog.PORT_COUNTERS) == 22  # as awsefareceiver's metadata.yaml
    assert catalog.PORT_COUNTER_BY_KERNEL["rx_drops"].name == "efa_rx_dropped"
    for spec in catalog.PORT_COUNTERS:
        assert spec.unit == ("By" if spec.kernel_name.endswith("bytes") else "1")
        assert spec.attributes == ("aws.efa.device", "aws.efa.port")


def test_device_counters_are_prefixed_and_distinct():
    assert set(DEVICE_COUNTER_NAMES) == set(catalog.DEVICE_COUNTER_BY_KERNEL)
    assert all(m.name.startswith("efa_device_") for m in catalog.DEVICE_COUNTERS)
    assert not set(catalog.DEVICE_COUNTER_BY_KERNEL) & set(catalog.PORT_COUNTER_BY_KERNEL)


def test_names_are_unique_and_prometheus_safe():
    names = [m.name for m in catalog.METRICS]
    assert len(names) == len(set(names))
    for m in catalog.METRICS:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", m.prometheus_name), m.name


def test_unknown_counters_get_generic_specs():
    spec = catalog.port_counter_spec("future_bytes")
    assert (spec.name, spec.unit, spec.kind) == ("efa_future_bytes", "By", catalog.Kind.COUNTER)
    assert catalog.device_counter_spec("new_err").name == "efa_device_new_err"
    assert "lifespan" in catalog.NOT_COUNTERS


def test_cloudwatch_metrics_are_the_seeds_six():
    assert [(c.name, c.unit) for c in catalog.CLOUDWATCH_METRICS] == [
        ("rx_bytes_rate", "Bytes/Second"), ("tx_bytes_rate", "Bytes/Second"),
        ("rx_packets_rate", "Count/Second"), ("tx_packets_rate", "Count/Second"),
        ("rx_errors", "Count"), ("tx_discards", "Count")]
    for c in catalog.CLOUDWATCH_METRICS:
        assert all(name in catalog.BY_NAME for name in c.otel_metrics)
