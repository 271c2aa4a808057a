"""The Prometheus endpoint against hostile and odd clients, with the agent as a process (issue 13, part 4).

Idle and slow clients are dropped, many connections cost no threads (the unit's TasksMax=64), oversized
heads are refused with 431 before they cost memory (MemoryMax=256M), the listen backlog takes a burst,
HEAD and q-values are honoured, other methods get 405, and a client hanging up is not a traceback.
A port in use or an address that cannot be bound is one line and exit status 2.
"""
import gzip
import http.client
import re
import socket
import struct
import subprocess
import sys

import pytest
from agent_process import AgentProcess, agent_environment
from conftest import free_port
from raw_http import EofWatch, connect, exchange

READ_TIMEOUT_S = 5.0  # otel_efa/exporters/http_server.py: the whole request head must arrive within it
MAX_THREADS = 16


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """``otel-efa run`` with OTLP (to a closed port) and Prometheus, collecting every second."""
    work = tmp_path_factory.mktemp("endpoint")
    port = free_port()
    env = dict(agent_environment(), OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    process = AgentProcess(["--simulate", "p4d.24xlarge", "--interval", "1", "--exporters", "prometheus,otlp",
                            "--prometheus-address", f"127.0.0.1:{port}"], env, work / "stderr")
    process.port = port
    process.expect(lambda: _metrics_ready(port), "the first page with EFA series")
    yield process
    code, _ = process.stop()
    assert code == 0, process.log()


@pytest.fixture(autouse=True)
def no_traceback(request):
    """Whatever a test throws at the endpoint, the agent logs no traceback and keeps serving."""
    yield
    if "agent" in request.fixturenames:
        agent = request.getfixturevalue("agent")
        assert agent.alive(), agent.log()
        assert "Traceback" not in agent.log(), agent.log()
        assert get(agent.port).status == 200


def _metrics_ready(port: int) -> bool:
    try:
        return b"efa_rx_bytes" in get(port).body
    except OSError:
        return False


def get(port: int, path: str = "/metrics", headers=None, method: str = "GET") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))


@pytest.fixture(scope="module")
def timed_out(agent):
    """The three clients that wait out the read timeout, started together: the module waits for it once."""
    idle = EofWatch(connect(agent.port), READ_TIMEOUT_S + 10)
    # A byte a second of a never-ending header (slowloris): the deadline is for the whole head.
    slow = connect(agent.port)
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    slowloris = EofWatch(slow, READ_TIMEOUT_S + 10, trickle=b"abcdefgh")
    connection = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    scrapes = []  # (status, EFA series in the gzipped page) of three scrapes on one kept-alive connection
    for _ in range(3):
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        scrapes.append((response.status, b"efa_rx_bytes" in gzip.decompress(response.read())))
    kept_alive = EofWatch(connection.sock, READ_TIMEOUT_S + 10)
    return {"idle": idle, "slowloris": slowloris, "kept alive": kept_alive, "scrapes": scrapes}


def test_idle_connection_is_dropped_after_the_read_timeout(timed_out):
    closed, got = timed_out["idle"].result()
    assert closed and got == 0


def test_slow_client_is_dropped_although_it_keeps_sending(timed_out):
    """A byte a second of a never-ending header (slowloris): the deadline is for the whole head."""
    closed, _ = timed_out["slowloris"].result()
    assert closed


def test_kept_alive_connection_serves_several_scrapes_then_is_dropped_when_idle(timed_out):
    assert timed_out["scrapes"] == [(200, True)] * 3
    closed, _ = timed_out["kept alive"].result()
    assert closed


