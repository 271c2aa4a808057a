"""The serialized OTLP ExportMetricsServiceRequest of an Interval, patched into a template.

What the SDK's exporter sends for the same instruments (tests/test_otlp_encoder.py compares the two):
one resource, one scope, and per metric its name, unit, description and points. Counters are cumulative
monotonic Sums starting at the agent's start, gauges Gauges.

Every varying field of a data point is fixed-width in protobuf: ``time_unix_nano`` is a fixed64 and the
value is ``as_int`` (sfixed64) or ``as_double`` (double), each one tag byte and eight bytes. So for a given
set of series (metrics, their points' attributes) the request has one byte layout, every length prefix
included: the bytes between the slots are built once (protobuf_wire.py writes the resource, scope, metric
headers and attributes) and an export is one ``struct.pack`` of those constant pieces, the time and the
values: no per-point Python. The layout is made anew when the series change
(compared by the attribute mappings, identity first, content when not the same object).

A value that is an ``int`` in int64 range goes as ``as_int``; anything else as ``as_double``, so a counter
at or above 2**63 (a u64 the kernel wraps at 2**64) is a double, where the SDK's encoder raises and loses
the whole export.
"""
import struct
import time
from operator import itemgetter
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from opentelemetry.sdk.resources import Resource

from otel_efa.catalog import Kind, MetricSpec
from otel_efa.exporters.columns import RecentLayouts, columns
from otel_efa.exporters.protobuf_wire import (
    FIXED64,
    INT64_MAX,
    INT64_MIN,
    VARINT,
    key_values,
    length_delimited,
    message_field,
    string_field,
)
from otel_efa.pipeline.interval import Interval

# Tag bytes (field number << 3 | wire type) of what the template writes by hand.
AS_INT_TAG = 6 << 3 | FIXED64  # NumberDataPoint.as_int, sfixed64
AS_DOUBLE_TAG = 4 << 3 | FIXED64  # NumberDataPoint.as_double
_START_TIME = bytes([2 << 3 | FIXED64])  # NumberDataPoint.start_time_unix_nano, fixed64
_TIME = bytes([3 << 3 | FIXED64])  # NumberDataPoint.time_unix_nano, fixed64
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_CUMULATIVE_MONOTONIC = bytes([2 << 3 | VARINT, _CUMULATIVE, 3 << 3 | VARINT, 1])  # Sum's temporality, is_monotonic
_SUM, _GAUGE = 7, 5  # Metric's oneof data: Sum sum = 7, Gauge gauge = 5
_SLOT_BYTES = 8 + 1 + 8  # a point's time, value tag and value
_first = itemgetter(0)  # of a point: its attributes


class _Pieces:
    """A message under construction: constant bytes with a point's slots (time, value) among them."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: List[Any] = []  # bytes, or None for one point's slots
        self.size = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def add_slots(self) -> None:
        self.parts.append(None)
        self.size += _SLOT_BYTES

    def add_field(self, field_number: int, message: "_Pieces") -> None:
        self.add(length_delimited(field_number, message.size))
        self.parts.extend(message.parts)
        self.size += message.size

    def constants(self) -> List[bytes]:
        """The constant bytes between the slots: one more than there are points."""
        out: List[bytes] = []
        current: List[bytes] = []
        for part in self.parts:
            if part is None:
                out.append(b"".join(current))
                current = []
            else:
                current.append(part)
        out.append(b"".join(current))
        return out


class _Layout:
    """The request's bytes for one set of series, and the structs that fill in time and values."""

    MAX_PACKERS = 4  # value kinds seen per layout: the usual one and the odd huge counter

    def __init__(self, constants: List[bytes]):
        self.constants = constants
        self.types: Optional[tuple] = None  # the value types of the last export, and their packer
        self.packer: Optional[Tuple[struct.Struct, List[Any]]] = None
        self._packers: Dict[str, Tuple[struct.Struct, List[Any]]] = {}

    def packer_for(self, kinds: str) -> Tuple[struct.Struct, List[Any]]:
        """The struct and its argument list (constants and value tags in place) for ``kinds``: per point
        "q" (as_int) or "d" (as_double)."""
        packer = self._packers.get(kinds)
        if packer is None:
            constants = self.constants
            fmt = "".join(f"{len(c)}sQB{k}" for c, k in zip(constants, kinds))
            args: List[Any] = [None] * (4 * len(kinds) + 1)
            args[0::4] = constants
            args[2::4] = [AS_INT_TAG if k == "q" else AS_DOUBLE_TAG for k in kinds]
            if len(self._packers) >= self.MAX_PACKERS:
                self._packers.clear()
            packer = self._packers[kinds] = (struct.Struct(f"<{fmt}{len(constants[-1])}s"), args)
        return packer


