"""The one OTLP settings resolver: precedence (key, then OTEL_EXPORTER_OTLP_METRICS_*, then
OTEL_EXPORTER_OTLP_*, then the default), the specification's URL and unit rules, and bad values as one line
naming their source (exit status 2 from the command). Pure: no collector, no network."""
import os
import subprocess
import sys

import pytest
from tls_certs import make_pki

from otel_efa.config import ConfigError, OtlpConfig
from otel_efa.otlp_settings import default_endpoint, receiver_endpoint, resolve_settings

GENERAL = "OTEL_EXPORTER_OTLP_"
METRICS = "OTEL_EXPORTER_OTLP_METRICS_"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("other-pki"), "another CA")


def test_defaults_are_the_collector_on_this_node_and_one_place_says_so():
    grpc = resolve_settings(OtlpConfig(), {})
    http = resolve_settings(OtlpConfig(protocol="http/protobuf"), {})
    assert (grpc.endpoint, grpc.protocol, grpc.insecure, grpc.timeout, grpc.compression, grpc.headers) == \
        ("http://127.0.0.1:4317", "grpc", True, 10.0, "none", ())
    assert (http.endpoint, http.insecure) == ("http://127.0.0.1:4318/v1/metrics", True)
    assert (grpc.endpoint, http.endpoint) == (default_endpoint("grpc"), default_endpoint("http/protobuf"))
    assert receiver_endpoint(grpc) == ("127.0.0.1", 4317)
    assert receiver_endpoint(http) == ("127.0.0.1", 4318)
    assert (grpc.certificate, grpc.client_key, grpc.client_certificate, grpc.notes) == (None, None, None, ())


@pytest.mark.parametrize("name, key, key_value, metrics_value, general_value, field, expected", [
    ("PROTOCOL", "protocol", "grpc", "http/protobuf", "grpc", "protocol", ("grpc", "http/protobuf", "grpc")),
    ("HEADERS", "headers", "k=key", "k=metrics", "k=general", "headers",
     ((("k", "key"),), (("k", "metrics"),), (("k", "general"),))),
    ("COMPRESSION", "compression", "none", "gzip", "none", "compression", ("none", "gzip", "none")),
    ("TIMEOUT", "timeout", 2.5, "3000", "7000", "timeout", (2.5, 3.0, 7.0)),
    ("ENDPOINT", "endpoint", "http://key:1", "http://metrics:2", "http://general:3", "endpoint",
     ("http://key:1", "http://metrics:2", "http://general:3")),
])
def test_each_setting_takes_the_key_then_the_metrics_variable_then_the_general_one(
        name, key, key_value, metrics_value, general_value, field, expected):
    both = {METRICS + name: metrics_value, GENERAL + name: general_value}
    assert getattr(resolve_settings(OtlpConfig(**{key: key_value}), both), field) == expected[0]
    assert getattr(resolve_settings(OtlpConfig(), both), field) == expected[1]
    assert getattr(resolve_settings(OtlpConfig(), {GENERAL + name: general_value}), field) == expected[2]


def test_tls_files_take_the_key_then_the_metrics_variable_then_the_general_one(pki, other_pki):
    for name, key, mine, theirs in (("CERTIFICATE", "certificate", pki.ca, other_pki.ca),
                                    ("CLIENT_KEY", "client_key", pki.client_key, other_pki.client_key),
                                    ("CLIENT_CERTIFICATE", "client_certificate", pki.client_cert,
                                     other_pki.client_cert)):
        # a client key and certificate only come in pairs: the other half from the same source each time
        pair = {"CLIENT_KEY": ("CLIENT_CERTIFICATE", pki.client_cert, other_pki.client_cert),
                "CLIENT_CERTIFICATE": ("CLIENT_KEY", pki.client_key, other_pki.client_key)}.get(name)
        environ = {METRICS + name: str(mine), GENERAL + name: str(theirs)}
        if pair:
            environ.update({METRICS + pair[0]: str(pair[1]), GENERAL + pair[0]: str(pair[2])})
        assert getattr(resolve_settings(OtlpConfig(), environ), key) == str(mine)
        general_only = {k: v for k, v in environ.items() if k.startswith(GENERAL) and not k.startswith(METRICS)}
        assert getattr(resolve_settings(OtlpConfig(), general_only), key) == str(theirs)
        keyed = {key: str(theirs)}
        if pair:
            keyed[pair[0].lower()] = str(pair[2])
        assert getattr(resolve_settings(OtlpConfig(**keyed), environ), key) == str(theirs)


