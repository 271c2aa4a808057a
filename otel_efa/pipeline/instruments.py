"""OpenTelemetry observable instruments over the collector's latest Snapshot.

Shaped like ``opentelemetry-instrumentation-system-metrics``: an instrumentor takes a MeterProvider and
registers one callback per instrument. The callbacks never touch sysfs; they serve the Snapshot of the
last collection, so any number of readers and scrapes cost no extra reads.

Each instrument's values come from one function of a Snapshot giving its points, ``(attributes, value)``
pairs, built by comprehensions over rows (attributes, port or device) made once per Snapshot: the SDK's
callback turns them into Observations, the agent's own exporters take them as they are (frame.py), so the
fast path makes no object per point beyond its pair.
"""
import dataclasses
import logging
from itertools import repeat
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple, Union

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from otel_efa import __version__, catalog, names
from otel_efa.catalog import Kind, MetricSpec
from otel_efa.node import instance_types
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.rails import RailBalance, rail_balance
from otel_efa.pipeline.snapshot import PortSnapshot, Snapshot
from otel_efa.pipeline.stats import AgentStats

log = logging.getLogger(__name__)

# What every instrument callback is: the SDK calls it with CallbackOptions.
Callback = Callable[[CallbackOptions], Iterable[Observation]]
# An instrument's points in a Snapshot (None before the first collection): (attributes, value) pairs.
Points = Callable[[Optional[Snapshot]], List[Tuple[Mapping[str, Any], Any]]]
# Extra attributes per device (for example aws.efa.eni.id once resolved); empty by default.
DeviceAttributes = Callable[[str], Dict[str, str]]
# Extra attributes of node-level metrics (for example slurm.job.id); empty by default.
NodeAttributes = Callable[[], Dict[str, str]]
# The efa_device_info attributes of a device (its topology), or None while unknown.
DeviceInfoAttributes = Callable[[str], Optional[Dict[str, str]]]


INT64_MAX = (1 << 63) - 1


