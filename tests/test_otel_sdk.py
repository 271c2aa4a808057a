"""``--exporters otel-sdk``: OTEL_METRICS_EXPORTER (otlp, prometheus, console, none, a bad value), Views,
temporality, the OTLP settings of the one resolver, the agent's own endpoint for the SDK's Prometheus reader,
and one SDK collect per pushed interval.

Peers are real: OTLP receivers (tests/otlp_receiver.py), the agent as a process, HTTP clients; the node is
the simulator (the stand-in for EFA hardware).
"""
import base64
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from typing import Any, Iterator, Mapping

import bcrypt
import pytest
from agent_process import AgentProcess, agent_environment
from conftest import free_port
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, View
from otlp_receiver import GrpcReceiver, HttpReceiver, points
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich_node import RESOURCE
from tls_certs import make_pki

from otel_efa import catalog
from otel_efa.config import Config, ConfigError, OtlpConfig, PrometheusConfig, SdkConfig, load
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.otel_sdk import OtelSdkExporter, SdkBridge
from otel_efa.exporters.sdk_readers import chosen_exporters
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.pipeline.interval import Interval

PROFILE = "p4d.24xlarge"
RX, TX = catalog.BY_NAME["efa_rx_bytes"], catalog.BY_NAME["efa_tx_bytes"]


# --- OTEL_METRICS_EXPORTER ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (None, ("otlp",)), ("", ("otlp",)), ("otlp", ("otlp",)),
    (" Prometheus , console,otlp", ("prometheus", "console", "otlp")),
    ("otlp,otlp", ("otlp",)), ("none", ()), ("NONE", ()),
])
def test_the_variable_names_the_readers_default_otlp(value, expected):
    environ = {} if value is None else {"OTEL_METRICS_EXPORTER": value}
    assert chosen_exporters(environ) == expected


@pytest.mark.parametrize("value, problem", [
    ("zipkin", "unknown exporter 'zipkin'"), ("otlp,logging", "unknown exporter 'logging'"),
    ("none,otlp", "none cannot be combined"),
])
def test_a_bad_value_is_a_config_error_naming_the_variable(value, problem):
    with pytest.raises(ConfigError) as error:
        chosen_exporters({"OTEL_METRICS_EXPORTER": value})
    assert error.value.key == "OTEL_METRICS_EXPORTER" and problem in str(error.value)


def test_a_bad_value_stops_the_agent_with_one_line_and_exit_2(tmp_path):
    env = dict(agent_environment(), OTEL_METRICS_EXPORTER="otlp,zipkin")
    process = AgentProcess(["--exporters", "otel-sdk", "--count", "1"], env, tmp_path / "stderr")
    assert process.process.wait(60) == 2
    assert process.log().splitlines() == [
        "otel-efa: config error: OTEL_METRICS_EXPORTER: unknown exporter 'zipkin'; choose from otlp, prometheus, "
        "console (a comma list), or none"]