def test_150_idle_connections_cost_no_threads_and_scrapes_still_answer(agent):
    idle = [connect(agent.port) for _ in range(150)]
    try:
        for sock in idle[::2]:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # half of them mid-request
        response = get(agent.port)
        assert response.status == 200 and b"efa_rx_bytes" in response.body
        assert threads(agent.process.pid) <= MAX_THREADS
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("head", [
    [("X-Big", "a" * 40 * 1024)],  # one header past the cap
    [(f"X-H{i}", "b" * 1024) for i in range(50)],  # many small ones past it together
    [(f"X-H{i}", "c" * 60 * 1024) for i in range(100)],  # the flood: 6 MB
], ids=["one-40KiB", "50x1KiB", "100x60KiB"])
def test_oversized_request_head_is_431(agent, head):
    lines = "".join(f"{name}: {value}\r\n" for name, value in head)
    response = exchange(agent.port, f"GET /metrics HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    assert response.status == 431


def test_a_head_under_the_cap_is_served(agent):
    lines = "".join(f"X-H{i}: {'d' * 1000}\r\n" for i in range(20))
    response = exchange(agent.port, f"GET /metrics HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    assert response.status == 200 and b"efa_rx_bytes" in response.body


def test_head_is_headers_only(agent):
    """HEAD then GET on one connection: the GET's status line must follow the HEAD's headers at once."""
    with connect(agent.port) as sock:
        sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        stream = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            stream += data
    head, _, rest = stream.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert fields[b"Content-Type"].startswith(b"text/plain; version=0.0.4")
    assert int(fields[b"Content-Length"]) > 0
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body between them
    assert b"efa_rx_bytes" in rest


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_405_with_allow(agent, method):
    response = get(agent.port, method=method)
    assert response.status == 405
    assert {m.strip() for m in response.getheader("Allow").split(",")} == {"GET", "HEAD"}


def test_unknown_path_is_404(agent):
    assert get(agent.port, "/nothing-here").status == 404


@pytest.mark.parametrize("accept, gzipped", [
    ("gzip", True),
    ("gzip;q=0", False),
    ("gzip; q=0.000", False),
    ("GZIP;Q=0", False),
    ("identity, gzip;q=0", False),
    ("*;q=0", False),
    ("gzip;q=0.5, identity", True),
    ("deflate, *", True),
    ("*, gzip;q=0", False),
    ("br, deflate", False),
    ("gzip;q=nonsense", False),
])
def test_accept_encoding_q_values(agent, accept, gzipped):
    response = get(agent.port, headers={"Accept-Encoding": accept})
    assert response.status == 200
    assert (response.getheader("Content-Encoding") == "gzip") is gzipped
    body = gzip.decompress(response.body) if gzipped else response.body
    assert b"efa_rx_bytes" in body


def test_listen_backlog_is_at_least_128(agent):
    out = subprocess.run(["ss", "-ltnH", f"sport = :{agent.port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[2]) >= 128, out  # State Recv-Q Send-Q ...: Send-Q of a listener is its backlog


def test_client_hanging_up_mid_response_is_not_a_traceback(agent):
    """The client asks, reads nothing (a tiny receive window keeps the server's write waiting), resets."""
    for _ in range(5):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", agent.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(100)  # the response has started
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    # no_traceback checks the log and a scrape


def test_ipv6_any_address_answers_on_both_families(tmp_path):
    port = free_port()
    process = AgentProcess(["--simulate", "p4d.24xlarge", "--interval", "1", "--exporters", "prometheus",
                            "--prometheus-address", f"[::]:{port}"], agent_environment(), tmp_path / "stderr")
    try:
        process.expect(lambda: _metrics_ready(port), "the page on 127.0.0.1")
        connection = http.client.HTTPConnection("::1", port, timeout=10)
        connection.request("GET", "/metrics")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.stop()


def _run_once(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge", "--interval",
                           "1", "--count", "2", "--exporters", "prometheus,log", "--log-level", "error", *args],
                          capture_output=True, text=True, env=agent_environment(), timeout=timeout)


def test_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_once("--prometheus-address", f"127.0.0.1:{port}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "prometheus.address" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr


@pytest.mark.parametrize("address", ["192.0.2.1:9464", "no-such-host.invalid:9464", "[::ffff:300.1.1.1]:9464"])
def test_address_that_cannot_be_bound_is_one_line_and_exit_2(address):
    result = _run_once("--prometheus-address", address)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "prometheus.address" in result.stderr
