"""One sysfs pass per interval turned into a Snapshot that every exporter shares."""
import logging
import time
from typing import Dict, Optional, Set, Tuple

from . import catalog, instance_types
from .rates import RateTracker
from .snapshot import DeviceSnapshot, PortSnapshot, Snapshot
from .sysfs import REASONS, Reading, ReadError, SysfsReader, parse_rate_gbps

log = logging.getLogger(__name__)


class Collector:
    """Reads sysfs, computes rates and keeps the latest :class:`Snapshot`.

    Instrument callbacks and exporters only ever look at :attr:`latest`, so however many readers
    scrape, sysfs is read once per :meth:`collect`. A failing file is logged when it starts failing and
    when it recovers, never once per interval; every failure is counted by reason.
    """

    def __init__(self, reader: SysfsReader, instance_type: Optional[str] = None,
                 clock=time.monotonic, wall_clock=time.time):
        self.reader = reader
        self.instance_type = instance_types.lookup(instance_type)
        self._instance_type_name = instance_type
        self._clock = clock
        self._wall_clock = wall_clock
        self._rates = RateTracker(catalog.RATE_COUNTERS)
        self._failing: Dict[Tuple[str, str], ReadError] = {}
        self._error_counts: Dict[str, int] = {reason: 0 for reason in REASONS}
        self._collections = 0
        self._no_devices_logged = False
        self._device_names: Tuple[str, ...] = ()
        self.latest: Optional[Snapshot] = None

    def collect(self) -> Snapshot:
        started = self._clock()
        wall = self._wall_clock()
        reading = self.reader.read()
        self._account_errors(reading)
        devices = self._build(reading, started)
        self._collections += 1
        snapshot = Snapshot(
            monotonic=started,
            wall_time=wall,
            devices=devices,
            read_errors=dict(self._error_counts),
            collections=self._collections,
            duration=self._clock() - started,
            instance_type=self._instance_type_name,
        )
        self.latest = snapshot
        return snapshot

    def _link_speed(self, rate_text: str) -> Optional[float]:
        if self.instance_type is not None:
            return self.instance_type.device_bytes_per_second
        gbps = parse_rate_gbps(rate_text)
        return gbps * 1e9 / 8 if gbps else None

    def _build(self, reading: Reading, now: float) -> Tuple[DeviceSnapshot, ...]:
        update = self._rates.update
        live_keys: Set = set()
        devices = []
        for device in reading.devices:
            ports = []
            for port in device.ports:
                key = (device.name, port.port)
                live_keys.add(key)
                rates = update(key, port.counters, now, device.generation)
                ports.append(PortSnapshot(
                    device=device.name,
                    port=port.port,
                    counters=port.counters,
                    rates=rates,
                    up=(port.state == "ACTIVE") if port.state else None,
                    link_bytes_per_second=self._link_speed(port.rate_text),
                    gid0=port.gid0,
                ))
            devices.append(DeviceSnapshot(device.name, device.counters, tuple(ports), device.info))
        self._rates.forget(live_keys)
        self._log_device_changes(tuple(d.name for d in devices))
        if not devices and not self._no_devices_logged:
            log.warning("no EFA devices under %s: nothing to export until one appears", self.reader.class_dir)
        self._no_devices_logged = not devices
        return tuple(devices)

    def _log_device_changes(self, names: Tuple[str, ...]) -> None:
        if names == self._device_names:
            return
        added = [n for n in names if n not in self._device_names]
        removed = [n for n in self._device_names if n not in names]
        if added:
            log.info("EFA devices found: %s", " ".join(added))
        if removed:
            log.warning("EFA devices gone: %s", " ".join(removed))
        self._device_names = names

    def _account_errors(self, reading: Reading) -> None:
        now_failing = {}
        for error in reading.errors:
            self._error_counts[error.reason] = self._error_counts.get(error.reason, 0) + 1
            key = (error.path, error.reason)
            now_failing[key] = error
            if key not in self._failing:
                log.warning("cannot read %s (%s: %s); reported unavailable until it recovers",
                            error.path, error.reason, error.detail)
        for key in self._failing.keys() - now_failing.keys():
            log.info("%s: no longer failing", key[0])
        self._failing = now_failing
