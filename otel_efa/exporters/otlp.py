"""OTLP to the ADOT collector on the node: gRPC by default, or http/protobuf.

Exports follow collections: every :meth:`OtlpExporter.export` only keeps the Interval and wakes a worker
thread that encodes it (otlp_encoder.py) and sends it (otlp_transport.py), so the agent loop
never waits on the network. The SDK's reader and exporter did the same work (its collect and its per-point
encoder) in 26 ms of CPU per export of a p5.48xlarge; interval + encoder here take 3 ms, because everything
but the values is cached (benchmarks/collection_cycle.py, both on the same busy 2-core machine), and
carry counters at or above 2**63, on which the SDK's encoder raised and the whole export was lost.

Temporality is cumulative, always: the collector's ``awsemf`` exporter turns cumulative sums into deltas
itself and ``prometheusremotewrite`` drops delta sums. Cumulative state is also what makes an outage
harmless: nothing is queued while the collector is away (memory stays flat), and the first export after it
returns carries whole totals, so nothing measured is lost, and no retry loop is needed: an outage is one
warning when it starts and one when it ends.

Endpoint, TLS, headers, timeout and compression come from otel_efa/otlp_settings.py, the one resolver of the
``otlp.*`` keys and the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""
import logging
import os
import threading
import time
from typing import Callable, Mapping, Optional, Union

from otel_efa import __version__
from otel_efa.exporters import Exporter, ExporterContext
from otel_efa.exporters.otlp_encoder import OtlpEncoder
from otel_efa.exporters.otlp_transport import ExportFailed, GrpcSender, HttpSender, problem, short
from otel_efa.otlp_settings import OtlpSettings, resolve_settings
from otel_efa.pipeline.interval import Interval

log = logging.getLogger(__name__)

TEMPORALITY_VARIABLE = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"


def _sender(settings: OtlpSettings):
    gzip_compression = settings.compression == "gzip"
    client = (settings.client_key, settings.client_certificate)
    if settings.protocol == "grpc":
        return GrpcSender(settings.endpoint, settings.headers, settings.timeout, gzip_compression,
                          settings.insecure, settings.certificate, *client)
    return HttpSender(settings.endpoint, settings.headers, settings.timeout, gzip_compression, settings.certificate,
                      *client)


class OutageReporter:
    """One warning when exports start failing, one when they work again; nothing per attempt."""

    def __init__(self, endpoint: str, clock: Callable[[], float] = time.monotonic, cumulative: bool = True):
        self.endpoint = endpoint
        self.cumulative = cumulative  # False: the otel-sdk path sending deltas, whose failed exports are lost
        self._clock = clock
        self.failing_since: Optional[float] = None
        self.failed_exports = 0
        self.exports = 0
        self.shut = threading.Event()  # failures while shutting down are not news

    def succeeded(self) -> None:
        self.exports += 1
        if self.failing_since is not None:
            log.warning("OTLP export to %s works again after %.0f s (%d failed attempts); %s", self.endpoint,
                        self._clock() - self.failing_since, self.failed_exports,
                        "the cumulative totals it carries are whole" if self.cumulative
                        else "the deltas of the failed exports are lost")
            self.failing_since = None
            self.failed_exports = 0

    def failed(self, problem: str) -> None:
        if self.shut.is_set():
            return
        self.failed_exports += 1
        if self.failing_since is None:
            self.failing_since = self._clock()
            log.warning("OTLP export to %s is failing (%s); collection goes on, nothing is queued, and %s",
                        self.endpoint, problem or "no reason given",
                        "the totals will be whole once the collector is back" if self.cumulative
                        else "the deltas of failed exports are lost (delta temporality)")


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

    def __init__(self, context: ExporterContext):
        super().__init__(context)
        self.settings = resolve_settings(context.config.otlp)
        for note in self.settings.notes:
            log.warning("%s", note)
        warn_if_delta_requested()
        self.reporter = OutageReporter(self.settings.endpoint, context.clock)
        self._encoder = OtlpEncoder(context.resource, "otel_efa", __version__)  # counters start with the agent
        self._latest: Optional[Interval] = None  # the newest Interval pushed; replaced whole
        self._sender: Optional[Union[GrpcSender, HttpSender]] = None
        self._rejections_logged = False
        self._wanted = threading.Event()
        self._last = threading.Event()
        self._worker: Optional[threading.Thread] = None

    def start(self) -> None:
        self._sender = _sender(self.settings)
        self._worker = threading.Thread(target=self._send_loop, name="otlp-export", daemon=True)
        self._worker.start()
        log.info("OTLP (%s) to %s", self.settings.protocol, self.settings.endpoint)

    def export(self, interval: Interval) -> None:
        self._latest = interval
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

    def export_now(self, interval: Optional[Interval] = None) -> bool:
        """Encode ``interval`` (by default the latest pushed) and send it, once; True when the collector took
        it (False, and nothing sent, before the first collection)."""
        interval = interval or self._latest
        if interval is None:
            return False
        body = self._encoder.encode(interval)  # the serialized request
        if self._sender is None:
            return False
        try:
            response = self._sender.send(body)
        except ExportFailed as e:
            self.reporter.failed(str(e))
            return False
        except Exception as e:  # one a transport was not expected to raise: still an outage, not a traceback
            self.reporter.failed(problem(e))
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
                        self.settings.endpoint, rejected,
                        short(response.partial_success.error_message or "no reason given"))

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
