"""Which GPUs or Neuron devices sit next to each EFA device, read from the sysfs PCI tree.

A training job is fast when each accelerator sends through the EFA devices behind its own PCIe switch
(NCCL and the aws-ofi-nccl plugin pick them that way); traffic crossing switches or sockets is slow.
Each ``/sys/class/infiniband/<dev>/device`` links to the device's PCI function under
``/sys/devices/pci*``; the bridges above it are its path's ancestors. The accelerators under the
nearest of those bridges share the device's PCIe switch. Failing that (a flat virtual PCI bus), the
accelerators on the same NUMA node are the next best thing; without a PCI link, it is "unknown".

Accelerators are found in ``/sys/bus/pci/devices``: NVIDIA GPUs by vendor ``0x10de`` and a display
controller class (``0x03xxxx``; NVSwitches share the vendor but are bridges), Neuron devices by vendor
``0x1d0f`` and a device id of the Neuron driver (``aws-neuron-driver`` ``neuron_device.h``; the EFA
devices and NVMe drives share that vendor). Pure functions over a root path, like the sysfs reader.

An EFA device's own PCI identity (address, NUMA node, local CPUs, where it sits) is the one the sysfs
reader read when it discovered the device (pci.py, ``DeviceInfo.pci``): :func:`topologies` places devices
from those; :func:`read_topology` reads them itself for a tree no reader has open (``otel-efa topology``).
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from otel_efa.node import efa_devices, pci
from otel_efa.node.pci import PciFunction

NVIDIA_VENDOR = "0x10de"
AMAZON_VENDOR = "0x1d0f"
DISPLAY_CLASS_PREFIX = "0x03"
# INF1_DEVICE_ID0-3, TRN1_DEVICE_ID0, INF2_DEVICE_ID0, TRN2_DEVICE_ID0, TRN3_DEVICE_ID0-1.
NEURON_DEVICE_IDS = frozenset({"0x7064", "0x7065", "0x7066", "0x7067", "0x7164", "0x7264", "0x7364",
                               "0x7564", "0x7565"})

GPU = "gpu"
NEURON = "neuron"

# How the accelerators of a device were found.
PCIE_SWITCH = "pcie_switch"  # under the same PCIe switch (bridge)
NUMA_NODE = "numa_node"  # none under a shared bridge; these are on the same NUMA node
NONE = "none"  # the PCI tree is readable and no accelerator is near
UNKNOWN = "unknown"  # no PCI link (a container without /sys/devices, an odd driver)

@dataclass(frozen=True)
class Accelerator:
    kind: str  # GPU or NEURON
    index: int  # per kind, in PCI address order: nvidia-smi's numbering, /dev/neuronN's
    pci_address: str
    numa_node: Optional[int]
    path: str  # real path of the PCI function


@dataclass(frozen=True)
class DeviceTopology:
    device: str
    pci_address: Optional[str]
    numa_node: Optional[int]
    local_cpus: Optional[str]
    affinity: str  # PCIE_SWITCH, NUMA_NODE, NONE or UNKNOWN
    switch: Optional[str]  # PCI address of the bridge shared with the accelerators
    gpus: Tuple[Accelerator, ...] = ()
    neuron_devices: Tuple[Accelerator, ...] = ()


def _kind(function: PciFunction) -> Optional[str]:
    vendor = function.vendor.lower()
    if vendor == NVIDIA_VENDOR:
        return GPU if function.class_code.lower().startswith(DISPLAY_CLASS_PREFIX) else None
    if vendor == AMAZON_VENDOR and function.device_id.lower() in NEURON_DEVICE_IDS:
        return NEURON
    return None


def find_accelerators(root: str = "/sys") -> List[Accelerator]:
    """Every NVIDIA GPU and Neuron device on the PCI bus, numbered per kind in PCI address order."""
    bus = os.path.join(root, "bus", "pci", "devices")
    try:
        addresses = sorted(os.listdir(bus))
    except OSError:
        return []
    found: List[Accelerator] = []
    counts: Dict[str, int] = {}
    for address in addresses:
        function = pci.read_function(os.path.join(bus, address))  # odd files read as "": never blocks
        kind = _kind(function)
        if kind is None:
            continue
        found.append(Accelerator(kind, counts.get(kind, 0), address, function.numa_node, function.path))
        counts[kind] = counts.get(kind, 0) + 1
    return found


def device_topology(device: str, function: Optional[PciFunction], accelerators: List[Accelerator]) -> DeviceTopology:
    """Where ``device`` sits, from its PCI function (None without a PCI link) and the node's accelerators."""
    if function is None or not os.path.isdir(function.path):
        return DeviceTopology(device, None, None, None, UNKNOWN, None)
    numa_node = function.numa_node
    local_cpus = function.local_cpulist or None
    pci_address = function.address
    near: List[Accelerator] = []
    affinity, switch = NONE, None
    for bridge in pci.bridges_above(function.path):
        near = [a for a in accelerators if a.path.startswith(bridge + os.sep)]
        if near:
            affinity, switch = PCIE_SWITCH, os.path.basename(bridge)
            break
    if not near and numa_node is not None:
        near = [a for a in accelerators if a.numa_node == numa_node]
        if near:
            affinity = NUMA_NODE
    if not near and numa_node is None and accelerators:
        affinity = UNKNOWN  # accelerators exist but nothing says which are near
    return DeviceTopology(
        device=device,
        pci_address=pci_address,
        numa_node=numa_node,
        local_cpus=local_cpus,
        affinity=affinity,
        switch=switch,
        gpus=tuple(a for a in near if a.kind == GPU),
        neuron_devices=tuple(a for a in near if a.kind == NEURON),
    )


