"""Lay out a kernel-faithful EFA sysfs tree for an instance profile.

Everything the kernel shows and the agent reads is here: device and port ``hw_counters`` (with
``lifespan``), port ``state``/``phys_state``/``rate``/``link_layer``/``gids/0``, ``node_guid``,
``fw_ver``, and ``device`` as a symlink into a PCI tree (``vendor`` 0x1d0f, ``numa_node``,
``local_cpulist``) beside the node's GPUs or Neuron devices (:mod:`.pci`); devices are named after their
PCI addresses as on the real instance type (:mod:`.layouts`). ``pci_links=False`` lays out a tree without
any of that, as in some containers. Counter groups follow the kernel: rdma_write_* only on devices with
RDMA write, the retrans/remote group only on newer kernels; an older kernel lists the device counters
under the port and reports a constant ``100 Gb/sec (4X EDR)`` rate.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

from otel_efa import catalog
from otel_efa.catalog import BASE_PORT_COUNTERS, DEVICE_COUNTERS, RDMA_WRITE_COUNTERS, RETRANS_COUNTERS
from otel_efa.node.instance_types import InstanceType
from otel_efa.tools.simulator import layouts, pci

DEVICE_COUNTER_NAMES = tuple(spec.kernel_name for spec in DEVICE_COUNTERS if spec.kernel_name)

# The classic InfiniBand port counters (``ports/<n>/counters/``, the PMA counters of IB HCAs such as
# mlx5) that node_exporter's infiniband collector reads. EFA has none of them; the simulator writes them
# only on request, so one tree can carry both kinds and a benchmark can compare readers file for file.
# 22 files, as many as an EFA port's hw_counters on a current kernel with RDMA write (13 + 4 + 5).
IB_PORT_COUNTERS = ("excessive_buffer_overrun_errors", "link_downed", "link_error_recovery",
                    "local_link_integrity_errors", "multicast_rcv_packets", "multicast_xmit_packets",
                    "port_rcv_constraint_errors", "port_rcv_data", "port_rcv_discards", "port_rcv_errors",
                    "port_rcv_packets", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
                    "port_xmit_constraint_errors", "port_xmit_data", "port_xmit_discards", "port_xmit_packets",
                    "port_xmit_wait", "symbol_error", "unicast_rcv_packets", "unicast_xmit_packets",
                    "VL15_dropped")
IB_WORD_BYTES = 4  # port_rcv_data / port_xmit_data count 4-byte words (IBA PortCounters), not octets
# Which IB counter mirrors which EFA counter, and the divisor (bytes -> words). The rest stay 0.
IB_MIRRORS: Dict[str, Tuple[Tuple[str, int], ...]] = {
    catalog.RX_BYTES: (("port_rcv_data", IB_WORD_BYTES),),
    catalog.TX_BYTES: (("port_xmit_data", IB_WORD_BYTES),),
    catalog.RX_PKTS: (("port_rcv_packets", 1), ("unicast_rcv_packets", 1)),
    catalog.TX_PKTS: (("port_xmit_packets", 1), ("unicast_xmit_packets", 1)),
    catalog.RX_DROPS: (("port_rcv_discards", 1),),
}
IB_SOURCES: Dict[str, Tuple[str, int]] = {ib: (efa, divisor) for efa, mirrors in IB_MIRRORS.items()
                                          for ib, divisor in mirrors}
# Device files an IB HCA shows and node_exporter requires (board_id) or reports (hca_type).
IB_BOARD_ID = "EFA-SIM"
IB_HCA_TYPE = "efa"


@dataclass(frozen=True)
class KernelFlavour:
    """What differs between kernel versions."""

    split_device_counters: bool = True  # newer: device counters in <dev>/hw_counters
    retrans_counters: bool = True  # since mid-2025
    real_rate: bool = True  # since late 2024 the rate file reflects the device's speed


NEW_KERNEL = KernelFlavour()
OLD_KERNEL = KernelFlavour(split_device_counters=False, retrans_counters=False, real_rate=False)


@dataclass(frozen=True)
class SimDevice:
    name: str
    index: int
    pci_address: str
    numa_node: int
    mac: str
    port_counters: Tuple[str, ...]
    device_counters: Tuple[str, ...]
    path: str  # <root>/class/infiniband/<name>
    pci_path: str = ""  # the PCI function, relative to <root>/devices

    @property
    def port_dir(self) -> str:
        return os.path.join(self.path, "ports", "1", "hw_counters")

    @property
    def device_counter_dir(self) -> str:
        return os.path.join(self.path, "hw_counters")

    @property
    def ib_counter_dir(self) -> str:
        return os.path.join(self.path, "ports", "1", "counters")


def device_names(pci_plan: pci.PciPlan, style: str = "rdmap") -> List[str]:
    """rdma-core's udev names (``rdmap<bus>s<slot>``, from the PCI address) or the kernel's own ``efa_N``."""
    if style == "efa":
        return [f"efa_{i}" for i in range(len(pci_plan.efa_paths))]
    return [layouts.device_name(endpoint) for endpoint in pci_plan.layout.efa_devices]


def _rate_text(gbps: int, flavour: KernelFlavour) -> str:
    if not flavour.real_rate:
        return "100 Gb/sec (4X EDR)"
    if gbps >= 400:
        return f"{gbps} Gb/sec (8X HDR)"
    if gbps >= 200:
        return f"{gbps} Gb/sec (4X HDR)"
    return f"{gbps} Gb/sec (4X EDR)"


def _mac(index: int) -> str:
    return f"0e:{index:02x}:5a:{(index * 7) % 256:02x}:c1:{(index * 13) % 256:02x}"


def link_local_from_mac(mac: str) -> str:
    """The IPv6 link-local (EUI-64) address the kernel puts in ``gids/0``."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    groups = [f"{eui[i]:02x}{eui[i + 1]:02x}" for i in range(0, 8, 2)]
    return "fe80:0000:0000:0000:" + ":".join(groups)


