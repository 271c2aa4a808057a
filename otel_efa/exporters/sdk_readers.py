"""What the ``otel-sdk`` exporter's MeterProvider reads with: the exporters ``OTEL_METRICS_EXPORTER`` names.

As the OpenTelemetry specification has them ("Environment Variable Specification", "Exporter Selection"
and "Periodic exporting MetricReader"):

* ``OTEL_METRICS_EXPORTER``: a comma list of ``otlp`` (default), ``prometheus``, ``console``, or ``none``.
  ``otlp`` and ``console`` are PeriodicExportingMetricReaders; ``prometheus`` is a pull reader served by
  the agent's own endpoint (sdk_prometheus.py) on the ``prometheus.*`` keys.
* ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds) if set, else the agent's ``interval``;
  ``OTEL_METRIC_EXPORT_TIMEOUT`` (milliseconds) if set, else the SDK's 30 s.
* ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``: ``cumulative`` (default), ``delta`` or
  ``lowmemory``, as the SDK's OTLP exporter maps them to instrument kinds. Unlike the fast ``otlp``
  exporter, which always sends cumulative sums, this path honours ``delta``, with a warning at start-up.

Every OTLP setting (endpoint, protocol, headers, TLS, compression, timeout) comes from otel_efa/otlp_settings.py,
the resolver the fast exporter uses, and is passed to the SDK exporter's constructor, so both paths send to
the same place the same way. A bad value is a ConfigError naming its variable (one line, exit status 2).
"""
import logging
import math
import os
import sys
from typing import Any, Dict, Mapping, Optional, Tuple, cast
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, PeriodicExportingMetricReader

from otel_efa.config import ConfigError, quote
from otel_efa.exporters.otlp import TEMPORALITY_VARIABLE
from otel_efa.otlp_settings import OtlpSettings

log = logging.getLogger(__name__)

EXPORTER_VARIABLE = "OTEL_METRICS_EXPORTER"
INTERVAL_VARIABLE = "OTEL_METRIC_EXPORT_INTERVAL"
TIMEOUT_VARIABLE = "OTEL_METRIC_EXPORT_TIMEOUT"
CHOICES = ("otlp", "prometheus", "console")
DEFAULT = ("otlp",)
NONE = "none"
TEMPORALITIES = ("cumulative", "delta", "lowmemory")

_CUMULATIVE, _DELTA = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
# The SDK OTLP exporter's table (opentelemetry-exporter-otlp-proto-common, OTLPMetricExporterMixin)
_TEMPORALITY: Dict[str, Dict[type, AggregationTemporality]] = {
    "cumulative": {Counter: _CUMULATIVE, UpDownCounter: _CUMULATIVE, Histogram: _CUMULATIVE,
                   ObservableCounter: _CUMULATIVE, ObservableUpDownCounter: _CUMULATIVE, ObservableGauge: _CUMULATIVE},
    "delta": {Counter: _DELTA, UpDownCounter: _CUMULATIVE, Histogram: _DELTA,
              ObservableCounter: _DELTA, ObservableUpDownCounter: _CUMULATIVE, ObservableGauge: _CUMULATIVE},
    "lowmemory": {Counter: _DELTA, UpDownCounter: _CUMULATIVE, Histogram: _DELTA,
                  ObservableCounter: _CUMULATIVE, ObservableUpDownCounter: _CUMULATIVE, ObservableGauge: _CUMULATIVE},
}


def chosen_exporters(environ: Mapping[str, str] = os.environ) -> Tuple[str, ...]:
    """The readers ``OTEL_METRICS_EXPORTER`` asks for, in its order, each once; () for ``none``."""
    text = environ.get(EXPORTER_VARIABLE, "").strip()
    if not text:
        return DEFAULT
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in CHOICES + (NONE,):
            raise ConfigError(EXPORTER_VARIABLE, f"unknown exporter {quote(name)}; choose from "
                                                 f"{', '.join(CHOICES)} (a comma list), or {NONE}")
    if NONE in names:
        if len(set(names)) > 1:
            raise ConfigError(EXPORTER_VARIABLE, f"{NONE} cannot be combined with other exporters, got {quote(text)}")
        return ()
    return tuple(dict.fromkeys(names))