def counter_value(value: int) -> Union[int, float]:
    """A kernel u64 as an OTel observation: the int itself up to 2**63-1, a float above.

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


def _no_extra(_device: str) -> Dict[str, str]:
    return {}


def _no_node_extra() -> Dict[str, str]:
    return {}


def _no_info(_device: str) -> Optional[Dict[str, str]]:
    return None


class EfaInstrumentor:
    def __init__(self, collector: Collector, device_attributes: DeviceAttributes = _no_extra,
                 node_attributes: NodeAttributes = _no_node_extra, device_info: DeviceInfoAttributes = _no_info,
                 stats: Optional[AgentStats] = None):
        self.collector = collector
        self.stats = stats or AgentStats()
        self.device_attributes = device_attributes
        self.node_attributes = node_attributes
        self.device_info = device_info
        self._meter: Optional[Meter] = None
        self._registered: Set[str] = set()
        # Every (spec, points) registered, in order: the SDK's callbacks and the fast exporters
        # (otel_efa/pipeline/frame.py) take the same points. A tuple replaced on each registration, so
        # readers never see it change.
        self.series: Tuple[Tuple[MetricSpec, Points], ...] = ()
        self._seen_device_counters: Set[str] = set()  # kernel names already given an instrument
        self._seen_port_counters: Set[str] = set()
        # Instrument names handed out; case-insensitive, as the API compares them (and the SDK would
        # merge efa_RX_bytes into efa_rx_bytes, callbacks lost).
        self._names = names.UniqueNames(str.lower)
        self._attribute_cache: Dict[Tuple[str, str], Dict[str, str]] = {}
        self._balance: Tuple[Optional[Snapshot], RailBalance] = (None, RailBalance(None, None))
        self._rows: Tuple[Optional[Snapshot], Optional[dict], _Rows] = (None, None, _NO_ROWS)

    def instrument(self, meter_provider: MeterProvider) -> None:
        self._meter = meter_provider.get_meter("otel_efa", __version__)
        for spec in catalog.METRICS:
            self._names.claim(spec.name)
            self._register(spec, self._points_for(spec))

    def register_new_counters(self, snapshot: Snapshot) -> None:
        """Counters the kernel added after the catalog was written appear as ``efa_<name>``.

        Whatever the file's name: an invalid instrument name is mapped, and a name another instrument
        has (a catalog metric, an earlier counter) gets a stable suffix (otel_efa/names.py), each said
        once in the log. Counters found together are taken in sorted order, device counters first, so
        the same tree gives the same names on every start.
        """
        devices = snapshot.devices
        if (set().union(*(d.counters.keys() for d in devices)) <= self._seen_device_counters
                and set().union(*(p.counters.keys() for d in devices for p in d.ports)) <= self._seen_port_counters):
            return  # nothing new (every interval but the first few): two unions, no call per port
        for device in devices:
            self._register_unknown(device.counters.keys() - self._seen_device_counters,
                                   self._seen_device_counters, catalog.device_counter_spec)
            for port in device.ports:
                self._register_unknown(port.counters.keys() - self._seen_port_counters,
                                       self._seen_port_counters, catalog.port_counter_spec)

    def _register_unknown(self, kernel_names, seen: Set[str], spec_of) -> None:
        for kernel_name in sorted(kernel_names):  # usually none: set arithmetic in C keeps that cheap
            seen.add(kernel_name)
            spec = spec_of(kernel_name)
            if catalog.BY_NAME.get(spec.name) is spec:
                continue  # a catalog counter: registered by instrument() already
            wanted = spec.name
            name = self._names.claim(wanted, limit=names.MAX_INSTRUMENT_NAME)
            if name != wanted:
                spec = dataclasses.replace(spec, name=name)
            if name != f"efa_{kernel_name}" and name != f"efa_device_{kernel_name}":
                why = "an instrument has that name" if name != wanted else "not a valid instrument name"
                log.warning("the %s counter '%s' is exported as %s (%s)", spec.scope.value,
                            names.escape(kernel_name), name, why)
            self._register(spec, self._points_for(spec))

    def forget_attributes(self) -> None:
        """Call when attributes change (an ENI id resolved, a job started), so callbacks pick them up.

        Any thread may call this while a reader runs the callbacks: the cache is replaced, not cleared,
        and a callback stores into the dictionary it looked up, so nothing stale survives the swap.
        """
        self._attribute_cache = {}

    def _register(self, spec: MetricSpec, points: Points) -> None:
        assert self._meter is not None, "instrument() first"
        create = (self._meter.create_observable_counter if spec.kind is Kind.COUNTER
                  else self._meter.create_observable_gauge)
        create(spec.name, callbacks=[self._callback(points)], unit=spec.unit, description=spec.description)
        self._registered.add(spec.name)
        self.series = self.series + ((spec, points),)

    def _callback(self, points: Points) -> Callback:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, attributes) for attributes, value in points(self.collector.latest)]
        return observe

    def _port_attributes(self, port: PortSnapshot) -> Dict[str, str]:
        cache = self._attribute_cache
        key = (port.device, port.port)
        attributes = cache.get(key)
        if attributes is None:  # names from sysfs are any bytes: as valid text (otel_efa/names.py)
            attributes = {catalog.ATTR_DEVICE: names.escape(port.device),
                          catalog.ATTR_PORT: names.escape(port.port)}
            attributes.update(self.device_attributes(port.device))
            cache[key] = attributes
        return attributes

    def _device_attributes(self, device: str) -> Dict[str, str]:
        cache = self._attribute_cache
        key = (device, "")
        attributes = cache.get(key)
        if attributes is None:
            attributes = {catalog.ATTR_DEVICE: names.escape(device)}
            attributes.update(self.device_attributes(device))
            cache[key] = attributes
        return attributes

    def _rail_balance(self, snapshot: Optional[Snapshot]) -> RailBalance:
        """Computed once per snapshot, whichever node gauge asks first."""
        seen, balance = self._balance
        if snapshot is not seen:
            balance = rail_balance(snapshot)
            self._balance = (snapshot, balance)
        return balance

    def _rows_of(self, snapshot: Optional[Snapshot]) -> "_Rows":
        """Every port and device of ``snapshot`` with its attributes, made once per Snapshot (and again
        after forget_attributes()), whichever instrument asks first."""
        seen, cache, rows = self._rows
        if snapshot is seen and cache is self._attribute_cache:
            return rows
        cache = self._attribute_cache  # before the rows: a swap meanwhile makes the next call build again
        devices = snapshot.devices if snapshot is not None else ()
        ports = tuple(port for device in devices for port in device.ports)
        rows = _Rows(ports=ports,
                     port_attributes=tuple(map(self._port_attributes, ports)),
                     port_counters=tuple(port.counters for port in ports),
                     port_rates=tuple(port.rates for port in ports),
                     device_attributes=tuple(self._device_attributes(device.name) for device in devices),
                     device_counters=tuple(device.counters for device in devices))
        self._rows = (snapshot, cache, rows)
        return rows

    def _points_for(self, spec: MetricSpec) -> Points:
        value_of = _PORT_GAUGE_VALUES.get(spec.name)
        if spec.scope is catalog.Scope.PORT and spec.kind is Kind.COUNTER:
            return self._port_counter_points(spec.kernel_name)
        if spec.name in catalog.RATE_SOURCES:
            return self._port_rate_points(catalog.RATE_SOURCES[spec.name])
        if value_of is not None:
            return self._port_points(value_of)
        if spec.name == "efa_device_info":
            return self._device_info_points
        if spec.name in catalog.NODE_TOTAL_SOURCES:
            return self._node_total_points(catalog.NODE_TOTAL_SOURCES[spec.name].kernel_names)
        if spec.scope is catalog.Scope.NODE:
            return self._node_points(_NODE_VALUES[spec.name])
        if spec.scope is catalog.Scope.DEVICE:
            return self._device_counter_points(spec.kernel_name)
        return _AGENT_POINTS[spec.name](self)

    def _port_points(self, value_of: Callable[[PortSnapshot], Optional[float]]) -> Points:
        def points(snapshot: Optional[Snapshot]):
            rows = self._rows_of(snapshot)
            return _pairs(rows.port_attributes, list(map(value_of, rows.ports)))
        return points

    def _port_rate_points(self, kernel_name: str) -> Points:
        def points(snapshot: Optional[Snapshot]):
            rows = self._rows_of(snapshot)
            return _pairs(rows.port_attributes, list(map(dict.get, rows.port_rates, repeat(kernel_name))))
        return points

    def _port_counter_points(self, kernel_name: str) -> Points:
        def points(snapshot: Optional[Snapshot]):
            rows = self._rows_of(snapshot)
            return _pairs(rows.port_attributes, list(map(dict.get, rows.port_counters, repeat(kernel_name))))
        return points

    def _device_counter_points(self, kernel_name: str) -> Points:
        def points(snapshot: Optional[Snapshot]):
            rows = self._rows_of(snapshot)
            return _pairs(rows.device_attributes, list(map(dict.get, rows.device_counters, repeat(kernel_name))))
        return points

    def _device_info_points(self, snapshot: Optional[Snapshot]):
        if snapshot is None:
            return []
        return [(attributes, 1) for device in snapshot.devices
                if (attributes := self._info_attributes(device.name)) is not None]

    def _info_attributes(self, device: str) -> Optional[Dict[str, str]]:
        """Cached like the others (attribution calls forget_attributes() when a topology changes)."""
        cache = self._attribute_cache
        key = (device, "info")
        attributes = cache.get(key)
        if attributes is None:
            info = self.device_info(device)
            if info is None:
                return None
            attributes = {**self._device_attributes(device), **info}
            cache[key] = attributes
        return attributes

    def _node_total_points(self, kernel_names: Tuple[str, ...]) -> Points:
        def points(snapshot: Optional[Snapshot]):  # Snapshot.total() of each name, from the columns
            port_counters = self._rows_of(snapshot).port_counters
            found = ([v for v in map(dict.get, port_counters, repeat(k)) if v is not None] for k in kernel_names)
            totals = [sum(values) for values in found if values]
            return [(self.node_attributes(), counter_value(sum(totals)))] if totals else []
        return points

    def _node_points(self, value_of: Callable[[RailBalance], Optional[float]]) -> Points:
        def points(snapshot: Optional[Snapshot]):
            value = value_of(self._rail_balance(snapshot))
            return [] if value is None else [(self.node_attributes(), value)]
        return points


class _Rows(NamedTuple):
    """A Snapshot's ports and devices as columns, so that a metric's points are C loops (map, zip)."""

    ports: Tuple[PortSnapshot, ...]
    port_attributes: Tuple[Dict[str, str], ...]
    port_counters: Tuple[Dict[str, int], ...]
    port_rates: Tuple[Dict[str, float], ...]
    device_attributes: Tuple[Dict[str, str], ...]
    device_counters: Tuple[Dict[str, int], ...]


_NO_ROWS = _Rows((), (), (), (), (), ())


def _pairs(attributes: Tuple[Dict[str, str], ...], values: list) -> List[Tuple[Mapping[str, Any], Any]]:
    """(attributes, value) of every value that is not None, a value above 2**63-1 as a float (counter_value).

    The common case, every value there and in int64, is two C loops: ``max`` (it raises TypeError on a
    None among ints and floats) and ``zip``.
    """
    try:
        if max(values) <= INT64_MAX:
            return list(zip(attributes, values))
    except (TypeError, ValueError):  # a None among them; no values at all
        pass
    return [(a, counter_value(v)) for a, v in zip(attributes, values) if v is not None]


_NODE_VALUES: Dict[str, Callable[[RailBalance], Optional[float]]] = {
    "efa_node_rail_imbalance_ratio": lambda balance: balance.imbalance,
    "efa_node_idle_rails": lambda balance: balance.idle_rails,
}


def _up(port: PortSnapshot) -> Optional[int]:
    return None if port.up is None else int(port.up)


_PORT_GAUGE_VALUES: Dict[str, Callable[[PortSnapshot], Optional[float]]] = {  # rates aside
    "efa_port_up": _up,
    "efa_port_phys_state": lambda port: port.phys_state,
    "efa_link_speed": lambda port: port.link_bytes_per_second,
    "efa_rx_utilization_ratio": lambda port: port.utilization("rx_bytes"),
    "efa_tx_utilization_ratio": lambda port: port.utilization("tx_bytes"),
}


_NO_ATTRIBUTES: Mapping[str, Any] = {}


def _read_errors(instrumentor: EfaInstrumentor) -> Points:
    def points(snapshot: Optional[Snapshot]):
        if snapshot is None:
            return []
        return [({catalog.ATTR_REASON: reason}, count) for reason, count in snapshot.read_errors.items()]
    return points


def _snapshot_field(field: str):
    def factory(instrumentor: EfaInstrumentor) -> Points:
        def points(snapshot: Optional[Snapshot]):
            return [] if snapshot is None else [(_NO_ATTRIBUTES, getattr(snapshot, field))]
        return points
    return factory


def _dropped_datapoints(instrumentor: EfaInstrumentor) -> Points:
    def points(_snapshot: Optional[Snapshot]):
        return [(_NO_ATTRIBUTES, instrumentor.stats.dropped_datapoints)]
    return points


def _missed_intervals(instrumentor: EfaInstrumentor) -> Points:
    def points(_snapshot: Optional[Snapshot]):
        return [(_NO_ATTRIBUTES, instrumentor.stats.missed_intervals)]
    return points


def _expected_devices(instrumentor: EfaInstrumentor) -> Points:
    def points(snapshot: Optional[Snapshot]):
        known = instance_types.lookup(snapshot.instance_type) if snapshot is not None else None
        return [] if known is None else [(_NO_ATTRIBUTES, known.efa_devices)]
    return points


_AGENT_POINTS: Dict[str, Callable[[EfaInstrumentor], Points]] = {
    "otel_efa_read_errors": _read_errors,
    "otel_efa_collections": _snapshot_field("collections"),
    "otel_efa_collection_duration": _snapshot_field("duration"),
    "otel_efa_dropped_datapoints": _dropped_datapoints,
    "otel_efa_missed_intervals": _missed_intervals,
    "efa_expected_devices": _expected_devices,
}
