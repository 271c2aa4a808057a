"""The agent's Prometheus page is what opentelemetry-exporter-prometheus serves for the same instruments.

One Snapshot of a rich node (tests/rich_node.py) is rendered through the OTel SDK and the OTel exporter
(PrometheusMetricReader + prometheus_client) and through the agent's renderer; both texts are parsed with
prometheus_client's parser and compared family by family: name, type, HELP and every sample's labels and
value. Version-aware: the exporter for Python 3.9 (0.62b1) has no ``otel_scope_*`` labels, which newer
ones (0.66b2, Python 3.11) add; the agent always serves the newer form, so on the old exporter those
labels are left out of the comparison (and checked separately).
"""
import gzip
import logging
import urllib.error
import urllib.request

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich_node import PROFILE, RESOURCE, RichNode, assert_rich

from otel_efa import __version__, catalog
from otel_efa.config import Config, PrometheusConfig
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.prometheus import PrometheusExporter
from otel_efa.exporters.prometheus_text import CONTENT_TYPE, PrometheusRenderer

SCOPE_LABELS = {"otel_scope_name": "otel_efa", "otel_scope_version": __version__, "otel_scope_schema_url": ""}


def _otel_exporter_registry(provider_readers: list) -> CollectorRegistry:
    """opentelemetry-exporter-prometheus's reader on a registry of its own (appended to provider_readers)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry = CollectorRegistry(auto_describe=True)
    try:
        reader = PrometheusMetricReader(registry=registry)
    except TypeError:  # 0.62b1 (Python 3.9) registers on the global registry (and leaves it at shutdown)
        sdk_log = logging.getLogger("opentelemetry.sdk.metrics._internal.export")
        sdk_log.disabled = True  # registering collects before there is a MeterProvider
        try:
            reader = PrometheusMetricReader()
        finally:
            sdk_log.disabled = False
        registry.register(reader._collector)
    provider_readers.append(reader)
    return registry


@pytest.fixture
def both(make_simulator):
    """(the OTel exporter's page, the agent's page, the snapshot) of one collection of a rich node."""
    node = RichNode(make_simulator(PROFILE))
    readers: list = []
    registry = _otel_exporter_registry(readers)
    provider = MeterProvider(resource=RESOURCE, metric_readers=readers)
    try:
        node.instrument(provider)
        snapshot = node.collect()
        sdk_text = generate_latest(registry).decode()
        renderer = PrometheusRenderer(RESOURCE.attributes, "otel_efa", __version__)
        ours = renderer.render(node.interval).decode()
        yield sdk_text, ours, snapshot
    finally:
        provider.shutdown()
        node.close()


def _parsed(text: str, drop_labels=()):
    """family name -> (type, HELP, {(sample name, labels): value}); values as the float64 Prometheus keeps
    (the parser gives an integer for an integer's text, which the agent writes exactly)."""
    families = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, frozenset((k, v) for k, v in s.labels.items() if k not in drop_labels)): float(s.value)
                   for s in family.samples}
        families[family.name] = (family.type, family.documentation, samples)
    return families


def test_same_families_labels_help_and_values_as_the_otel_exporter(both):
    sdk_text, ours, snapshot = both
    old_exporter = "otel_scope_name=" not in sdk_text
    expected = _parsed(sdk_text)
    got = _parsed(ours, drop_labels=SCOPE_LABELS if old_exporter else ())
    # The SDK's own metrics (newer SDKs) are not the agent's: the agent drops them (agent.py's views).
    expected = {name: family for name, family in expected.items() if not name.startswith("otel_sdk_")}
    assert list(got) == list(expected)  # same families, same order
    for name, family in expected.items():
        assert got[name] == family, name
    # The comparison covered what makes the node rich (so it is not between two empty pages).
    samples = {key: value for _, _, family in got.values() for key, value in family.items()}
    assert_rich(samples)
    assert any(dict(labels).get("aws_efa_eni_id") == "" for name, labels in samples if name == "efa_rx_bytes_total")
    assert len(samples) > 300  # 8 devices x ~40 metrics


def test_every_sample_carries_the_scope_labels_and_target_info_the_resource(both):
    _, ours, _ = both
    families = list(text_string_to_metric_families(ours))
    target = next(f for f in families if f.name == "target_info")
    assert target.type == "gauge" and target.samples[0].value == 1
    sanitized = {"k8s-node/name": "k8s_node_name", "9lives": "_lives"}  # the others only have dots
    assert target.samples[0].labels == {sanitized.get(k, k.replace(".", "_")): str(v)
                                        for k, v in RESOURCE.attributes.items()}
    assert target.samples[0].labels["deployment_environment"] == 't"est'
    for family in families:
        if family.name != "target_info":
            assert all(SCOPE_LABELS.items() <= s.labels.items() for s in family.samples), family.name


def test_values_are_the_snapshot_s(both):
    """Independent of the OTel exporter: a counter and a rate read back as the Snapshot has them."""
    _, ours, snapshot = both
    families = {f.name: f for f in text_string_to_metric_families(ours)}
    device = snapshot.devices[1]
    port = device.ports[0]
    counter_family = catalog.BY_NAME["efa_rx_bytes"].prometheus_name[:-len("_total")]  # as the parser names it
    rx = {s.labels["aws_efa_device"]: s.value for s in families[counter_family].samples}
    assert rx[device.name] == port.counters["rx_bytes"]
    rate = {s.labels["aws_efa_device"]: s.value
            for s in families[catalog.BY_NAME["efa_rx_throughput"].prometheus_name].samples}
    assert rate[device.name] == port.rates["rx_bytes"] > 0


def _get(url: str, **headers):
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


