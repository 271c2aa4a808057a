"""The Prometheus endpoint, default 0.0.0.0:9464, path /metrics (text format 0.0.4, gzip when asked).

A scrape serves the frame of the last Snapshot (otel_efa/pipeline/frame.py) rendered by prometheus_text.py, and
the rendering happens at most once per Snapshot: scrapes in between get the cached bytes, so scraping
more often than the collection interval costs neither sysfs reads nor rendering. This replaces
opentelemetry-exporter-prometheus, whose scrape ran the SDK's collect and translated its result through
prometheus_client on every request (25-37 ms of CPU per scrape of a p5.48xlarge, against ~2 ms for a
frame and its render here: benchmarks/collection_cycle.py); the names, labels and HELP text are the same
(tests/test_prometheus_text.py).

Prometheus stores float64, so totals above 2**53 lose their last digits there (OTLP carries them exactly).

The endpoint answers anyone who can reach the address (0.0.0.0 by default). It is served by
metrics_endpoint.py (http_server.py's hardened server, TLS and basic auth from a web config file in
exporter-toolkit's format); the port is claimed when the exporter is made (a port in use is a ConfigError on
``prometheus.address``, exit status 2).
"""
import gzip
import threading
from typing import NamedTuple, Optional

from opentelemetry.sdk.resources import Resource

from otel_efa import __version__
from otel_efa.config import Config
from otel_efa.exporters import Exporter
from otel_efa.exporters.metrics_endpoint import MetricsEndpoint
from otel_efa.exporters.prometheus_text import CONTENT_TYPE, PrometheusRenderer
from otel_efa.pipeline.frame import Frame


class _Page(NamedTuple):
    frame: Frame
    body: bytes
    gzipped: Optional[bytes]


class PrometheusExporter(Exporter):
    name = "prometheus"

    def __init__(self, config: Config, resource: Resource):
        self._endpoint = MetricsEndpoint(config.prometheus, self.page, CONTENT_TYPE)
        self.host, self.port = self._endpoint.host, self._endpoint.port
        self._renderer = PrometheusRenderer(resource.attributes, "otel_efa", __version__)
        self._lock = threading.Lock()
        self._page: Optional[_Page] = None

    def start(self) -> None:
        assert self.frames is not None, "attach_frames() first"
        self._endpoint.start()

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
        self._endpoint.stop(timeout)