def _milliseconds(variable: str, environ: Mapping[str, str]) -> Optional[float]:
    text = environ.get(variable, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigError(variable, f"must be a positive number of milliseconds, got {quote(text)}")
    return value


def export_interval_millis(interval_s: float, environ: Mapping[str, str] = os.environ) -> float:
    """OTEL_METRIC_EXPORT_INTERVAL when set, else the agent's collection interval."""
    millis = _milliseconds(INTERVAL_VARIABLE, environ)
    return interval_s * 1000.0 if millis is None else millis


def export_timeout_millis(environ: Mapping[str, str] = os.environ) -> Optional[float]:
    """OTEL_METRIC_EXPORT_TIMEOUT when set, else None (the SDK's default, 30 s)."""
    return _milliseconds(TIMEOUT_VARIABLE, environ)


def temporality(environ: Mapping[str, str] = os.environ) -> Dict[type, AggregationTemporality]:
    """The OTLP exporter's preferred temporality per instrument class; a warning when sums go as deltas."""
    text = environ.get(TEMPORALITY_VARIABLE, "").strip()
    preference = text.lower() or "cumulative"
    if preference not in TEMPORALITIES:
        raise ConfigError(TEMPORALITY_VARIABLE, f"must be one of {', '.join(TEMPORALITIES)}, got {quote(text)}")
    if preference == "delta":
        log.warning("%s=%s: the otel-sdk exporter sends its counters as delta sums, as asked (the otlp exporter "
                    "keeps cumulative ones); the collector's prometheusremotewrite exporter drops delta sums",
                    TEMPORALITY_VARIABLE, text)
    return dict(_TEMPORALITY[preference])


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def otlp_exporter(settings: OtlpSettings, preferred: Dict[type, AggregationTemporality]) -> MetricExporter:
    """The SDK's OTLP metric exporter, gRPC or http/protobuf, with every setting given explicitly (what the
    SDK would read from the environment itself, otlp_settings.py has read already, with the ``otlp.*`` keys)."""
    from otel_efa.exporters.sdk_outage import QuietOutageExporter

    return QuietOutageExporter(_sdk_otlp_exporter(settings, preferred), settings.endpoint, preferred)


def _sdk_otlp_exporter(settings: OtlpSettings, preferred: Dict[type, AggregationTemporality]) -> MetricExporter:
    if settings.protocol == "grpc":
        return _grpc_exporter(settings, preferred)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    tls = settings.endpoint.startswith("https:")
    return HttpExporter(
        endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout,
        compression=Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression,
        certificate_file=settings.certificate if tls else None,
        client_key_file=settings.client_key if tls else None,
        client_certificate_file=settings.client_certificate if tls else None,
        preferred_temporality=preferred)


def _grpc_exporter(settings: OtlpSettings, preferred: Dict[type, AggregationTemporality]) -> MetricExporter:
    # As the fast exporter's sender (otlp_transport.py): gRPC core's INFO lines off stderr, and no fork
    # handlers (the agent forks squeue while exports run; gRPC's handlers made such children abort).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

    from otel_efa.exporters.otlp_transport import GRPC_CHANNEL_OPTIONS

    credentials = None
    if not settings.insecure:
        credentials = grpc.ssl_channel_credentials(root_certificates=_read(settings.certificate),
                                                   private_key=_read(settings.client_key),
                                                   certificate_chain=_read(settings.client_certificate))
    # The scheme says what settings.insecure decided (the SDK would read https as TLS whatever insecure says).
    endpoint = f"{'http' if settings.insecure else 'https'}://{urlsplit(settings.endpoint).netloc}"
    return GrpcExporter(
        endpoint=endpoint, insecure=settings.insecure, credentials=credentials,
        headers=tuple((key.lower(), value) for key, value in settings.headers), timeout=settings.timeout,
        compression=grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression,
        preferred_temporality=preferred,
        channel_options=cast(Any, GRPC_CHANNEL_OPTIONS))  # (its annotation says str values; gRPC takes ints)


def periodic_reader(exporter: MetricExporter, interval_millis: float,
                    timeout_millis: Optional[float]) -> PeriodicExportingMetricReader:
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_millis,
                                         export_timeout_millis=timeout_millis)


def console_exporter() -> MetricExporter:
    """The SDK's ConsoleMetricExporter on this process's standard output (as it is now, not at import)."""
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return ConsoleMetricExporter(out=sys.stdout)
