"""Real AWS-shaped peers on loopback: moto in server mode, and a fault-injecting proxy in front of it.

moto implements CloudWatch and S3 over real HTTP but enforces none of PutMetricData's limits and never
throttles, so the proxy records every request as it was sent (to check the limits) and answers
``400 Throttling`` or ``503`` on demand (to exercise botocore's retries and the exporter's buffer).
"""
import gzip
import http.client
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

from moto.server import ThreadedMotoServer

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
    """Forwards to moto; ``fail_next([...])`` and ``outage`` apply to PutMetricData only."""

    RETRY_AFTER_MS = 200  # sent with throttling answers: botocore must wait at least this long

    def __init__(self, upstream: str, port: int):
        self.upstream = upstream.replace("http://", "")
        self.url = f"http://127.0.0.1:{port}"
        self.requests: List[Recorded] = []
        self.outage = False
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
            if target.endswith("PutMetricData"):
                if self.outage:
                    fault = "503"
                elif self._faults:
                    fault = self._faults.pop(0)
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
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        forward = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
        connection.request(method, path, body=body, headers=forward)
        response = connection.getresponse()
        answer = response.read()
        record.status = response.status
        connection.close()
        return response.status, dict(response.getheaders()), answer
