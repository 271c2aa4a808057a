"""Prometheus text exposition (format 0.0.4) of an Interval, with everything but the values cached.

The output is what opentelemetry-exporter-prometheus 0.66 serves for the same instruments (dashboards,
alert rules and tests depend on it): names from ``MetricSpec.prometheus_name``, HELP from the description,
attribute keys sanitized into label names, the ``otel_scope_*`` labels, labels missing on some points of
a metric given as "" (so a metric keeps one label set), and ``target_info`` with the resource attributes.
tests/test_prometheus_text.py renders the same Snapshot both ways and compares the parsed samples.

Names (otel_efa/names.py): metric names and label names are sanitized by opentelemetry-exporter-prometheus's
rules. Two metrics whose Prometheus names would be equal (``efa_rx-dropped`` from a counter file
``rx-dropped`` and the catalog's ``efa_rx_dropped``; ``efa_a.b`` and ``efa_a_b``), or where a counter's
family name (without ``_total``) is another metric's name, would make the page invalid and the whole
target down: the first registered keeps the name (the catalog's come first; of those registered together,
one whose OTel name is already a Prometheus name first), a later one gets ``_<8 hex of its OTel name's
SHA-256>`` before its unit suffix, logged once. A name once given is kept for the life of the process.
Resource attributes whose keys give the same label name (``host.id`` and ``host_id``) share it on
``target_info``: their values joined by ``;`` in the order of the keys, as the Collector's
``prometheusremotewrite`` joins them on the way to AMP, logged once.

Only the values change from one interval to the next, so for a given set of series (metrics, their points'
attributes) the page's text around the values is built once: a render is the values' ``repr`` (an int's is
its decimal digits, a float's the shortest text that round-trips) joined between those pieces, all in C
loops, no per-sample Python. The pieces are rebuilt when the series change (compared by the attribute
mappings, identity first, content when not the same object). A value of another type, or a float that is
not finite (NaN, ±Inf), takes :func:`sample_value` for that render.
"""
import functools
import json
import logging
import math
from operator import itemgetter
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from otel_efa import names
from otel_efa.catalog import Kind, MetricSpec, prometheus_name
from otel_efa.exporters.columns import RecentLayouts, columns
from otel_efa.pipeline.interval import Interval

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TARGET_INFO = "target_info"
TARGET_INFO_HELP = "Target metadata"

label_name = names.prometheus_label_name


def target_labels(resource_attributes: Mapping[str, Any]) -> Dict[str, str]:
    """target_info's labels: keys that give the same label name share it, values joined by ";" in key
    order (a value equal to what the label has is not added again), as the Collector's
    ``prometheusremotewrite`` does (``createAttributes``), so AMP and this page show the same."""
    labels: Dict[str, str] = {}
    keys: Dict[str, List[str]] = {}
    for key, value in sorted(resource_attributes.items()):
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        label = label_name(key)
        keys.setdefault(label, []).append(key)
        existing = labels.get(label)
        labels[label] = text if existing is None or existing == text else f"{existing};{text}"
    for label, members in keys.items():
        if len(members) > 1:
            log.warning("resource attributes %s are all the label %s on target_info: values joined by ';'",
                        ", ".join(members), label)
    return labels


def label_value(value: Any) -> str:
    """Strings as they are, anything else as JSON (as the OTel exporter does), escaped per the format."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample_value(value: Any) -> str:
    """Integers exactly (Prometheus parses them as float64 as it would the float); floats round-trip."""
    if type(value) is int:
        return str(value)
    value = float(value)
    if math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def labels_text(labels: Iterable[Tuple[str, Any]]) -> str:
    """``{a="x",b="y"} ``: the part of a sample line between the name and the value, sorted by label."""
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in sorted(labels)) + "} "


class _Template:
    """The page of one set of series: the constant text around the values, the values' places left empty."""

    def __init__(self, pieces: List[str]):
        self.parts: List[Optional[str]] = [None] * (2 * len(pieces) - 1)  # pieces, values between them
        self.parts[0::2] = pieces

    def fill(self, texts: Iterable[str]) -> bytes:
        parts = self.parts
        parts[1::2] = texts
        return "".join(parts).encode()  # type: ignore[arg-type]


class _MetricText(NamedTuple):
    """One metric's lines around its values: HELP, TYPE and the first sample's name and labels, then each
    further sample's; one more piece than there are points (the last is the line end)."""

    spec: MetricSpec
    attributes: tuple
    pieces: List[str]


