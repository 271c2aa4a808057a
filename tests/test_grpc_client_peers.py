"""The fast path's gRPC client (otel_efa/exporters/grpc_client.py) against peers that are no gRPC server:
raw socket servers (tests/otlp_receiver.py's MisbehavingReceiver: garbage, an HTTP/1.1 reply, a peer that
never answers), http.server, a closed port, the real collector's OTLP/HTTP receiver (HTTP/2, no gRPC), and
the agent itself running with no grpcio loaded. Every failure is one ExportFailed line naming a gRPC
status, within the timeout.
"""
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List

import pytest
from agent_process import AgentProcess, agent_environment
from collector_process import CollectorProcess, versions
from netns import isolated_network
from otlp_receiver import GrpcReceiver, MisbehavingReceiver, points
from test_grpc_client import Request, request_of_size, send_or_fail, sender
from tls_certs import make_pki
from waiting import wait_until

from otel_efa.exporters.otlp_transport import ExportFailed


@pytest.fixture
def receiver():
    r = GrpcReceiver()
    yield r
    r.stop()


@pytest.mark.parametrize("mode", ["raw", "endless"])
def test_a_peer_speaking_no_http2_is_one_line_at_once(mode):
    """Non-HTTP bytes, or an HTTP/1.1 reply with an endless body (MisbehavingReceiver): UNAVAILABLE, long
    before the 10 s timeout, the garbage not echoed whole."""
    peer = MisbehavingReceiver(mode)
    grpc_sender = sender(f"http://127.0.0.1:{peer.port}", timeout=10)
    started = time.monotonic()
    try:
        with pytest.raises(ExportFailed) as raised:
            grpc_sender.send(Request().SerializeToString())
    finally:
        grpc_sender.close()
        peer.close()
    took = time.monotonic() - started
    line = str(raised.value)
    assert line.startswith("UNAVAILABLE: ") and len(line) < 300 and "\n" not in line, line
    assert ("answered HTTP/1.1, not HTTP/2" in line) if mode == "endless" else ("does not speak HTTP/2" in line)
    assert took < 5, took


def test_python_http_server_is_one_line():
    """http.server, asked for HTTP/2.0 (the client's preface), answers an HTML error page: no HTTP/2."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    grpc_sender = sender(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        with pytest.raises(ExportFailed) as raised:
            grpc_sender.send(Request().SerializeToString())
    finally:
        grpc_sender.close()
        server.shutdown()
        server.server_close()
    line = str(raised.value)
    assert line.startswith("UNAVAILABLE: ") and "does not speak HTTP/2" in line and "\n" not in line, line


def test_a_hung_peer_is_a_deadline_and_close_cancels_a_call_under_way():
    peer = MisbehavingReceiver("hang")
    try:
        grpc_sender = sender(f"http://127.0.0.1:{peer.port}", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ExportFailed) as raised:
            grpc_sender.send(request_of_size(200 * 1024).SerializeToString())  # past the windows, too
        assert time.monotonic() - started < 3
        assert str(raised.value).startswith("DEADLINE_EXCEEDED: "), raised.value

        grpc_sender = sender(f"http://127.0.0.1:{peer.port}", timeout=30)
        outcome: List[object] = []
        thread = threading.Thread(target=lambda: outcome.append(send_or_fail(grpc_sender)))
        accepted = len(peer.accepted)
        thread.start()
        wait_until(lambda: len(peer.accepted) > accepted, 10, "the connection")
        started = time.monotonic()
        grpc_sender.close()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 2
        assert str(outcome[0]).startswith("CANCELLED: "), outcome
    finally:
        peer.close()


def test_refused_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ExportFailed) as raised:
        sender(f"http://127.0.0.1:{port}").send(b"")
    assert str(raised.value).startswith("UNAVAILABLE: failed to connect to 127.0.0.1:"), raised.value


def test_the_agent_exports_over_grpc_without_loading_grpcio(make_simulator, receiver, tmp_path):
    """``otel-efa run --exporters prometheus,otlp`` (gRPC, the default): the exports arrive, and grpcio's
    C core (cygrpc) is not among the process's mapped files."""
    simulator = make_simulator("p4d.24xlarge")
    env = dict(agent_environment(), OTEL_EFA_OTLP_ENDPOINT=receiver.endpoint)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = AgentProcess(["--sysfs", simulator.root, "--instance-type", "p4d.24xlarge", "--interval", "0.3",
                          "--exporters", "prometheus,otlp", "--prometheus-address", f"127.0.0.1:{port}"], env,
                         tmp_path / "agent.stderr")
    try:
        agent.expect(lambda: len(receiver.requests) >= 3, "three exports")
        with open(f"/proc/{agent.process.pid}/maps") as f:
            maps = f.read()
        code, _ = agent.stop()
    finally:
        if agent.alive():
            agent.process.kill()
            agent.process.wait(10)
    assert code == 0, agent.log()
    grpcio = [line for line in maps.splitlines() if "cygrpc" in line or "/grpc/" in line]  # its package directory
    assert not grpcio, grpcio
    assert "libpython" in maps or "python" in maps  # the maps were read, not an empty file
    assert any(p.name == "efa_rx_bytes" for p in points(receiver.requests[-1][1]))
    assert "Traceback" not in agent.log()


@pytest.mark.collector
@pytest.mark.parametrize("version", versions())
def test_an_http2_server_that_serves_no_grpc_is_its_http_status(version, tmp_path):
    """The real collector's OTLP/HTTP receiver over TLS speaks HTTP/2 (Go's server agrees to h2 in ALPN) but
    serves no gRPC: the endpoint set to its port, the export fails with the HTTP status it answered, in one
    line (in a network namespace of its own, so 4318 is the test's)."""
    pki = make_pki(tmp_path / "pki")
    tls = {"tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}}
    config = {"extensions": {"health_check": {"endpoint": "127.0.0.1:13133"}},
              "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318", **tls}}}},
              "exporters": {"debug": {}},
              "service": {"extensions": ["health_check"],
                          "pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["debug"]}}}}
    with isolated_network():
        collector = CollectorProcess(config, version)
        try:
            with pytest.raises(ExportFailed) as raised:
                sender("https://127.0.0.1:4318", certificate=str(pki.ca)).send(Request().SerializeToString())
        finally:
            collector.stop()
    line = str(raised.value)
    assert line.startswith("UNIMPLEMENTED: HTTP status 404") and "\n" not in line, line  # gRPC's mapping of 404
