"""The simulated node's traffic model: how fast each counter grows, and where it stands after days of use.

Every traffic counter is a share of the device's bytes per second in one direction, so the counters agree
with one another the way a real device's do (packets = bytes / ~8 KiB SRD packets, RDMA reads and writes a
part of the bytes, retransmits 1e-5 of the packets: far below the 0.1 % where something is wrong). The
starting values are the same shares of the bytes a device carried over ``uptime`` seconds at a quarter of
its line rate (each device a little different), so a fresh simulation looks like a node up for days, not a
node whose every counter reads 1,000,000. Error and event counters start, and stay, at 0 on a healthy node.
"""
from typing import Dict, Iterable, Tuple

from otel_efa import catalog

PATTERNS = ("idle", "steady", "bursty")
PACKET_BYTES = 8192  # SRD packets carry up to ~8 KiB
BURST_PERIOD_S = 2.0
BURST_DUTY = 0.6
HEALTHY_RETRANSMIT_SHARE = 1e-5  # retransmitted packets per packet sent

DEFAULT_UPTIME_S = 5 * 86400 + 6 * 3600 + 17 * 60 + 23.7  # 5 days 6 h 17 min
LIFETIME_UTILIZATION = 0.25  # the mean share of line rate a device carried over its uptime

# Per-counter rate as a multiple of the device's bytes/s in each direction ("tx" or "rx").
TRAFFIC_SHARES: Dict[str, Tuple[str, float]] = {
    catalog.TX_BYTES: ("tx", 1.0),
    catalog.RX_BYTES: ("rx", 1.0),
    catalog.TX_PKTS: ("tx", 1.0 / PACKET_BYTES),
    catalog.RX_PKTS: ("rx", 1.0 / PACKET_BYTES),
    catalog.SEND_BYTES: ("tx", 0.02),
    catalog.SEND_WRS: ("tx", 0.02 / 4096),
    catalog.RECV_BYTES: ("rx", 0.02),
    catalog.RECV_WRS: ("rx", 0.02 / 4096),
    catalog.RDMA_READ_BYTES: ("rx", 0.3),
    catalog.RDMA_READ_WRS: ("rx", 0.3 / 65536),
    catalog.RDMA_READ_RESP_BYTES: ("tx", 0.3),
    catalog.RDMA_WRITE_BYTES: ("tx", 0.6),
    catalog.RDMA_WRITE_WRS: ("tx", 0.6 / 65536),
    catalog.RDMA_WRITE_RECV_BYTES: ("rx", 0.6),
    catalog.RETRANS_PKTS: ("tx", HEALTHY_RETRANSMIT_SHARE / PACKET_BYTES),
    catalog.RETRANS_BYTES: ("tx", HEALTHY_RETRANSMIT_SHARE),
}
# Counters that move by the second whatever the traffic: admin queue keep-alives and commands.
PER_SECOND: Dict[str, float] = {catalog.KEEP_ALIVE_RCVD: 1.0, catalog.SUBMITTED_CMDS: 2.0, catalog.COMPLETED_CMDS: 2.0}

# A retransmit storm (a congested or flapping path): 3 % of the packets sent again, timeouts and
# unresponsive or impaired remotes counted every second. The per-second rates replace 0, the shares
# replace the healthy ones.
STORM_RETRANSMIT_SHARE = 0.03
STORM_SHARES: Dict[str, Tuple[str, float]] = {
    catalog.RETRANS_PKTS: ("tx", STORM_RETRANSMIT_SHARE / PACKET_BYTES),
    catalog.RETRANS_BYTES: ("tx", STORM_RETRANSMIT_SHARE),
}
STORM_PER_SECOND: Dict[str, float] = {catalog.RETRANS_TIMEOUT_EVENTS: 20.0, catalog.UNRESPONSIVE_REMOTE_EVENTS: 2.0,
                                      catalog.IMPAIRED_REMOTE_CONN_EVENTS: 0.5}
STORM_TRAFFIC_SHARES = {**TRAFFIC_SHARES, **STORM_SHARES}
STORM_ALL_PER_SECOND = {**PER_SECOND, **STORM_PER_SECOND}


def active_seconds(pattern: str, start: float, end: float) -> float:
    """Seconds of traffic in [start, end], scaled so the mean equals the configured rate."""
    if pattern == "idle":
        return 0.0
    if pattern == "steady":
        return end - start
    on = BURST_PERIOD_S * BURST_DUTY

    def on_time_until(t: float) -> float:
        periods, phase = divmod(t, BURST_PERIOD_S)
        return periods * on + min(phase, on)

    return (on_time_until(end) - on_time_until(start)) / BURST_DUTY


def lifetime_values(device_index: int, device_bytes_per_second: float, counters: Iterable[str],
                    uptime: float) -> Dict[str, int]:
    """Where each counter of a device stands after ``uptime`` seconds of use (0 for errors and events)."""
    spread = 0.9 + 0.2 * ((device_index * 7919) % 1000) / 1000  # 0.9 .. 1.1, fixed per device
    tx = device_bytes_per_second * LIFETIME_UTILIZATION * spread * uptime
    carried = {"tx": tx, "rx": tx * (1.0 - 0.004 * (device_index % 3))}
    values = {}
    for name in counters:
        if name in TRAFFIC_SHARES:
            direction, share = TRAFFIC_SHARES[name]
            values[name] = int(carried[direction] * share)
        else:
            values[name] = int(PER_SECOND.get(name, 0.0) * uptime)
    return values
