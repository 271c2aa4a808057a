"""Raw HTTP fuzzing of the Prometheus endpoint (issue 13, part 8): the agent as a process, requests made by
hypothesis from request lines, methods, header counts and sizes, bodies and framing, cut short anywhere.

Each example is sent over a socket that then shuts its write side, stays open (the server must drop it),
or resets: the server must answer or close within its read timeout plus the linger after a refusal (a
socket timeout here is a hang), a normal scrape must answer after every example (no crash, no stuck
loop), and the agent's log must hold no traceback.
"""
import http.client
import os
import socket
import struct

import pytest
from agent_process import AgentProcess
from conftest import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_http import EofWatch

HANG_S = 5.0 + 2.0 + 5.0  # read timeout + linger after a refusal + slack on a busy 2-core machine

TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                min_size=1, max_size=20)
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE",
                                     "get", "PRI"]), TOKEN, st.binary(max_size=12))
TARGETS = st.one_of(st.sampled_from(["/metrics", "/", "/metrics?x=1", "*", "http://h/metrics", "//", "/%00"]),
                    st.text(max_size=40).map(lambda t: "/" + t), st.binary(max_size=40),
                    st.integers(1, 40_000).map(lambda n: "/" + "a" * n))
VERSIONS = st.one_of(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", ""]),
                     st.binary(max_size=10))
HEADER_NAMES = st.one_of(st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Accept-Encoding",
                                          "Connection", "Authorization", "Expect", "Upgrade"]), TOKEN,
                         st.binary(min_size=0, max_size=20))
HEADER_VALUES = st.one_of(st.sampled_from(["0", "5", "-1", "99999999999999999999", "chunked", "gzip;q=0",
                                           "close", "keep-alive", "100-continue", "gzip, chunked", ""]),
                          st.text(max_size=60), st.binary(max_size=60),
                          st.integers(1, 70_000).map(lambda n: "v" * n))
BODIES = st.one_of(st.just(b""), st.binary(max_size=2048),
                   st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"ffffffffff\r\nx", b"0\r\n\r\n"]))


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


@st.composite
def raw_requests(draw) -> bytes:
    line = b" ".join(_bytes(draw(part)) for part in (METHODS, TARGETS, VERSIONS))
    line_end = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b""]))
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=draw(st.sampled_from([0, 3, 20, 120]))))
    head = line + line_end + b"".join(_bytes(n) + b": " + _bytes(v) + b"\r\n" for n, v in headers)
    raw = head + draw(st.sampled_from([b"\r\n", b"", b"\n"])) + draw(BODIES)
    if draw(st.booleans()):  # a second request behind it (pipelining), possibly itself cut short
        raw += b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    process = AgentProcess(["--simulate", "p4d.24xlarge", "--interval", "1", "--exporters", "prometheus",
                            "--prometheus-address", f"127.0.0.1:{port}"], env,
                           tmp_path_factory.mktemp("fuzz") / "stderr")
    process.port = port
    process.expect(lambda: _scrape(port) == 200, "the endpoint")
    yield process
    code, _ = process.stop()
    assert code == 0


def _scrape(port: int):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status
    except OSError:
        return None


# How the client ends: shut its write side (most), say nothing more (the server's read timeout), or reset.
ENDINGS = st.sampled_from(["shut"] * 8 + ["open", "reset"])


@pytest.fixture(scope="module")
def open_clients():
    """The clients that said nothing more ("open"): each waits for the server's read timeout on a thread of
    its own, side by side, instead of holding up the examples after it; at the end, every one must have been
    closed by the server within HANG_S of its last byte."""
    watches = []
    yield watches
    late = [raw[:200] for watch, raw in watches if not watch.result()[0]]
    assert not late, f"the endpoint neither answered nor closed within {HANG_S:g} s (open): {late}"


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(raw=raw_requests(), ending=ENDINGS)
def test_raw_requests_never_hang_crash_or_trace(agent, open_clients, raw, ending):
    sock = socket.create_connection(("127.0.0.1", agent.port), timeout=HANG_S)
    try:
        sock.sendall(raw)
        if ending == "shut":
            sock.shutdown(socket.SHUT_WR)
    except OSError:  # the server refused early and closed: allowed
        pass
    if ending == "open":
        open_clients.append((EofWatch(sock, HANG_S), raw))  # judged by the fixture, side by side
    else:
        with sock:
            if ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                try:
                    while sock.recv(65536):
                        pass
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    pytest.fail(f"the endpoint neither answered nor closed within {HANG_S:g} s ({ending}): "
                                f"{raw[:200]!r}")
    assert agent.alive(), agent.log()
    assert _scrape(agent.port) == 200, agent.log()
    assert "Traceback" not in agent.log(), agent.log()
