"""The standard OTLP variables against the real collector's OTLP receiver (tests/collector_process.py), on
every release the test collector is built at, over gRPC and http/protobuf: TLS with a private CA, mutual
TLS, gzip and a bearer token, each configured the way an existing OTel stack would (OTEL_EXPORTER_OTLP_*
only; no otel-efa key).

The agent is ``otel-efa run`` in a process of its own; what arrived is read in the collector's ``debug``
exporter output (verbosity detailed): a port counter set to a value nothing else carries. Every refusal
must reach the agent's log as one warning line, no traceback.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from collector_process import CollectorProcess, versions
from netns import isolated_network
from tcp_relay import TcpRelay
from tls_certs import make_pki
from waiting import wait_until

pytestmark = pytest.mark.collector

PROFILE = "p4d.24xlarge"
PROTOCOLS = ["grpc", "http/protobuf"]
PORTS = {"grpc": 4317, "http/protobuf": 4318}  # the namespace's own (isolated_network)
MARK = 987654321012345  # rx_bytes of the first device: appears in the collector's log only if sent
TOKEN = "s3cr3t-efa-token"
WAIT_S = 30.0


def _receiver(protocol: str, **settings) -> Dict:
    section = "grpc" if protocol == "grpc" else "http"
    return {"protocols": {section: {"endpoint": f"127.0.0.1:{PORTS[protocol]}", **settings}}}


def _collector_config(receiver: Dict, extensions: Optional[Dict] = None) -> Dict:
    extensions = {"health_check": {"endpoint": "127.0.0.1:13133"}, **(extensions or {})}
    return {
        "extensions": extensions,
        "receivers": {"otlp": receiver},
        "exporters": {"debug": {"verbosity": "detailed"}},
        "service": {"extensions": list(extensions),
                    "pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }


def arrived(log: str, device: str, value: int = MARK) -> bool:
    """The debug exporter printed efa_rx_bytes of ``device`` with ``value``."""
    for metric in log.split("Metric #")[1:]:
        if "-> Name: efa_rx_bytes\n" not in metric:
            continue
        for point in metric.split("NumberDataPoints #")[1:]:
            if f"aws.efa.device: Str({device})" in point and f"Value: {value}\n" in point:
                return True
    return False


class Agent:
    """``otel-efa run`` with only the given OTEL_EXPORTER_OTLP_* settings; stderr kept for the assertions."""

    def __init__(self, root: str, stderr: Path, environ: Dict[str, str]):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(AWS_EC2_METADATA_DISABLED="true", OTEL_RESOURCE_ATTRIBUTES="host.id=i-0otlpsettings0001",
                   PYTHONUNBUFFERED="1", OTEL_EXPORTER_OTLP_TIMEOUT="5000", **environ)
        self.stderr_path = stderr
        with open(stderr, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "otel_efa", "run", "--sysfs", root, "--instance-type", PROFILE,
                 "--interval", "0.3", "--exporters", "otlp"], env=env, stdout=subprocess.DEVNULL, stderr=out)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def failing_lines(self) -> List[str]:
        return [line for line in self.stderr().splitlines() if "is failing" in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Run:
    """One agent run against the collector: wait until the mark arrives or the agent reports an outage."""

    def __init__(self, tmp_path: Path, simulator, collector: CollectorProcess):
        self.tmp_path, self.simulator, self.collector = tmp_path, simulator, collector
        self.device = simulator.device_names[0]
        self.count = 0

    def expect_arrival(self, environ: Dict[str, str]) -> Agent:
        agent = self._start(environ)
        try:
            wait_until(lambda: arrived(self.collector.log(), self.device) or agent.process.poll() is not None,
                       WAIT_S, "the export in the collector's debug output")
        finally:
            agent.stop()
        assert arrived(self.collector.log(), self.device), \
            f"nothing arrived\nagent:\n{agent.stderr()}\ncollector:\n{self.collector.log()[-3000:]}"
        assert not agent.failing_lines(), agent.stderr()
        assert "Traceback" not in agent.stderr(), agent.stderr()
        return agent

    def expect_refusal(self, environ: Dict[str, str]) -> str:
        """The one outage line; nothing arrived."""
        agent = self._start(environ)
        try:
            wait_until(lambda: agent.failing_lines() or agent.process.poll() is not None, WAIT_S, "the outage warning")
        finally:
            agent.stop()
        log = agent.stderr()
        assert agent.process.returncode == 0, log
        assert len(agent.failing_lines()) == 1 and " WARNING " in agent.failing_lines()[0], log
        assert "Traceback" not in log, log
        assert not arrived(self.collector.log(), self.device), "the refused export arrived anyway"
        return agent.failing_lines()[0]

    def _start(self, environ: Dict[str, str]) -> Agent:
        self.count += 1
        return Agent(self.simulator.root, self.tmp_path / f"agent{self.count}.stderr", environ)


@pytest.fixture
def node(make_simulator):
    simulator = make_simulator(PROFILE)
    simulator.set_value(simulator.device_names[0], "rx_bytes", MARK)
    return simulator


def _endpoint(protocol: str, scheme: str) -> Dict[str, str]:
    """The general variable: for http/protobuf the agent must append /v1/metrics itself."""
    return {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"{scheme}://127.0.0.1:{PORTS[protocol]}"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("version", versions())
def test_tls_with_the_ca_in_otel_exporter_otlp_certificate(version, protocol, node, tmp_path):
    pki = make_pki(tmp_path / "pki")
    tls = {"tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}}
    with isolated_network():
        collector = CollectorProcess(_collector_config(_receiver(protocol, **tls)), version)
        try:
            run = Run(tmp_path, node, collector)
            line = run.expect_refusal(_endpoint(protocol, "https"))  # the system's CAs do not know ours
            assert "127.0.0.1" in line
            run.expect_arrival({**_endpoint(protocol, "https"), "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)})
        finally:
            collector.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("version", versions())
def test_mutual_tls_with_the_client_key_and_certificate_variables(version, protocol, node, tmp_path):
    pki = make_pki(tmp_path / "pki")
    tls = {"tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                   "client_ca_file": str(pki.ca)}}
    trusted = {**_endpoint(protocol, "https"), "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}
    with isolated_network():
        collector = CollectorProcess(_collector_config(_receiver(protocol, **tls)), version)
        try:
            run = Run(tmp_path, node, collector)
            run.expect_refusal(trusted)  # no client certificate: the collector ends the handshake
            run.expect_arrival({**trusted, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY": str(pki.client_key),
                                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki.client_cert)})
        finally:
            collector.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("version", versions())
def test_bearer_token_in_otel_exporter_otlp_headers(version, protocol, node, tmp_path):
    receiver = _receiver(protocol, auth={"authenticator": "bearertokenauth"})
    with isolated_network():
        collector = CollectorProcess(_collector_config(receiver, {"bearertokenauth": {"token": TOKEN}}), version)
        try:
            run = Run(tmp_path, node, collector)
            line = run.expect_refusal({**_endpoint(protocol, "http"),
                                       "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20wrong-token"})
            assert ("UNAUTHENTICATED" if protocol == "grpc" else "HTTP 401") in line, line
            run.expect_arrival({**_endpoint(protocol, "http"),
                                "OTEL_EXPORTER_OTLP_METRICS_HEADERS": f"authorization=Bearer%20{TOKEN}",
                                "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20wrong-token"})
        finally:
            collector.stop()


def _exports(log: str) -> int:
    return log.count("ResourceMetrics #0")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("version", versions())
def test_gzip_from_otel_exporter_otlp_compression(version, protocol, node, tmp_path):
    """http/protobuf: the receiver accepts gzip only (``compression_algorithms``), so an uncompressed export
    is refused. gRPC: bytes on the wire per export, measured by a relay, are less than half uncompressed."""
    receiver = _receiver(protocol, **({"compression_algorithms": ["gzip"]} if protocol != "grpc" else {}))
    with isolated_network():
        collector = CollectorProcess(_collector_config(receiver), version)
        relay = TcpRelay(PORTS[protocol])
        try:
            run = Run(tmp_path, node, collector)
            through_relay = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                             "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{relay.port}"}
            per_export = {}
            for compression in ("none", "gzip"):
                environ = {**through_relay, "OTEL_EXPORTER_OTLP_COMPRESSION": compression}
                before = _exports(collector.log())
                if compression == "none" and protocol != "grpc":
                    line = run.expect_refusal(environ)
                    assert "HTTP 400" in line, line
                    relay.take_requests()  # the refused attempts are not the gzip run's
                    continue
                run.expect_arrival(environ)
                sent, exports = relay.take_requests(), _exports(collector.log()) - before
                assert exports >= 1
                per_export[compression] = sent / exports
                if compression == "none":  # the next run must bring a new arrival, not find this one
                    collector.stop()
                    collector = CollectorProcess(_collector_config(receiver), version)
                    run.collector = collector
            print(f"{version} {protocol}: bytes per export {per_export}")
            if protocol == "grpc":
                assert per_export["gzip"] < 0.5 * per_export["none"], per_export
        finally:
            relay.stop()
            collector.stop()
