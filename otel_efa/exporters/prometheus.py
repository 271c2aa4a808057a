"""The Prometheus endpoint, default 0.0.0.0:9464, path /metrics (text format 0.0.4, gzip when asked).

A scrape serves the frame of the last Snapshot (otel_efa/frame.py) rendered by prometheus_text.py, and
the rendering happens at most once per Snapshot: scrapes in between get the cached bytes, so scraping
more often than the collection interval costs neither sysfs reads nor rendering. This replaces
opentelemetry-exporter-prometheus, whose scrape ran the SDK's collect and translated its result through
prometheus_client on every request (25-37 ms of CPU per scrape of a p5.48xlarge, against ~2 ms for a
frame and its render here: benchmarks/collection_cycle.py); the names, labels and HELP text are the same
(tests/test_prometheus_text.py).

Prometheus stores float64, so totals above 2**53 lose their last digits there (OTLP carries them exactly).
"""
import gzip
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Optional

from opentelemetry.sdk.resources import Resource

from .. import __version__
from ..config import Config, parse_host_port
from ..frame import Frame, FrameSource
from . import Exporter
from .prometheus_text import CONTENT_TYPE, PrometheusRenderer

log = logging.getLogger(__name__)
METRICS_PATHS = ("/metrics", "/")


class _Page(NamedTuple):
    frame: Frame
    body: bytes
    gzipped: Optional[bytes]


class PrometheusExporter(Exporter):
    name = "prometheus"

    def __init__(self, config: Config, resource: Resource):
        self.host, self.port = parse_host_port(config.prometheus.address)
        self._renderer = PrometheusRenderer(resource.attributes, "otel_efa", __version__)
        self._lock = threading.Lock()
        self._page: Optional[_Page] = None
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        assert self.frames is not None, "attach_frames() first"
        self._server = _server_class(self.host, self.port)((self.host, self.port), _handler_for(self))
        self.port = self._server.server_address[1]  # the real port when 0 was asked for
        self._thread = threading.Thread(target=self._server.serve_forever, name="prometheus-http", daemon=True)
        self._thread.start()
        log.info("Prometheus endpoint on http://%s:%d/metrics", self.host, self.port)

    def page(self, gzipped: bool) -> bytes:
        """The exposition of the latest Snapshot: rendered (and compressed) once, then served from cache."""
        frame = self.frames.current()
        page = self._page
        if page is None or page.frame is not frame or (gzipped and page.gzipped is None):
            with self._lock:
                page = self._page
                if page is None or page.frame is not frame:
                    page = _Page(frame, self._renderer.render(frame), None)
                if gzipped and page.gzipped is None:
                    page = page._replace(gzipped=gzip.compress(page.body, compresslevel=6))
                self._page = page
        return page.gzipped if gzipped else page.body

    def shutdown(self, timeout: float) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _server_class(host: str, port: int):
    """A threaded server of the address's family, so that "[::]:9464" listens on IPv6 as prometheus_client did."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class MetricsServer(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True  # a scrape in progress does not hold up the agent's exit

    return MetricsServer


def _accepts_gzip(header: Optional[str]) -> bool:
    return any(part.split(";")[0].strip().lower() == "gzip" for part in (header or "").split(","))


def _handler_for(exporter: PrometheusExporter):
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in METRICS_PATHS:
                self.send_error(404, "the metrics are at /metrics")
                return
            gzipped = _accepts_gzip(self.headers.get("Accept-Encoding"))
            try:
                body = exporter.page(gzipped)
            except Exception:
                log.exception("rendering the Prometheus page failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:  # a scrape every few seconds is not news
            pass

    return MetricsHandler
