"""OpenTelemetry observable instruments over the collector's latest Snapshot.

Shaped like ``opentelemetry-instrumentation-system-metrics``: an instrumentor takes a MeterProvider and
registers one callback per instrument. The callbacks never touch sysfs; they serve the Snapshot of the
last collection, so any number of readers and scrapes cost no extra reads.
"""
import dataclasses
import logging
from typing import Callable, Dict, Iterable, Iterator, Optional, Set, Tuple, Union

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from otel_efa import __version__, catalog, names
from otel_efa.catalog import Kind, MetricSpec
from otel_efa.node import instance_types
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.rails import RailBalance, rail_balance
from otel_efa.pipeline.snapshot import PortSnapshot, Snapshot
from otel_efa.pipeline.stats import AgentStats

log = logging.getLogger(__name__)

# What every instrument callback is: the SDK calls it with CallbackOptions, the frame with CallbackOptions().
Callback = Callable[[CallbackOptions], Iterable[Observation]]
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
        # Every (spec, callback) registered, in order: the fast exporters run the same callbacks
        # (otel_efa/pipeline/frame.py). A tuple replaced on each registration, so readers never see it change.
        self.series: Tuple[Tuple[MetricSpec, Callback], ...] = ()
        self._seen_device_counters: Set[str] = set()  # kernel names already given an instrument
        self._seen_port_counters: Set[str] = set()
        # Instrument names handed out; case-insensitive, as the API compares them (and the SDK would
        # merge efa_RX_bytes into efa_rx_bytes, callbacks lost).
        self._names = names.UniqueNames(str.lower)
        self._attribute_cache: Dict[Tuple[str, str], Dict[str, str]] = {}
        self._balance: Tuple[Optional[Snapshot], RailBalance] = (None, RailBalance(None, None))

    def instrument(self, meter_provider: MeterProvider) -> None:
        self._meter = meter_provider.get_meter("otel_efa", __version__)
        for spec in catalog.METRICS:
            self._names.claim(spec.name)
            self._register(spec, self._callback_for(spec))

    def register_new_counters(self, snapshot: Snapshot) -> None:
        """Counters the kernel added after the catalog was written appear as ``efa_<name>``.

        Whatever the file's name: an invalid instrument name is mapped, and a name another instrument
        has (a catalog metric, an earlier counter) gets a stable suffix (otel_efa/names.py), each said
        once in the log. Counters found together are taken in sorted order, device counters first, so
        the same tree gives the same names on every start.
        """
        for device in snapshot.devices:
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
            self._register(spec, self._callback_for(spec))

    def forget_attributes(self) -> None:
        """Call when attributes change (an ENI id resolved, a job started), so callbacks pick them up.

        Any thread may call this while a reader runs the callbacks: the cache is replaced, not cleared,
        and a callback stores into the dictionary it looked up, so nothing stale survives the swap.
        """
        self._attribute_cache = {}

    def _register(self, spec: MetricSpec, callback: Callback) -> None:
        assert self._meter is not None, "instrument() first"
        create = (self._meter.create_observable_counter if spec.kind is Kind.COUNTER
                  else self._meter.create_observable_gauge)
        create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.description)
        self._registered.add(spec.name)
        self.series = self.series + ((spec, callback),)

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

    def _rail_balance(self) -> RailBalance:
        """Computed once per snapshot, whichever node gauge asks first."""
        snapshot = self.collector.latest
        seen, balance = self._balance
        if snapshot is not seen:
            balance = rail_balance(snapshot)
            self._balance = (snapshot, balance)
        return balance

    def _ports(self) -> Iterator[PortSnapshot]:
        snapshot = self.collector.latest
        if snapshot is None:
            return
        for device in snapshot.devices:
            yield from device.ports

    def _callback_for(self, spec: MetricSpec):
        value_of = _PORT_GAUGE_VALUES.get(spec.name)
        if spec.scope is catalog.Scope.PORT and spec.kind is Kind.COUNTER:
            return self._port_counter_observer(spec.kernel_name)
        if value_of is not None:
            return self._port_observer(value_of)
        if spec.name == catalog.DEVICE_INFO.name:
            return self._device_info_observer
        if spec.name in catalog.NODE_TOTAL_SOURCES:
            return self._node_total_observer(catalog.NODE_TOTAL_SOURCES[spec.name].kernel_names)
        if spec.scope is catalog.Scope.NODE:
            return self._node_observer(_NODE_VALUES[spec.name])
        if spec.scope is catalog.Scope.DEVICE:
            return self._device_counter_observer(spec.kernel_name)
        return _AGENT_OBSERVERS[spec.name](self)

    def _port_observer(self, value_of: Callable[[PortSnapshot], Optional[float]]):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for port in self._ports():
                value = value_of(port)
                if value is not None:
                    yield Observation(value, self._port_attributes(port))
        return observe

    def _port_counter_observer(self, kernel_name: str):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for port in self._ports():
                value = port.counters.get(kernel_name)
                if value is not None:
                    yield Observation(counter_value(value), self._port_attributes(port))
        return observe

    def _device_counter_observer(self, kernel_name: str):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            snapshot = self.collector.latest
            if snapshot is None:
                return
            for device in snapshot.devices:
                value = device.counters.get(kernel_name)
                if value is not None:
                    yield Observation(counter_value(value), self._device_attributes(device.name))
        return observe


    def _device_info_observer(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self.collector.latest
        if snapshot is None:
            return
        for device in snapshot.devices:
            attributes = self._info_attributes(device.name)
            if attributes is not None:
                yield Observation(1, attributes)

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

    def _node_total_observer(self, kernel_names: Tuple[str, ...]):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            snapshot = self.collector.latest
            if snapshot is None:
                return
            totals = [t for t in (snapshot.total(k) for k in kernel_names) if t is not None]
            if totals:
                yield Observation(counter_value(sum(totals)), self.node_attributes())
        return observe

    def _node_observer(self, value_of: Callable[[RailBalance], Optional[float]]):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            value = value_of(self._rail_balance())
            if value is not None:
                yield Observation(value, self.node_attributes())
        return observe


_NODE_VALUES: Dict[str, Callable[[RailBalance], Optional[float]]] = {
    catalog.RAIL_IMBALANCE.name: lambda balance: balance.imbalance,
    catalog.IDLE_RAILS.name: lambda balance: balance.idle_rails,
}


def _rate_value(kernel_name: str) -> Callable[[PortSnapshot], Optional[float]]:
    return lambda port: port.rates.get(kernel_name)


def _up(port: PortSnapshot) -> Optional[int]:
    return None if port.up is None else int(port.up)


_PORT_GAUGE_VALUES: Dict[str, Callable[[PortSnapshot], Optional[float]]] = {
    **{name: _rate_value(kernel) for name, kernel in catalog.RATE_SOURCES.items()},
    catalog.PORT_UP.name: _up,
    catalog.PORT_PHYS_STATE.name: lambda port: port.phys_state,
    catalog.LINK_SPEED.name: lambda port: port.link_bytes_per_second,
    catalog.RX_UTILIZATION.name: lambda port: port.utilization(catalog.RX_BYTES),
    catalog.TX_UTILIZATION.name: lambda port: port.utilization(catalog.TX_BYTES),
}


def _read_errors(instrumentor: EfaInstrumentor):
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        snapshot = instrumentor.collector.latest
        if snapshot is not None:
            for reason, count in snapshot.read_errors.items():
                yield Observation(count, {catalog.ATTR_REASON: reason})
    return observe


def _snapshot_field(field: str):
    def factory(instrumentor: EfaInstrumentor):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            snapshot = instrumentor.collector.latest
            if snapshot is not None:
                yield Observation(getattr(snapshot, field))
        return observe
    return factory


def _dropped_datapoints(instrumentor: EfaInstrumentor):
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(instrumentor.stats.dropped_datapoints)
    return observe


def _missed_intervals(instrumentor: EfaInstrumentor):
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(instrumentor.stats.missed_intervals)
    return observe


def _expected_devices(instrumentor: EfaInstrumentor):
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        snapshot = instrumentor.collector.latest
        known = instance_types.lookup(snapshot.instance_type) if snapshot is not None else None
        if known is not None:
            yield Observation(known.efa_devices)
    return observe


_AGENT_OBSERVERS = {
    catalog.READ_ERRORS.name: _read_errors,
    catalog.COLLECTIONS.name: _snapshot_field("collections"),
    catalog.COLLECTION_DURATION.name: _snapshot_field("duration"),
    catalog.DROPPED_DATAPOINTS.name: _dropped_datapoints,
    catalog.MISSED_INTERVALS.name: _missed_intervals,
    catalog.EXPECTED_DEVICES.name: _expected_devices,
}
