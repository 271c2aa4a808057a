"""OTLP to the ADOT collector on the node (opentelemetry-exporter-otlp): gRPC by default, or http/protobuf.

Exports follow collections: the reader's own timer is off (``export_interval_millis=math.inf``) and every
:meth:`OtlpExporter.export` only wakes a worker thread that collects and sends, so the agent loop never
waits on the network and what is sent is the Snapshot just collected.

Temporality is cumulative, always: the collector's ``awsemf`` exporter turns cumulative sums into deltas
itself and ``prometheusremotewrite`` drops delta sums. Cumulative state is also what makes an outage
harmless: nothing is queued while the collector is away (memory stays flat), and the first export after it
returns carries whole totals, so nothing measured is lost. The SDK logs every retry; here an outage is one
warning when it starts and one when it ends.
"""
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple
from urllib.parse import urlparse

from opentelemetry.sdk.metrics import (Counter, Histogram, ObservableCounter, ObservableGauge,
                                       ObservableUpDownCounter, UpDownCounter)
from opentelemetry.sdk.metrics.export import (AggregationTemporality, MetricExporter, MetricExportResult,
                                              MetricReader, MetricsData, PeriodicExportingMetricReader)
from opentelemetry.sdk.resources import Resource

from ..config import Config, ConfigError, OtlpConfig
from . import Exporter

log = logging.getLogger(__name__)

DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
HTTP_METRICS_PATH = "/v1/metrics"
DEFAULT_TIMEOUT_S = 10.0
TEMPORALITY_VARIABLE = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"

CUMULATIVE = {kind: AggregationTemporality.CUMULATIVE for kind in (
    Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)}

# Where the SDK's exporters log each retry and each failed export.
SDK_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc.exporter",
               "opentelemetry.exporter.otlp.proto.http.metric_exporter")


@dataclass(frozen=True)
class OtlpSettings:
    """What the exporter uses, resolved from config keys, then OTEL_EXPORTER_OTLP_* variables, then defaults."""

    endpoint: str
    protocol: str
    headers: Tuple[Tuple[str, str], ...]
    timeout: float
    compression: str
    insecure: bool


def _from_environment(environ: Mapping[str, str], name: str) -> Tuple[Optional[str], str]:
    """The METRICS-specific variable first, then the general one: (value, variable name)."""
    for variable in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(variable, "").strip()
        if value:
            return value, variable
    return None, ""


def _parse_headers(text: str, key: str) -> Tuple[Tuple[str, str], ...]:
    from opentelemetry.util.re import parse_env_headers

    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(key, f"expected key=value[,key=value...], got {item!r}")
    return tuple(parse_env_headers(text, liberal=True).items())


def resolve_settings(config: OtlpConfig, environ: Mapping[str, str] = os.environ) -> OtlpSettings:
    """One place that decides every setting, so the SDK's own environment handling never surprises us.

    Timeouts are seconds, as opentelemetry-python reads ``OTEL_EXPORTER_OTLP_TIMEOUT``.
    """
    protocol, source = config.protocol, "otlp.protocol"
    if protocol is None:
        protocol, source = _from_environment(environ, "PROTOCOL")
    protocol = protocol or "grpc"
    if protocol not in OtlpConfig.PROTOCOLS:
        raise ConfigError(source, f"must be grpc or http/protobuf, got {protocol!r}")

    endpoint, source = config.endpoint, "otlp.endpoint"
    if endpoint is None:
        endpoint, source = _from_environment(environ, "ENDPOINT")
    if endpoint is None:
        endpoint = DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT
        source = "default"
    parsed = urlparse(endpoint)
    if not parsed.scheme or not parsed.netloc:
        raise ConfigError(source, f"must be a URL such as {DEFAULT_GRPC_ENDPOINT}, got {endpoint!r}")
    if protocol == "http/protobuf":
        # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL (the spec appends the signal path); the METRICS one and
        # our key are used as given unless they have no path at all.
        if source == "OTEL_EXPORTER_OTLP_ENDPOINT" or parsed.path in ("", "/"):
            endpoint = endpoint.rstrip("/") + HTTP_METRICS_PATH

    headers_text, source = config.headers, "otlp.headers"
    if headers_text is None:
        headers_text, source = _from_environment(environ, "HEADERS")
    headers = _parse_headers(headers_text, source) if headers_text else ()

    timeout, source = config.timeout, "otlp.timeout"
    if timeout is None:
        text, source = _from_environment(environ, "TIMEOUT")
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ConfigError(source, f"expected a number of seconds, got {text!r}") from None
    if not 0 < timeout < math.inf:
        raise ConfigError(source, "must be a positive number of seconds")

    compression, source = config.compression, "otlp.compression"
    if compression is None:
        compression, source = _from_environment(environ, "COMPRESSION")
    compression = (compression or "none").lower()
    if compression not in OtlpConfig.COMPRESSIONS:
        raise ConfigError(source, f"must be gzip or none, got {compression!r}")

    insecure = config.insecure
    if insecure is None:
        text, source = _from_environment(environ, "INSECURE")
        insecure = text.lower() == "true" if text else parsed.scheme != "https"

    return OtlpSettings(endpoint, protocol, headers, timeout, compression, insecure)


