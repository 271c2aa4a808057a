"""The PCIe tree of a simulated node: EFA devices and accelerators behind shared PCIe switches.

Accelerator instances put each GPU (or Neuron device) behind a PCIe switch together with the EFA
devices that serve it, which is what NCCL's and the aws-ofi-nccl plugin's topology detection look for
(``nvidia-smi topo -m`` shows them as PIX/PXB). The layouts below follow the EC2 accelerated computing
documentation and published ``nvidia-smi topo`` output, simplified to what a topology reader sees:

    p4d.24xlarge    8 A100, 4 EFA: one EFA and two GPUs per switch
    p5/p5e.48xlarge 8 H100/H200, 32 EFA: four EFA and one GPU per switch
    p5en.48xlarge   8 H200, 16 EFA: two EFA and one GPU per switch
    p6-b200.48xl    8 B200, 8 EFA: one EFA and one GPU per switch
    trn1.32xlarge   16 Trainium, 8 EFA: one EFA and two Neuron devices per switch
    trn1n/trn2      16 Trainium(2), 16 EFA: one EFA and one Neuron device per switch

Every switch also holds a local NVMe drive (vendor Amazon, not a Neuron device id) and GPU instances
have NVSwitches (vendor NVIDIA, class bridge, not a GPU) under their own root ports, so a reader that
matches on vendor alone gets it wrong. Each switch group sits on one NUMA node, half the groups on each.

Sysfs shape (linux ``drivers/pci/pci-sysfs.c``, ``drivers/pci/probe.c``)::

    <root>/devices/pci0000:RR/0000:RR:01.0/0000:UU:00.0/0000:DD:0k.0/0000:EE:00.0/{vendor,device,class,...}
    <root>/bus/pci/devices/0000:EE:00.0 -> ../../../devices/pci0000:RR/.../0000:EE:00.0
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

NVIDIA = "0x10de"
AMAZON = "0x1d0f"
BROADCOM = "0x1000"  # PEX PCIe switches
INTEL = "0x8086"  # root ports

CLASS_BRIDGE = "0x060400"
CLASS_OTHER_BRIDGE = "0x068000"  # NVSwitch
CLASS_3D_CONTROLLER = "0x030200"  # data-centre GPUs
CLASS_ETHERNET = "0x020000"  # EFA
CLASS_NVME = "0x010802"
CLASS_ACCELERATOR = "0x120000"  # Neuron devices (processing accelerator)

NVME_DEVICE = "0xcd01"  # EC2 local NVMe instance storage
NUMA_NODES = 2
CPUS_PER_NUMA = 48


@dataclass(frozen=True)
class Accelerators:
    kind: str  # "gpu" or "neuron"
    vendor: str
    device: str
    pci_class: str
    count: int
    nvswitches: int = 0


def _gpus(device: str, nvswitches: int) -> Accelerators:
    return Accelerators("gpu", NVIDIA, device, CLASS_3D_CONTROLLER, 8, nvswitches)


def _neuron(device: str) -> Accelerators:
    return Accelerators("neuron", AMAZON, device, CLASS_ACCELERATOR, 16)


# PCI device ids: NVIDIA's (A100 SXM4 0x20b0, H100 SXM5 0x2330, H200 0x2335, B200 0x2901) and the
# Neuron driver's neuron_device.h (TRN1_DEVICE_ID0 0x7164, TRN2_DEVICE_ID0 0x7364).
ACCELERATORS: Dict[str, Accelerators] = {
    "p4d.24xlarge": _gpus("0x20b0", nvswitches=6),
    "p5.48xlarge": _gpus("0x2330", nvswitches=4),
    "p5e.48xlarge": _gpus("0x2335", nvswitches=4),
    "p5en.48xlarge": _gpus("0x2335", nvswitches=4),
    "p6-b200.48xlarge": _gpus("0x2901", nvswitches=2),
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
    """Ground truth for one EFA device: where the simulator put it and what shares its switch."""

    pci_address: str
    numa_node: int
    local_cpulist: str
    switch: str  # PCI address of the switch's upstream port
    gpus: Tuple[str, ...]  # PCI addresses
    neuron_devices: Tuple[str, ...]


@dataclass(frozen=True)
class PciPlan:
    functions: Tuple[PciFunction, ...]  # bridges, accelerators, NVMe, NVSwitches (not the EFA devices)
    efa_paths: Tuple[str, ...]  # per EFA device, in order: its function's path relative to <root>/devices
    declared: Tuple[DeclaredDevice, ...]  # per EFA device, in order


def cpulist(numa_node: int) -> str:
    return f"{numa_node * CPUS_PER_NUMA}-{(numa_node + 1) * CPUS_PER_NUMA - 1}"


def _address(bus: int, slot: int = 0) -> str:
    return f"0000:{bus:02x}:{slot:02x}.0"


def plan(profile: str, efa_buses: Sequence[int]) -> PciPlan:
    """Switch groups over the EFA devices (whose bus numbers are given) and the profile's accelerators.

    Group g holds consecutive EFA devices and accelerators; its root port, switch ports, accelerators
    and NVMe take the bus numbers just below its first EFA device, as firmware numbers them depth-first.
    """
    accelerators = ACCELERATORS.get(profile)
    efa_count = len(efa_buses)
    groups = min(efa_count, accelerators.count) if accelerators else efa_count
    functions: List[PciFunction] = []
    efa_paths: List[str] = []
    declared: List[DeclaredDevice] = []
    for group in range(groups):
        efa = list(range(group * efa_count // groups, (group + 1) * efa_count // groups))
        count = accelerators.count if accelerators else 0
        acc = list(range(group * count // groups, (group + 1) * count // groups))
        numa = group * NUMA_NODES // groups
        first_bus = efa_buses[efa[0]]
        root_bus = first_bus - (len(acc) + 4)
        if root_bus < 1:
            raise ValueError(f"{profile}: no room for the PCIe switch below bus {first_bus:#x}")
        upstream, downstream = root_bus + 1, root_bus + 2
        root_port = f"pci0000:{root_bus:02x}/{_address(root_bus, 1)}"
        switch_path = f"{root_port}/{_address(upstream)}"
        functions.append(PciFunction(_address(root_bus, 1), root_port, INTEL, "0x09a2", CLASS_BRIDGE, numa))
        functions.append(PciFunction(_address(upstream), switch_path, BROADCOM, "0xc010", CLASS_BRIDGE, numa))
        endpoints: List[Tuple[int, Optional[str], Optional[str], Optional[str]]] = []
        for offset in range(len(acc)):
            endpoints.append((downstream + 1 + offset, accelerators.vendor, accelerators.device,
                              accelerators.pci_class))
        endpoints.append((first_bus - 1, AMAZON, NVME_DEVICE, CLASS_NVME))
        endpoints += [(efa_buses[i], None, None, None) for i in efa]  # written with the EFA device
        accelerator_addresses = []
        for slot, (bus, vendor, device, pci_class) in enumerate(endpoints):
            port_path = f"{switch_path}/{_address(downstream, slot)}"
            functions.append(PciFunction(_address(downstream, slot), port_path, BROADCOM, "0xc010",
                                         CLASS_BRIDGE, numa))
            path = f"{port_path}/{_address(bus)}"
            if vendor is None:
                efa_paths.append(path)
                continue
            functions.append(PciFunction(_address(bus), path, vendor, device or "", pci_class or "", numa))
            if pci_class != CLASS_NVME:
                accelerator_addresses.append(_address(bus))
        kind = accelerators.kind if accelerators else ""
        for i in efa:
            declared.append(DeclaredDevice(
                pci_address=_address(efa_buses[i]),
                numa_node=numa,
                local_cpulist=cpulist(numa),
                switch=_address(upstream),
                gpus=tuple(accelerator_addresses) if kind == "gpu" else (),
                neuron_devices=tuple(accelerator_addresses) if kind == "neuron" else (),
            ))
    for n in range(accelerators.nvswitches if accelerators else 0):
        bus = 0xf1 + n
        path = f"pci0000:f0/{_address(0xf0, n + 1)}/{_address(bus)}"
        functions.append(PciFunction(_address(0xf0, n + 1), f"pci0000:f0/{_address(0xf0, n + 1)}", INTEL,
                                     "0x09a2", CLASS_BRIDGE, 0))
        functions.append(PciFunction(_address(bus), path, NVIDIA, "0x22a3", CLASS_OTHER_BRIDGE, 0))
    return PciPlan(tuple(functions), tuple(efa_paths), tuple(declared))


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
