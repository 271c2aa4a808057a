"""The catalog is the single source of names: it must match the kernel and the upstream receiver."""
import re

from otel_efa import catalog
from otel_efa.tools.simulator.tree import (
    BASE_PORT_COUNTERS,
    DEVICE_COUNTER_NAMES,
    RDMA_WRITE_COUNTERS,
    RETRANS_COUNTERS,
)


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


def test_cloudwatch_metrics_are_the_quick_starts_six():
    assert [(c.name, c.unit) for c in catalog.CLOUDWATCH_METRICS] == [
        ("rx_bytes_rate", "Bytes/Second"), ("tx_bytes_rate", "Bytes/Second"),
        ("rx_packets_rate", "Count/Second"), ("tx_packets_rate", "Count/Second"),
        ("rx_errors", "Count"), ("tx_discards", "Count")]
    for c in catalog.CLOUDWATCH_METRICS:
        assert all(name in catalog.BY_NAME for name in c.otel_metrics)


def remote_write_name(spec: catalog.MetricSpec) -> str:
    """The name ``prometheusremotewrite`` gives a metric with suffixes on (its default), as
    github.com/prometheus/otlptranslator (v1.0.0, ``normalizeName``) builds it: the name's tokens, the
    unit's main and per parts unless a token already is one (``efa_rx_bytes_rate`` in ``By/s`` would lose
    its ``bytes``), ``_total`` on a monotonic sum, ``_ratio`` on a gauge in unit ``1``."""
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]", spec.name) if t]
    main, _, per = spec.unit.partition("/")
    main = "" if "{" in main else {"By": "bytes", "s": "seconds", "1": ""}.get(main, main)
    per = "" if not per or "{" in per else "per_" + {"s": "second"}.get(per, per)
    if main and main not in tokens:
        tokens.append(main)
    if per and per not in tokens:
        tokens.append(per)
    if spec.kind is catalog.Kind.COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if spec.unit == "1" and spec.kind is catalog.Kind.GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)


def test_every_metric_has_one_prometheus_name_on_every_path():
    """The agent's page (and the OTel SDK's Prometheus exporter) and AMP through prometheusremotewrite
    name every metric alike, so one dashboard and one rule set serve both (tests/test_collector_path.py
    checks it on the real collector)."""
    for spec in catalog.METRICS:
        assert spec.prometheus_name == remote_write_name(spec), spec.name


def test_groups_are_made_of_catalog_counters():
    """The kernel groups cover the port counters once each; the SRD triple and the fault groups are the
    counters their names say (drops, work request errors, SRD events; device errors and lost commands)."""
    groups = catalog.BASE_PORT_COUNTERS + catalog.RDMA_WRITE_COUNTERS + catalog.RETRANS_COUNTERS
    assert groups == tuple(m.kernel_name for m in catalog.PORT_COUNTERS)
    assert set(catalog.SRD_HEALTH_EVENTS) == {k for k in catalog.RETRANS_COUNTERS if k.endswith("_events")}
    assert set(catalog.FAULT_PORT_COUNTERS) == {k for k in catalog.PORT_COUNTER_BY_KERNEL
                                                if k.endswith(("_drops", "_err", "_events"))}
    assert set(catalog.FAULT_DEVICE_COUNTERS) == {k for k in catalog.DEVICE_COUNTER_BY_KERNEL
                                                  if k.endswith("_err") or k.startswith("no_completion")}
    assert [c.name for c in catalog.CLOUDWATCH_HEALTH_METRICS] == list(catalog.SRD_HEALTH_EVENTS)


def test_attributes_are_declared_per_metric():
    """Own keys by scope (plus an info metric's, a reason); the ENI and the Slurm job where the node adds them."""
    for m in catalog.METRICS:
        assert m.declared_attributes == m.attributes + m.context_attributes
        assert len(set(m.declared_attributes)) == len(m.declared_attributes), m.name
    assert catalog.READ_ERRORS.attributes == (catalog.ATTR_REASON,)
    assert catalog.DEVICE_INFO.attributes == (catalog.ATTR_DEVICE,) + catalog.INFO_ATTRIBUTES
    assert catalog.port_counter_spec("future_bytes").declared_attributes == (
        catalog.ATTR_DEVICE, catalog.ATTR_PORT, catalog.ATTR_ENI, catalog.ATTR_SLURM_JOB)
    assert catalog.RAIL_IMBALANCE.declared_attributes == (catalog.ATTR_SLURM_JOB,)
    assert catalog.COLLECTIONS.declared_attributes == ()


def test_cloudwatch_defaults_come_from_the_catalog():
    from otel_efa.cloudwatch.metrics import published_specs
    from otel_efa.config import CloudWatchConfig

    config = CloudWatchConfig()
    assert config.namespace == catalog.CLOUDWATCH_NAMESPACE
    assert tuple(config.dimension_sets) == catalog.CLOUDWATCH_DEFAULT_DIMENSION_SETS
    assert published_specs(config) == catalog.CLOUDWATCH_METRICS
    assert published_specs(CloudWatchConfig(health_events=True)) == (catalog.CLOUDWATCH_METRICS
                                                                      + catalog.CLOUDWATCH_HEALTH_METRICS)
