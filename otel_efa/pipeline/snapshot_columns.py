"""A Snapshot's ports and devices as columns, for the instrumentor's series (otel_efa/pipeline/instruments.py).

Laid out once per Snapshot: the ports and devices, their attribute mappings, and their counter and rate
dictionaries, each a tuple in the Snapshot's order. A metric's points are then ``map`` and ``zip`` over
these columns, C loops with no Python per point (a p5.48xlarge has about 1,400 points an interval).
"""
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union, cast

from otel_efa.pipeline.snapshot import PortSnapshot, Snapshot

INT64_MAX = (1 << 63) - 1
Point = Tuple[Mapping[str, Any], Any]


class Rows(NamedTuple):
    ports: Tuple[PortSnapshot, ...]
    port_attributes: Tuple[Dict[str, str], ...]
    port_counters: Tuple[Dict[str, int], ...]
    port_rates: Tuple[Dict[str, float], ...]
    device_attributes: Tuple[Dict[str, str], ...]
    device_counters: Tuple[Dict[str, int], ...]


NO_ROWS = Rows((), (), (), (), (), ())


def rows(snapshot: Snapshot, port_attributes: Callable[[PortSnapshot], Dict[str, str]],
         device_attributes: Callable[[str], Dict[str, str]]) -> Rows:
    """The columns of ``snapshot``, the attribute mappings from the instrumentor's caches."""
    devices = snapshot.devices
    ports = tuple(port for device in devices for port in device.ports)
    return Rows(ports=ports,
                port_attributes=tuple(map(port_attributes, ports)),
                port_counters=tuple(port.counters for port in ports),
                port_rates=tuple(port.rates for port in ports),
                device_attributes=tuple(device_attributes(device.name) for device in devices),
                device_counters=tuple(device.counters for device in devices))


def counter_value(value: float) -> Union[int, float]:
    """A kernel u64 as an OTel observation: the int itself up to 2**63-1, a float above (a gauge's float,
    which :func:`pairs` passes too, stays as it is).

    OTLP's ``NumberDataPoint.as_int`` is an int64: one value above it makes the encoder raise, and the
    whole export (every metric of the node) is lost. Above 2**63-1 the value goes out as ``as_double``
    instead. Why a float, not the value modulo 2**63 or no point at all (the upstream awsefareceiver
    skips such a point with a warning each scrape): the float is the true value, rounded by at most
    2**-53 (1e-16 relative, 2 KiB at 2**63), and stays monotonic, so a consumer's rate() or delta keeps
    working and the series never disappears; modulo would show a counter reset that never happened.
    Prometheus stores every sample as float64 anyway, so both endpoints show the same number. The only
    seam is when the counter wraps at 2**64 back to a small int, which every consumer treats as a reset.
    """
    return value if value <= INT64_MAX else float(value)


def pairs(attributes: Tuple[Dict[str, str], ...], values: List[Optional[float]]) -> List[Point]:
    """(attributes, value) of every value that is not None, a value above 2**63-1 as a float (counter_value).

    The common case, every value there and in int64, is two C loops: ``max`` (it raises TypeError on a
    None among ints and floats) and ``zip``.
    """
    try:
        if max(cast("List[float]", values)) <= INT64_MAX:  # a None raises: the cast only tells mypy
            return list(zip(attributes, values))
    except (TypeError, ValueError):  # a None among them; no values at all
        pass
    return [(a, counter_value(v)) for a, v in zip(attributes, values) if v is not None]
