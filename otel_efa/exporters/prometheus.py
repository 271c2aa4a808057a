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
metrics_endpoint.py (http_server.py's hardened server, TLS and basic auth from a web config file in
exporter-toolkit's format); the port is claimed when the exporter is made (a port in use is a ConfigError on
``prometheus.address``, exit status 2).
"""
import gzip
import threading
from typing import NamedTuple, Optional

from otel_efa import __version__
from otel_efa.exporters import Exporter, ExporterContext
from otel_efa.exporters.metrics_endpoint import MetricsEndpoint
from otel_efa.exporters.prometheus_text import CONTENT_TYPE, PrometheusRenderer
from otel_efa.pipeline.interval import Interval
from otel_efa.pipeline.snapshot import Snapshot

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
        self._endpoint = MetricsEndpoint(context.config.prometheus, self.page, CONTENT_TYPE)
        self.host, self.port = self._endpoint.host, self._endpoint.port
        self._renderer = PrometheusRenderer(context.resource.attributes, "otel_efa", __version__)
        self._lock = threading.Lock()
        self._page: Optional[_Page] = None
        self._interval: Optional[Interval] = None  # the latest pushed; replaced whole, read by the server thread

    def start(self) -> None:
        self._endpoint.start()

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
        return page.gzipped if gzipped and page.gzipped is not None else page.body

    def _render(self, interval: Optional[Interval]) -> bytes:
        # started, nothing collected yet: target_info (who is there), no samples
        return self._renderer.render(interval if interval is not None else _NOTHING_YET)

    def shutdown(self, timeout: float) -> None:
        self._endpoint.stop(timeout)