def test_http_endpoint_rules_of_the_specification():
    http = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    # the general variable is a base URL: the signal path is appended, after any path it has
    assert resolve_settings(OtlpConfig(), {**http, GENERAL + "ENDPOINT": "http://c:4318"}).endpoint == \
        "http://c:4318/v1/metrics"
    assert resolve_settings(OtlpConfig(), {**http, GENERAL + "ENDPOINT": "https://gw/otlp/"}).endpoint == \
        "https://gw/otlp/v1/metrics"
    # the signal-specific one is used as is, even without a path
    assert resolve_settings(OtlpConfig(), {**http, METRICS + "ENDPOINT": "http://c:4318"}).endpoint == \
        "http://c:4318"
    assert resolve_settings(OtlpConfig(), {**http, METRICS + "ENDPOINT": "http://c/custom"}).endpoint == \
        "http://c/custom"
    # our key: /v1/metrics only when it has no path (as documented since the key existed)
    assert resolve_settings(OtlpConfig(endpoint="http://c:4318"), http).endpoint == "http://c:4318/v1/metrics"
    assert resolve_settings(OtlpConfig(endpoint="http://c:4318/x"), http).endpoint == "http://c:4318/x"
    # gRPC never gets a path added
    assert resolve_settings(OtlpConfig(), {GENERAL + "ENDPOINT": "http://c:4317"}).endpoint == "http://c:4317"


def test_timeout_variables_are_milliseconds_and_the_key_seconds():
    assert resolve_settings(OtlpConfig(), {GENERAL + "TIMEOUT": "2500"}).timeout == 2.5
    assert resolve_settings(OtlpConfig(timeout=4), {GENERAL + "TIMEOUT": "2500"}).timeout == 4.0
    seconds_like = resolve_settings(OtlpConfig(), {METRICS + "TIMEOUT": "10"})
    assert seconds_like.timeout == 0.01  # what the specification says 10 means
    assert len(seconds_like.notes) == 1 and METRICS + "TIMEOUT=10" in seconds_like.notes[0]
    assert "10000" in seconds_like.notes[0]


def test_tls_comes_from_the_scheme_and_insecure_applies_to_a_grpc_endpoint_without_one():
    def resolved(config=None, **environ):
        settings = resolve_settings(config or OtlpConfig(), {GENERAL + k: v for k, v in environ.items()})
        return settings.endpoint, settings.insecure

    assert resolved(ENDPOINT="collector:4317") == ("https://collector:4317", False)  # the spec's default
    assert resolved(ENDPOINT="collector:4317", INSECURE="true") == ("http://collector:4317", True)
    assert resolved(ENDPOINT="collector:4317", INSECURE="FALSE") == ("https://collector:4317", False)
    assert resolved(ENDPOINT="https://collector:4317", INSECURE="true") == ("https://collector:4317", False)
    assert resolved(ENDPOINT="http://collector:4317", INSECURE="false") == ("http://collector:4317", True)
    assert resolved(OtlpConfig(insecure=True), ENDPOINT="https://c:4317") == ("https://c:4317", True)
    assert resolved(PROTOCOL="http/protobuf", ENDPOINT="https://c:4318") == ("https://c:4318/v1/metrics", False)


def test_tls_files_on_a_plaintext_endpoint_are_a_warning(pki):
    settings = resolve_settings(OtlpConfig(), {GENERAL + "CERTIFICATE": str(pki.ca)})
    assert settings.insecure and settings.certificate == str(pki.ca)
    assert len(settings.notes) == 1 and "https://" in settings.notes[0]


def test_headers_are_percent_decoded_as_the_specification_says():
    settings = resolve_settings(OtlpConfig(), {GENERAL + "HEADERS": "authorization=Bearer%20abc, x-team = efa "})
    assert dict(settings.headers) == {"authorization": "Bearer abc", "x-team": "efa"}


def _bad_cases(pki, other_pki, tmp_path):
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello\n")
    return [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ({METRICS + "COMPRESSION": "brotli"}, METRICS + "COMPRESSION", "brotli"),
        ({GENERAL + "TIMEOUT": "soon"}, GENERAL + "TIMEOUT", "milliseconds"),
        ({GENERAL + "TIMEOUT": "0"}, GENERAL + "TIMEOUT", "positive"),
        ({GENERAL + "TIMEOUT": "-5"}, GENERAL + "TIMEOUT", "positive"),
        ({GENERAL + "HEADERS": "novalue"}, GENERAL + "HEADERS", "key=value"),
        ({METRICS + "HEADERS": "=x"}, METRICS + "HEADERS", "key=value"),
        ({GENERAL + "INSECURE": "maybe"}, GENERAL + "INSECURE", "true or false"),
        ({GENERAL + "ENDPOINT": "ftp://c:4317"}, GENERAL + "ENDPOINT", "http://"),
        ({GENERAL + "ENDPOINT": "http://c:99999"}, GENERAL + "ENDPOINT", "port"),
        ({GENERAL + "PROTOCOL": "http/protobuf", GENERAL + "ENDPOINT": "c:4318"}, GENERAL + "ENDPOINT", "URL"),
        ({GENERAL + "CERTIFICATE": str(tmp_path / "absent.pem")}, GENERAL + "CERTIFICATE", "absent.pem"),
        ({METRICS + "CERTIFICATE": str(not_pem)}, METRICS + "CERTIFICATE", "no PEM certificate"),
        ({GENERAL + "CLIENT_KEY": str(pki.client_key)}, GENERAL + "CLIENT_KEY", "CLIENT_CERTIFICATE"),
        ({GENERAL + "CLIENT_CERTIFICATE": str(pki.client_cert)}, GENERAL + "CLIENT_CERTIFICATE", "CLIENT_KEY"),
        ({GENERAL + "CLIENT_KEY": str(other_pki.client_key), GENERAL + "CLIENT_CERTIFICATE": str(pki.client_cert)},
         GENERAL + "CLIENT_CERTIFICATE", "private key"),
        ({GENERAL + "CLIENT_KEY": str(tmp_path / "gone.key"), GENERAL + "CLIENT_CERTIFICATE": str(pki.client_cert)},
         GENERAL + "CLIENT_KEY", "gone.key"),
    ]


