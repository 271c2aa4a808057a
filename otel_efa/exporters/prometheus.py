"""The Prometheus endpoint, default 0.0.0.0:9464, path /metrics (text format 0.0.4, gzip when asked).

A scrape serves the last Interval pushed (otel_efa/pipeline/interval.py) rendered by prometheus_text.py, and
the rendering happens at most once per Interval: scrapes in between get the cached bytes, so scraping
more often than the collection interval costs neither sysfs reads nor rendering. Before the first
collection the page has ``target_info`` only. This replaces opentelemetry-exporter-prometheus, whose
scrape ran the SDK's collect and translated its result through prometheus_client on every request
(25-37 ms of CPU per scrape of a p5.48xlarge, against ~2 ms for an Interval and its render here:
benchmarks/collection_cycle.py); the names, labels and HELP text are the same (tests/test_prometheus_text.py).

Prometheus stores float64, so totals above 2**53 lose their last digits there (OTLP carries them exactly).

The endpoint answers anyone who can reach the address (0.0.0.0 by default). It is served by
http_server.py (one event-loop thread, timeouts and caps against idle, slow and oversized clients: the
unit's TasksMax and MemoryMax must not be a remote's to spend), with TLS and basic auth from a web config
file in exporter-toolkit's format (web_config.py), so node_exporter's file works here too. The port is
claimed when the exporter is made, before any exporter starts: a port in use or an address that cannot
be bound is a ConfigError on ``prometheus.address`` (one line, exit status 2).
"""
import gzip
import logging
import os
import socket
import threading
from typing import List, NamedTuple, Optional, Tuple

from otel_efa import __version__
from otel_efa.config import ConfigError, parse_host_port
from otel_efa.exporters import Exporter, ExporterContext
from otel_efa.exporters.http_server import HttpServer, Request, Response, accepts_coding, listen
from otel_efa.exporters.prometheus_text import CONTENT_TYPE, PrometheusRenderer
from otel_efa.exporters.web_config import WebConfig
from otel_efa.pipeline.interval import Interval
from otel_efa.pipeline.snapshot import Snapshot

log = logging.getLogger(__name__)
METRICS_PATHS = ("/metrics", "/")
METHODS = ("GET", "HEAD")


_NOTHING_YET = Interval(Snapshot(monotonic=0.0, wall_time=0.0, devices=(), read_errors={}, collections=0, duration=0.0),
                        metrics=(), series_version=0, specs=())


class _Page(NamedTuple):
    interval: Optional[Interval]
    body: bytes
    gzipped: Optional[bytes]


class PrometheusExporter(Exporter):
    name = "prometheus"

    def __init__(self, context: ExporterContext):
        super().__init__(context)
        config, resource = context.config, context.resource
        self.host, self.port = parse_host_port(config.prometheus.address)
        self._web = WebConfig()
        if config.prometheus.web_config_file:
            from otel_efa.exporters import web_config
            self._web = web_config.load(config.prometheus.web_config_file)
        self._auth = None
        if self._web.users:
            from otel_efa.exporters.basic_auth import BasicAuth  # bcrypt only when there are users
            self._auth = BasicAuth(self._web.users)
        try:
            self._socket = listen(self.host, self.port)
        except OSError as e:  # socket.create_server appends the address tuple to strerror: not needed here
            reason = os.strerror(e.errno) if e.errno and not isinstance(e, socket.gaierror) else (e.strerror or str(e))
            raise ConfigError("prometheus.address", f"cannot listen on {config.prometheus.address}: {reason}") from None
        self.port = self._socket.getsockname()[1]  # the real port when 0 was asked for
        self._renderer = PrometheusRenderer(resource.attributes, "otel_efa", __version__)
        self._lock = threading.Lock()
        self._page: Optional[_Page] = None
        self._interval: Optional[Interval] = None  # the latest pushed; replaced whole, read by the server thread
        self._server: Optional[HttpServer] = None

    def start(self) -> None:
        self._server = HttpServer(self._socket, self._handle, ssl_context=self._web.ssl_context,
                                  name="prometheus-http")
        self._server.start()
        scheme = "https" if self._web.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("Prometheus endpoint on %s://%s:%d/metrics%s", scheme, host, self.port,
                 " (basic auth)" if self._auth else "")
        if self._auth and not self._web.ssl_context:
            log.warning("Prometheus endpoint: basic auth without TLS sends passwords in the clear")

    def export(self, interval: Interval) -> None:
        self._interval = interval  # rendered on the first scrape that wants it

    def page(self, gzipped: bool) -> bytes:
        """The exposition of the latest Interval: rendered (and compressed) once, then served from cache."""
        interval = self._interval
        page = self._page
        if page is None or page.interval is not interval or (gzipped and page.gzipped is None):
            with self._lock:
                page = self._page
                if page is None or page.interval is not interval:
                    page = _Page(interval, self._render(interval), None)
                if gzipped and page.gzipped is None:
                    page = page._replace(gzipped=gzip.compress(page.body, compresslevel=6))
                self._page = page
        return page.gzipped if gzipped else page.body

    def _render(self, interval: Optional[Interval]) -> bytes:
        # started, nothing collected yet: target_info (who is there), no samples
        return self._renderer.render(interval if interval is not None else _NOTHING_YET)

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
            body = self.page(gzipped)
        except Exception as e:
            log.error("rendering the Prometheus page failed: %s: %s", type(e).__name__, e)
            return _text(500, "rendering failed", extra)
        headers = [("Content-Type", CONTENT_TYPE), ("Vary", "Accept-Encoding"), *extra]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, headers, body)

    def shutdown(self, timeout: float) -> None:
        if self._server is not None:
            self._server.stop(timeout)
            self._server = None
        else:
            self._socket.close()
        if self._auth is not None:
            self._auth.close()


def _text(status: int, message: str, headers: List[Tuple[str, str]]) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers], message.encode() + b"\n")