def topologies(root: str, functions: Mapping[str, Optional[PciFunction]],
               accelerators: Optional[List[Accelerator]] = None) -> Dict[str, DeviceTopology]:
    """EFA device -> its topology, from the PCI functions already read (device -> function or None), and the
    accelerators under ``root`` (read now unless given)."""
    if accelerators is None:
        accelerators = find_accelerators(root)
    return {device: device_topology(device, function, accelerators) for device, function in functions.items()}


def read_topology(root: str = "/sys") -> Dict[str, DeviceTopology]:
    """Every EFA device under ``<root>/class/infiniband`` -> its topology. Never raises on odd trees."""
    from otel_efa.node.counter_text import natural_key

    class_dir = os.path.join(root, "class", "infiniband")
    try:
        names = sorted(os.listdir(class_dir), key=natural_key)
    except OSError:
        return {}
    functions = {}
    for name in names:
        function = pci.function_of(os.path.join(class_dir, name))
        if efa_devices.classify(os.path.join(class_dir, name), function)[0]:
            functions[name] = function
    return topologies(root, functions)


def info_attributes(topology: DeviceTopology) -> Dict[str, str]:
    """The attributes of ``efa_device_info``: strings, "unknown" where the tree does not say; no
    accelerator attributes where there are none (no empty ``aws.efa.neuron_devices`` on a GPU node)."""
    from otel_efa import catalog

    def indexes(accelerators: Tuple[Accelerator, ...]) -> str:
        return ",".join(str(a.index) for a in accelerators)

    def addresses(accelerators: Tuple[Accelerator, ...]) -> str:
        return ",".join(a.pci_address for a in accelerators)

    attributes = {
        catalog.ATTR_PCI_ADDRESS: topology.pci_address or UNKNOWN,
        catalog.ATTR_NUMA_NODE: UNKNOWN if topology.numa_node is None else str(topology.numa_node),
        catalog.ATTR_LOCAL_CPUS: topology.local_cpus or UNKNOWN,
        catalog.ATTR_AFFINITY: topology.affinity,
        catalog.ATTR_GPUS: indexes(topology.gpus),
        catalog.ATTR_GPU_PCI_ADDRESSES: addresses(topology.gpus),
        catalog.ATTR_NEURON_DEVICES: indexes(topology.neuron_devices),
    }
    return {key: value for key, value in attributes.items() if value}
