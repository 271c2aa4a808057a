"""OTLP to the ADOT collector on the node: gRPC by default, or http/protobuf.

Exports follow collections: every :meth:`OtlpExporter.export` only wakes a worker thread that encodes the
frame of the Snapshot just collected (otlp_encoder.py) and sends it (otlp_transport.py), so the agent loop
never waits on the network. The SDK's reader and exporter did the same work (its collect and its per-point
encoder) in 26 ms of CPU per export of a p5.48xlarge; frame + encoder here take 3 ms, because everything
but the values is cached (benchmarks/collection_cycle.py, both on the same busy 2-core machine), and
carry counters at or above 2**63, on which the SDK's encoder raised and the whole export was lost.

Temporality is cumulative, always: the collector's ``awsemf`` exporter turns cumulative sums into deltas
itself and ``prometheusremotewrite`` drops delta sums. Cumulative state is also what makes an outage
harmless: nothing is queued while the collector is away (memory stays flat), and the first export after it
returns carries whole totals, so nothing measured is lost, and no retry loop is needed: an outage is one
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

from opentelemetry.sdk.resources import Resource

from .. import __version__
from ..config import Config, ConfigError, OtlpConfig
from . import Exporter
from .otlp_encoder import OtlpEncoder
from .otlp_transport import ExportFailed, GrpcSender, HttpSender

log = logging.getLogger(__name__)

DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
HTTP_METRICS_PATH = "/v1/metrics"
DEFAULT_TIMEOUT_S = 10.0
TEMPORALITY_VARIABLE = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"


@dataclass(frozen=True)
class OtlpSettings:
    """What the exporter uses, resolved from config keys, then OTEL_EXPORTER_OTLP_* variables, then defaults."""

    endpoint: str
    protocol: str
    headers: Tuple[Tuple[str, str], ...]
    timeout: float
    compression: str
    insecure: bool
    certificate: Optional[str] = None  # a CA bundle for TLS (OTEL_EXPORTER_OTLP_CERTIFICATE), else the system's


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

    certificate, _ = _from_environment(environ, "CERTIFICATE")
    return OtlpSettings(endpoint, protocol, headers, timeout, compression, insecure, certificate)


def _sender(settings: OtlpSettings):
    gzip_compression = settings.compression == "gzip"
    if settings.protocol == "grpc":
        return GrpcSender(settings.endpoint, settings.headers, settings.timeout, gzip_compression,
                          settings.insecure, settings.certificate)
    return HttpSender(settings.endpoint, settings.headers, settings.timeout, gzip_compression, settings.certificate)


class OutageReporter:
    """One warning when exports start failing, one when they work again; nothing per attempt."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.failing_since: Optional[float] = None
        self.failed_exports = 0
        self.exports = 0
        self.shut = threading.Event()  # failures while shutting down are not news

    def succeeded(self) -> None:
        self.exports += 1
        if self.failing_since is not None:
            log.warning("OTLP export to %s works again after %.0f s (%d failed attempts); the cumulative "
                        "totals it carries are whole", self.endpoint, time.monotonic() - self.failing_since,
                        self.failed_exports)
            self.failing_since = None
            self.failed_exports = 0

    def failed(self, problem: str) -> None:
        if self.shut.is_set():
            return
        self.failed_exports += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("OTLP export to %s is failing (%s); collection goes on, nothing is queued, and the "
                        "totals will be whole once the collector is back", self.endpoint,
                        problem or "no reason given")


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
        self.reporter = OutageReporter(self.settings.endpoint)
        self._encoder = OtlpEncoder(resource, "otel_efa", __version__)  # counters start with the agent
        self._sender = None
        self._rejections_logged = False
        self._wanted = threading.Event()
        self._last = threading.Event()
        self._worker: Optional[threading.Thread] = None

    def start(self) -> None:
        assert self.frames is not None, "attach_frames() first"
        self._sender = _sender(self.settings)
        self._worker = threading.Thread(target=self._send_loop, name="otlp-export", daemon=True)
        self._worker.start()
        log.info("OTLP (%s) to %s", self.settings.protocol, self.settings.endpoint)

    def export(self, snapshot) -> None:
        self._wanted.set()  # collections arriving while a send is under way coalesce into one

    def _send_loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self.reporter.shut.is_set():
                return  # the sender is closed: the final export had its chance
            final = self._last.is_set()  # asked for during a send: one more, with the latest values
            try:
                self.export_now()
            except Exception:
                if self.reporter.shut.is_set():
                    return  # closed under a send that hung: shutdown has said so once
                log.exception("OTLP export failed; trying again after the next collection")
            if final:
                return

    def export_now(self) -> bool:
        """Encode the latest frame and send it, once; True when the collector took it."""
        request = self._encoder.encode(self.frames.current())
        try:
            response = self._sender.send(request)
        except ExportFailed as e:
            self.reporter.failed(str(e))
            return False
        self.reporter.succeeded()
        self._note_rejections(response)
        return True

    def _note_rejections(self, response) -> None:
        """A partial success: the collector kept the rest. Said once; the next exports carry whole totals."""
        rejected = response.partial_success.rejected_data_points
        if rejected and not self._rejections_logged:
            self._rejections_logged = True
            log.warning("the collector at %s rejected %d data points (%s); not logged again",
                        self.settings.endpoint, rejected, response.partial_success.error_message or "no reason given")

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
        self.reporter.shut.set()
        if self._sender is not None:
            self._sender.close()  # cancels a gRPC export still under way
        if self._worker is not None:
            self._worker.join(max(0.0, deadline - time.monotonic()))
