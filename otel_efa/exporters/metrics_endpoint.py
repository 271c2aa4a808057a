"""The agent's /metrics endpoint: the address and web config of the ``prometheus.*`` keys, served hardened.

Whatever renders the page (the fast path's prometheus_text.py, or the OTel SDK's Prometheus reader through
prometheus_client for ``--exporters otel-sdk``), the page is served here, the same way: by http_server.py
(one event-loop thread, timeouts and caps against idle, slow and oversized clients), with TLS and basic auth
from a web config file in exporter-toolkit's format (web_config.py), so node_exporter's file works here too.
The port is claimed when the endpoint is made, before any exporter starts: a port in use or an address that
cannot be bound is a ConfigError on ``prometheus.address`` (one line, exit status 2).
"""
import logging
import os
import socket
from typing import Callable, List, Optional, Tuple

from otel_efa.config import ConfigError, PrometheusConfig, parse_host_port
from otel_efa.exporters.http_server import HttpServer, Request, Response, accepts_coding, listen
from otel_efa.exporters.web_config import WebConfig

log = logging.getLogger(__name__)
METRICS_PATHS = ("/metrics", "/")
METHODS = ("GET", "HEAD")

# page(gzipped) -> the body to serve, gzip-compressed when asked; an exception is a 500 (and a log line)
PageSource = Callable[[bool], bytes]


class MetricsEndpoint:
    def __init__(self, config: PrometheusConfig, page: PageSource, content_type: str, what: str = "Prometheus"):
        self.host, self.port = parse_host_port(config.address)
        self._page = page
        self._content_type = content_type
        self._what = what
        self._web = WebConfig()
        if config.web_config_file:
            from otel_efa.exporters import web_config
            self._web = web_config.load(config.web_config_file)
        self._auth = None
        if self._web.users:
            from otel_efa.exporters.basic_auth import BasicAuth  # bcrypt only when there are users
            self._auth = BasicAuth(self._web.users)
        try:
            self._socket = listen(self.host, self.port)
        except OSError as e:  # socket.create_server appends the address tuple to strerror: not needed here
            reason = os.strerror(e.errno) if e.errno and not isinstance(e, socket.gaierror) else (e.strerror or str(e))
            raise ConfigError("prometheus.address", f"cannot listen on {config.address}: {reason}") from None
        self.port = self._socket.getsockname()[1]  # the real port when 0 was asked for
        self._server: Optional[HttpServer] = None

    def start(self) -> None:
        self._server = HttpServer(self._socket, self._handle, ssl_context=self._web.ssl_context,
                                  name="prometheus-http")
        self._server.start()
        scheme = "https" if self._web.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("%s endpoint on %s://%s:%d/metrics%s", self._what, scheme, host, self.port,
                 " (basic auth)" if self._auth else "")
        if self._auth and not self._web.ssl_context:
            log.warning("Prometheus endpoint: basic auth without TLS sends passwords in the clear")

    async def _handle(self, request: Request) -> Response:
        extra: List[Tuple[str, str]] = list(self._web.headers)
        if self._auth is not None:
            from otel_efa.exporters.basic_auth import Busy
            try:
                allowed = await self._auth.allows(request.headers.get("authorization"))
            except Busy:
                return _text(429, "too many password checks waiting; retry", extra + [("Retry-After", "1")])
            if not allowed:
                return _text(401, "Unauthorized", extra + [("WWW-Authenticate", 'Basic realm="otel-efa"')])
        if request.target.split("?", 1)[0] not in METRICS_PATHS:
            return _text(404, "the metrics are at /metrics", extra)
        if request.method not in METHODS:
            return _text(405, "GET or HEAD", extra + [("Allow", ", ".join(METHODS))])
        gzipped = accepts_coding(request.headers.get("accept-encoding"), "gzip")
        try:
            body = self._page(gzipped)
        except Exception as e:
            log.error("rendering the %s page failed: %s: %s", self._what, type(e).__name__, e)
            return _text(500, "rendering failed", extra)
        headers = [("Content-Type", self._content_type), ("Vary", "Accept-Encoding"), *extra]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, headers, body)

    def stop(self, timeout: float) -> None:
        if self._server is not None:
            self._server.stop(timeout)
            self._server = None
        else:
            self._socket.close()
        if self._auth is not None:
            self._auth.close()


def _text(status: int, message: str, headers: List[Tuple[str, str]]) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers], message.encode() + b"\n")
