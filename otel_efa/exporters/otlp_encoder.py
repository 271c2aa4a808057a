"""An OTLP ExportMetricsServiceRequest (opentelemetry-proto classes) from an Interval.

What the SDK's exporter sends for the same instruments (tests/test_otlp_encoder.py compares the two),
without its per-point Python: the resource, the scope and every metric's name, unit and description are
messages built once, and so is each series' data point with its attributes; an interval only sets values
and timestamps. Counters are cumulative monotonic Sums starting at the agent's start, gauges Gauges.

A counter at or above 2**63 (a u64 the kernel wraps at 2**64) cannot be an ``as_int`` (int64): it goes
as ``as_double``, where the SDK's encoder raises and loses the whole export.
"""
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.sdk.resources import Resource

from otel_efa.catalog import Kind, MetricSpec
from otel_efa.pipeline.interval import Interval

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def any_value(value: Any) -> AnyValue:
    """An attribute value as OTLP's AnyValue (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if INT64_MIN <= value <= INT64_MAX else AnyValue(double_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> List[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


class OtlpEncoder:
    """Encodes frames for one resource and one scope. Not thread-safe: the OTLP worker is its only caller."""

    def __init__(self, resource: Resource, scope_name: str, scope_version: str,
                 start_time_unix_nano: Optional[int] = None):
        self.start_time_unix_nano = start_time_unix_nano or time.time_ns()
        self._resource = ResourceMessage(attributes=key_values(resource.attributes))
        self._resource_schema_url = resource.schema_url or ""
        self._scope = InstrumentationScope(name=scope_name, version=scope_version)
        self._metrics: Dict[str, metrics_pb2.Metric] = {}  # metric name -> its message without points
        # id(attributes) -> (attributes, point): holding the attributes keeps their id from being reused;
        # rebuilt on every encode from the entries used, so points of vanished series go. Sum points carry
        # the start time, gauge points none, hence two.
        self._sum_points: Dict[int, Tuple[Mapping[str, Any], metrics_pb2.NumberDataPoint]] = {}
        self._gauge_points: Dict[int, Tuple[Mapping[str, Any], metrics_pb2.NumberDataPoint]] = {}

    def encode(self, frame: Interval) -> ExportMetricsServiceRequest:
        now = int(frame.snapshot.wall_time * 1e9) if frame.snapshot is not None else time.time_ns()
        request = ExportMetricsServiceRequest()
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.CopyFrom(self._resource)
        resource_metrics.schema_url = self._resource_schema_url
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.CopyFrom(self._scope)
        add_metric = scope_metrics.metrics.add
        previous_sums, previous_gauges = self._sum_points, self._gauge_points
        sums: Dict[int, Tuple[Mapping[str, Any], metrics_pb2.NumberDataPoint]] = {}
        gauges: Dict[int, Tuple[Mapping[str, Any], metrics_pb2.NumberDataPoint]] = {}
        for spec, points in frame.metrics:
            metric = add_metric()
            metric.CopyFrom(self._metric(spec))
            if spec.kind is Kind.COUNTER:
                data_points, previous, kept, start = metric.sum.data_points, previous_sums, sums, True
            else:
                data_points, previous, kept, start = metric.gauge.data_points, previous_gauges, gauges, False
            append = data_points.append
            for attributes, value in points:
                key = id(attributes)
                entry = previous.get(key)
                if entry is None or entry[0] is not attributes:
                    entry = (attributes, self._point(attributes, start))
                kept[key] = entry
                point = entry[1]
                if type(value) is int and INT64_MIN <= value <= INT64_MAX:
                    point.as_int = value
                else:
                    point.as_double = value
                point.time_unix_nano = now
                append(point)  # a copy: the template stays ours
        self._sum_points, self._gauge_points = sums, gauges
        return request

    def _point(self, attributes: Mapping[str, Any], with_start: bool) -> metrics_pb2.NumberDataPoint:
        point = metrics_pb2.NumberDataPoint(attributes=key_values(attributes))
        if with_start:
            point.start_time_unix_nano = self.start_time_unix_nano
        return point

    def _metric(self, spec: MetricSpec) -> metrics_pb2.Metric:
        metric = self._metrics.get(spec.name)
        if metric is None:
            metric = metrics_pb2.Metric(name=spec.name, description=spec.description, unit=spec.unit)
            if spec.kind is Kind.COUNTER:
                metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                metric.sum.is_monotonic = True
            else:
                metric.gauge.SetInParent()
            self._metrics[spec.name] = metric
        return metric
