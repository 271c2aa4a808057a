"""Every series the agent exports, defined once, and the OpenTelemetry instruments over them.

Shaped like ``opentelemetry-instrumentation-system-metrics``: one definition per instrument (its spec and
a function giving its points). The agent loop hands each collection's Snapshot to
:meth:`EfaInstrumentor.interval`, which runs every definition once and returns the immutable
:class:`~otel_efa.pipeline.interval.Interval` every exporter receives. The observable instruments it
registers on a MeterProvider (:meth:`EfaInstrumentor.instrument`) serve the latest Interval built, so any
number of readers and scrapes cost no extra reads, see the values the exporters see, and never reach back
into the Collector.

The port and device series are built as columns (otel_efa/pipeline/snapshot_columns.py): a Snapshot's ports
and devices, their attribute mappings and counter and rate dictionaries laid out once per Snapshot, a
metric's points ``map`` and ``zip`` over them, C loops with no Python per point.
"""
import dataclasses
import logging
from itertools import repeat
from operator import attrgetter
from types import MappingProxyType
from typing import AbstractSet, Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from otel_efa import __version__, catalog, names
from otel_efa.catalog import Kind, MetricSpec
from otel_efa.node import instance_types
from otel_efa.pipeline import snapshot_columns
from otel_efa.pipeline.interval import Interval, Point, same_series
from otel_efa.pipeline.rails import RailBalance, rail_balance
from otel_efa.pipeline.snapshot import PortSnapshot, Snapshot
from otel_efa.pipeline.snapshot_columns import NO_ROWS, Rows, counter_value, pairs
from otel_efa.pipeline.stats import AgentStats

log = logging.getLogger(__name__)

# What defines a series: the points of one metric in a Snapshot, as (attributes, value).
PointsOf = Callable[[Snapshot], Iterable[Point]]
# Extra attributes per device (for example aws.efa.eni.id once resolved); empty by default.
DeviceAttributes = Callable[[str], Dict[str, str]]
# Extra attributes of node-level metrics (for example slurm.job.id); empty by default.
NodeAttributes = Callable[[], Dict[str, str]]
# The efa_device_info attributes of a device (its topology), or None while unknown.
DeviceInfoAttributes = Callable[[str], Optional[Dict[str, str]]]

# The instrumentor's attribute mappings by (device or None, port or "" / "node" / "info").
AttributeCache = Dict[Tuple[Optional[str], str], Dict[str, str]]

NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})  # one object for every point without attributes


def _no_extra(_device: str) -> Dict[str, str]:
    return {}


def _no_node_extra() -> Dict[str, str]:
    return {}


def _no_info(_device: str) -> Optional[Dict[str, str]]:
    return None


