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
        self._legacy_collector = None
        try:
            self._reader = PrometheusMetricReader(registry=self.registry)
        except TypeError:
            # Before 0.63b0 (the newest on Python 3.9, Amazon Linux 2023's) the reader has no registry
            # argument and registers in the global one: move its collector to ours, and back before the
            # MeterProvider's shutdown unregisters it from the global registry.
            from prometheus_client import REGISTRY

            self._reader = PrometheusMetricReader()
            self._legacy_collector = self._reader._collector
            REGISTRY.unregister(self._legacy_collector)
            self.registry.register(self._legacy_collector)
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
        if self._legacy_collector is not None:
            from prometheus_client import REGISTRY

            self.registry.unregister(self._legacy_collector)
            REGISTRY.register(self._legacy_collector)
            self._legacy_collector = None
