"""``--exporters otel-sdk``: the OpenTelemetry SDK's own pipeline beside the fast exporters.

The fast ``otlp`` and ``prometheus`` exporters encode the interval's values themselves (a few ms a cycle);
this one hands the same values to the SDK: a MeterProvider with the readers ``OTEL_METRICS_EXPORTER`` names
(otlp, prometheus, console: sdk_readers.py), SDK Views (the ``sdk.drop_metrics`` and ``sdk.rename_metrics``
keys, and any an embedding program gives :class:`SdkBridge`), OTEL_* configuration as the specification
has it. It costs the SDK's per-point work (the figures prometheus.py and otlp.py quote) and is there for
what only the SDK has: Views, its exporters' own behaviour, the standard variables.

The SDK path reads neither sysfs nor the Collector: :class:`SdkBridge` registers one observable instrument per
metric spec of the values pushed to it (a counter as an observable counter, a gauge as an observable gauge,
name, unit and description from the spec), and their callbacks observe the latest values pushed. So both
paths export the same names, values, attributes and resource (tests/test_otel_sdk_equality.py).
"""
import logging
import os
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, View
from opentelemetry.sdk.resources import Resource

from otel_efa import __version__
from otel_efa.catalog import Kind, MetricSpec
from otel_efa.config import ConfigError, SdkConfig
from otel_efa.exporters import Exporter, ExporterContext, sdk_readers
from otel_efa.otlp_settings import resolve_settings
from otel_efa.pipeline.interval import Interval, Metrics, Point

log = logging.getLogger(__name__)
SHUTDOWN_MARGIN_S = 1.0  # of the agent's shutdown budget, left for the rest of the agent (and the endpoint)
FINAL_EXPORT_S = 2.0  # the last export at shutdown: one request to a live collector takes milliseconds



def configured_views(sdk: SdkConfig) -> List[View]:
    """The Views the ``sdk.*`` keys ask for (config.py has checked their syntax)."""
    views = [View(instrument_name=pattern, aggregation=DropAggregation()) for pattern in sdk.drop_metrics]
    for pair in sdk.rename_metrics:
        old, _, new = (part.strip() for part in pair.partition("="))
        views.append(View(instrument_name=old, name=new))
    return views


def sdk_self_metrics_views() -> List[View]:
    """As the agent's own MeterProvider (pipeline/agent.py): the SDK's metrics about itself stay out of the
    user's backends unless OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED asks for them."""
    if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").lower() == "true":
        return []
    return [View(instrument_name="*", meter_name="opentelemetry-sdk", aggregation=DropAggregation())]


