"""The values of one collection interval, shared read-only by every exporter."""
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional, Tuple

from otel_efa.node.sysfs import DeviceInfo


class PortSnapshot(NamedTuple):  # tuples: cheap to build, one per port per interval
    device: str
    port: str
    counters: Dict[str, int]  # kernel name -> cumulative value, for the counters read this interval
    rates: Dict[str, float]  # kernel name -> per second, where this interval gives a rate
    up: Optional[bool]  # None when the state file could not be read
    link_bytes_per_second: Optional[float]
    gid0: str = ""
    phys_state: Optional[int] = None  # the number in ports/N/phys_state (5: LinkUp); None when unreadable

    def utilization(self, kernel_name: str) -> Optional[float]:
        rate = self.rates.get(kernel_name)
        if rate is None or not self.link_bytes_per_second:
            return None
        return rate / self.link_bytes_per_second


class DeviceSnapshot(NamedTuple):
    name: str
    counters: Dict[str, int]  # device-level counters
    ports: Tuple[PortSnapshot, ...]
    info: DeviceInfo = DeviceInfo()

    def total(self, kernel_name: str) -> Optional[int]:
        values = [p.counters[kernel_name] for p in self.ports if kernel_name in p.counters]
        return sum(values) if values else None

    def rate(self, kernel_name: str) -> Optional[float]:
        values = [p.rates[kernel_name] for p in self.ports if kernel_name in p.rates]
        return sum(values) if values else None


@dataclass(frozen=True)
class Snapshot:
    monotonic: float  # time.monotonic() when the interval's read started
    wall_time: float  # time.time() at the same moment, for exporters that need a timestamp
    devices: Tuple[DeviceSnapshot, ...]
    read_errors: Dict[str, int]  # reason -> cumulative count since start
    collections: int  # cumulative count of completed collections
    duration: float  # seconds the read took
    instance_type: Optional[str] = None

    def device(self, name: str) -> Optional[DeviceSnapshot]:
        for device in self.devices:
            if device.name == name:
                return device
        return None

    def total(self, kernel_name: str) -> Optional[int]:
        values = [v for v in (d.total(kernel_name) for d in self.devices) if v is not None]
        return sum(values) if values else None

    def rate(self, kernel_name: str) -> Optional[float]:
        values = [v for v in (d.rate(kernel_name) for d in self.devices) if v is not None]
        return sum(values) if values else None
