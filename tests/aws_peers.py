"""Real AWS-shaped peers on loopback: moto in server mode, and a fault-injecting proxy in front of it.

moto implements CloudWatch and S3 over real HTTP but enforces none of PutMetricData's limits and never
throttles, so the proxy records every request as it was sent (to check the limits) and answers
``400 Throttling`` or ``503`` on demand (to exercise botocore's retries and the exporter's buffer), or
answers slowly (a PutMetricData call still under way when the agent is stopped).
"""
import gzip
import http.client
import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

import boto3
import pytest
from conftest import free_port
from moto.server import ThreadedMotoServer
from opentelemetry.sdk.resources import Resource

from otel_efa.config import Config
from otel_efa.exporters import ExporterContext, no_jobs
from otel_efa.exporters.cloudwatch import CloudWatchExporter
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.pipeline.stats import AgentStats

NAMESPACE = "ParallelCluster/Network"
REGION = "us-east-1"
QUICK_START_NAMES = ["rx_bytes_rate", "tx_bytes_rate", "rx_packets_rate", "tx_packets_rate", "rx_errors", "tx_discards"]

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class Moto:
    def __init__(self, port: int):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> "Moto":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        """Forget every resource: moto keeps its state in-process, shared by all servers in it."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass


@dataclass
class Recorded:
    at: float
    target: str  # X-Amz-Target (JSON protocol) or the query Action
    attempt: str  # botocore's amz-sdk-request header, "attempt=N; max=M"
    gzipped: bool
    body_bytes: int  # decompressed request body
    payload: Dict = field(default_factory=dict)
    status: int = 0


class FaultProxy:
    """Forwards to moto; ``fail_next([...])``, ``outage`` and ``delay_s`` apply to PutMetricData only.

    ``outage``: False, True (every call answered 503) or "throttle" (every call answered 400 Throttling).
    ``delay_s``: a call that is not failed is held that long, then forwarded to moto (and stored there)
    even if the client has given up meanwhile, as a slow CloudWatch would.
    """

    RETRY_AFTER_MS = 200  # sent with throttling answers: botocore must wait at least this long

    def __init__(self, upstream: str, port: int):
        self.upstream = upstream.replace("http://", "")
        self.url = f"http://127.0.0.1:{port}"
        self.requests: List[Recorded] = []
        self.outage = False
        self.delay_s = 0.0
        self._faults: List[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, answer = proxy._answer(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, kinds: List[str]) -> None:
        """The next PutMetricData requests get these answers: "throttle" or "503"."""
        with self._lock:
            self._faults = list(kinds)

    def puts(self, status: Optional[int] = None) -> List[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.target.endswith("PutMetricData")
                    and (status is None or r.status == status)]

    def _answer(self, method: str, path: str, headers: Dict[str, str], body: bytes):
        target = headers.get("X-Amz-Target", "")
        gzipped = headers.get("Content-Encoding", "") == "gzip"
        plain = gzip.decompress(body) if gzipped else body
        record = Recorded(time.monotonic(), target, headers.get("amz-sdk-request", ""), gzipped, len(plain))
        if target.endswith("PutMetricData"):
            record.payload = json.loads(plain)
        with self._lock:
            fault = None
            delay = 0.0
            if target.endswith("PutMetricData"):
                if self.outage:
                    fault = "throttle" if self.outage == "throttle" else "503"
                elif self._faults:
                    fault = self._faults.pop(0)
                delay = self.delay_s
            self.requests.append(record)
        if fault == "throttle":
            record.status = 400
            return 400, {"Content-Type": "application/x-amz-json-1.0",
                         "x-amzn-query-error": "Throttling;Sender",
                         "x-amz-retry-after": str(self.RETRY_AFTER_MS)}, \
                json.dumps({"__type": "Throttling", "message": "Rate exceeded"}).encode()
        if fault == "503":
            record.status = 503
            return 503, {"Content-Type": "application/x-amz-json-1.0"}, \
                json.dumps({"__type": "ServiceUnavailable", "message": "injected"}).encode()
        if delay:
            time.sleep(delay)
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        # Like CloudWatch's front end, the proxy takes the gzip off: moto releases for Python 3.9
        # (5.1.22) decompress a gzipped JSON body twice and fail.
        dropped = ("host", "connection", "content-encoding", "content-length")
        forward = {k: v for k, v in headers.items() if k.lower() not in dropped}
        connection.request(method, path, body=plain, headers=forward)
        response = connection.getresponse()
        answer = response.read()
        record.status = response.status
        connection.close()
        return response.status, dict(response.getheaders()), answer


# --- fixtures and helpers shared by the CloudWatch tests ---------------------------------------
@pytest.fixture(scope="module")
def moto():
    server = Moto(free_port()).start()
    yield server
    server.stop()


def aws_environment(monkeypatch, endpoint: str) -> None:
    """Fake credentials, a region, no IMDS, and every AWS call to ``endpoint``."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def proxy(moto, monkeypatch):
    """A fault proxy in front of moto; the AWS SDK environment points at it."""
    moto.reset()
    fault_proxy = FaultProxy(moto.url, free_port()).start()
    aws_environment(monkeypatch, fault_proxy.url)
    yield fault_proxy
    fault_proxy.stop()


