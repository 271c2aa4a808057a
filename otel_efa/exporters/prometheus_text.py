"""Prometheus text exposition (format 0.0.4) of a Frame, with everything but the values cached.

The output is what opentelemetry-exporter-prometheus 0.66 serves for the same instruments (dashboards,
alert rules and tests depend on it): names from ``MetricSpec.prometheus_name``, HELP from the description,
attribute keys sanitized into label names, the ``otel_scope_*`` labels, labels missing on some points of
a metric given as "" (so a metric keeps one label set), and ``target_info`` with the resource attributes.
tests/test_prometheus_text.py renders the same Snapshot both ways and compares the parsed samples.

Only the values change from one interval to the next, so the HELP/TYPE lines and every series'
``name{labels} `` prefix are built once; a render is then a join of cached strings and formatted numbers.
"""
import json
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Tuple

from ..catalog import Kind, MetricSpec
from ..frame import Frame

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TARGET_INFO_HELP = "Target metadata"

_NOT_LABEL_CHARACTER = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """An attribute key as a label name: characters outside [a-zA-Z0-9_] and a leading digit become "_"."""
    if key[:1].isdigit():
        key = "_" + key[1:]
    return _NOT_LABEL_CHARACTER.sub("_", key)


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
    """Renders frames for one resource and one instrumentation scope. Not thread-safe: one caller at a time."""

    def __init__(self, resource_attributes: Mapping[str, Any], scope_name: str, scope_version: str):
        self._scope = (("otel_scope_name", scope_name), ("otel_scope_schema_url", ""),
                       ("otel_scope_version", scope_version))
        target = ",".join(f'{label_name(k)}="{label_value(v)}"' for k, v in resource_attributes.items())
        self._target_info = (f"# HELP target_info {TARGET_INFO_HELP}\n# TYPE target_info gauge\n"
                             f"target_info{{{target}}} 1.0\n")
        self._headers: Dict[str, Tuple[str, str]] = {}  # metric name -> (HELP/TYPE lines, sample name)
        # label keys of a metric -> {id(attributes): (attributes, "{labels} ")}; holding the attributes keeps
        # their id from being reused. Rebuilt on every render from the entries used, so stale ones go.
        self._labels: Dict[frozenset, Dict[int, Tuple[Mapping[str, Any], str]]] = {}

    def render(self, frame: Frame) -> bytes:
        out: List[str] = [self._target_info]
        append = out.append
        previous, current = self._labels, {}
        for spec, points in frame.metrics:
            header, name = self._header(spec)
            append(header)
            keys = set()
            for attributes, _ in points:
                keys.update(attributes)
            keys = frozenset(keys)
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

    def _header(self, spec: MetricSpec) -> Tuple[str, str]:
        header = self._headers.get(spec.name)
        if header is None:
            name = spec.prometheus_name
            kind = "counter" if spec.kind is Kind.COUNTER else "gauge"
            help_text = spec.description.replace("\\", "\\\\").replace("\n", "\\n")
            header = self._headers[spec.name] = (f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n", name)
        return header
