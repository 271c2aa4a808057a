"""Samples into MetricDatum structures, and datums into as few PutMetricData calls as the API allows.

Limits (PutMetricData API reference): at most 1000 metrics and 1 MB per request, up to 150 distinct
values per datum in ``Values``/``Counts``, up to 30 dimensions, no NaN or infinity, StorageResolution
1 or 60. CloudWatch stores a standard-resolution metric per minute (a high-resolution one per second),
so samples of one metric that fall into the same minute (second) are sent as one datum with
``Values``/``Counts``: the statistics come out the same and the datum count shrinks by the number of
collections per minute.

The size of a datum is measured in the protocol the client speaks: recent botocore sends CloudWatch JSON
(or the smaller CBOR, for which the JSON size is an upper bound), older botocore the AWS query encoding
(``MetricData.member.N.Values.member.M=...``), about four times as long for a ``Values`` array. Sizes
are of the uncompressed body, so the 1 MB limit holds whether or not botocore gzips it (it does above
10 KiB).
"""
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Sequence, Tuple
from urllib.parse import quote

from otel_efa.cloudwatch.metrics import Dimensions, Sample

MAX_DATUMS_PER_CALL = 1000
MAX_BYTES_PER_CALL = 1_000_000  # "1 MB"; the decimal reading is the safe one
MAX_VALUES_PER_DATUM = 150
MAX_DIMENSIONS = 30
# Action, Version and Namespace of the request, with room for a long namespace.
REQUEST_OVERHEAD_BYTES = 1024


@dataclass
class Datum:
    """One MetricDatum as sent, with what the buffer needs to know about it."""

    body: Dict[str, Any]
    samples: int  # collections it carries (dropped-datapoint accounting)
    timestamp: float  # bucket start, seconds since the epoch
    collected: float = 0.0  # monotonic time of its oldest sample (the buffer's age limit)
    _sizes: Dict[str, int] = field(default_factory=dict, repr=False)

    def size(self, protocol: str) -> int:
        """Bytes in a request of ``protocol`` ("query"; JSON for the others, an upper bound for CBOR).

        Measured when first packed, on the sender thread, not in the collection loop.
        """
        key = "query" if protocol == "query" else "json"
        if key not in self._sizes:
            self._sizes[key] = encoded_size(self.body) if key == "query" else json_size(self.body)
        return self._sizes[key]


def _encoded(key: str, value: Any) -> int:
    return len(quote(key, safe="-_.~")) + 1 + len(quote(str(value), safe="-_.~")) + 1


def encoded_size(body: Dict[str, Any]) -> int:
    """Bytes this datum takes in a query-encoded request at the widest member index (1000)."""
    prefix = "MetricData.member.1000."
    size = _encoded(prefix + "MetricName", body["MetricName"])
    for i, dimension in enumerate(body.get("Dimensions", ()), 1):
        size += _encoded(f"{prefix}Dimensions.member.{i}.Name", dimension["Name"])
        size += _encoded(f"{prefix}Dimensions.member.{i}.Value", dimension["Value"])
    size += _encoded(prefix + "Timestamp", "2000-01-01T00:00:00.000Z")
    for key in ("Value", "Unit", "StorageResolution"):
        if key in body:
            size += _encoded(prefix + key, repr(body[key]))
    for key in ("Values", "Counts"):
        for i, value in enumerate(body.get(key, ()), 1):
            size += _encoded(f"{prefix}{key}.member.{i}", repr(value))
    return size


def json_size(body: Dict[str, Any]) -> int:
    """Bytes this datum takes in botocore's JSON body (timestamps as epoch numbers), with its comma."""
    return len(json.dumps({**body, "Timestamp": body["Timestamp"].timestamp()})) + 2


def fold(samples: Iterable[Sample], resolution: int) -> List[Datum]:
    """Group samples by (metric, dimensions, storage bucket); one datum per group (per 150 values)."""
    groups: OrderedDict[Tuple[str, str, Dimensions, float], List[float]] = OrderedDict()
    collected: Dict[Tuple[str, str, Dimensions, float], float] = {}
    for s in samples:
        bucket = s.timestamp - s.timestamp % resolution
        key = (s.name, s.unit, s.dimensions, bucket)
        groups.setdefault(key, []).append(s.value)
        collected[key] = min(collected.get(key, s.monotonic), s.monotonic)
    datums: List[Datum] = []
    for key, values in groups.items():
        name, unit, dimensions, bucket = key
        counts: OrderedDict[float, int] = OrderedDict()
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        distinct = list(counts.items())
        for start in range(0, len(distinct), MAX_VALUES_PER_DATUM):
            chunk = distinct[start:start + MAX_VALUES_PER_DATUM]
            body: Dict[str, Any] = {
                "MetricName": name,
                "Dimensions": [{"Name": n, "Value": v} for n, v in dimensions],
                "Timestamp": datetime.fromtimestamp(bucket, timezone.utc),
                "Unit": unit,
                "StorageResolution": resolution,
            }
            if len(chunk) == 1 and chunk[0][1] == 1:
                body["Value"] = chunk[0][0]
            else:
                body["Values"] = [v for v, _ in chunk]
                body["Counts"] = [float(c) for _, c in chunk]
            datums.append(Datum(body, sum(c for _, c in chunk), bucket, collected[key]))
    return datums


def request_length(datums: Iterable[Datum], protocol: str = "query") -> int:
    """How many datums from the front of ``datums`` fit in one PutMetricData call.

    Greedy filling from the front is optimal for cutting a sequence into the fewest consecutive
    requests under additive limits, which is what a FIFO buffer needs.
    """
    size = REQUEST_OVERHEAD_BYTES
    count = 0
    for datum in datums:
        if count == MAX_DATUMS_PER_CALL or size + datum.size(protocol) > MAX_BYTES_PER_CALL:
            break
        size += datum.size(protocol)
        count += 1
    return count


def split_requests(datums: Sequence[Datum], protocol: str = "query") -> List[List[Datum]]:
    """All of ``datums`` as consecutive requests, each within the limits."""
    requests = []
    start = 0
    while start < len(datums):
        n = request_length(datums[start:], protocol)
        requests.append(list(datums[start:start + n]))
        start += n
    return requests
