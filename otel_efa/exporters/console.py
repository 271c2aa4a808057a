"""A readable per-device table on standard output, once per interval (``make demo``)."""
import sys
from datetime import datetime, timezone
from typing import List, Optional

from opentelemetry.sdk.resources import Resource

from otel_efa import catalog
from otel_efa.config import Config
from otel_efa.exporters import Exporter
from otel_efa.names import escape  # a device name is any bytes; stdout takes UTF-8 text
from otel_efa.node import instance_types
from otel_efa.pipeline.snapshot import Snapshot

HEADER = f"{'DEVICE':<14}{'PORT':>5} {'STATE':<7}{'RX Gbps':>10}{'TX Gbps':>10}{'RX kpps':>10}{'TX kpps':>10}" \
         f"{'RETRANS':>10}{'DROPS':>8}"


def _gbps(bytes_per_second: Optional[float]) -> str:
    return "-" if bytes_per_second is None else f"{bytes_per_second * 8 / 1e9:.2f}"


def _kpps(packets_per_second: Optional[float]) -> str:
    return "-" if packets_per_second is None else f"{packets_per_second / 1e3:.1f}"


def render(snapshot: Snapshot) -> List[str]:
    stamp = datetime.fromtimestamp(snapshot.wall_time, timezone.utc).isoformat(timespec="seconds")
    known = instance_types.lookup(snapshot.instance_type)
    line_rate = f" of {known.total_gbps} Gbps line rate" if known else ""
    lines = [f"{stamp}  {snapshot.instance_type or 'unknown instance type'}  {len(snapshot.devices)} EFA devices  "
             f"RX {_gbps(snapshot.rate(catalog.RX_BYTES))} Gbps  TX {_gbps(snapshot.rate(catalog.TX_BYTES))} Gbps"
             f"{line_rate}",
             HEADER]
    for device in snapshot.devices:
        for port in device.ports:
            state = {True: "ACTIVE", False: "DOWN", None: "?"}[port.up]
            lines.append(f"{escape(device.name):<14}{escape(port.port):>5} {state:<7}"
                         f"{_gbps(port.rates.get(catalog.RX_BYTES)):>10}"
                         f"{_gbps(port.rates.get(catalog.TX_BYTES)):>10}{_kpps(port.rates.get(catalog.RX_PKTS)):>10}"
                         f"{_kpps(port.rates.get(catalog.TX_PKTS)):>10}"
                         f"{port.counters.get(catalog.RETRANS_PKTS, '-'):>10}"
                         f"{port.counters.get(catalog.RX_DROPS, '-'):>8}")
    return lines


class ConsoleExporter(Exporter):
    name = "console"

    def __init__(self, config: Config, resource: Resource):
        pass

    def export(self, snapshot: Snapshot) -> None:
        sys.stdout.write("\n".join(render(snapshot)) + "\n\n")
        sys.stdout.flush()