def test_a_bad_variable_is_a_config_error_naming_it(pki, other_pki, tmp_path):
    for environ, source, words in _bad_cases(pki, other_pki, tmp_path):
        with pytest.raises(ConfigError) as raised:
            resolve_settings(OtlpConfig(), environ)
        assert raised.value.key == source, environ
        assert words in str(raised.value) and "\n" not in str(raised.value), (environ, str(raised.value))


def test_a_key_wins_over_a_bad_variable_and_a_bad_key_is_named(pki, tmp_path):
    assert resolve_settings(OtlpConfig(timeout=3), {GENERAL + "TIMEOUT": "soon"}).timeout == 3.0
    with pytest.raises(ConfigError) as raised:
        resolve_settings(OtlpConfig(certificate=str(tmp_path / "absent.pem")), {GENERAL + "CERTIFICATE": str(pki.ca)})
    assert raised.value.key == "otlp.certificate"


@pytest.mark.parametrize("variable, value, words", [
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "cannot read /nonexistent/ca.pem"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "authorization", "expected key=value"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "10s", "expected milliseconds"),
    ("OTEL_EFA_OTLP_CLIENT_KEY", "/nonexistent/client.key", "otlp.client_key"),
])
def test_the_agent_refuses_a_bad_value_in_one_line_with_exit_status_2(variable, value, words, make_simulator):
    simulator = make_simulator("p4d.24xlarge")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({variable: value, "AWS_EC2_METADATA_DISABLED": "true"})
    done = subprocess.run([sys.executable, "-m", "otel_efa", "run", "--sysfs", simulator.root, "--exporters", "otlp",
                           "--count", "1", "--interval", "0.1"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    if variable.startswith("OTEL_EXPORTER"):
        assert variable in done.stderr


@pytest.mark.parametrize("otlp, environ", [
    (OtlpConfig(), {}),
    (OtlpConfig(protocol="http/protobuf"), {}),
    (OtlpConfig(), {GENERAL + "PROTOCOL": "http/protobuf"}),
    (OtlpConfig(), {GENERAL + "ENDPOINT": "http://collector.internal:5317"}),
    (OtlpConfig(protocol="http/protobuf"), {GENERAL + "ENDPOINT": "https://10.0.0.7"}),
    (OtlpConfig(), {METRICS + "ENDPOINT": "collector:4317", GENERAL + "INSECURE": "true"}),
    (OtlpConfig(endpoint="http://127.0.0.2:4319"), {METRICS + "ENDPOINT": "http://elsewhere:1"}),
])
def test_the_exporter_the_doctor_and_the_collector_config_agree_on_the_endpoint(otlp, environ, monkeypatch):
    """One resolver, three users: the address the exporter sends to is the one the doctor probes, and with
    nothing set (what the node's generated collector configs are for) the one the collector listens on."""
    from urllib.parse import urlsplit

    from opentelemetry.sdk.resources import Resource

    from otel_efa.artifacts import collector_config
    from otel_efa.config import Config
    from otel_efa.exporters import ExporterContext
    from otel_efa.exporters.otlp import OtlpExporter
    from otel_efa.tools import doctor

    for name in [n for n in os.environ if n.startswith("OTEL_EXPORTER_OTLP")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config = Config(otlp=otlp)
    exporter = OtlpExporter(ExporterContext(config, Resource.create({})))  # made, not started: no connection
    url = urlsplit(exporter.settings.endpoint)
    sends_to = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    assert doctor.otlp_endpoint(config, dict(os.environ)) == sends_to
    if not environ and otlp.endpoint is None:
        receivers = collector_config.adot_config("cloudwatch")["receivers"]["otlp"]["protocols"]
        listens_on = receivers["grpc" if exporter.settings.protocol == "grpc" else "http"]["endpoint"]
        assert listens_on == f"{sends_to[0]}:{sends_to[1]}"
        assert exporter.settings.endpoint == default_endpoint(exporter.settings.protocol)
