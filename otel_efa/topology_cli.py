"""``otel-efa topology``: which GPUs or Neuron devices sit behind each EFA device's PCIe switch."""
import dataclasses
import json
import sys
from typing import Dict, List

from .topology import UNKNOWN, Accelerator, DeviceTopology, read_topology


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("topology", help="map each EFA device to its PCI address, NUMA node and GPUs")
    p.add_argument("--sysfs", default="/sys", help="sysfs root (default /sys)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_topology)


def _accelerators(accelerators) -> str:
    return " ".join(f"{a.index}@{a.pci_address}" for a in accelerators) or "-"


def as_text(devices: Dict[str, DeviceTopology]) -> str:
    header = ("DEVICE", "PCI", "NUMA", "CPUS", "AFFINITY", "GPUS", "NEURON")
    rows: List[tuple] = [header]
    for d in devices.values():
        rows.append((d.device, d.pci_address or UNKNOWN, UNKNOWN if d.numa_node is None else str(d.numa_node),
                     d.local_cpus or UNKNOWN, d.affinity, _accelerators(d.gpus), _accelerators(d.neuron_devices)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def as_dict(devices: Dict[str, DeviceTopology]) -> dict:
    def accelerator(a: Accelerator) -> dict:
        return {"index": a.index, "pci_address": a.pci_address, "numa_node": a.numa_node}

    return {"devices": [
        {**{k: v for k, v in dataclasses.asdict(d).items() if k not in ("gpus", "neuron_devices")},
         "gpus": [accelerator(a) for a in d.gpus],
         "neuron_devices": [accelerator(a) for a in d.neuron_devices]}
        for d in devices.values()]}


def _topology(args) -> int:
    devices = read_topology(args.sysfs)
    if not devices:
        sys.stderr.write(f"otel-efa: no EFA devices under {args.sysfs}/class/infiniband\n")
        return 1
    if args.json:
        json.dump(as_dict(devices), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_text(devices))
    return 0
