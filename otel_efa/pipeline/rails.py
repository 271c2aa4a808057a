"""Rail balance: how evenly a node's traffic spreads over its EFA devices ("rails").

A collective pinned to the wrong devices, or one rail left idle, shows up as slow training and as
nothing else: per-device rates are all plausible on their own. Two node gauges make it visible:

- imbalance = the busiest device's rx+tx bytes/s divided by the devices' mean (1 = even; 2 = one
  device carries twice its share). Absent while the node is idle, where a ratio means nothing.
- idle rails = devices carrying less than ``IDLE_FRACTION`` of the mean while the node is busy.

The node is busy when its devices average at least ``BUSY_UTILIZATION`` of their link speed (or any
traffic at all when the link speed is unknown), so keep-alive chatter never raises an alarm.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

from otel_efa import catalog
from otel_efa.pipeline.snapshot import DeviceSnapshot, Snapshot

IDLE_FRACTION = 0.1
BUSY_UTILIZATION = 0.01


@dataclass(frozen=True)
class RailBalance:
    imbalance: Optional[float]  # None while idle or before the first rates
    idle_rails: Optional[int]  # None before the first rates


def _load(device: DeviceSnapshot) -> Optional[Tuple[float, Optional[float]]]:
    """(rx+tx bytes/s, rx+tx capacity in bytes/s or None) of one device; None without rates yet."""
    rx, tx = device.rate(catalog.RX_BYTES), device.rate(catalog.TX_BYTES)
    if rx is None or tx is None:
        return None
    speeds = [p.link_bytes_per_second for p in device.ports]
    capacity = 2 * sum(s for s in speeds if s) if speeds and all(speeds) else None
    return rx + tx, capacity


def rail_balance(snapshot: Optional[Snapshot]) -> RailBalance:
    if snapshot is None:
        return RailBalance(None, None)
    loads: List[Tuple[float, Optional[float]]] = [
        load for load in (_load(d) for d in snapshot.devices) if load is not None]
    if not loads:
        return RailBalance(None, None)
    rates = [rate for rate, _ in loads]
    mean = sum(rates) / len(rates)
    capacities = [c for _, c in loads]
    if all(capacities):
        busy = mean >= BUSY_UTILIZATION * sum(c for c in capacities if c) / len(capacities)
    else:
        busy = mean > 0
    if not busy or mean <= 0:
        return RailBalance(None, 0)
    return RailBalance(max(rates) / mean, sum(1 for rate in rates if rate < IDLE_FRACTION * mean))
