"""The Prometheus endpoint (opentelemetry-exporter-prometheus), default 0.0.0.0:9464.

A scrape runs the instrument callbacks, which serve the last Snapshot: scraping more often than the
collection interval costs no sysfs reads. Prometheus stores float64, so totals above 2**53 lose their
last digits there (OTLP carries them exactly).
"""
import logging
from typing import Optional

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, start_http_server

from ..config import Config, parse_host_port
from . import Exporter

log = logging.getLogger(__name__)


class PrometheusExporter(Exporter):
    name = "prometheus"

    def __init__(self, config: Config, resource: Resource):
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        self.host, self.port = parse_host_port(config.prometheus.address)
        self.registry = CollectorRegistry(auto_describe=True)
        try:
            self._reader = PrometheusMetricReader(registry=self.registry)
        except TypeError:
            # Releases for Python 3.9 (<= 0.62b1) always register on prometheus_client's global
            # registry; move the reader's collector to ours so each agent serves only its own metrics.
            from prometheus_client import REGISTRY

            sdk_log = logging.getLogger("opentelemetry.sdk.metrics._internal.export")
            sdk_log.disabled = True  # registering runs a collect before there is a MeterProvider
            try:
                self._reader = PrometheusMetricReader()
            finally:
                sdk_log.disabled = False
            collector = self._reader._collector
            REGISTRY.unregister(collector)
            self.registry.register(collector)
        self._server = None
        self._thread = None

    def metric_reader(self) -> Optional[MetricReader]:
        return self._reader

    def start(self) -> None:
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._server.server_address[1]  # the real port when 0 was asked for
        log.info("Prometheus endpoint on http://%s:%d/metrics", self.host, self.port)

    def shutdown(self, timeout: float) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
