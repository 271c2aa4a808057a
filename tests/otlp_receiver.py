"""Real OTLP receivers for tests: gRPC (opentelemetry-proto's MetricsService) and http/protobuf.

Both keep every ExportMetricsServiceRequest they get, and flatten it into points a test can look up by
(metric name, attributes).
"""
import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc


@dataclass(frozen=True)
class Point:
    name: str
    kind: str  # "sum" or "gauge"
    monotonic: Optional[bool]
    temporality: Optional[int]  # 2 = CUMULATIVE in the OTLP enum
    unit: str
    attributes: FrozenSet[Tuple[str, str]]
    value: Any


def _any_value(value) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def resource_attributes(request) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {}
    for resource_metrics in request.resource_metrics:
        for kv in resource_metrics.resource.attributes:
            attributes[kv.key] = _any_value(kv.value)
    return attributes


def points(request) -> List[Point]:
    found = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for dp in data.data_points:
                    value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                    found.append(Point(
                        name=metric.name, kind=kind,
                        monotonic=data.is_monotonic if kind == "sum" else None,
                        temporality=data.aggregation_temporality if kind == "sum" else None,
                        unit=metric.unit,
                        attributes=frozenset((kv.key, str(_any_value(kv.value))) for kv in dp.attributes),
                        value=value))
    return found


class _Store:
    def __init__(self):
        self.requests: List[Tuple[float, Any]] = []  # (monotonic arrival, request)
        self.headers: List[Dict[str, str]] = []
        self.arrived = threading.Condition()
        # What the receiver answers; a test sets partial_success on it to play a collector that rejects points.
        self.reply = metrics_service_pb2.ExportMetricsServiceResponse()

    def add(self, request, headers: Dict[str, str]) -> None:
        with self.arrived:
            self.requests.append((time.monotonic(), request))
            self.headers.append(headers)
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float) -> List[Any]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return [r for _, r in self.requests]


class GrpcReceiver(_Store):
    """``MetricsServiceServicer`` on a loopback port (0: a free one); with ``tls=(key PEM, certificate PEM)``
    it speaks TLS and its endpoint is https://."""

    def __init__(self, port: int = 0, tls: Optional[Tuple[bytes, bytes]] = None):
        super().__init__()
        self.tls = tls
        receiver = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                receiver.add(request, dict(context.invocation_metadata()))
                return receiver.reply

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self.server)
        if tls is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([tls]))
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


class HttpReceiver(_Store):
    """A tiny http.server taking POST /v1/metrics (application/x-protobuf, gzip or not)."""

    def __init__(self, port: int = 0):
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/metrics":
                    self.send_error(404)
                    return
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.add(request, {k.lower(): v for k, v in self.headers.items()})
                reply = receiver.reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
