"""OpenTelemetry observable instruments over the collector's latest Snapshot.

Shaped like ``opentelemetry-instrumentation-system-metrics``: an instrumentor takes a MeterProvider and
registers one callback per instrument. The callbacks never touch sysfs; they serve the Snapshot of the
last collection, so any number of readers and scrapes cost no extra reads.
"""
from typing import Callable, Dict, Iterable, Iterator, Optional, Set, Tuple

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from . import __version__, catalog, instance_types
from .catalog import Kind, MetricSpec
from .collector import Collector
from .snapshot import PortSnapshot, Snapshot

# Extra attributes per device (for example aws.efa.eni.id once resolved); empty by default.
DeviceAttributes = Callable[[str], Dict[str, str]]


def _no_extra(_device: str) -> Dict[str, str]:
    return {}


class EfaInstrumentor:
    def __init__(self, collector: Collector, device_attributes: DeviceAttributes = _no_extra):
        self.collector = collector
        self.device_attributes = device_attributes
        self._meter: Optional[Meter] = None
        self._registered: Set[str] = set()
        self._attribute_cache: Dict[Tuple[str, str], Dict[str, str]] = {}

    def instrument(self, meter_provider: MeterProvider) -> None:
        self._meter = meter_provider.get_meter("otel_efa", __version__)
        for spec in catalog.METRICS:
            self._register(spec, self._callback_for(spec))

    def register_new_counters(self, snapshot: Snapshot) -> None:
        """Counters the kernel added after the catalog was written appear as ``efa_<name>``."""
        for device in snapshot.devices:
            for name in device.counters:
                spec = catalog.device_counter_spec(name)
                if spec.name not in self._registered:
                    self._register(spec, self._callback_for(spec))
            for port in device.ports:
                for name in port.counters:
                    spec = catalog.port_counter_spec(name)
                    if spec.name not in self._registered:
                        self._register(spec, self._callback_for(spec))

    def forget_attributes(self) -> None:
        """Call when device attributes change (an ENI id resolved), so callbacks pick them up."""
        self._attribute_cache.clear()

    def _register(self, spec: MetricSpec, callback) -> None:
        assert self._meter is not None, "instrument() first"
        create = (self._meter.create_observable_counter if spec.kind is Kind.COUNTER
                  else self._meter.create_observable_gauge)
        create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.description)
        self._registered.add(spec.name)

    def _port_attributes(self, port: PortSnapshot) -> Dict[str, str]:
        key = (port.device, port.port)
        attributes = self._attribute_cache.get(key)
        if attributes is None:
            attributes = {catalog.ATTR_DEVICE: port.device, catalog.ATTR_PORT: port.port}
            attributes.update(self.device_attributes(port.device))
            self._attribute_cache[key] = attributes
        return attributes

    def _device_attributes(self, device: str) -> Dict[str, str]:
        key = (device, "")
        attributes = self._attribute_cache.get(key)
        if attributes is None:
            attributes = {catalog.ATTR_DEVICE: device}
            attributes.update(self.device_attributes(device))
            self._attribute_cache[key] = attributes
        return attributes

    def _ports(self) -> Iterator[PortSnapshot]:
        snapshot = self.collector.latest
        if snapshot is None:
            return
        for device in snapshot.devices:
            yield from device.ports

    def _callback_for(self, spec: MetricSpec):
        value_of = _PORT_GAUGE_VALUES.get(spec.name)
        if spec.scope is catalog.Scope.PORT and spec.kind is Kind.COUNTER:
            return self._port_observer(lambda port, k=spec.kernel_name: port.counters.get(k))
        if value_of is not None:
            return self._port_observer(value_of)
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

    def _device_counter_observer(self, kernel_name: str):
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            snapshot = self.collector.latest
            if snapshot is None:
                return
            for device in snapshot.devices:
                value = device.counters.get(kernel_name)
                if value is not None:
                    yield Observation(value, self._device_attributes(device.name))
        return observe


def _rate_value(kernel_name: str) -> Callable[[PortSnapshot], Optional[float]]:
    return lambda port: port.rates.get(kernel_name)


def _up(port: PortSnapshot) -> Optional[int]:
    return None if port.up is None else int(port.up)


_PORT_GAUGE_VALUES: Dict[str, Callable[[PortSnapshot], Optional[float]]] = {
    **{name: _rate_value(kernel) for name, kernel in catalog.RATE_SOURCES.items()},
    "efa_port_up": _up,
    "efa_link_speed": lambda port: port.link_bytes_per_second,
    "efa_rx_utilization": lambda port: port.utilization("rx_bytes"),
    "efa_tx_utilization": lambda port: port.utilization("tx_bytes"),
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


def _expected_devices(instrumentor: EfaInstrumentor):
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        snapshot = instrumentor.collector.latest
        known = instance_types.lookup(snapshot.instance_type) if snapshot is not None else None
        if known is not None:
            yield Observation(known.efa_devices)
    return observe


_AGENT_OBSERVERS = {
    "otel_efa_read_errors": _read_errors,
    "otel_efa_collections": _snapshot_field("collections"),
    "otel_efa_collection_duration": _snapshot_field("duration"),
    "efa_expected_devices": _expected_devices,
}
