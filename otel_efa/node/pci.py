"""A PCI function's identity, read once: its address, vendor, device and class ids, NUMA node and local CPUs.

Linux ``drivers/pci/pci-sysfs.c``: ``/sys/class/infiniband/<dev>/device`` and ``/sys/bus/pci/devices/<address>``
link to the function's directory under ``/sys/devices/pci*``, whose ancestors are the bridges above it.
This module is the one reader of those attributes: the sysfs reader (sysfs.py) reads an EFA device's
function when it discovers the device and hands it on in every Reading (``DeviceInfo.pci``); the
classification (efa_devices.py) and the topology (topology.py) use that, and the topology reads the
accelerators' functions here too. Every attribute is opened without trusting what sits at its path
(counter_files.read_attribute); one that is no regular file is noted in ``skipped`` when the caller keeps
such a list.
"""
import os
import re
from dataclasses import dataclass
from typing import List, Optional

from otel_efa.node.counter_files import read_attribute
from otel_efa.node.read_errors import ReadError

PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@dataclass(frozen=True)
class PciFunction:
    address: str  # the function's directory name, e.g. 0000:4f:00.0
    path: str  # real path of its directory under /sys/devices
    vendor: str = ""  # the files' text as written (0x1d0f); "" when unreadable
    device_id: str = ""
    class_code: str = ""
    numa_node: Optional[int] = None  # None when unknown (the kernel says -1 on single-node hosts)
    local_cpulist: str = ""


def parse_numa_node(text: str) -> Optional[int]:
    """A PCI function's ``numa_node`` file: the node number, or None when unknown.

    The kernel writes -1 when the host has no NUMA affinity to report. Only plain ASCII digits count
    (int() would also take "+1", "1_0" and non-ASCII digits); a node number has at most 4 digits
    (MAX_NUMNODES is at most 1024).
    """
    text = text.strip()
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 4 else None


def read_function(path: str, skipped: Optional[List[ReadError]] = None) -> PciFunction:
    """The identity of the PCI function at ``path`` (a link to it is followed)."""
    real = os.path.realpath(path)

    def attribute(name: str) -> str:
        return read_attribute(os.path.join(real, name), skipped)

    return PciFunction(address=os.path.basename(real), path=real, vendor=attribute("vendor"),
                       device_id=attribute("device"), class_code=attribute("class"),
                       numa_node=parse_numa_node(attribute("numa_node")), local_cpulist=attribute("local_cpulist"))


def function_of(device_dir: str, skipped: Optional[List[ReadError]] = None) -> Optional[PciFunction]:
    """The PCI function behind a class device (``<device_dir>/device``); None without that link."""
    link = os.path.join(device_dir, "device")
    return read_function(link, skipped) if os.path.islink(link) else None


def bridges_above(path: str) -> List[str]:
    """The PCI bridges above a function, nearest first (stops at the host bridge ``pciDDDD:BB``)."""
    bridges = []
    parent = os.path.dirname(path)
    while PCI_ADDRESS.match(os.path.basename(parent)):
        bridges.append(parent)
        parent = os.path.dirname(parent)
    return bridges