class EfaInstrumentor:
    def __init__(self, device_attributes: DeviceAttributes = _no_extra,
                 node_attributes: NodeAttributes = _no_node_extra, device_info: DeviceInfoAttributes = _no_info,
                 stats: Optional[AgentStats] = None):
        self.stats = stats or AgentStats()
        self.device_attributes = device_attributes
        self.node_attributes = node_attributes
        self.device_info = device_info
        self._meters: List[Meter] = []
        # Every (spec, points) definition, in registration order. Tuples replaced on each registration, so a
        # reader on another thread never sees one change.
        self.series: Tuple[Tuple[MetricSpec, PointsOf], ...] = ()
        self.specs: Tuple[MetricSpec, ...] = ()
        self._seen_device_counters: Set[str] = set()  # kernel names already given an instrument
        self._seen_port_counters: Set[str] = set()
        # Instrument names handed out; case-insensitive, as the API compares them (and the SDK would
        # merge efa_RX_bytes into efa_rx_bytes, callbacks lost).
        self._names = names.UniqueNames(str.lower)
        self._attribute_cache: AttributeCache = {}
        self._balance: Tuple[Optional[Snapshot], RailBalance] = (None, RailBalance(None, None))
        self._rows: Tuple[Optional[Snapshot], Optional[AttributeCache], Rows] = (None, None, NO_ROWS)
        self._failing: Set[str] = set()  # metrics whose definition raised, logged once until it works again
        self._series_version = 0
        self.latest: Optional[Interval] = None  # the last Interval built: what the OTel instruments serve
        self._latest_points: Dict[str, Tuple[Point, ...]] = {}
        for spec in catalog.METRICS:
            self._names.claim(spec.name)
            self._register(spec, self._points_for(spec))

    def instrument(self, meter_provider: MeterProvider) -> None:
        """One observable instrument per series on ``meter_provider`` (and per series registered later),
        whose callbacks serve the latest :meth:`interval`: the values every exporter was handed."""
        meter = meter_provider.get_meter("otel_efa", __version__)
        self._meters.append(meter)
        for spec, _ in self.series:
            self._create_instrument(meter, spec)

    def interval(self, snapshot: Snapshot) -> Interval:
        """The Interval of ``snapshot``: new counters registered, every series' points taken once.

        Called by the agent loop, one collection at a time; the result is shared read-only by every
        exporter and by the OTel instruments.
        """
        self.register_new_counters(snapshot)
        found = []
        for spec, points_of in self.series:
            try:
                points = tuple(points_of(snapshot))
            except Exception:  # as the SDK does: one broken definition loses its metric, not the others
                if spec.name not in self._failing:
                    log.exception("observing %s failed; it is left out until it works again", spec.name)
                    self._failing.add(spec.name)
                continue
            self._failing.discard(spec.name)
            if points:
                found.append((spec, points))
        metrics = tuple(found)
        previous = self.latest
        if previous is None or previous.specs is not self.specs or not same_series(previous.metrics, metrics):
            self._series_version += 1
        interval = Interval(snapshot, metrics, self._series_version, self.specs)
        self._latest_points = {spec.name: points for spec, points in metrics}
        self.latest = interval
        return interval

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

    def _register_unknown(self, kernel_names: AbstractSet[str], seen: Set[str],
                          spec_of: Callable[[str], MetricSpec]) -> None:
        for kernel_name in sorted(kernel_names):  # usually none: set arithmetic in C keeps that cheap
            seen.add(kernel_name)
            spec = spec_of(kernel_name)
            if catalog.BY_NAME.get(spec.name) is spec:
                continue  # a catalog counter: registered at construction already
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
        """Call when attributes change (an ENI id resolved, a job started), so the next interval has them.

        Any thread may call this while an interval is built: the cache is replaced, not cleared, and a
        definition stores into the dictionary it looked up, so nothing stale survives the swap. The new
        mappings are new objects, so the next Interval has a new ``series_version``.
        """
        self._attribute_cache = {}

    def _register(self, spec: MetricSpec, points_of: PointsOf) -> None:
        self.series = self.series + ((spec, points_of),)
        self.specs = self.specs + (spec,)
        for meter in self._meters:
            self._create_instrument(meter, spec)

    def _create_instrument(self, meter: Meter, spec: MetricSpec) -> None:
        create = meter.create_observable_counter if spec.kind is Kind.COUNTER else meter.create_observable_gauge
        create(spec.name, callbacks=[self._observer(spec.name)], unit=spec.unit, description=spec.description)

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            # plain dicts: the SDK releases for Python 3.9 deep-copy what they are given, and a read-only
            # mapping proxy (the points' shared mappings) cannot be copied
            return [Observation(value, dict(attributes)) for attributes, value in self._latest_points.get(name, ())]
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

    def _node_attributes(self) -> Dict[str, str]:
        """Cached like the others: one mapping shared by the node metrics until forget_attributes()."""
        cache = self._attribute_cache
        key = (None, "node")
        attributes = cache.get(key)
        if attributes is None:
            attributes = cache[key] = dict(self.node_attributes())
        return attributes

    def _rail_balance(self, snapshot: Snapshot) -> RailBalance:
        """Computed once per snapshot, whichever node gauge asks first."""
        seen, balance = self._balance
        if snapshot is not seen:
            balance = rail_balance(snapshot)
            self._balance = (snapshot, balance)
        return balance

    def _rows_of(self, snapshot: Snapshot) -> Rows:
        """Every port and device of ``snapshot`` with its attributes, as columns, made once per Snapshot
        (and again after forget_attributes()), whichever series asks first."""
        seen, cache, rows = self._rows
        if snapshot is seen and cache is self._attribute_cache:
            return rows
        cache = self._attribute_cache  # before the rows: a swap meanwhile makes the next call build again
        rows = snapshot_columns.rows(snapshot, self._port_attributes, self._device_attributes)
        self._rows = (snapshot, cache, rows)
        return rows

    def _points_for(self, spec: MetricSpec) -> PointsOf:
        value_of = _PORT_GAUGE_VALUES.get(spec.name)
        kernel_name = spec.kernel_name or ""  # every port and device counter has one
        if spec.scope is catalog.Scope.PORT and spec.kind is Kind.COUNTER:
            return self._keyed_points("port_counters", "port_attributes", kernel_name)
        if spec.name in catalog.RATE_SOURCES:
            return self._keyed_points("port_rates", "port_attributes", catalog.RATE_SOURCES[spec.name])
        if value_of is not None:
            return self._port_points(value_of)
        if spec.name == catalog.DEVICE_INFO.name:
            return self._device_info_points
        if spec.name in catalog.NODE_TOTAL_SOURCES:
            return self._node_total_points(catalog.NODE_TOTAL_SOURCES[spec.name].kernel_names)
        if spec.scope is catalog.Scope.NODE:
            return self._node_points(_NODE_VALUES[spec.name])
        if spec.scope is catalog.Scope.DEVICE:
            return self._keyed_points("device_counters", "device_attributes", kernel_name)
        return _AGENT_POINTS[spec.name](self)

    def _port_points(self, value_of: Callable[[PortSnapshot], Optional[float]]) -> PointsOf:
        def points(snapshot: Snapshot) -> List[Point]:
            rows = self._rows_of(snapshot)
            return pairs(rows.port_attributes, list(map(value_of, rows.ports)))
        return points

    def _keyed_points(self, values: str, attributes: str, kernel_name: str) -> PointsOf:
        """Points of one kernel counter (or its rate) from a column of the snapshot's rows: ``values`` names
        the column of per-row dicts, ``attributes`` the rows' attribute column (snapshot_columns.Rows)."""
        values_of, attributes_of = attrgetter(values), attrgetter(attributes)

        def points(snapshot: Snapshot) -> List[Point]:
            rows = self._rows_of(snapshot)
            return pairs(attributes_of(rows), list(map(dict.get, values_of(rows), repeat(kernel_name))))
        return points

    def _device_info_points(self, snapshot: Snapshot) -> Iterator[Point]:
        for device in snapshot.devices:
            attributes = self._info_attributes(device.name)
            if attributes is not None:
                yield attributes, 1

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

    def _node_total_points(self, kernel_names: Tuple[str, ...]) -> PointsOf:
        def points(snapshot: Snapshot) -> List[Point]:  # Snapshot.total() of each name, from the columns
            port_counters = self._rows_of(snapshot).port_counters
            found = ([v for v in map(dict.get, port_counters, repeat(k)) if v is not None] for k in kernel_names)
            totals = [sum(values) for values in found if values]
            return [(self._node_attributes(), counter_value(sum(totals)))] if totals else []
        return points

    def _node_points(self, value_of: Callable[[RailBalance], Optional[float]]) -> PointsOf:
        def points(snapshot: Snapshot) -> Iterator[Point]:
            value = value_of(self._rail_balance(snapshot))
            if value is not None:
                yield self._node_attributes(), value
        return points