def cloudwatch(moto):
    """A client straight to moto (not through the proxy): the reader's view."""
    return boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto.url)


class Node:
    """A simulated node and the agent's data path on a clock the test moves.

    Wall-clock timestamps start on a minute boundary half an hour ago, so each step of 60 s is one
    CloudWatch minute and the quick-start's one-hour query window covers them.
    """

    def __init__(self, make_simulator, config: Config, instance_id: str, profile: str = "p4d.24xlarge",
                 gbps: float = 100.0, jobs=no_jobs):
        self.t = [1000.0]
        now = time.time()
        self.wall0 = now - now % 60 - 1800
        self.sim = make_simulator(profile, gbps=gbps, clock=lambda: self.t[0])
        self.collector = Collector(SysfsReader(self.sim.root), profile, clock=lambda: self.t[0],
                                   wall_clock=lambda: self.wall0 + self.t[0] - 1000.0)
        self.instrumentor = EfaInstrumentor(stats=AgentStats())
        context = ExporterContext(config, Resource.create({"host.id": instance_id}), stats=self.instrumentor.stats,
                                  jobs=jobs)
        self.exporter = CloudWatchExporter(context)
        self.exporter.start()
        self.snapshots = []

    def step(self, seconds: float = 60.0):
        self.t[0] += seconds
        self.sim.advance(self.t[0])
        snapshot = self.collector.collect()
        self.snapshots.append(snapshot)
        self.exporter.export(self.instrumentor.interval(snapshot))
        return snapshot

    def node_rate(self, counter: str) -> float:
        return sum(self.sim.expected_rate(d, counter) for d in self.sim.device_names)

    def close(self):
        self.exporter.shutdown(5)


@pytest.fixture
def node(make_simulator):
    made: List[Node] = []

    def make(config: Config, instance_id: str, **kwargs) -> Node:
        made.append(Node(make_simulator, config, instance_id, **kwargs))
        return made[-1]

    yield make
    for n in made:
        n.close()


def config_with(**cloudwatch) -> Config:
    config = Config()
    for key, value in cloudwatch.items():
        setattr(config.cloudwatch, key, value)
    config.validate()
    return config


def statistics(client, instance_id: str, name: str, stats, dimensions=None):
    # Datums carry their minute's start; moto drops sub-seconds from EndTime and excludes it, so an end
    # at "now" misses the current minute during its first second. A minute ahead always covers it.
    now = datetime.now(timezone.utc)
    answer = client.get_metric_statistics(
        Namespace=NAMESPACE, MetricName=name,
        Dimensions=dimensions or [{"Name": "InstanceId", "Value": instance_id}],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=1), Period=60, Statistics=stats)
    return sorted(answer["Datapoints"], key=lambda d: d["Timestamp"])
