"""What ``otel-efa top`` shows, computed from successive Snapshots: pure, so it is tested without a terminal.

Errors are counted from when ``top`` started (a running total since boot says nothing about now). A
device with errors since then, a port that is not ACTIVE, or retransmits above the alert rules' ratio
is a fault to highlight.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from otel_efa import catalog
from otel_efa.artifacts.alarms.prometheus_rules import RETRANSMIT_RATIO
from otel_efa.node.instance_types import InstanceType
from otel_efa.node.sysfs import natural_key
from otel_efa.pipeline.snapshot import DeviceSnapshot, Snapshot

# Counters that only grow when something goes wrong: drops, work request errors, SRD health events.
ERROR_PORT_COUNTERS = catalog.FAULT_PORT_COUNTERS
ERROR_DEVICE_COUNTERS = catalog.FAULT_DEVICE_COUNTERS

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
    link: Optional[float]  # bytes per second per direction
    errors: int  # error counter increase since top started
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


def _error_total(device: DeviceSnapshot) -> int:
    total = sum(device.total(k) or 0 for k in ERROR_PORT_COUNTERS)
    return total + sum(device.counters.get(k, 0) for k in ERROR_DEVICE_COUNTERS)


class TopModel:
    def __init__(self, instance_type: Optional[InstanceType] = None):
        self.instance_type = instance_type
        self._baseline: Dict[str, int] = {}
        self._previous: Dict[str, int] = {}
        self.rows: Tuple[DeviceRow, ...] = ()
        self.totals = NodeTotals(0, None, None, None, None)
        self.sort_key = "name"

    def update(self, snapshot: Snapshot) -> None:
        rows = []
        for device in snapshot.devices:
            errors_now = _error_total(device)
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
