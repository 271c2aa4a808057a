"""The tests' one OTLP sink: real receivers over gRPC (opentelemetry-proto's MetricsService) and
http/protobuf, and a collector that misbehaves on demand (``MisbehavingReceiver``).

Each keeps every ExportMetricsServiceRequest it takes, with its arrival time and headers, in ``requests``
(``wait_for(count, timeout)`` waits on their arrival), and ``points()`` flattens a request into points a
test can look up by (metric name, attributes).
"""
import gzip
import socket
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


def metrics_with_points(scope_metrics) -> List[Tuple[tuple, Dict[FrozenSet[Tuple[str, bytes]], Tuple[str, Any]]]]:
    """Every metric of one ScopeMetrics in order, as (header, points), for comparing two encoders' requests:
    the header is (name, description, unit, data kind, is_monotonic, temporality); the points map each
    point's attributes (key, serialized AnyValue) to (value field, value)."""
    found = []
    for metric in scope_metrics.metrics:
        kind = metric.WhichOneof("data")
        data = getattr(metric, kind)
        header = (metric.name, metric.description, metric.unit, kind,
                  getattr(data, "is_monotonic", None), getattr(data, "aggregation_temporality", None))
        points = {}
        for point in data.data_points:
            attributes = frozenset((kv.key, kv.value.SerializeToString()) for kv in point.attributes)
            field = point.WhichOneof("value")
            points[attributes] = (field, getattr(point, field))
        found.append((header, points))
    return found


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


class MisbehavingReceiver(_Store):
    """An OTLP/HTTP collector on a loopback port that answers what no HTTP server would, until a test sets
    ``mode = "good"``. A raw socket server, not http.server. Modes:

    - ``hang``: accepts the connection and never reads or answers (every export waits for its timeout;
      any protocol, gRPC too); ``accepted`` holds the connections
    - ``raw``: non-HTTP bytes instead of a status line (http.client.BadStatusLine)
    - ``endless``: 200 and a body that never ends, as fast as the agent reads it
    - ``not_protobuf``: 200, Content-Type application/x-protobuf, a body that is no protobuf (DecodeError)
    - ``mid_reply``: 200 with Content-Length 100000, 10 bytes of it, then close (IncompleteRead)
    - ``good``: decode the ExportMetricsServiceRequest, keep it in ``requests``, answer ``reply``

    ``garbage_replies`` counts the requests answered in any mode but good. The port can be bound again as
    soon as ``close()`` returns (a collector that comes back on it).
    """

    MODES = ("hang", "raw", "endless", "not_protobuf", "mid_reply", "good")

    def __init__(self, mode: str):
        super().__init__()
        assert mode in self.MODES, mode
        self.mode = mode
        self.garbage_replies = 0
        self.accepted: List[socket.socket] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._sock.accept()
            except OSError:
                return
            self.accepted.append(connection)
            if self.mode != "hang":
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                body, headers = self._read_request(connection)
                mode = self.mode
                if mode != "good":
                    self.garbage_replies += 1
                getattr(self, f"_{mode}")(connection, body, headers)
            except OSError:  # the agent gave up on us: fine
                pass

    @staticmethod
    def _read_request(connection: socket.socket) -> Tuple[bytes, Dict[str, str]]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                raise OSError("closed before the headers ended")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                raise OSError("closed before the body ended")
            body += chunk
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return body, headers

    @staticmethod
    def _hang(_connection, _body, _headers) -> None:
        pass  # a connection that was accepted before the mode became hang is answered nothing

    @staticmethod
    def _raw(connection, _body, _headers) -> None:
        connection.sendall(b"\x16\x03\x01 SSH-2.0-nonsense \xff\xfe" * 100 + b"\r\n")

    @staticmethod
    def _endless(connection, _body, _headers) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                           b"Connection: close\r\n\r\n")
        chunk = b"\xff" * 65536
        while True:  # until the agent hangs up (OSError)
            connection.sendall(chunk)

    @staticmethod
    def _not_protobuf(connection, _body, _headers) -> None:
        body = b"\xff\xff\xff\xff this is no protobuf"
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    @staticmethod
    def _mid_reply(connection, _body, _headers) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n"
                           b"Connection: close\r\n\r\n0123456789")

    def _good(self, connection, body, headers) -> None:
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        self.add(request, headers)
        reply = self.reply.SerializeToString()
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: "
                           + str(len(reply)).encode() + b"\r\nConnection: close\r\n\r\n" + reply)

    def close(self) -> None:
        """Free the port at once (shutdown wakes the accept() that would hold the socket listening) and
        drop every connection."""
        for sock in [self._sock] + self.accepted:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already, or never connected
                pass
            sock.close()
