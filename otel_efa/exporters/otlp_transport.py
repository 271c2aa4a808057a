"""Sending one ExportMetricsServiceRequest: gRPC (opentelemetry-proto's generated MetricsService stub) or
http/protobuf (a POST of the serialized request). One attempt per call and no retry loop: temporality is
cumulative, so the next interval's export carries whole totals (see otlp.py). grpc is imported only when
the gRPC sender is made, so the agent starts fast without it.
"""
import gzip
import os
import ssl
import urllib.error
import urllib.request
from typing import Optional
from urllib.parse import urlparse

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)


class ExportFailed(Exception):
    """The export did not arrive; the message says why (status code and detail)."""


# gRPC waits up to 120 s between reconnection attempts after a long outage, failing every export meanwhile;
# a collector on the node that comes back should get the next interval's export, so retry sooner.
GRPC_CHANNEL_OPTIONS = (("grpc.max_reconnect_backoff_ms", 5000),)


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class GrpcSender:
    """TLS files were checked by otel_efa/otlp_settings.py; they are read once, here, when the channel is made."""

    def __init__(self, endpoint: str, headers, timeout: float, gzip_compression: bool, insecure: bool,
                 certificate: Optional[str] = None, client_key: Optional[str] = None,
                 client_certificate: Optional[str] = None):
        # gRPC core writes its own INFO lines (a GOAWAY when the collector stops) straight to stderr.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        # The agent forks (squeue for Slurm job ids) while exports run. gRPC's fork handlers, on by default,
        # make some of those children abort before exec (grpcio 1.80, the newest for Python 3.9: "epoll_wait
        # error: Bad file descriptor"); the agent never uses gRPC in a child, so it needs none of them.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        import grpc
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub

        self._grpc = grpc
        target = urlparse(endpoint).netloc
        compression = grpc.Compression.Gzip if gzip_compression else grpc.Compression.NoCompression
        if insecure:
            self._channel = grpc.insecure_channel(target, options=GRPC_CHANNEL_OPTIONS, compression=compression)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=_read(certificate),
                                                       private_key=_read(client_key),
                                                       certificate_chain=_read(client_certificate))
            self._channel = grpc.secure_channel(target, credentials, options=GRPC_CHANNEL_OPTIONS,
                                                compression=compression)
        self._export = MetricsServiceStub(self._channel).Export
        self._metadata = tuple((key.lower(), value) for key, value in headers)
        self._timeout = timeout

    def send(self, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        try:
            return self._export(request, timeout=self._timeout, metadata=self._metadata)
        except self._grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise ExportFailed(f"{code.name if code else 'gRPC error'}: {details}") from None

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
            self._context = ssl.create_default_context(cafile=certificate or None)
            if client_certificate and client_key:
                self._context.load_cert_chain(client_certificate, client_key)

    def send(self, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        body = request.SerializeToString()
        if self._gzip:
            body = gzip.compress(body, compresslevel=6)
        post = urllib.request.Request(self._endpoint, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(post, timeout=self._timeout, context=self._context) as reply:
                content = reply.read()
                protobuf = "protobuf" in (reply.headers.get("Content-Type") or "")
        except urllib.error.HTTPError as e:
            raise ExportFailed(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise ExportFailed(f"{e.reason}") from None
        except OSError as e:  # a timeout or a reset while reading the reply
            raise ExportFailed(f"{type(e).__name__}: {e}") from None
        response = ExportMetricsServiceResponse()
        if content and protobuf:
            response.ParseFromString(content)
        return response

    def close(self) -> None:
        """Nothing held open: every export is one request."""