def _write(path: str, content: str, mode: int = 0o444) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)
    os.chmod(path, mode)


def pci_function_dir(root: str, device: SimDevice) -> str:
    return os.path.join(root, "devices", device.pci_path)


def plan_devices(root: str, profile: InstanceType, flavour: KernelFlavour = NEW_KERNEL,
                 name_style: str = "rdmap") -> List[SimDevice]:
    port_counters = BASE_PORT_COUNTERS + (RDMA_WRITE_COUNTERS if profile.has_rdma_write else ())
    port_counters += RETRANS_COUNTERS if flavour.retrans_counters else ()
    devices = []
    pci_plan = pci.plan(profile.name)
    for index, name in enumerate(device_names(pci_plan, name_style)):
        declared = pci_plan.declared[index]
        devices.append(SimDevice(
            name=name,
            index=index,
            pci_address=declared.pci_address,
            numa_node=declared.numa_node,
            mac=_mac(index),
            port_counters=port_counters,
            device_counters=DEVICE_COUNTER_NAMES,
            path=os.path.join(root, "class", "infiniband", name),
            pci_path=pci_plan.efa_paths[index],
        ))
    return devices


def ib_values(efa_values: Dict[str, int]) -> Dict[str, int]:
    """The classic IB counters that follow from an EFA port's counter values (missing ones are 0)."""
    def value(name: str) -> int:
        efa_name, divisor = IB_SOURCES.get(name, ("", 1))  # unmirrored: no EFA source, so 0
        return efa_values.get(efa_name, 0) // divisor

    return {name: value(name) for name in IB_PORT_COUNTERS}


def lay_out_device(root: str, profile: InstanceType, device: SimDevice, flavour: KernelFlavour,
                   initial: Dict[Tuple[str, str], int], pci_links: bool = True,
                   infiniband_counters: bool = False) -> None:
    os.makedirs(device.path, exist_ok=True)
    if pci_links:
        pci.write_function(root, pci.PciFunction(
            device.pci_address, device.pci_path, pci.AMAZON, layouts.LAYOUTS[profile.name].efa_device_id,
            pci.CLASS_ETHERNET, device.numa_node))
        link = os.path.join(device.path, "device")
        if not os.path.islink(link):
            os.symlink(os.path.relpath(pci_function_dir(root, device), device.path), link)
    _write(os.path.join(device.path, "node_guid"), f"0e{device.index:02x}:5aff:fec1:{device.index:04x}\n")
    _write(os.path.join(device.path, "fw_ver"), "0.0.0.0\n")
    _write(os.path.join(device.path, "node_type"), "1: CA\n")
    _write(os.path.join(device.path, "node_desc"), f"{device.name}\n")
    port = os.path.join(device.path, "ports", "1")
    _write(os.path.join(port, "state"), "4: ACTIVE\n")
    _write(os.path.join(port, "phys_state"), "5: LinkUp\n")
    _write(os.path.join(port, "link_layer"), "Unknown\n")
    _write(os.path.join(port, "rate"), _rate_text(profile.gbps_per_device, flavour) + "\n")
    _write(os.path.join(port, "gids", "0"), link_local_from_mac(device.mac) + "\n")
    device_dir = device.device_counter_dir if flavour.split_device_counters else device.port_dir
    for name in device.port_counters:
        _write(os.path.join(device.port_dir, name), f"{initial.get((device.name, name), 0)}\n")
    for name in device.device_counters:
        _write(os.path.join(device_dir, name), f"{initial.get((device.name, name), 0)}\n")
    _write(os.path.join(device.port_dir, "lifespan"), "12\n", 0o644)
    if flavour.split_device_counters:
        _write(os.path.join(device.device_counter_dir, "lifespan"), "12\n", 0o644)
    if infiniband_counters:
        _write(os.path.join(device.path, "board_id"), IB_BOARD_ID + "\n")
        _write(os.path.join(device.path, "hca_type"), IB_HCA_TYPE + "\n")
        efa_values = {name: value for (owner, name), value in initial.items() if owner == device.name}
        for name, value in ib_values(efa_values).items():
            _write(os.path.join(device.ib_counter_dir, name), f"{value}\n")


def lay_out_foreign_device(root: str, name: str, vendor: str, pci_address: str, pci_function: bool) -> str:
    """A non-EFA RDMA device's class directory (two counters, a port state) and, with ``pci_function``, its
    PCI function of ``vendor``; returns the class directory."""
    path = os.path.join(root, "class", "infiniband", name)
    for counter in (catalog.RX_BYTES, catalog.TX_BYTES):
        os.makedirs(os.path.join(path, "ports", "1", "hw_counters"), exist_ok=True)
        with open(os.path.join(path, "ports", "1", "hw_counters", counter), "w") as f:
            f.write("42\n")
    with open(os.path.join(path, "ports", "1", "state"), "w") as f:
        f.write("4: ACTIVE\n")
    if pci_function:
        function = os.path.join(root, "devices", "pci0000:e0", pci_address)
        os.makedirs(function, exist_ok=True)
        with open(os.path.join(function, "vendor"), "w") as f:
            f.write(vendor + "\n")
        os.symlink(os.path.relpath(function, path), os.path.join(path, "device"))
    return path
