"""The fast path and the OTel SDK path export the same data on the same intervals.

OTLP: one agent on a simulated node (traffic flowing) runs both ``otlp`` and ``otel-sdk``
(OTEL_METRICS_EXPORTER=otlp) against one real OTLP receiver (tests/otlp_receiver.py). The two paths' requests
are told apart by the SDK exporter's user agent and paired by interval (the value of
``otel_efa_collections`` each carries); every pair is compared metric by metric (name, description, unit,
kind, monotonicity, temporality) and point by point (attributes, value field, value), with the resource
and the scope. Timestamps aside, and the metrics' order (the SDK lists an instrument from the interval it
first had points in; the order carries no meaning in OTLP).

Prometheus: one Snapshot of a rich node (tests/rich_node.py: huge counters, odd text, a counter the catalog
does not know) pushed to the fast ``prometheus`` exporter and to ``otel-sdk`` with
OTEL_METRICS_EXPORTER=prometheus, each on its own endpoint; both pages are scraped over HTTP, parsed with
prometheus_client's parser and compared family by family (type, HELP, every sample's labels and value).
"""
import urllib.request

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from otlp_receiver import GrpcReceiver, HttpReceiver, metrics_with_points
from prometheus_client.parser import text_string_to_metric_families
from rich_node import PROFILE, RESOURCE, RichNode, assert_rich

from otel_efa import __version__
from otel_efa.config import Config, OtlpConfig, PrometheusConfig
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.otel_sdk import OtelSdkExporter
from otel_efa.exporters.prometheus import PrometheusExporter

SDK_USER_AGENT = "OTel-OTLP-Exporter-Python"
SCOPE_LABELS = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")
INTERVALS = 3  # pairs of requests compared, each of an interval with rates


def decoded(request):
    """(resource, resource schema URL, scope, {metric header: {attributes: (value field, value)}})."""
    assert len(request.resource_metrics) == 1
    resource_metrics = request.resource_metrics[0]
    resource = {kv.key: kv.value.SerializeToString() for kv in resource_metrics.resource.attributes}
    ours = [s for s in resource_metrics.scope_metrics if s.scope.name == "otel_efa"]
    assert len(ours) == 1
    others = [m.name for s in resource_metrics.scope_metrics if s.scope.name != "otel_efa" for m in s.metrics]
    assert not others  # the SDK's metrics about itself stay out (as on the agent's own MeterProvider)
    listed = metrics_with_points(ours[0])
    metrics = dict(listed)
    assert len(metrics) == len(listed)  # no metric twice
    scope = (ours[0].scope.name, ours[0].scope.version, ours[0].schema_url)
    return resource, resource_metrics.schema_url, scope, metrics


def collections(request) -> int:
    """Which interval a request carries: its otel_efa_collections value."""
    for metric in request.resource_metrics[0].scope_metrics:
        for m in metric.metrics:
            if m.name == "otel_efa_collections":
                return m.sum.data_points[0].as_int
    raise AssertionError("no otel_efa_collections in the request")


def by_interval(receiver, sdk: bool):
    """{collections: request} of one path's requests so far (the last of each interval)."""
    with receiver.arrived:
        pairs = list(zip(receiver.requests, receiver.headers))
    return {collections(request): request for (_, request), headers in pairs
            if (SDK_USER_AGENT in headers.get("user-agent", "")) == sdk}


def common_intervals(receiver):
    fast, sdk = by_interval(receiver, sdk=False), by_interval(receiver, sdk=True)
    return sorted(n for n in fast.keys() & sdk.keys() if n >= 2)  # from the second: with rates


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_requests_of_both_paths_are_equal_interval_by_interval(protocol, run_agent, monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    config = Config(simulate="p4d.24xlarge", interval=0.2, exporters=["otlp", "otel-sdk"],
                    otlp=OtlpConfig(endpoint=receiver.endpoint, protocol=protocol))
    try:
        agent = run_agent(config, resource=RESOURCE)
        with receiver.arrived:
            receiver.arrived.wait_for(lambda: len(common_intervals(receiver)) >= INTERVALS, timeout=30)
        agent.stop()
        fast, sdk = by_interval(receiver, sdk=False), by_interval(receiver, sdk=True)
    finally:
        receiver.stop()
    shared = sorted(n for n in fast.keys() & sdk.keys() if n >= 2)
    assert len(shared) >= INTERVALS, (sorted(fast), sorted(sdk))
    for n in shared:
        resource, schema_url, scope, metrics = decoded(fast[n])
        sdk_resource, sdk_schema_url, sdk_scope, sdk_metrics = decoded(sdk[n])
        assert (sdk_resource, sdk_schema_url) == (resource, schema_url)
        assert sdk_scope == scope == ("otel_efa", __version__, "")
        assert sorted(sdk_metrics) == sorted(metrics), n  # names, descriptions, units, kinds, temporality
        for header, points in metrics.items():
            assert sdk_metrics[header] == points, (n, header[0])
    # What was compared is the node's data, rates included, and sums are cumulative and monotonic.
    _, _, _, metrics = decoded(fast[shared[-1]])
    names = {header[0]: header for header in metrics}
    assert names["efa_rx_bytes"][3:] == ("sum", True, 2)  # 2: AGGREGATION_TEMPORALITY_CUMULATIVE
    assert names["efa_rx_throughput"][3] == "gauge"
    assert any(value > 0 for _, value in metrics[names["efa_rx_throughput"]].values())
    assert sum(len(points) for points in metrics.values()) > 100


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def _families(text: str, drop_labels=()):
    """family name -> (type, HELP, {(sample name, labels): value})."""
    families = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, frozenset((k, v) for k, v in s.labels.items() if k not in drop_labels)): float(s.value)
                   for s in family.samples}
        families[family.name] = (family.type, family.documentation, samples)
    return families


def test_prometheus_pages_of_both_paths_have_the_same_series_and_values(make_simulator, monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    node = RichNode(make_simulator(PROFILE))
    provider = MeterProvider(resource=RESOURCE)
    fast = PrometheusExporter(ExporterContext(Config(prometheus=PrometheusConfig("127.0.0.1:0")), RESOURCE))
    sdk = OtelSdkExporter(ExporterContext(Config(exporters=["otel-sdk"], prometheus=PrometheusConfig("127.0.0.1:0")),
                                          RESOURCE))
    try:
        node.instrument(provider)
        for exporter in (fast, sdk):
            exporter.start()
        node.collect()
        for exporter in (fast, sdk):
            exporter.export(node.interval)
        fast_page, sdk_page = _scrape(fast.port), _scrape(sdk.prometheus.port)
    finally:
        fast.shutdown(1.0)
        sdk.shutdown(1.0)
        provider.shutdown()
        node.close()
    old_exporter = "otel_scope_name=" not in sdk_page  # 0.62b1 (Python 3.9) has no scope labels
    fast_families = _families(fast_page, drop_labels=SCOPE_LABELS if old_exporter else ())
    sdk_families = _families(sdk_page)
    assert sorted(sdk_families) == sorted(fast_families)
    for name, family in fast_families.items():
        assert sdk_families[name] == family, name
    # The pages held the rich node's series: a counter the catalog does not know, one at 2**64-1, odd text.
    samples = {key: value for _, _, family in fast_families.values() for key, value in family.items()}
    assert_rich(samples)
    assert "target_info" in sdk_families and len(samples) > 300