class SdkBridge:
    """A MeterProvider whose instruments observe the values pushed with :meth:`observe`.

    One SDK collect sees one interval, even when a push lands while a reader collects: the callback of the
    first instrument registered (the SDK calls callbacks in registration order) pins the latest values for
    the collecting thread, and every callback of that collect reads the pin.
    """

    def __init__(self, resource: Resource, readers: Sequence[MetricReader], views: Sequence[View] = ()):
        self.provider = MeterProvider(resource=resource, metric_readers=list(readers),
                                      views=[*views, *sdk_self_metrics_views()], shutdown_on_exit=False)
        self._meter = self.provider.get_meter("otel_efa", __version__)
        self._latest: Dict[str, Tuple[Point, ...]] = {}
        self._registered: Dict[str, MetricSpec] = {}
        self._pin = threading.local()
        self._lock = threading.Lock()  # registration: one pusher at a time

    def observe(self, metrics: Metrics) -> None:
        """The interval's values: instruments for specs not seen before, then the values for every callback."""
        latest = {}
        with self._lock:
            for spec, points in metrics:
                if spec.name not in self._registered:
                    self._register(spec)
                latest[spec.name] = points
            self._latest = latest  # one assignment: a collect sees the old values or the new, never a mix

    def _register(self, spec: MetricSpec) -> None:
        create = (self._meter.create_observable_counter if spec.kind is Kind.COUNTER
                  else self._meter.create_observable_gauge)
        create(spec.name, callbacks=[self._callback(spec.name, first=not self._registered)], unit=spec.unit,
               description=spec.description)
        self._registered[spec.name] = spec

    def _callback(self, name: str, first: bool):
        pin = self._pin

        def observe(_options: CallbackOptions):
            if first:
                pin.values = self._latest
            values = getattr(pin, "values", self._latest)
            # As a dict: SDK 1.41 (the last for Python 3.9) keeps the mapping it is given in its data point,
            # and its console exporter deep-copies that, which a read-only mappingproxy (the instrumentor's
            # NO_ATTRIBUTES) cannot be; newer SDKs copy it into a dict themselves.
            return [Observation(value, attributes if type(attributes) is dict else dict(attributes))
                    for attributes, value in values.get(name, ())]
        return observe

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Every periodic reader exports now (tests, and anyone who wants the latest values out)."""
        return self.provider.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float) -> None:
        """The periodic readers' last export (of the latest values), then the readers and exporters stop;
        one warning when that does not finish in time (the SDK raises then)."""
        try:
            self.provider.shutdown(timeout_millis=timeout_millis)
        except Exception as e:
            log.warning("the OTel SDK did not finish its last export within %.1f s: %s", timeout_millis / 1000,
                        " ".join(str(e).split()))


class OtelSdkExporter(Exporter):
    """The exporter registered as ``otel-sdk``: an :class:`SdkBridge` fed each interval's values."""

    name = "otel-sdk"

    def __init__(self, context: ExporterContext):
        super().__init__(context)
        config, resource = context.config, context.resource
        self.chosen = sdk_readers.chosen_exporters()
        if "prometheus" in self.chosen and "prometheus" in config.exporters:
            raise ConfigError(sdk_readers.EXPORTER_VARIABLE,
                              "prometheus: the prometheus exporter already serves prometheus.address; "
                              "choose it or the otel-sdk path's prometheus, not both")
        interval = sdk_readers.export_interval_millis(config.interval)
        timeout = sdk_readers.export_timeout_millis()
        self.interval_millis = interval
        self.readers: List[MetricReader] = []
        self.prometheus = None
        self._what: List[str] = []
        for name in self.chosen:
            if name == "otlp":
                settings = resolve_settings(config.otlp)
                if "otlp" not in config.exporters:  # else the otlp exporter has said them
                    for note in settings.notes:
                        log.warning("%s", note)
                exporter = sdk_readers.otlp_exporter(settings, sdk_readers.temporality())
                self.readers.append(sdk_readers.periodic_reader(exporter, interval, timeout))
                self._what.append(f"OTLP ({settings.protocol}) to {settings.endpoint} every {interval:.0f} ms")
            elif name == "console":
                self.readers.append(sdk_readers.periodic_reader(sdk_readers.console_exporter(), interval, timeout))
                self._what.append(f"console every {interval:.0f} ms")
            else:
                from otel_efa.exporters.sdk_prometheus import SdkPrometheusEndpoint

                self.prometheus = SdkPrometheusEndpoint(config.prometheus)
                self.readers.insert(0, self.prometheus.reader)  # first: its shutdown is instant, the others' not
                self._what.append(f"Prometheus on port {self.prometheus.port} (per scrape)")
        self.views = configured_views(config.sdk)
        self._resource = resource
        self.bridge: Optional[SdkBridge] = None

    def start(self) -> None:
        self.bridge = SdkBridge(self._resource, self.readers, self.views)
        if self.prometheus is not None:
            self.prometheus.start()
        if self.readers:
            log.info("OTel SDK path (%s): %s", sdk_readers.EXPORTER_VARIABLE, ", ".join(self._what))
        else:
            log.info("OTel SDK path: %s=none, nothing is exported by it", sdk_readers.EXPORTER_VARIABLE)

    def export(self, interval: Interval) -> None:
        assert self.bridge is not None, "start() first"
        self.bridge.observe(interval.metrics)

    def shutdown(self, timeout: float) -> None:
        """The SDK's last export, within FINAL_EXPORT_S and ``timeout`` less a margin: with the collector
        away, the SDK's OTLP exporter retries (with backoff) until its reader's shutdown gives up, and the
        agent must still exit within its budget (SIGTERM to exit in 5 s)."""
        bridge, prometheus, self.bridge, self.prometheus = self.bridge, self.prometheus, None, None
        if bridge is not None:
            budget = max(0.1, min(FINAL_EXPORT_S, timeout - SHUTDOWN_MARGIN_S))
            bridge.shutdown(timeout_millis=budget * 1000)
        if prometheus is not None:
            prometheus.stop(0.25)
