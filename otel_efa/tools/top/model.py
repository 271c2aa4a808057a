"""What ``otel-efa top`` and the console exporter show, computed from successive Snapshots: pure, so it is
tested without a terminal.

Every figure is a per-second rate over the last interval (None until two readings give one, or after a
counter reset): bytes and packets, retransmits, drops and errors. Cumulative totals are ``otel-efa
snapshot``'s. Errors are also counted from when the view started (a running total since boot says nothing
about now), only to mark a device: one with errors since then, a port that is not ACTIVE, or retransmits
above the alert rules' ratio is a fault to highlight.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from otel_efa import catalog
from otel_efa.artifacts.alarms.prometheus_rules import RETRANSMIT_RATIO
from otel_efa.node.instance_types import InstanceType
from otel_efa.node.sysfs import natural_key
from otel_efa.pipeline.rates import rate
from otel_efa.pipeline.snapshot import DeviceSnapshot, Snapshot

# Counters that only grow when something goes wrong: drops, work request errors, SRD health events.
ERROR_PORT_COUNTERS = catalog.FAULT_PORT_COUNTERS
ERROR_DEVICE_COUNTERS = catalog.FAULT_DEVICE_COUNTERS
DROPS = catalog.RX_DROPS  # shown in a column of its own; the other error counters add up to ERR/s

SORT_KEYS = {"n": "name", "r": "rx", "t": "tx", "u": "util", "e": "errors"}


def busiest_share(rx: Optional[float], tx: Optional[float], capacity: Optional[float]) -> Optional[float]:
    """The busier direction's bytes per second over the per-direction capacity; None when unknown."""
    busiest = max((r for r in (rx, tx) if r is not None), default=None)
    if busiest is None or not capacity:
        return None
    return busiest / capacity


@dataclass(frozen=True)
class DeviceRow:
    name: str
    up: Optional[bool]  # None: state unreadable
    rx: Optional[float]  # bytes per second; None until two readings give a rate
    tx: Optional[float]
    rx_pps: Optional[float]
    tx_pps: Optional[float]
    retrans_pps: Optional[float]
    drops_pps: Optional[float]
    errors_pps: Optional[float]  # the error counters but drops, summed, per second
    link: Optional[float]  # bytes per second per direction
    errors: int  # error counter increase (drops included) since the view started
    errors_rising: bool  # errors grew during the last interval

    @property
    def utilization(self) -> Optional[float]:
        return busiest_share(self.rx, self.tx, self.link)

    @property
    def retransmitting(self) -> bool:
        """Retransmitted / sent packets above the alert rules' threshold during the last interval."""
        return bool(self.retrans_pps and self.tx_pps and self.retrans_pps / self.tx_pps > RETRANSMIT_RATIO)

    @property
    def fault(self) -> bool:
        return self.up is False or self.errors > 0 or self.retransmitting

    def sort_value(self, key: str):
        if key == "name":
            return natural_key(self.name)
        if key == "errors":  # faults first: a down port, then the most errors
            return (not self.fault, self.up is not False, -self.errors)
        value = {"rx": self.rx, "tx": self.tx, "util": self.utilization}[key]
        return -(value or 0)


@dataclass(frozen=True)
class NodeTotals:
    devices: int
    expected_devices: Optional[int]
    rx: Optional[float]
    tx: Optional[float]
    line_rate: Optional[float]  # bytes per second per direction

    @property
    def utilization(self) -> Optional[float]:
        return busiest_share(self.rx, self.tx, self.line_rate)


def _error_totals(device: DeviceSnapshot) -> Tuple[int, int]:
    """(every error counter summed, the same without drops)."""
    drops = device.total(DROPS) or 0
    total = sum(device.total(k) or 0 for k in ERROR_PORT_COUNTERS if k != DROPS)
    total += sum(device.counters.get(k, 0) for k in ERROR_DEVICE_COUNTERS)
    return total + drops, total


class TopModel:
    def __init__(self, instance_type: Optional[InstanceType] = None):
        self.instance_type = instance_type
        self._baseline: Dict[str, int] = {}
        self._previous: Dict[str, int] = {}
        self._previous_errors: Dict[str, Tuple[int, float]] = {}  # errors without drops, monotonic time
        self.rows: Tuple[DeviceRow, ...] = ()
        self.totals = NodeTotals(0, None, None, None, None)
        self.sort_key = "name"

    def update(self, snapshot: Snapshot) -> None:
        rows = []
        last_errors, self._previous_errors = self._previous_errors, {}
        for device in snapshot.devices:
            errors_now, not_drops = _error_totals(device)
            self._previous_errors[device.name] = (not_drops, snapshot.monotonic)
            before, then = last_errors.get(device.name, (None, snapshot.monotonic))
            baseline = self._baseline.setdefault(device.name, errors_now)
            if errors_now < baseline:  # counters reset (driver reload): count from here
                baseline = self._baseline[device.name] = errors_now
            previous = self._previous.get(device.name, errors_now)
            self._previous[device.name] = errors_now
            ups = [p.up for p in device.ports if p.up is not None]
            links = [p.link_bytes_per_second for p in device.ports if p.link_bytes_per_second]
            rows.append(DeviceRow(
                name=device.name,
                up=all(ups) if ups else None,
                rx=device.rate(catalog.RX_BYTES), tx=device.rate(catalog.TX_BYTES),
                rx_pps=device.rate(catalog.RX_PKTS), tx_pps=device.rate(catalog.TX_PKTS),
                retrans_pps=device.rate(catalog.RETRANS_PKTS),
                drops_pps=device.rate(DROPS),
                errors_pps=rate(before, not_drops, snapshot.monotonic - then),
                link=sum(links) if links else None,
                errors=errors_now - baseline,
                errors_rising=errors_now > previous,
            ))
        self.rows = tuple(rows)
        line_rate = (self.instance_type.total_bytes_per_second if self.instance_type
                     else sum(r.link or 0 for r in rows) or None)
        self.totals = NodeTotals(
            devices=len(rows),
            expected_devices=self.instance_type.efa_devices if self.instance_type else None,
            rx=snapshot.rate(catalog.RX_BYTES), tx=snapshot.rate(catalog.TX_BYTES),
            line_rate=line_rate,
        )

    def sort_by(self, key: str) -> None:
        self.sort_key = key

    def sorted_rows(self) -> List[DeviceRow]:
        # Faults first when sorting by errors; names break ties so rows do not jump around.
        return sorted(self.rows, key=lambda r: (r.sort_value(self.sort_key), natural_key(r.name)))