_NODE_VALUES: Dict[str, Callable[[RailBalance], Optional[float]]] = {
    catalog.RAIL_IMBALANCE.name: lambda balance: balance.imbalance,
    catalog.IDLE_RAILS.name: lambda balance: balance.idle_rails,
}


def _up(port: PortSnapshot) -> Optional[int]:
    return None if port.up is None else int(port.up)


_PORT_GAUGE_VALUES: Dict[str, Callable[[PortSnapshot], Optional[float]]] = {  # the rates aside
    catalog.PORT_UP.name: _up,
    catalog.PORT_PHYS_STATE.name: lambda port: port.phys_state,
    catalog.LINK_SPEED.name: lambda port: port.link_bytes_per_second,
    catalog.RX_UTILIZATION.name: lambda port: port.utilization(catalog.RX_BYTES),
    catalog.TX_UTILIZATION.name: lambda port: port.utilization(catalog.TX_BYTES),
}

_REASON_ATTRIBUTES: Dict[str, Mapping[str, str]] = {}  # reason -> its attributes, one mapping each


def _read_errors(_instrumentor: EfaInstrumentor) -> PointsOf:
    def points(snapshot: Snapshot) -> Iterator[Point]:
        for reason, count in snapshot.read_errors.items():
            attributes = _REASON_ATTRIBUTES.get(reason)
            if attributes is None:
                attributes = _REASON_ATTRIBUTES.setdefault(reason, MappingProxyType({catalog.ATTR_REASON: reason}))
            yield attributes, count
    return points


def _snapshot_field(field: str) -> Callable[[EfaInstrumentor], PointsOf]:
    def factory(_instrumentor: EfaInstrumentor) -> PointsOf:
        def points(snapshot: Snapshot) -> Iterator[Point]:
            yield NO_ATTRIBUTES, getattr(snapshot, field)
        return points
    return factory


def _dropped_datapoints(instrumentor: EfaInstrumentor) -> PointsOf:
    def points(_snapshot: Snapshot) -> Iterator[Point]:
        yield NO_ATTRIBUTES, instrumentor.stats.dropped_datapoints
    return points


def _missed_intervals(instrumentor: EfaInstrumentor) -> PointsOf:
    def points(_snapshot: Snapshot) -> Iterator[Point]:
        yield NO_ATTRIBUTES, instrumentor.stats.missed_intervals
    return points


def _expected_devices(_instrumentor: EfaInstrumentor) -> PointsOf:
    def points(snapshot: Snapshot) -> Iterator[Point]:
        known = instance_types.lookup(snapshot.instance_type)
        if known is not None:
            yield NO_ATTRIBUTES, known.efa_devices
    return points


_AGENT_POINTS: Dict[str, Callable[[EfaInstrumentor], PointsOf]] = {
    catalog.READ_ERRORS.name: _read_errors,
    catalog.COLLECTIONS.name: _snapshot_field("collections"),
    catalog.COLLECTION_DURATION.name: _snapshot_field("duration"),
    catalog.DROPPED_DATAPOINTS.name: _dropped_datapoints,
    catalog.MISSED_INTERVALS.name: _missed_intervals,
    catalog.EXPECTED_DEVICES.name: _expected_devices,
}
