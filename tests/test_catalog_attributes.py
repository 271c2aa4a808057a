"""Every attribute an exported point carries is declared for its metric in the catalog.

A real agent on a simulated node (the stand-in for EC2 hardware) exports through OTLP to a real receiver
and serves its Prometheus page, with everything that adds attributes turned on: ENI ids from a fake IMDSv2
on loopback (half of the devices have one), the Slurm job from a stand-in ``squeue`` (Slurm cannot run
here), a counter the catalog does not know and an unreadable one (a ``reason`` on the read errors). Each
point's keys must be among its metric's ``declared_attributes``, carry its own ``attributes``, and every
declared context attribute must show up on some point of its scope (so a declaration cannot go stale).
"""
import urllib.request

import pytest
from fake_imds import imds  # noqa: F401 (a fixture)
from opentelemetry.sdk.resources import Resource
from otlp_receiver import HttpReceiver, points
from prometheus_client.parser import text_string_to_metric_families
from test_slurm import NODE, squeue  # noqa: F401
from waiting import wait_until

from otel_efa import catalog
from otel_efa.artifacts.promql import label
from otel_efa.config import Config, OtlpConfig, PrometheusConfig, SlurmConfig

PROFILE = "trn1.32xlarge"  # every catalog counter exists on it
NEW_COUNTER = "future_bytes"  # a counter newer than the catalog: exported under a generic spec
BROKEN_COUNTER = "future_pkts"  # holds no number: a read error with a reason
SCOPE_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
# efa_device_info leaves these out where a device has no such accelerators (otel_efa/node/topology.py).
ACCELERATOR_ATTRIBUTES = {catalog.ATTR_GPUS, catalog.ATTR_GPU_PCI_ADDRESSES, catalog.ATTR_NEURON_DEVICES}


@pytest.fixture
def attributed_node(make_simulator, run_agent, imds, squeue):  # noqa: F811
    """(every OTLP point received, the Prometheus page) once ENI ids and the Slurm job are on the points."""
    simulator = make_simulator(PROFILE)
    with_eni = simulator.devices[: len(simulator.devices) // 2]
    imds.enis = {d.mac: f"eni-{d.index:017x}" for d in with_eni}
    squeue.jobs.write_text("4242\n")
    with open(f"{simulator.devices[0].port_dir}/{NEW_COUNTER}", "w") as f:
        f.write("77\n")
    with open(f"{simulator.devices[1].port_dir}/{BROKEN_COUNTER}", "w") as f:
        f.write("not a number\n")
    receiver = HttpReceiver()
    try:
        config = Config(sysfs=simulator.root, interval=0.2, exporters=["prometheus", "otlp"], instance_type=PROFILE,
                        prometheus=PrometheusConfig(address="127.0.0.1:0"),
                        otlp=OtlpConfig(endpoint=receiver.endpoint, protocol="http/protobuf"),
                        slurm=SlurmConfig(enabled=True, node_name=NODE, cache_seconds=0.2))
        running = run_agent(config, resource=Resource.create({"service.name": "otel-efa"}))

        def received():
            return [p for request in receiver.wait_for(1, timeout=0) for p in points(request)]

        def attributed() -> bool:
            keys = {k for p in received() for k, _ in p.attributes}
            return {catalog.ATTR_ENI, catalog.ATTR_SLURM_JOB, catalog.ATTR_REASON} <= keys

        wait_until(attributed, 30, "points with an ENI id, the Slurm job and a read error reason")
        prometheus = next(e for e in running.agent.exporters if e.name == "prometheus")
        page = urllib.request.urlopen(f"http://127.0.0.1:{prometheus.port}/metrics", timeout=5).read().decode()
        yield received(), page
    finally:
        receiver.stop()


def _specs():
    known = {m.name: m for m in catalog.METRICS}
    new = catalog.port_counter_spec(NEW_COUNTER)
    return {**known, new.name: new}


def test_every_exported_attribute_is_declared(attributed_node):
    received, page = attributed_node
    specs = _specs()
    seen = {}
    for point in received:
        spec = specs[point.name]  # no metric outside the catalog, but the counter it does not know
        keys = {k for k, _ in point.attributes}
        assert keys <= set(spec.declared_attributes), (point.name, keys)
        assert set(spec.attributes) - ACCELERATOR_ATTRIBUTES <= keys, (point.name, keys)
        seen.setdefault(spec.scope, set()).update(keys)
    for scope, context in catalog.CONTEXT_ATTRIBUTES.items():
        assert set(context) <= seen[scope], (scope, seen[scope])
    assert catalog.ATTR_REASON in seen[catalog.Scope.AGENT]

    by_prometheus_name = {m.prometheus_name: m for m in specs.values()}
    families = 0
    for family in text_string_to_metric_families(page):
        if family.name == "target_info":
            continue
        for sample in family.samples:
            spec = by_prometheus_name[sample.name]
            declared = {label(k) for k in spec.declared_attributes} | SCOPE_LABELS
            assert set(sample.labels) <= declared, (sample.name, sorted(set(sample.labels) - declared))
        families += 1
    assert families >= len(catalog.METRICS) - 1  # the rail imbalance may be absent (an idle node)