class PrometheusRenderer:
    """Renders intervals for one resource and one instrumentation scope. Not thread-safe: one caller at a time.

    A template is kept per set of series seen lately (a gauge that comes and goes switches between two),
    and each metric's text per metric, so a new template only formats the metrics whose series changed.
    """

    MAX_TEMPLATES = 4

    def __init__(self, resource_attributes: Mapping[str, Any], scope_name: str, scope_version: str):
        self._scope = (("otel_scope_name", scope_name), ("otel_scope_schema_url", ""),
                       ("otel_scope_version", scope_version))
        target = ",".join(f'{k}="{label_value(v)}"' for k, v in target_labels(resource_attributes).items())
        self._target_info = (f"# HELP {TARGET_INFO} {TARGET_INFO_HELP}\n# TYPE {TARGET_INFO} gauge\n"
                             f"{TARGET_INFO}{{{target}}} 1.0\n")
        self._headers: Dict[str, Tuple[str, str]] = {}  # metric name -> (HELP/TYPE lines, sample name)
        self._names = names.UniqueNames(reserved=(TARGET_INFO,))
        self._prometheus_names: Dict[str, str] = {}  # OTel name -> the Prometheus name it was given
        self._named_specs: tuple = ()  # the registered metrics the names were given for
        self._templates = RecentLayouts(self._template, self.MAX_TEMPLATES)
        self._metrics: Dict[str, _MetricText] = {}  # metric name -> its latest text

    def render(self, interval: Interval) -> bytes:
        if interval.specs is not self._named_specs:
            self._name_series(interval.specs)
        metrics = interval.metrics
        shape, attributes, values = columns(metrics)
        template = self._templates.get(metrics, shape, attributes)
        if set(map(type, values)) <= _TYPED and _finite(values):
            return template.fill(map(repr, values))  # an int's repr is its str, a float's round-trips
        return template.fill(map(sample_value, values))

    def _template(self, metrics, shape: list, attributes: tuple) -> _Template:
        labels: Dict[Tuple[int, frozenset], str] = {}  # (id(attributes), label keys) -> "{labels} "
        pieces = [self._target_info]
        for spec, series in metrics:
            text = self._metric(spec, series, labels)
            pieces[-1] += text.pieces[0]
            pieces.extend(text.pieces[1:])
        return _Template(pieces)

    def _metric(self, spec: MetricSpec, series, labels: Dict[Tuple[int, frozenset], str]) -> _MetricText:
        attributes = tuple(map(_first, series))
        text = self._metrics.get(spec.name)
        if text is not None and text.spec is spec and text.attributes == attributes:
            return text
        header, name = self._header(spec)
        keys = frozenset(key for point_attributes in attributes for key in point_attributes)
        pieces: List[str] = []
        current = header
        for point_attributes in attributes:
            label_text = labels.get((id(point_attributes), keys))
            if label_text is None:
                label_text = labels[(id(point_attributes), keys)] = self._labels_of(point_attributes, keys)
            pieces.append(current + name + label_text)
            current = "\n"
        pieces.append(current)
        text = self._metrics[spec.name] = _MetricText(spec, attributes, pieces)
        return text

    def _labels_of(self, attributes: Mapping[str, Any], keys: frozenset) -> str:
        labels = {label_name(k): "" for k in keys}
        labels.update((label_name(k), v) for k, v in attributes.items())
        labels.update(self._scope)
        return labels_text(labels.items())

    def _name_series(self, specs) -> None:
        """Give every metric not named yet its Prometheus name; the ones already named keep theirs."""
        new = [spec for spec in specs if spec.name not in self._prometheus_names]
        # of the new, a name that is a Prometheus name already claims first: efa_a_b before efa_a.b
        new.sort(key=lambda spec: names.prometheus_metric_name(spec.name) != spec.name)
        for spec in new:
            base = names.prometheus_metric_name(spec.name)
            name = self._names.claim(base, build=functools.partial(_family_name, spec=spec), also=_family_names,
                                     key=spec.name)
            if name != spec.prometheus_name:
                log.warning("%s is %s on the Prometheus page (%s is another metric's name there)",
                            spec.name, name, spec.prometheus_name)
            self._prometheus_names[spec.name] = name
        self._named_specs = specs

    def _header(self, spec: MetricSpec) -> Tuple[str, str]:
        header = self._headers.get(spec.name)
        if header is None:
            name = self._prometheus_names.get(spec.name) or spec.prometheus_name
            kind = "counter" if spec.kind is Kind.COUNTER else "gauge"
            help_text = spec.description.replace("\\", "\\\\").replace("\n", "\\n")
            header = self._headers[spec.name] = (f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n", name)
        return header


_TYPED = frozenset((int, float))  # the types whose repr is the sample's text (finite floats)
_first = itemgetter(0)  # of a point: its attributes


def _finite(values: tuple) -> bool:
    """No NaN or ±Inf among ints and floats (their sum is then finite, unless it overflows: then False too)."""
    try:
        return math.isfinite(sum(values))
    except OverflowError:  # ints too large for a float
        return False


def _family_name(base: str, spec: MetricSpec) -> str:
    """The Prometheus family name of ``spec`` when its base name is ``base``."""
    return prometheus_name(base, spec.kind, spec.unit)


def _family_names(name: str) -> Tuple[str, ...]:
    """The names a metric takes on a page: itself and, for a counter, its family name without
    ``_total`` (what parsers group its samples under; a gauge of that name would clash)."""
    return (name, name[:-len("_total")]) if name.endswith("_total") else (name,)