def test_endpoint_serves_one_render_per_snapshot_gzip_when_asked_and_404_elsewhere(make_simulator):
    node = RichNode(make_simulator(PROFILE))
    provider = MeterProvider(resource=RESOURCE)
    exporter = PrometheusExporter(ExporterContext(Config(prometheus=PrometheusConfig("127.0.0.1:0")), RESOURCE))
    try:
        node.instrument(provider)
        exporter.start()
        assert [f.name for f in text_string_to_metric_families(exporter.page(False).decode())] == ["target_info"]
        node.collect()
        exporter.export(node.interval)
        assert exporter.port != 0  # the real port when 0 was asked for
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        status, headers, first = _get(url)
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE
        _, headers, zipped = _get(url, **{"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped) == first
        assert exporter.page(False) is exporter.page(False)  # cached: no new render without a new Interval
        before = exporter.page(False)
        snapshot = node.collect()
        exporter.export(node.interval)
        _, _, second = _get(url)
        assert second != first and exporter.page(False) is not before
        collections = {f.name: f for f in text_string_to_metric_families(second.decode())}["otel_efa_collections"]
        assert collections.samples[0].value == snapshot.collections
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(f"http://127.0.0.1:{exporter.port}/elsewhere")
        assert missing.value.code == 404
    finally:
        exporter.shutdown(1.0)
        provider.shutdown()
        node.close()


def test_hostile_names_give_a_valid_page_with_unique_names(tmp_path, caplog):
    """Counter files whose names collide once sanitized (``rx-dropped`` and the catalog's efa_rx_dropped,
    ``a.b`` and ``a_b``, ``port_up`` and the gauge efa_port_up), devices with quotes, newlines and bytes
    that are not UTF-8, resource attributes that give one label: the page parses, every name is unique,
    each rename is logged once, and a name once given stays."""
    from hostile_names import PORT_COUNTERS, hostile_node
    from opentelemetry.sdk.resources import Resource

    from otel_efa.names import escape
    from otel_efa.node.sysfs import SysfsReader
    from otel_efa.pipeline.collector import Collector
    from otel_efa.pipeline.instruments import EfaInstrumentor

    sim, devices = hostile_node(str(tmp_path))
    collector = Collector(SysfsReader(sim.root), "p4d.24xlarge")
    instrumentor = EfaInstrumentor()
    provider = MeterProvider()
    caplog.set_level(logging.WARNING, logger="otel_efa")
    try:
        instrumentor.instrument(provider)
        interval = instrumentor.interval(collector.collect())
        resource = Resource({"host.id": "i-1", "host_id": "other", "__name__": "x", "_name_": "y", "1up": "z"})
        renderer = PrometheusRenderer(resource.attributes, "otel_efa", __version__)
        page = renderer.render(interval).decode("utf-8")
        families = list(text_string_to_metric_families(page))
        names = [f.name for f in families]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
        target = next(f for f in families if f.name == "target_info").samples[0].labels
        assert target == {"host_id": "i-1;other", "_name_": "x;y", "_up": "z"}
        samples = {(s.name, s.labels.get("aws_efa_device")): s.value for f in families for s in f.samples}
        for device in devices:
            assert samples[("efa_rx_dropped_total", escape(device))] == sim.value(devices[device], "rx_drops")
            assert samples[("efa_new_counter_x_total", escape(device))] == PORT_COUNTERS[b"new-counter.x"]
            assert samples[("efa_a_b_total", escape(device))] == PORT_COUNTERS[b"a_b"]  # already a Prometheus name
            values = {v for (n, d), v in samples.items() if d == escape(device)}
            assert set(PORT_COUNTERS.values()) <= values
        renamed = [r.getMessage() for r in caplog.records if "on the Prometheus page" in r.getMessage()]
        assert any(m.startswith("efa_rx-dropped is efa_rx_dropped_") for m in renamed), renamed
        assert any(m.startswith("efa_a.b is efa_a_b_") for m in renamed), renamed
        assert any("target_info" in r.getMessage() and "host.id, host_id" in r.getMessage() for r in caplog.records)
        # a later counter takes no name already given, and the page is rendered without new warnings
        count = len(caplog.records)
        assert renderer.render(instrumentor.interval(interval.snapshot)).decode("utf-8") == page
        assert len(caplog.records) == count
    finally:
        provider.shutdown()
        collector.reader.close()
        sim.close()


def test_the_template_follows_every_change_of_series_and_values():
    """One renderer through intervals that change (kept templates, metrics formatted anew, NaN and ±Inf, an int
    where a float was): every page equals a new renderer's, and parses to the frame's labels and values."""
    import math
    import re

    from changing_intervals import intervals_with_changing_series

    from otel_efa.names import prometheus_label_name

    renderer = PrometheusRenderer(RESOURCE.attributes, "otel_efa", __version__)
    for frame in intervals_with_changing_series():
        page = renderer.render(frame)
        assert page == PrometheusRenderer(RESOURCE.attributes, "otel_efa", __version__).render(frame)
        values = [line.rsplit(" ", 1)[1] for line in page.decode().splitlines() if not line.startswith("#")]
        assert all(re.fullmatch(r"-?\d+(\.\d+)?(e[-+]\d+)?|NaN|[+-]Inf", v) for v in values), values
        got = sorted((s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v and k not in SCOPE_LABELS)),
                      repr(s.value))
                     for f in text_string_to_metric_families(page.decode()) if f.name != "target_info"
                     for s in f.samples)
        expected = sorted((spec.prometheus_name, tuple(sorted((prometheus_label_name(k), v)
                                                              for k, v in attributes.items())),
                           repr(float(value) if math.isnan(value) else value))
                          for spec, points in frame.metrics for attributes, value in points)
        assert got == expected, frame.snapshot.collections
