"""``otel-efa topology``: which GPUs or Neuron devices sit behind each EFA device's PCIe switch."""
import dataclasses
import json
import sys
from typing import Dict, List, Optional

from otel_efa.cli.types import sysfs_root
from otel_efa.node.topology import UNKNOWN, Accelerator, DeviceTopology, read_topology


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("topology", help="map each EFA device to its PCI address, NUMA node and GPUs")
    p.add_argument("--sysfs", default="/sys", type=sysfs_root, help="sysfs root (default /sys)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--eni", action="store_true", help="also ask IMDS for each device's ENI id (EC2 only)")
    p.set_defaults(handler=_topology)


def _accelerators(accelerators) -> str:
    return " ".join(f"{a.index}@{a.pci_address}" for a in accelerators) or "-"


def as_text(devices: Dict[str, DeviceTopology], enis: Optional[Dict[str, str]] = None) -> str:
    header = ("DEVICE", "PCI", "NUMA", "CPUS", "AFFINITY") + (("ENI",) if enis is not None else ()) + ("GPUS", "NEURON")
    rows: List[tuple] = [header]
    for d in devices.values():
        eni = (enis.get(d.device) or UNKNOWN,) if enis is not None else ()
        rows.append((d.device, d.pci_address or UNKNOWN, UNKNOWN if d.numa_node is None else str(d.numa_node),
                     d.local_cpus or UNKNOWN, d.affinity) + eni
                    + (_accelerators(d.gpus), _accelerators(d.neuron_devices)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def as_dict(devices: Dict[str, DeviceTopology], enis: Optional[Dict[str, str]] = None) -> dict:
    def accelerator(a: Accelerator) -> dict:
        return {"index": a.index, "pci_address": a.pci_address, "numa_node": a.numa_node}

    return {"devices": [
        {**{k: v for k, v in dataclasses.asdict(d).items() if k not in ("gpus", "neuron_devices")},
         **({"eni": enis.get(d.device)} if enis is not None else {}),
         "gpus": [accelerator(a) for a in d.gpus],
         "neuron_devices": [accelerator(a) for a in d.neuron_devices]}
        for d in devices.values()]}


def resolve_enis(root: str) -> Dict[str, str]:
    """Device -> ENI id, one IMDS round (a refused or silent IMDS ends it at once)."""
    from otel_efa.node.eni import EniResolver, mac_from_link_local
    from otel_efa.node.imds import ImdsClient
    from otel_efa.node.sysfs import SysfsReader

    with SysfsReader(root) as reader:
        reading = reader.read()
    macs = {}
    for device in reading.devices:
        mac = next((m for m in (mac_from_link_local(p.gid0) for p in device.ports) if m), None)
        if mac:
            macs[device.name] = mac
    resolver = EniResolver(ImdsClient())
    resolver.resolve(macs.values())
    return {name: eni for name, eni in ((n, resolver.eni_of(m)) for n, m in macs.items()) if eni}


def _topology(args) -> int:
    devices = read_topology(args.sysfs)
    if not devices:
        sys.stderr.write(f"otel-efa: no EFA devices under {args.sysfs}/class/infiniband\n")
        return 1
    enis = resolve_enis(args.sysfs) if args.eni else None
    if args.json:
        json.dump(as_dict(devices, enis), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_text(devices, enis))
    return 0