@pytest.mark.parametrize("variable, value", [
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon"), ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "-5"), ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "weekly"),
])
def test_bad_sdk_variables_are_config_errors_naming_them(variable, value, monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        OtelSdkExporter(ExporterContext(Config(exporters=["otel-sdk"]), RESOURCE))
    assert error.value.key == variable and repr(value) in str(error.value)


def test_the_sdk_path_s_prometheus_and_the_fast_one_cannot_share_the_address(monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    with pytest.raises(ConfigError) as error:
        OtelSdkExporter(ExporterContext(Config(exporters=["prometheus", "otel-sdk"]), RESOURCE))
    assert error.value.key == "OTEL_METRICS_EXPORTER" and "prometheus.address" in str(error.value)


@pytest.mark.parametrize("key, value", [
    ("sdk.drop_metrics", "efa rx"), ("sdk.rename_metrics", "efa_rx_bytes"), ("sdk.rename_metrics", "efa_*=x"),
    ("sdk.rename_metrics", "a=b,a=c"), ("sdk.rename_metrics", "efa_rx_bytes=9lives"),
])
def test_bad_view_keys_are_config_errors(key, value):
    with pytest.raises(ConfigError) as error:
        load(environ={"OTEL_EFA_" + key.upper().replace(".", "_"): value}, config_file="/dev/null")
    assert error.value.key == key


# --- one node, one exporter, driven by hand ----------------------------------------------------------------
class Node:
    """A simulated node's collector and instruments: :meth:`collect` gives the Interval the agent hands its
    exporters."""

    def __init__(self, simulator):
        self.simulator = simulator
        self.collector = Collector(SysfsReader(simulator.root), PROFILE)
        self.instrumentor = EfaInstrumentor()
        self.provider = MeterProvider(resource=RESOURCE)
        self.instrumentor.instrument(self.provider)

    def collect(self) -> Interval:
        return self.instrumentor.interval(self.collector.collect())

    def close(self):
        self.provider.shutdown()
        self.collector.reader.close()


@pytest.fixture
def node(make_simulator) -> Iterator[Node]:
    made = Node(make_simulator(PROFILE))
    yield made
    made.close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """An http/protobuf receiver, stopped after the exporters (their last export arrives)."""
    made = HttpReceiver()
    yield made
    made.stop()


@pytest.fixture
def sdk_exporter(node, receiver):
    """sdk_exporter(config) -> a started OtelSdkExporter fed by ``node``; shut down afterwards."""
    made = []

    def make(config: Config) -> OtelSdkExporter:
        exporter = OtelSdkExporter(ExporterContext(config, RESOURCE))
        made.append(exporter)
        exporter.start()
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown(2.0)


def _sums(request, name: str):
    return {p.attributes: p.value for p in points(request) if p.name == name}


def _device_totals(simulator, counter: str):
    return {frozenset({("aws.efa.device", d), ("aws.efa.port", "1")}): simulator.value(d, counter)
            for d in simulator.device_names}


def test_views_from_the_config_drop_and_rename_metrics(node, receiver, sdk_exporter, monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    config = Config(exporters=["otel-sdk"], interval=3600.0,
                    otlp=OtlpConfig(endpoint=receiver.endpoint, protocol="http/protobuf"),
                    sdk=SdkConfig(drop_metrics=["efa_rx_bytes", "efa_*_pkts"],
                                  rename_metrics=["efa_tx_bytes=efa_sent_bytes"]))
    exporter = sdk_exporter(config)
    exporter.export(node.collect())
    assert exporter.bridge.force_flush()
    request = receiver.wait_for(1, timeout=10)[0]
    names = {p.name for p in points(request)}
    assert "efa_rx_bytes" not in names and not any(n.endswith("_pkts") for n in names)
    assert "efa_tx_bytes" not in names
    assert _sums(request, "efa_sent_bytes") == _device_totals(node.simulator, "tx_bytes")
    sent = next(p for p in points(request) if p.name == "efa_sent_bytes")
    assert (sent.unit, sent.kind, sent.monotonic) == (TX.unit, "sum", True)
    assert _sums(request, "efa_rdma_read_bytes")  # the others are there


def test_the_bridge_takes_views_from_an_embedding_program(node):
    reader = InMemoryMetricReader()
    bridge = SdkBridge(RESOURCE, [reader], views=[View(instrument_name="efa_rx_bytes", aggregation=DropAggregation())])
    try:
        bridge.observe(node.collect().metrics)
        data = reader.get_metrics_data()
    finally:
        bridge.shutdown(1000)
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "efa_tx_bytes" in names and "efa_rx_bytes" not in names


class _PushOnRead(Mapping[str, Any]):
    """Attributes whose first reading (as the first instrument's observation is made and consumed) pushes
    the next interval: the push lands in the middle of a collect."""

    def __init__(self, attributes, push):
        self._attributes, self._push = dict(attributes), push

    def __getitem__(self, key):
        return self._attributes[key]

    def __iter__(self):
        if self._push is not None:
            push, self._push = self._push, None
            push()
        return iter(self._attributes)

    def __len__(self):
        return len(self._attributes)


def test_one_collect_sees_one_interval_even_when_a_push_lands_during_it():
    reader = InMemoryMetricReader()
    bridge = SdkBridge(RESOURCE, [reader])
    device = {"aws.efa.device": "rdmap0", "aws.efa.port": "1"}

    def interval(value, push=None):
        attributes = _PushOnRead(device, push)
        return ((RX, ((attributes, value),)), (TX, ((dict(device), value),)))

    try:
        bridge.observe(interval(1))
        bridge.observe(interval(2, push=lambda: bridge.observe(interval(3))))
        first, second = reader.get_metrics_data(), reader.get_metrics_data()
    finally:
        bridge.shutdown(1000)

    def values(data):
        return {m.name: [p.value for p in m.data.data_points]
                for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    assert values(first) == {"efa_rx_bytes": [2], "efa_tx_bytes": [2]}  # interval 3 came mid-collect: not seen
    assert values(second) == {"efa_rx_bytes": [3], "efa_tx_bytes": [3]}


def test_a_series_gone_from_the_interval_is_gone_from_the_export():
    """As on the fast path (an Interval has only the points of its collection): a device that disappears, or a metric
    without points, is not exported with its last value."""
    reader = InMemoryMetricReader()
    bridge = SdkBridge(RESOURCE, [reader])
    up = catalog.BY_NAME["efa_port_up"]
    a, b = {"aws.efa.device": "a", "aws.efa.port": "1"}, {"aws.efa.device": "b", "aws.efa.port": "1"}

    def exported():
        data = reader.get_metrics_data()
        return {} if data is None else {
            m.name: {p.attributes["aws.efa.device"]: p.value for p in m.data.data_points}
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    try:
        bridge.observe(((RX, ((a, 1), (b, 2))), (up, ((a, 1), (b, 1)))))
        both = exported()
        bridge.observe(((RX, ((a, 5),)),))
        one = exported()
    finally:
        bridge.shutdown(1000)
    assert both == {"efa_rx_bytes": {"a": 1, "b": 2}, "efa_port_up": {"a": 1, "b": 1}}
    assert one == {"efa_rx_bytes": {"a": 5}}


def test_delta_preference_is_honoured_with_a_warning(node, receiver, sdk_exporter, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta")
    caplog.set_level(logging.WARNING, logger="otel_efa")
    config = Config(exporters=["otel-sdk"], interval=3600.0,
                    otlp=OtlpConfig(endpoint=receiver.endpoint, protocol="http/protobuf"))
    exporter = sdk_exporter(config)
    first = node.collect()
    exporter.export(first)
    assert exporter.bridge.force_flush()
    node.simulator.advance_by(1.0)
    exporter.export(node.collect())
    assert exporter.bridge.force_flush()
    requests = receiver.wait_for(2, timeout=10)
    delta = [p for p in points(requests[1]) if p.name == "efa_rx_bytes"]
    assert delta and {p.temporality for p in delta} == {1}  # AGGREGATION_TEMPORALITY_DELTA
    moved = _device_totals(node.simulator, "rx_bytes")
    before = _sums(requests[0], "efa_rx_bytes")
    assert {p.attributes: p.value for p in delta} == {k: moved[k] - before[k] for k in moved}
    gauges = [p for p in points(requests[1]) if p.name == "efa_port_up"]
    assert gauges and all(p.kind == "gauge" and p.value == 1 for p in gauges)
    warnings = [r.getMessage() for r in caplog.records if "TEMPORALITY_PREFERENCE" in r.getMessage()]
    assert len(warnings) == 1 and "delta sums" in warnings[0]


def test_otlp_settings_come_from_the_resolver_tls_headers_and_gzip(node, sdk_exporter, monkeypatch, tmp_path):
    """gRPC over TLS to a receiver whose certificate only the throwaway CA named by OTEL_EXPORTER_OTLP_CERTIFICATE
    verifies; headers from the variable; compression and endpoint from the otlp.* keys."""
    pki = make_pki(tmp_path)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "X-Team=efa%20net")
    receiver = GrpcReceiver(tls=(pki.server_key.read_bytes(), pki.server_cert.read_bytes()))
    config = Config(exporters=["otel-sdk"], interval=3600.0,
                    otlp=OtlpConfig(endpoint=receiver.endpoint, compression="gzip"))
    try:
        exporter = sdk_exporter(config)
        exporter.export(node.collect())
        assert exporter.bridge.force_flush()
        request = receiver.wait_for(1, timeout=10)[0]
        exporter.shutdown(2.0)  # (its last export) while the receiver is there
    finally:
        receiver.stop()
    assert receiver.endpoint.startswith("https://")
    assert receiver.headers[0]["x-team"] == "efa net"
    assert _sums(request, "efa_rx_bytes") == _device_totals(node.simulator, "rx_bytes")


def test_otel_metric_export_interval_sets_the_period(node, receiver, sdk_exporter, monkeypatch):
    """The agent's interval is an hour: only the variable's 100 ms can bring several exports."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    config = Config(exporters=["otel-sdk"], interval=3600.0,
                    otlp=OtlpConfig(endpoint=receiver.endpoint, protocol="http/protobuf"))
    exporter = sdk_exporter(config)
    exporter.export(node.collect())
    requests = receiver.wait_for(3, timeout=20)
    assert exporter.interval_millis == 100.0
    assert len(requests) >= 3 and all(_sums(r, "efa_rx_bytes") for r in requests)


def test_none_exports_nothing_and_otlp_does(node, receiver, sdk_exporter, monkeypatch, capsys):
    config = Config(exporters=["otel-sdk"], interval=3600.0,
                    otlp=OtlpConfig(endpoint=receiver.endpoint, protocol="http/protobuf"))
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    silent = sdk_exporter(config)
    assert silent.readers == [] and silent.prometheus is None
    interval = node.collect()
    silent.export(interval)
    assert silent.bridge.force_flush()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    speaking = sdk_exporter(config)
    speaking.export(interval)
    assert speaking.bridge.force_flush()
    requests = receiver.wait_for(1, timeout=10)
    assert len(requests) == 1  # the otlp one's: none sent nothing before it
    assert capsys.readouterr().out == ""


def _console_documents(text: str):
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def test_console_writes_the_counters_to_stdout(make_simulator, tmp_path):
    """A fixed tree (the simulator not running): every export carries its counters exactly."""
    import subprocess

    simulator = make_simulator(PROFILE)
    env = dict(agent_environment(), OTEL_METRICS_EXPORTER="console")
    result = subprocess.run([sys.executable, "-m", "otel_efa", "run", "--sysfs", simulator.root,
                             "--allow-untrusted-sysfs", "--instance-type", PROFILE, "--exporters", "otel-sdk",
                             "--interval", "0.2", "--count", "3"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    documents = _console_documents(result.stdout)
    assert documents
    for document in documents:
        resource_metrics = document["resource_metrics"][0]
        assert resource_metrics["resource"]["attributes"]["service.name"] == "otel-efa"
        scope = next(s for s in resource_metrics["scope_metrics"] if s["scope"]["name"] == "otel_efa")
        rx = next(m for m in scope["metrics"] if m["name"] == "efa_rx_bytes")
        assert rx["unit"] == RX.unit and rx["data"]["is_monotonic"]
        values = {p["attributes"]["aws.efa.device"]: p["value"] for p in rx["data"]["data_points"]}
        assert values == {d: simulator.value(d, "rx_bytes") for d in simulator.device_names}

# --- the SDK's Prometheus reader on the agent's endpoint -----------------------------------------------------
def _get(port: int, auth=None):
    headers = {"Authorization": "Basic " + base64.b64encode(auth).decode()} if auth else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), b""


def test_prometheus_reader_is_served_by_the_agent_s_endpoint_with_its_web_config(node, sdk_exporter, monkeypatch,
                                                                                  tmp_path, caplog):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)).decode()
    web.write_text(json.dumps({"basic_auth_users": {"alice": hashed},
                               "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}}}))
    caplog.set_level(logging.INFO, logger="otel_efa")
    exporter = sdk_exporter(Config(exporters=["otel-sdk"], prometheus=PrometheusConfig("127.0.0.1:0", str(web))))
    exporter.export(node.collect())
    port = exporter.prometheus.port
    assert _get(port)[0] == 401 and _get(port, b"alice:nope")[0] == 401
    status, headers, body = _get(port, b"alice:pw")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    rx = {s.labels["aws_efa_device"]: s.value for s in families["efa_rx_bytes"].samples if s.name.endswith("_total")}
    assert rx == {d: node.simulator.value(d, "rx_bytes") for d in node.simulator.device_names}
    node.simulator.advance_by(1.0)
    exporter.export(node.collect())
    later = {f.name: f for f in text_string_to_metric_families(_get(port, b"alice:pw")[2].decode())}
    moved = {s.labels["aws_efa_device"]: s.value for s in later["efa_rx_bytes"].samples if s.name.endswith("_total")}
    assert moved == {d: node.simulator.value(d, "rx_bytes") for d in node.simulator.device_names} != rx
    assert b"efa_rx_bytes" not in generate_latest(REGISTRY)  # a private registry, not prometheus_client's global one
    assert any("Prometheus (OTel SDK) endpoint on http://127.0.0.1" in r.getMessage() for r in caplog.records)


def test_the_sdk_endpoint_claims_its_port_at_construction(monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    first = OtelSdkExporter(ExporterContext(Config(exporters=["otel-sdk"], prometheus=PrometheusConfig("127.0.0.1:0")),
                                            RESOURCE))
    try:
        taken = f"127.0.0.1:{first.prometheus.port}"
        with pytest.raises(ConfigError) as error:
            OtelSdkExporter(ExporterContext(Config(exporters=["otel-sdk"], prometheus=PrometheusConfig(taken)),
                                            RESOURCE))
        assert error.value.key == "prometheus.address" and "in use" in str(error.value)
    finally:
        first.shutdown(1.0)


def test_the_agent_serves_the_sdk_page_and_exits_0_within_5_s_of_sigterm_with_the_collector_away(tmp_path):
    """Both readers in one agent process; the SDK's OTLP exporter retries against a closed port until
    shutdown, which still leaves the agent its 5 seconds."""
    port = free_port()
    env = dict(agent_environment(), OTEL_METRICS_EXPORTER="prometheus,otlp",
               OTEL_EFA_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    process = AgentProcess(["--simulate", PROFILE, "--exporters", "otel-sdk,log", "--interval", "0.2",
                            "--prometheus-address", f"127.0.0.1:{port}", "--log-file", str(tmp_path / "log")],
                           env, tmp_path / "stderr")
    try:
        process.expect(lambda: _scrape_ok(port), "efa_rx_bytes_total on the SDK page")
        process.expect(lambda: process.lines("UNAVAILABLE"), "a failed SDK export")
    finally:
        code, seconds = process.stop(signal.SIGTERM)
    assert code == 0 and seconds < 5, (code, seconds, process.log())
    assert "Traceback" not in process.log()
    print(f"stopped in {seconds:.2f} s")

def _scrape_ok(port: int) -> bool:
    try:
        return b"efa_rx_bytes_total{" in _get(port)[2]
    except OSError:  # not listening yet
        return False
