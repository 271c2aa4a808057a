"""One sysfs pass per interval turned into a Snapshot that every exporter shares."""
import logging
import time
from typing import Callable, Dict, Hashable, List, Optional, Set, Tuple

from otel_efa import catalog
from otel_efa.names import escape
from otel_efa.node import instance_types
from otel_efa.node.sysfs import NOT_AVAILABLE, REASONS, ReadError, Reading, SysfsReader, parse_rate_gbps, parse_state
from otel_efa.pipeline.rates import JUMP, RESET, WRAP, Discontinuity, RateTracker
from otel_efa.pipeline.snapshot import DeviceSnapshot, PortSnapshot, Snapshot

log = logging.getLogger(__name__)

# How much faster than its port's line rate a counter may seem to grow (room for the sysfs stats cache,
# ``lifespan``, and read jitter) before its rate is refused: beyond it a decrease is a reset, not a u64
# wrap, and an increase is a jump, not traffic (see rates.py).
WRAP_HEADROOM = 2.0
# The line rate assumed when the instance type is unknown: the fastest EFA device we know of (the port's
# rate file cannot be trusted for it: kernels before late 2024 say 100 Gb/s whatever the speed).
FASTEST_DEVICE_BYTES_PER_SECOND = max(t.device_bytes_per_second for t in instance_types.INSTANCE_TYPES.values())


class Collector:
    """Reads sysfs, computes rates and keeps the latest :class:`Snapshot`.

    Instrument callbacks and exporters only ever look at :attr:`latest`, so however many readers
    scrape, sysfs is read once per :meth:`collect`. A failing file is logged when it starts failing and
    when it recovers, never once per interval; every failure is counted by reason.
    """

    def __init__(self, reader: SysfsReader, instance_type: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.reader = reader
        self.instance_type = instance_types.lookup(instance_type)
        self._instance_type_name = instance_type
        self._clock = clock
        self._wall_clock = wall_clock
        self._rates = RateTracker(catalog.RATE_COUNTERS, on_discontinuity=self._log_discontinuities)
        line_rate = (self.instance_type.device_bytes_per_second if self.instance_type is not None
                     else FASTEST_DEVICE_BYTES_PER_SECOND)
        self._max_counter_growth = WRAP_HEADROOM * line_rate  # per second, for telling wraps from resets
        self._failing: Dict[Tuple[str, str], ReadError] = {}
        self._error_counts: Dict[str, int] = {reason: 0 for reason in REASONS}
        self._collections = 0
        self._no_devices_logged = False
        self._device_names: Tuple[str, ...] = ()
        self._ignored: Tuple[Tuple[str, str], ...] = ()
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
        max_growth = self._max_counter_growth
        live_keys: Set[Tuple[str, str]] = set()
        devices = []
        for device in reading.devices:
            ports = []
            for port in device.ports:
                key = (device.name, port.port)
                live_keys.add(key)
                rates = update(key, port.counters, now, device.generation, max_growth)
                ports.append(PortSnapshot(
                    device=device.name,
                    port=port.port,
                    counters=port.counters,
                    rates=rates,
                    up=(port.state == "ACTIVE") if port.state else None,
                    link_bytes_per_second=self._link_speed(port.rate_text),
                    gid0=port.gid0,
                    phys_state=parse_state(port.phys_state)[0] if port.phys_state else None,
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
            log.info("EFA devices found: %s", " ".join(map(escape, added)))  # any bytes: one line each
        if removed:
            log.warning("EFA devices gone: %s", " ".join(map(escape, removed)))
        self._device_names = names

    @staticmethod
    def _log_discontinuities(key: Hashable, found: List[Discontinuity]) -> None:
        """One line per port and kind: a reset (device reset, driver reload), a u64 wrap, or a jump."""
        device, port = (escape(part) for part in key)  # type: ignore[attr-defined]  # key: (device, port)

        def listed(kind: str) -> str:
            return ", ".join(f"{name} {old} -> {new}" for name, old, new, k in found if k == kind)

        if listed(RESET):
            log.warning("%s port %s: counters were reset (%s); no rate for this interval, totals restart "
                        "from the new values", device, port, listed(RESET))
        if listed(JUMP):
            log.warning("%s port %s: counters jumped by more than the link can carry (%s); no rate for this "
                        "interval", device, port, listed(JUMP))
        if listed(WRAP):
            log.info("%s port %s: counters wrapped past 2**64-1 (%s); rates counted across the wrap",
                     device, port, listed(WRAP))

    def _account_errors(self, reading: Reading) -> None:
        """Each failed read counts once by its reason; what is not available (``N/A``, EOPNOTSUPP, a FIFO
        where a file belongs...) counts once when it becomes so, not every interval. One line when a file
        starts failing and one when it recovers."""
        if reading.ignored != self._ignored:
            new = [f"{name} ({why})" for name, why in reading.ignored if (name, why) not in self._ignored]
            if new:
                log.info("not EFA, ignored: %s", ", ".join(new))
            self._ignored = reading.ignored
        now_failing = {}
        for error in reading.errors + reading.unavailable:
            key = (error.path, error.reason)
            fresh = key not in self._failing
            if error.reason != NOT_AVAILABLE or fresh:
                self._error_counts[error.reason] = self._error_counts.get(error.reason, 0) + 1
            now_failing[key] = error
            if fresh and error.reason == NOT_AVAILABLE:
                log.log(logging.INFO if error.quiet else logging.WARNING, "%s: not available (%s); skipped",
                        error.path, error.detail)
            elif fresh:
                log.warning("cannot read %s (%s: %s); reported unavailable until it recovers",
                            escape(error.path), error.reason, error.detail)
        for key in self._failing.keys() - now_failing.keys():
            log.info("%s: no longer failing", escape(key[0]))
        self._failing = now_failing