def _pack(packer: Tuple[struct.Struct, List[Any]], now: int, values: tuple) -> bytes:
    packed, args = packer
    args[1::4] = (now,) * len(values)
    args[3::4] = values
    return packed.pack(*args)


def _kind(value: Any) -> str:
    return "q" if type(value) is int and INT64_MIN <= value <= INT64_MAX else "d"


class _MetricTemplate(NamedTuple):
    """One metric's part of the request (its ScopeMetrics.metrics field) around its points' slots."""

    spec: MetricSpec
    attributes: tuple  # its points' attribute mappings, in order
    constants: List[bytes]  # the bytes between the slots: one more than there are points
    size: int  # the field's bytes, slots included


class OtlpEncoder:
    """Encodes intervals for one resource and one scope. Not thread-safe: the OTLP worker is its only caller.

    A layout is kept per set of series seen lately (a gauge that comes and goes, such as the rail imbalance
    of a node that turns idle, switches between two), and each metric's part per metric, so a new layout
    only encodes the metrics whose series changed.
    """

    MAX_LAYOUTS = 4

    def __init__(self, resource: Resource, scope_name: str, scope_version: str,
                 start_time_unix_nano: Optional[int] = None):
        self.start_time_unix_nano = start_time_unix_nano or time.time_ns()
        self._resource_field = message_field(1, key_values(1, resource.attributes))  # Resource.attributes
        self._schema_url_field = string_field(3, resource.schema_url or "")
        self._scope_field = message_field(1, string_field(1, scope_name) + string_field(2, scope_version))
        self._layouts = RecentLayouts(self._build, self.MAX_LAYOUTS)
        self._metrics: Dict[str, _MetricTemplate] = {}  # metric name -> its latest part

    def encode(self, interval: Interval) -> bytes:
        """The serialized ExportMetricsServiceRequest of ``interval``."""
        now = int(interval.snapshot.wall_time * 1e9)
        metrics = interval.metrics
        shape, attributes, values = columns(metrics)
        layout = self._layouts.get(metrics, shape, attributes)
        types = tuple(map(type, values))
        if types != layout.types:
            layout.packer = layout.packer_for("".join(["q" if t is int else "d" for t in types]))
            layout.types = types
        try:
            return _pack(layout.packer, now, values)  # type: ignore[arg-type]
        except struct.error:  # an int outside int64 (or something not a number): each value judged alone
            kinds = "".join(map(_kind, values))
            return _pack(layout.packer_for(kinds), now,
                         tuple(v if k == "q" else float(v) for v, k in zip(values, kinds)))

    def _build(self, metrics, shape: list, attributes: tuple) -> _Layout:
        encoded: Dict[int, bytes] = {}  # id(attributes) -> its KeyValue fields (the interval holds them meanwhile)
        parts = [self._metric(spec, series, encoded) for spec, series in metrics]
        scope_size = len(self._scope_field) + sum(part.size for part in parts)
        scope_metrics_field = length_delimited(2, scope_size)
        resource_metrics_size = (len(self._resource_field) + len(scope_metrics_field) + scope_size
                                 + len(self._schema_url_field))
        constants = [length_delimited(1, resource_metrics_size) + self._resource_field + scope_metrics_field
                     + self._scope_field]
        for part in parts:
            constants[-1] += part.constants[0]
            constants.extend(part.constants[1:])
        constants[-1] += self._schema_url_field
        return _Layout(constants)

    def _metric(self, spec: MetricSpec, series, encoded: Dict[int, bytes]) -> _MetricTemplate:
        attributes = tuple(map(_first, series))
        template = self._metrics.get(spec.name)
        if template is not None and template.spec is spec and template.attributes == attributes:
            return template
        counter = spec.kind is Kind.COUNTER
        start = _START_TIME + struct.pack("<Q", self.start_time_unix_nano) + _TIME if counter else _TIME
        data = _Pieces()
        for point_attributes in attributes:
            fields = encoded.get(id(point_attributes))
            if fields is None:
                fields = encoded[id(point_attributes)] = key_values(7, point_attributes)  # NumberDataPoint
            point = _Pieces()
            point.add(start)
            point.add_slots()
            point.add(fields)
            data.add_field(1, point)
        if counter:
            data.add(_CUMULATIVE_MONOTONIC)
        metric = _Pieces()
        metric.add(string_field(1, spec.name) + string_field(2, spec.description) + string_field(3, spec.unit))
        metric.add_field(_SUM if counter else _GAUGE, data)
        field = _Pieces()
        field.add_field(2, metric)  # ScopeMetrics.metrics
        template = self._metrics[spec.name] = _MetricTemplate(spec, attributes, field.constants(), field.size)
        return template
