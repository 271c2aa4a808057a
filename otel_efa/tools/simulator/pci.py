"""The PCIe tree of a simulated node: EFA devices beside GPUs or Neuron devices, as real nodes place them.

Accelerator instances put each GPU (or Neuron device) behind a PCIe switch together with the EFA devices
that serve it, which is what NCCL's and the aws-ofi-nccl plugin's topology detection look for. Where each
profile puts what comes from public captures (:mod:`.layouts`, with the sources and what is approximate):

    p4d.24xlarge    8 A100, 4 EFA: one EFA, two GPUs and two NVMe drives per bus, straight under a host
                    bridge (no switch: a topology reader falls back to the NUMA node)
    p5/p5e.48xlarge 8 H100/H200, 32 EFA: four EFA devices and one GPU per switch
    p5en.48xlarge   8 H200, 16 EFA: four EFA devices and two GPUs per switch
    p6-b200.48xl    8 B200, 8 EFA: two EFA devices and two GPUs per switch
    trn1.32xlarge   16 Trainium, 8 EFA: one EFA and two Neuron devices per switch (approximate)
    trn1n/trn2      16 Trainium(2), 16 EFA: two EFA and two Neuron devices per switch

Switches also hold local NVMe drives (vendor Amazon, not a Neuron device id); GPU instances have NVSwitches
(vendor NVIDIA, class bridge, not a GPU), so a reader that matches on vendor alone gets it wrong.

Sysfs shape (linux ``drivers/pci/pci-sysfs.c``, ``drivers/pci/probe.c``)::

    <root>/devices/pci0000:RR/0000:RR:00.0/0000:UU:00.0/0000:DD:0k.f/0000:EE:00.0/{vendor,device,class,...}
    <root>/devices/pci0000:BB/0000:BB:SS.0/...                                  (a flat bus, p4d)
    <root>/bus/pci/devices/0000:EE:00.0 -> ../../../devices/pci0000:RR/.../0000:EE:00.0
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from otel_efa.tools.simulator import layouts
from otel_efa.tools.simulator.layouts import Endpoint, Group, NodeLayout

NVIDIA = "0x10de"
AMAZON = "0x1d0f"
MELLANOX = "0x15b3"

AMAZON_BRIDGE = "0x0200"  # the root and switch ports of the captures: [1d0f:0200]
CLASS_BRIDGE = "0x060400"
CLASS_OTHER_BRIDGE = "0x068000"  # NVSwitch
CLASS_3D_CONTROLLER = "0x030200"  # data-centre GPUs
CLASS_ETHERNET = "0x020000"  # EFA
CLASS_INFINIBAND = "0x020700"  # ConnectX-7 in InfiniBand mode
CLASS_NVME = "0x010802"
CLASS_ACCELERATOR = "0x120000"  # Neuron devices (processing accelerator)

NVME_DEVICE = "0xcd01"  # EC2 local NVMe instance storage
CONNECTX7_DEVICE = "0x1021"
NUMA_NODES = 2
CPUS_PER_NUMA = 48

AFFINITY_SWITCH = "pcie_switch"  # as otel_efa.topology names them
AFFINITY_NUMA = "numa_node"
AFFINITY_NONE = "none"


@dataclass(frozen=True)
class Accelerators:
    kind: str  # "gpu" or "neuron"
    vendor: str
    device: str
    pci_class: str
    nvswitch_device: str = ""


def _gpus(device: str, nvswitch_device: str = "") -> Accelerators:
    return Accelerators("gpu", NVIDIA, device, CLASS_3D_CONTROLLER, nvswitch_device)


def _neuron(device: str) -> Accelerators:
    return Accelerators("neuron", AMAZON, device, CLASS_ACCELERATOR)


# PCI device ids: NVIDIA's (A100 SXM4 0x20b0, H100 SXM5 0x2330, H200 0x2335, B200 0x2901; NVSwitch A100
# 0x1af1, H100 0x22a3, as in the captures) and the Neuron driver's neuron_device.h (TRN1_DEVICE_ID0 0x7164,
# TRN2_DEVICE_ID0 0x7364).
ACCELERATORS: Dict[str, Accelerators] = {
    "p4d.24xlarge": _gpus("0x20b0", "0x1af1"),
    "p5.48xlarge": _gpus("0x2330", "0x22a3"),
    "p5e.48xlarge": _gpus("0x2335", "0x22a3"),
    "p5en.48xlarge": _gpus("0x2335", "0x22a3"),
    "p6-b200.48xlarge": _gpus("0x2901"),
    "trn1.32xlarge": _neuron("0x7164"),
    "trn1n.32xlarge": _neuron("0x7164"),
    "trn2.48xlarge": _neuron("0x7364"),
}


@dataclass(frozen=True)
class PciFunction:
    address: str
    path: str  # relative to <root>/devices
    vendor: str
    device: str
    pci_class: str
    numa_node: int


@dataclass(frozen=True)
class DeclaredDevice:
    """Ground truth for one EFA device: where the simulator put it and which accelerators a topology reader
    should find near it (behind its switch; on a flat bus, those of its NUMA node)."""

    pci_address: str
    numa_node: int
    local_cpulist: str
    switch: Optional[str]  # PCI address of the switch's upstream port; None without a shared switch
    gpus: Tuple[str, ...]  # PCI addresses
    neuron_devices: Tuple[str, ...]
    affinity: str = AFFINITY_SWITCH


@dataclass(frozen=True)
class PciPlan:
    functions: Tuple[PciFunction, ...]  # bridges, accelerators, NVMe, NVSwitches (not the EFA devices)
    efa_paths: Tuple[str, ...]  # per EFA device, in address order: its function's path under <root>/devices
    declared: Tuple[DeclaredDevice, ...]  # per EFA device, in address order
    layout: NodeLayout


def cpulist(numa_node: int) -> str:
    return f"{numa_node * CPUS_PER_NUMA}-{(numa_node + 1) * CPUS_PER_NUMA - 1}"


def _address(bus: int, slot: int = 0, function: int = 0) -> str:
    return f"0000:{bus:02x}:{slot:02x}.{function}"


def _identity(profile: str, kind: str) -> Tuple[str, str, str]:
    """(vendor, device, class) of a non-EFA endpoint."""
    accelerators = ACCELERATORS[profile]
    if kind in (layouts.GPU, layouts.NEURON):
        return accelerators.vendor, accelerators.device, accelerators.pci_class
    if kind == layouts.NVSWITCH:
        return NVIDIA, accelerators.nvswitch_device, CLASS_OTHER_BRIDGE
    if kind == layouts.CONNECTX:
        return MELLANOX, CONNECTX7_DEVICE, CLASS_INFINIBAND
    return AMAZON, NVME_DEVICE, CLASS_NVME


def _group_paths(group: Group, functions: List[PciFunction]) -> Tuple[Dict[Endpoint, str], str]:
    """Each endpoint's path and the switch's upstream address ("" on a flat bus); bridges go to ``functions``."""
    if group.root_bus is None:
        host = f"pci0000:{group.endpoints[0].bus:02x}"
        return {e: f"{host}/{e.address}" for e in group.endpoints}, ""
    root = group.root_bus
    root_port = f"pci0000:{root:02x}/{_address(root)}"
    upstream = f"{root_port}/{_address(root + 1)}"
    functions.append(PciFunction(_address(root), root_port, AMAZON, AMAZON_BRIDGE, CLASS_BRIDGE, group.numa_node))
    functions.append(PciFunction(_address(root + 1), upstream, AMAZON, AMAZON_BRIDGE, CLASS_BRIDGE,
                                 group.numa_node))
    paths = {}
    for endpoint in group.endpoints:
        port = group.port_of(endpoint)
        downstream = _address(root + 2, port // 8, port % 8)
        functions.append(PciFunction(downstream, f"{upstream}/{downstream}", AMAZON, AMAZON_BRIDGE, CLASS_BRIDGE,
                                     group.numa_node))
        paths[endpoint] = f"{upstream}/{downstream}/{endpoint.address}"
    return paths, _address(root + 1)


def plan(profile: str) -> PciPlan:
    """The profile's PCI functions, each EFA device's place, and what a topology reader should find."""
    layout = layouts.LAYOUTS[profile]
    accelerator_kind = ACCELERATORS[profile].kind
    functions: List[PciFunction] = []
    efa: Dict[Endpoint, Tuple[str, DeclaredDevice]] = {}
    near_by_numa: Dict[int, List[str]] = {}
    switch_groups = []
    for group in layout.groups:
        paths, switch = _group_paths(group, functions)
        near = sorted(e.address for e in group.endpoints if e.kind == accelerator_kind)
        near_by_numa.setdefault(group.numa_node, []).extend(near)
        for endpoint in group.endpoints:
            if endpoint.kind != layouts.EFA:
                vendor, device, pci_class = _identity(profile, endpoint.kind)
                functions.append(PciFunction(endpoint.address, paths[endpoint], vendor, device, pci_class,
                                             group.numa_node))
        switch_groups.append((group, paths, switch if near else "", near))
    for group, paths, switch, near in switch_groups:
        affinity = AFFINITY_SWITCH
        if not switch:  # no accelerator behind a shared switch: the reader falls back to the NUMA node
            near = sorted(near_by_numa.get(group.numa_node, []))
            affinity = AFFINITY_NUMA if near else AFFINITY_NONE
        for endpoint in group.endpoints:
            if endpoint.kind == layouts.EFA:
                efa[endpoint] = (paths[endpoint], DeclaredDevice(
                    pci_address=endpoint.address, numa_node=group.numa_node, local_cpulist=cpulist(group.numa_node),
                    switch=switch or None, gpus=tuple(near) if accelerator_kind == layouts.GPU else (),
                    neuron_devices=tuple(near) if accelerator_kind == layouts.NEURON else (), affinity=affinity))
    ordered = [efa[e] for e in layout.efa_devices]
    return PciPlan(tuple(functions), tuple(p for p, _ in ordered), tuple(d for _, d in ordered), layout)


def _write(path: str, content: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)
    os.chmod(path, 0o444)


def write_function(root: str, function: PciFunction) -> None:
    """One PCI function's directory and its /sys/bus/pci/devices link."""
    directory = os.path.join(root, "devices", function.path)
    _write(os.path.join(directory, "vendor"), function.vendor + "\n")
    _write(os.path.join(directory, "device"), function.device + "\n")
    _write(os.path.join(directory, "class"), function.pci_class + "\n")
    _write(os.path.join(directory, "numa_node"), f"{function.numa_node}\n")
    _write(os.path.join(directory, "local_cpulist"), cpulist(function.numa_node) + "\n")
    link_dir = os.path.join(root, "bus", "pci", "devices")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, function.address)
    if not os.path.islink(link):
        os.symlink(os.path.relpath(directory, link_dir), link)


def lay_out(root: str, pci_plan: PciPlan) -> None:
    for function in pci_plan.functions:
        write_function(root, function)
