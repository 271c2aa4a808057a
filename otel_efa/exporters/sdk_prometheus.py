"""``OTEL_METRICS_EXPORTER=prometheus`` on the otel-sdk path: the SDK's PrometheusMetricReader, served by the
agent's own endpoint (metrics_endpoint.py, on the ``prometheus.*`` keys, TLS and basic auth included), never
by prometheus_client's ``start_http_server`` (a thread per connection and no timeouts: see http_server.py).

The reader is registered on a private CollectorRegistry, not prometheus_client's global REGISTRY, and each
scrape renders it with ``generate_latest``: the SDK collects (running the instruments' callbacks over the
latest pushed values) and opentelemetry-exporter-prometheus translates, on every scrape: the cost
prometheus.py quotes for this pair (25-37 ms of CPU per scrape of a p5.48xlarge), where the fast
``prometheus`` exporter renders once per interval.
"""
import gzip
import logging

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from otel_efa.config import PrometheusConfig
from otel_efa.exporters.metrics_endpoint import MetricsEndpoint
from otel_efa.exporters.prometheus_text import CONTENT_TYPE


class _PrivateRegistryReader(PrometheusMetricReader):
    """For opentelemetry-exporter-prometheus before ``registry=`` (0.62b1, the newest for Python 3.9): it
    always registers on the global REGISTRY, so the collector is moved to ``registry`` here, and back out
    of it at shutdown (where the old reader would unregister from REGISTRY, which no longer has it)."""

    def __init__(self, registry: CollectorRegistry):
        sdk_log = logging.getLogger("opentelemetry.sdk.metrics._internal.export")
        sdk_log.disabled = True  # REGISTRY describes by collecting, before the reader has a MeterProvider
        try:
            super().__init__()
        finally:
            sdk_log.disabled = False
        REGISTRY.unregister(self._collector)
        registry.register(self._collector)
        self._private_registry = registry

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._private_registry.unregister(self._collector)


def private_reader(registry: CollectorRegistry) -> PrometheusMetricReader:
    try:
        return PrometheusMetricReader(registry=registry)
    except TypeError:
        return _PrivateRegistryReader(registry)


class SdkPrometheusEndpoint:
    """The reader to give the MeterProvider, and the endpoint that serves it (its port claimed here)."""

    def __init__(self, config: PrometheusConfig):
        self.registry = CollectorRegistry()  # no auto-describe: registering does not collect
        self.reader = private_reader(self.registry)
        try:
            self.endpoint = MetricsEndpoint(config, self.page, CONTENT_TYPE, what="Prometheus (OTel SDK)")
        except BaseException:
            self.reader.shutdown()
            raise

    @property
    def port(self) -> int:
        return self.endpoint.port

    def page(self, gzipped: bool) -> bytes:
        """The SDK's collect, translated by opentelemetry-exporter-prometheus, in text format 0.0.4."""
        body = generate_latest(self.registry)
        return gzip.compress(body, compresslevel=6) if gzipped else body

    def start(self) -> None:
        self.endpoint.start()

    def stop(self, timeout: float) -> None:
        self.endpoint.stop(timeout)
