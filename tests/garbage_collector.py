"""A collector on loopback that speaks garbage on demand, then turns good: the OTLP/HTTP exporter's peer for
the faults a transport can raise (tests/test_otlp_garbage.py).

It is a raw socket server, not http.server, so that it can answer what no HTTP server would. Modes:

- ``raw``: non-HTTP bytes instead of a status line (http.client.BadStatusLine)
- ``endless``: 200 and a body that never ends, as fast as the agent reads it
- ``not_protobuf``: 200, Content-Type application/x-protobuf, a body that is no protobuf (DecodeError)
- ``mid_reply``: 200 with Content-Length 100000, 10 bytes of it, then close (IncompleteRead)
- ``good``: decode the ExportMetricsServiceRequest, keep it, answer an empty response
"""
import gzip
import socket
import threading
from typing import List

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

MODES = ("raw", "endless", "not_protobuf", "mid_reply", "good")


class GarbageCollector:
    def __init__(self, mode: str):
        assert mode in MODES
        self.mode = mode
        self.requests: List[ExportMetricsServiceRequest] = []
        self.garbage_replies = 0
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
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                body, gzipped = self._read_request(connection)
                mode = self.mode
                if mode != "good":
                    self.garbage_replies += 1
                getattr(self, f"_{mode}")(connection, body, gzipped)
            except OSError:  # the agent gave up on us: fine
                pass

    @staticmethod
    def _read_request(connection: socket.socket):
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
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                raise OSError("closed before the body ended")
            body += chunk
        return body, headers.get(b"content-encoding") == b"gzip"

    @staticmethod
    def _raw(connection, _body, _gzipped) -> None:
        connection.sendall(b"\x16\x03\x01 SSH-2.0-nonsense \xff\xfe" * 100 + b"\r\n")

    @staticmethod
    def _endless(connection, _body, _gzipped) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                           b"Connection: close\r\n\r\n")
        chunk = b"\xff" * 65536
        while True:  # until the agent hangs up (OSError)
            connection.sendall(chunk)

    @staticmethod
    def _not_protobuf(connection, _body, _gzipped) -> None:
        body = b"\xff\xff\xff\xff this is no protobuf"
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    @staticmethod
    def _mid_reply(connection, _body, _gzipped) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n"
                           b"Connection: close\r\n\r\n0123456789")

    def _good(self, connection, body, gzipped) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(gzip.decompress(body) if gzipped else body)
        self.requests.append(request)
        reply = ExportMetricsServiceResponse().SerializeToString()
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: "
                           + str(len(reply)).encode() + b"\r\nConnection: close\r\n\r\n" + reply)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
