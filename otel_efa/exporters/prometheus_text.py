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

Only the values change from one interval to the next, so the HELP/TYPE lines and every series'
``name{labels} `` prefix are built once; a render is then a join of cached strings and formatted numbers.
"""
import functools
import json
import logging
import math
from typing import Any, Dict, Iterable, List, Mapping, Set, Tuple

from otel_efa import names
from otel_efa.catalog import Kind, MetricSpec, prometheus_name
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


class PrometheusRenderer:
    """Renders intervals for one resource and one instrumentation scope. Not thread-safe: one caller at a time."""

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
        # label keys of a metric -> {id(attributes): (attributes, "{labels} ")}; holding the attributes keeps
        # their id from being reused. Rebuilt on every render from the entries used, so stale ones go.
        self._labels: Dict[frozenset, Dict[int, Tuple[Mapping[str, Any], str]]] = {}

    def render(self, frame: Interval) -> bytes:
        if frame.specs is not self._named_specs:
            self._name_series(frame.specs)
        out: List[str] = [self._target_info]
        append = out.append
        previous = self._labels
        current: Dict[frozenset, Dict[int, Tuple[Mapping[str, Any], str]]] = {}
        for spec, points in frame.metrics:
            header, name = self._header(spec)
            append(header)
            seen: Set[str] = set()
            for attributes, _ in points:
                seen.update(attributes)
            keys = frozenset(seen)
            cached = previous.get(keys, {})
            kept = current.setdefault(keys, {})
            for attributes, value in points:
                entry = cached.get(id(attributes))
                if entry is None or entry[0] is not attributes:
                    entry = (attributes, self._labels_of(attributes, keys))
                kept[id(attributes)] = entry
                append(name + entry[1] + sample_value(value) + "\n")
        self._labels = current
        return "".join(out).encode()

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


def _family_name(base: str, spec: MetricSpec) -> str:
    """The Prometheus family name of ``spec`` when its base name is ``base``."""
    return prometheus_name(base, spec.kind, spec.unit)


def _family_names(name: str) -> Tuple[str, ...]:
    """The names a metric takes on a page: itself and, for a counter, its family name without
    ``_total`` (what parsers group its samples under; a gauge of that name would clash)."""
    return (name, name[:-len("_total")]) if name.endswith("_total") else (name,)
