"""Sending one serialized ExportMetricsServiceRequest (otlp_encoder.py makes the bytes): gRPC (the
MetricsService's Export method, the bytes as they are) or http/protobuf (a POST of the bytes). One attempt
per call and no retry loop: temporality is cumulative, so the next interval's export carries whole totals
(see otlp.py). gRPC is spoken by grpc_client.py (pure Python over h2), not grpcio.
"""
import gzip
import http.client
import ssl
import time
import urllib.error
import urllib.request
from typing import List, Optional
from urllib.parse import urlparse

from otel_efa import __version__
from otel_efa.exporters.protobuf_wire import DecodeError, ExportResponse, parse_export_response


class ExportFailed(Exception):
    """The export did not arrive; the message says why (status code and detail)."""


# An ExportMetricsServiceResponse is a few bytes (a partial success and its message); a collector's reply is
# read up to this much and no further, so a peer answering an endless body costs no memory (an unbounded
# read grew the agent from 34 to 270 MB against such a server).
REPLY_BODY_CAP = 1024 * 1024
READ_CHUNK = 64 * 1024
PROBLEM_CAP = 200  # characters of a peer's garbage quoted in the outage warning


def short(text: str) -> str:
    """One short line for the outage warning, whatever bytes the peer sent (BadStatusLine quotes them)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= PROBLEM_CAP else text[:PROBLEM_CAP] + "..."


def problem(error: BaseException) -> str:
    return short(f"{type(error).__name__}: {error}")


def read_capped(reply, deadline: float, cap: int = REPLY_BODY_CAP) -> bytes:
    """The reply body, or ExportFailed when it is larger than ``cap`` or still coming at ``deadline`` (the
    socket timeout bounds each read, not a body that trickles forever)."""
    parts: List[bytes] = []
    size = 0
    while True:
        chunk = reply.read(min(READ_CHUNK, cap + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > cap:
            raise ExportFailed(f"the reply body is larger than {cap} bytes")
        if time.monotonic() > deadline:
            raise ExportFailed("the reply body was still coming at the OTLP timeout")


# The otel-sdk path's grpcio channel (sdk_readers.py): gRPC waits up to 120 s between reconnection attempts
# after a long outage, failing every export meanwhile; a collector on the node that comes back should get
# the next interval's export, so retry sooner. (The fast path's GrpcSender connects anew at the next export.)
GRPC_CHANNEL_OPTIONS = (("grpc.max_reconnect_backoff_ms", 5000),)
# What opentelemetry-proto's generated MetricsServiceStub calls; the encoder's bytes are its request.
GRPC_EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def tls_context(certificate: Optional[str], client_key: Optional[str], client_certificate: Optional[str],
                alpn: Optional[List[str]] = None) -> ssl.SSLContext:
    """Verifies the collector with ``certificate`` (a CA bundle; None: the system's) and, for mutual TLS,
    presents the client key and certificate. The files were checked by otel_efa/otlp_settings.py."""
    context = ssl.create_default_context(cafile=certificate or None)
    if client_certificate and client_key:
        context.load_cert_chain(client_certificate, client_key)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class GrpcSender:
    """The MetricsService's Export over HTTP/2 by grpc_client.py (pure Python, h2): no grpcio in the agent,
    whose C core and threads cost 12-14 MiB of RSS. One connection stays open between exports; after an
    outage the next export connects anew."""

    def __init__(self, endpoint: str, headers, timeout: float, gzip_compression: bool, insecure: bool,
                 certificate: Optional[str] = None, client_key: Optional[str] = None,
                 client_certificate: Optional[str] = None):
        from otel_efa.exporters.grpc_client import CallFailed, GrpcChannel  # h2 only where gRPC is spoken

        self._call_failed = CallFailed
        url = urlparse(endpoint)
        tls = None if insecure else tls_context(certificate, client_key, client_certificate, ["h2"])
        self._channel = GrpcChannel(url.hostname or "127.0.0.1", url.port or 443, tls,
                                    f"otel-efa/{__version__} (gRPC over h2)", REPLY_BODY_CAP)
        self._metadata = tuple((key.lower(), value) for key, value in headers)
        self._timeout = timeout
        self._gzip = gzip_compression

    def send(self, body: bytes) -> ExportResponse:
        """``body``: a serialized ExportMetricsServiceRequest."""
        try:
            reply = self._channel.unary(GRPC_EXPORT_METHOD, body, self._metadata, self._timeout, self._gzip)
            return parse_export_response(reply)
        except self._call_failed as e:  # every status, the peer's and the transport's
            raise ExportFailed(short(str(e))) from None
        except DecodeError as e:
            raise ExportFailed(short(f"INTERNAL: the reply is no ExportMetricsServiceResponse ({e})")) from None
        except Exception as e:  # a bug's, not a traceback per interval
            raise ExportFailed(problem(e)) from None

    def close(self) -> None:
        """Cancels an export still under way (shutdown uses this to keep its budget)."""
        self._channel.close()


class HttpSender:
    def __init__(self, endpoint: str, headers, timeout: float, gzip_compression: bool,
                 certificate: Optional[str] = None, client_key: Optional[str] = None,
                 client_certificate: Optional[str] = None):
        self._endpoint = endpoint
        self._headers = {"Content-Type": "application/x-protobuf", **dict(headers)}
        if gzip_compression:
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = gzip_compression
        self._timeout = timeout
        self._context = None
        if endpoint.startswith("https:"):
            self._context = tls_context(certificate, client_key, client_certificate)

    def send(self, body: bytes) -> ExportResponse:
        """``body``: a serialized ExportMetricsServiceRequest."""
        if self._gzip:
            body = gzip.compress(body, compresslevel=6)
        post = urllib.request.Request(self._endpoint, data=body, headers=self._headers, method="POST")
        deadline = time.monotonic() + self._timeout
        try:
            with urllib.request.urlopen(post, timeout=self._timeout, context=self._context) as reply:
                content = read_capped(reply, deadline)
                protobuf = "protobuf" in (reply.headers.get("Content-Type") or "")
            return parse_export_response(content) if content and protobuf else ExportResponse()
        except ExportFailed:
            raise
        except urllib.error.HTTPError as e:
            e.close()  # its body is never read
            raise ExportFailed(short(f"HTTP {e.code} {e.reason}")) from None
        except urllib.error.URLError as e:
            raise ExportFailed(short(str(e.reason))) from None
        # A timeout or a reset (OSError, ssl errors included), a peer that speaks no HTTP (BadStatusLine,
        # LineTooLong), a reply cut short (IncompleteRead, RemoteDisconnected), a body that is no protobuf
        # (DecodeError): each is an outage like a refused connection, never a traceback.
        except (OSError, http.client.HTTPException, DecodeError) as e:
            raise ExportFailed(problem(e)) from None

    def close(self) -> None:
        """Nothing held open: every export is one request."""
