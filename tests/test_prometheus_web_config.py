"""TLS and basic auth on :9464 from an exporter-toolkit web config file (node_exporter's --web.config.file).

The agent runs as a process with a throwaway CA's certificate and a bcrypt hash in htpasswd's $2y$ form;
clients are the standard library's HTTPS client and a real Prometheus with the matching scrape config.
A bad file is one line naming prometheus.web_config_file, and exit status 2.
"""
import base64
import http.client
import json
import ssl
import subprocess
import sys

import bcrypt
import pytest
from agent_process import AgentProcess, agent_environment
from conftest import free_port
from prometheus_server import PrometheusServer
from raw_http import EofWatch, connect, wait_for_eof
from tls_certs import make_pki
from waiting import wait_until

from otel_efa.config import ConfigError
from otel_efa.exporters import web_config

PASSWORD = "scrape-me"


def htpasswd_hash(password: str, cost: int = 5) -> str:
    """What `htpasswd -nBC 5 ""` prints: bcrypt in its $2y$ spelling."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode().replace("$2b$", "$2y$", 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(pki, tmp_path_factory):
    """The agent behind TLS and basic auth (relative paths: they are the web config file's directory's)."""
    work = pki.ca.parent
    config = work / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert.name}\n  key_file: {pki.server_key.name}\n"
                      f"  min_version: TLS12\n"
                      f"http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
                      f"basic_auth_users:\n  prometheus: '{htpasswd_hash(PASSWORD)}'\n")
    port = free_port()
    process = AgentProcess(["--simulate", "p4d.24xlarge", "--interval", "1", "--exporters", "prometheus",
                            "--prometheus-address", f"127.0.0.1:{port}", "--web-config-file", str(config)],
                           agent_environment(), tmp_path_factory.mktemp("agent") / "stderr")
    process.port = port
    process.context = ssl.create_default_context(cafile=str(pki.ca))
    # Serving, and past the first collection: before it the page has target_info only.
    process.expect(lambda: b"efa_rx_bytes" in (_get(process, auth=("prometheus", PASSWORD))[2] or b""),
                   "the TLS endpoint with the first collection's series")
    # A client that connects and never starts its handshake: it waits out the server's read timeout
    # while the module's other tests run (test_idle_tls_handshake_is_dropped reads the verdict).
    process.idle_handshake = EofWatch(connect(port), 15)
    yield process
    assert "Traceback" not in process.log(), process.log()
    code, _ = process.stop()
    assert code == 0


def _get(agent, auth=None, method="GET"):
    try:
        connection = http.client.HTTPSConnection("127.0.0.1", agent.port, timeout=10, context=agent.context)
        headers = {}
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        connection.request(method, "/metrics", headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    except OSError:
        return None, None, None


def test_right_password_is_200_over_tls(secured):
    status, headers, body = _get(secured, auth=("prometheus", PASSWORD))
    assert status == 200 and b"efa_rx_bytes" in body
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("auth", [None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "")],
                         ids=["none", "wrong-password", "unknown-user", "empty-password"])
def test_no_or_wrong_credentials_are_401_with_www_authenticate(secured, auth):
    status, headers, body = _get(secured, auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert b"efa_" not in body


def test_head_needs_the_password_too(secured):
    assert _get(secured, method="HEAD")[0] == 401
    assert _get(secured, auth=("prometheus", PASSWORD), method="HEAD")[0] == 200


def test_plain_http_to_the_tls_port_is_closed_and_harmless(secured):
    with connect(secured.port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, _ = wait_for_eof(sock, 15)
    assert closed
    assert _get(secured, auth=("prometheus", PASSWORD))[0] == 200


def test_prometheus_scrapes_the_tls_basic_auth_endpoint(secured, pki):
    target = f"127.0.0.1:{secured.port}"
    prometheus = PrometheusServer([
        {"job_name": "secured", "scheme": "https", "scrape_interval": "1s", "static_configs": [{"targets": [target]}],
         "tls_config": {"ca_file": str(pki.ca)}, "basic_auth": {"username": "prometheus", "password": PASSWORD}},
        {"job_name": "wrong", "scheme": "https", "scrape_interval": "1s", "static_configs": [{"targets": [target]}],
         "tls_config": {"insecure_skip_verify": True}, "basic_auth": {"username": "prometheus", "password": "x"}},
    ], free_port())
    try:
        prometheus.wait_for('up{job="secured"} == 1')
        prometheus.wait_for('efa_rx_bytes_total{job="secured"}')
        prometheus.wait_for('up{job="wrong"} == 0')
        up = prometheus.values("up", "job")
        assert up == {"secured": 1.0, "wrong": 0.0}
    finally:
        prometheus.stop()


def test_basic_auth_without_tls_works_and_warns(tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(json.dumps({"basic_auth_users": {"alice": htpasswd_hash("pw")}}))
    port = free_port()
    process = AgentProcess(["--simulate", "p4d.24xlarge", "--interval", "1", "--exporters", "prometheus",
                            "--prometheus-address", f"127.0.0.1:{port}", "--web-config-file", str(config)],
                           agent_environment(), tmp_path / "stderr")

    def status(auth):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Authorization": "Basic " + base64.b64encode(auth).decode()} if auth else {}
            connection.request("GET", "/metrics", headers=headers)
            return connection.getresponse().status
        except OSError:
            return None

    try:
        process.expect(lambda: status(b"alice:pw") == 200, "the endpoint with basic auth")
        assert status(None) == 401 and status(b"alice:nope") == 401
        assert process.lines("WARNING", "basic auth without TLS")
    finally:
        process.stop()


def test_the_web_config_file_is_also_a_config_key(tmp_path, pki):
    from otel_efa import config as config_module

    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n")
    loaded = config_module.load(None, environ={"OTEL_EFA_PROMETHEUS_WEB_CONFIG_FILE": str(web)})
    assert loaded.prometheus.web_config_file == str(web)
    assert web_config.load(str(web)).ssl_context is not None


# --- bad files: one line naming the key, exit 2 -------------------------------------------------------

def _bad_cases(pki):
    cert, key, ca = pki.server_cert, pki.server_key, pki.ca
    good_tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    return {
        "not YAML": ("tls_server_config: [\n", "not valid YAML"),
        "a list": ("- a\n- b\n", "mapping"),
        "unknown key": ("tls_config:\n  cert_file: x\n", "unknown key 'tls_config'"),
        "unknown TLS key": (good_tls + "  certfile: x\n", "tls_server_config.certfile"),
        "missing cert": (f"tls_server_config:\n  key_file: {key}\n", "missing one of cert or cert_file"),
        "missing key": (f"tls_server_config:\n  cert_file: {cert}\n", "missing one of key or key_file"),
        "cert not there": (f"tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: {key}\n", "cert_file"),
        "key is not a key": (f"tls_server_config:\n  cert_file: {cert}\n  key_file: {ca}\n", "do not load as a pair"),
        "bad min_version": (good_tls + "  min_version: TLS14\n", "min_version"),
        "min above max": (good_tls + "  min_version: TLS13\n  max_version: TLS12\n", "above max_version"),
        "bad client auth": (good_tls + "  client_auth_type: Maybe\n", "client_auth_type"),
        "unverified client auth": (good_tls + "  client_auth_type: RequireAnyClientCert\n", "RequireAnyClientCert"),
        "verify without CA": (good_tls + "  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file"),
        "CA without auth type": (good_tls + f"  client_ca_file: {ca}\n", "client_auth_type"),
        "CA file is not a CA": (good_tls + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {key}\n",
                                "client_ca_file"),
        "cipher suites": (good_tls + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites is not supported"),
        "plain password": ("basic_auth_users:\n  alice: secret\n", "basic_auth_users.alice: not a bcrypt hash"),
        "users a list": ("basic_auth_users: [alice]\n", "basic_auth_users"),
        "bad header": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "X-Frame-Options"),
        "unknown header": ("http_server_config:\n  headers:\n    Server: me\n", "'Server' can not be configured"),
        "rate limit": ("rate_limit:\n  interval: 1s\n  burst: 1\n", "rate_limit is not supported"),
    }


def test_bad_files_are_a_config_error_naming_the_key(tmp_path, pki):
    for name, (text, expected) in _bad_cases(pki).items():
        path = tmp_path / "web.yml"
        path.write_text(text)
        with pytest.raises(ConfigError) as raised:
            web_config.load(str(path))
        message = str(raised.value)
        assert message.startswith("config error: prometheus.web_config_file: "), (name, message)
        assert expected in message and "\n" not in message, (name, message)


@pytest.mark.parametrize("text, expected", [
    (None, "cannot read it"),
    ("basic_auth_users:\n  alice: secret\n", "not a bcrypt hash"),
], ids=["missing-file", "plain-password"])
def test_bad_file_stops_the_agent_with_one_line_and_exit_2(tmp_path, text, expected):
    path = tmp_path / "web.yml"
    if text is not None:
        path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge", "--count", "1",
                             "--exporters", "prometheus", "--prometheus-address", f"127.0.0.1:{free_port()}",
                             "--log-level", "error", "--web-config-file", str(path)],
                            capture_output=True, text=True, env=agent_environment(), timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "prometheus.web_config_file" in result.stderr and expected in result.stderr


def test_mutual_tls_needs_a_client_certificate_from_the_ca(tmp_path, pki):
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
                   f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n")
    port = free_port()
    process = AgentProcess(["--simulate", "p4d.24xlarge", "--interval", "1", "--exporters", "prometheus",
                            "--prometheus-address", f"127.0.0.1:{port}", "--web-config-file", str(web)],
                           agent_environment(), tmp_path / "stderr")

    def status(with_client_cert: bool):
        context = ssl.create_default_context(cafile=str(pki.ca))
        if with_client_cert:
            context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        try:
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
            connection.request("GET", "/metrics")
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None

    try:
        process.expect(lambda: status(True) == 200, "the mutual-TLS endpoint")
        assert status(False) is None
        wait_until(lambda: status(True) == 200, what="the endpoint still serving")
        assert "Traceback" not in process.log()
    finally:
        process.stop()


# Last in the module: its client has been waiting out the read timeout since the agent started.
def test_idle_tls_handshake_is_dropped(secured):
    closed, got = secured.idle_handshake.result()
    assert closed and got == 0