def _sdk_exporter(settings: OtlpSettings) -> MetricExporter:
    """The SDK exporter with every setting given explicitly (cumulative temporality included)."""
    if settings.protocol == "grpc":
        # gRPC core writes its own INFO lines (a GOAWAY when the collector stops) straight to stderr.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=settings.endpoint, insecure=settings.insecure, headers=settings.headers,
            timeout=settings.timeout, preferred_temporality=CUMULATIVE,
            compression=Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression)
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter(
        endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout,
        preferred_temporality=CUMULATIVE,
        compression=HttpCompression.Gzip if settings.compression == "gzip" else HttpCompression.NoCompression)


class _RetryLogCatcher(logging.Filter):
    """Keeps the SDK's per-retry and per-failure records out of the log; remembers the last one as the reason."""

    def __init__(self):
        super().__init__()
        self.last_problem = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.last_problem = record.getMessage()
            return log.isEnabledFor(logging.DEBUG)
        return True


class OutageReporter(MetricExporter):
    """Wraps the SDK exporter: one warning when exports start failing, one when they work again."""

    def __init__(self, inner: MetricExporter, endpoint: str, catcher: _RetryLogCatcher):
        super().__init__(preferred_temporality=CUMULATIVE,
                         preferred_aggregation=getattr(inner, "_preferred_aggregation", None))
        self.inner = inner
        self.endpoint = endpoint
        self._catcher = catcher
        self.failing_since: Optional[float] = None
        self.failed_exports = 0
        self.exports = 0
        self._shut = threading.Event()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as e:  # an exporter bug is an outage too, reported the same way
            self._catcher.last_problem = f"{type(e).__name__}: {e}"
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self.exports += 1
            if self.failing_since is not None:
                log.warning("OTLP export to %s works again after %.0f s (%d failed attempts); the cumulative "
                            "totals it carries are whole", self.endpoint, time.monotonic() - self.failing_since,
                            self.failed_exports)
                self.failing_since = None
                self.failed_exports = 0
        elif not self._shut.is_set():
            self.failed_exports += 1
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.warning("OTLP export to %s is failing (%s); collection goes on, nothing is queued, and the "
                            "totals will be whole once the collector is back", self.endpoint,
                            self._catcher.last_problem or "no reason given")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        """Idempotent: the agent stops us first, then the MeterProvider shuts the reader down."""
        if not self._shut.is_set():
            self._shut.set()
            self.inner.shutdown(timeout_millis=timeout_millis)


def warn_if_delta_requested(environ: Mapping[str, str] = os.environ) -> bool:
    preference = environ.get(TEMPORALITY_VARIABLE, "").strip().lower()
    if preference == "delta":
        log.warning("%s=%s is ignored: otel-efa exports cumulative sums (the collector's awsemf exporter "
                    "computes deltas itself and prometheusremotewrite drops delta sums)",
                    TEMPORALITY_VARIABLE, environ[TEMPORALITY_VARIABLE])
        return True
    return False


class OtlpExporter(Exporter):
    name = "otlp"

    def __init__(self, config: Config, resource: Resource):
        self.settings = resolve_settings(config.otlp)
        warn_if_delta_requested()
        self._catcher = _RetryLogCatcher()
        self.reporter = OutageReporter(_sdk_exporter(self.settings), self.settings.endpoint, self._catcher)
        self._reader = PeriodicExportingMetricReader(
            self.reporter, export_interval_millis=math.inf,
            export_timeout_millis=self.settings.timeout * 1000)
        self._wanted = threading.Event()
        self._last = threading.Event()
        self._worker: Optional[threading.Thread] = None

    def metric_reader(self) -> Optional[MetricReader]:
        return self._reader

    def start(self) -> None:
        for name in SDK_LOGGERS:
            logging.getLogger(name).addFilter(self._catcher)
        self._worker = threading.Thread(target=self._send_loop, name="otlp-export", daemon=True)
        self._worker.start()
        log.info("OTLP (%s) to %s", self.settings.protocol, self.settings.endpoint)

    def export(self, snapshot) -> None:
        self._wanted.set()  # collections arriving while a send is under way coalesce into one

    def _send_loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            final = self._last.is_set()  # asked for during a send: one more, with the latest values
            try:
                self._reader.collect(timeout_millis=self.settings.timeout * 1000)
            except Exception:
                log.exception("OTLP collection failed; trying again after the next collection")
            if final:
                return

    def shutdown(self, timeout: float) -> None:
        """One last export of the latest values, within ``timeout`` and the OTLP timeout, collector or not."""
        budget = min(timeout, self.settings.timeout)
        deadline = time.monotonic() + budget
        if self._worker is not None:
            self._last.set()
            self._wanted.set()
            self._worker.join(max(0.0, budget - 0.25))  # keep a moment to abort a send that hangs
            if self._worker.is_alive():
                log.warning("OTLP final export to %s did not finish within %.1f s; dropping it",
                            self.settings.endpoint, budget)
        self.reporter.shutdown()  # aborts a retry still sleeping and closes the channel
        if self._worker is not None:
            self._worker.join(max(0.0, deadline - time.monotonic()))
        for name in SDK_LOGGERS:
            logging.getLogger(name).removeFilter(self._catcher)
