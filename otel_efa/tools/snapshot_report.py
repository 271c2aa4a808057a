"""``otel-efa snapshot``: one raw reading as JSON or as text, errors included."""
import dataclasses
from typing import Any, Dict

from otel_efa.node.sysfs import Reading


def as_dict(reading: Reading) -> Dict[str, Any]:
    return {
        "devices": [
            {
                "name": device.name,
                "info": device.info.as_dict(),
                "counters": device.counters,
                "ports": [
                    {"port": p.port, "state": p.state, "rate": p.rate_text, "gid0": p.gid0, "counters": p.counters}
                    for p in device.ports
                ],
            }
            for device in reading.devices
        ],
        "errors": [dataclasses.asdict(e) for e in reading.errors],
    }


def as_text(reading: Reading) -> str:
    if not reading.devices:
        return "no EFA devices found\n"
    lines = []
    for device in reading.devices:
        info = device.info
        lines.append(f"{device.name}  pci={info.pci_address or '?'} numa={info.numa_node} fw={info.fw_ver}")
        for name, value in sorted(device.counters.items()):
            lines.append(f"  {name:<28}{value:>24}")
        for port in device.ports:
            lines.append(f"  port {port.port}  state={port.state or '?'}  rate={port.rate_text or '?'}")
            for name, value in sorted(port.counters.items()):
                lines.append(f"    {name:<26}{value:>24}")
    for error in reading.errors:
        lines.append(f"unreadable: {error.path}: {error.reason} ({error.detail})")
    return "\n".join(lines) + "\n"
