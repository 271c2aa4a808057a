"""What one read of the EFA devices gives: per device its counters, ports and identity, and what failed."""
from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional, Tuple

from otel_efa.node.pci import PciFunction
from otel_efa.node.read_errors import ReadError


@dataclass(frozen=True)
class DeviceInfo:
    """What does not change while a device exists; read once at discovery."""

    node_guid: str = ""
    fw_ver: str = ""
    pci: Optional[PciFunction] = None  # None without a PCI link (a container without /sys/devices)

    @property
    def pci_address(self) -> str:
        return self.pci.address if self.pci is not None else ""

    @property
    def pci_vendor(self) -> str:
        return self.pci.vendor if self.pci is not None else ""

    @property
    def numa_node(self) -> Optional[int]:
        return self.pci.numa_node if self.pci is not None else None

    @property
    def local_cpulist(self) -> str:
        return self.pci.local_cpulist if self.pci is not None else ""

    def as_dict(self) -> Dict[str, Any]:
        """The flat form ``otel-efa snapshot --json`` prints."""
        return {"node_guid": self.node_guid, "fw_ver": self.fw_ver, "pci_address": self.pci_address,
                "pci_vendor": self.pci_vendor, "numa_node": self.numa_node, "local_cpulist": self.local_cpulist}


class PortReading(NamedTuple):  # tuples: a p5 builds 64 of these per read, and they are cheap
    port: str
    counters: Dict[str, int]
    state: str  # "ACTIVE", or "" when unreadable
    rate_text: str  # the rate file, e.g. "100 Gb/sec (4X EDR)"
    gid0: str = ""
    phys_state: str = ""  # the phys_state file, e.g. "5: LinkUp"; "" when unreadable


class DeviceReading(NamedTuple):
    name: str
    generation: int  # bumped each time the device is (re)discovered, so rates restart with it
    counters: Dict[str, int]
    ports: Tuple[PortReading, ...]
    info: DeviceInfo


@dataclass(frozen=True)
class Reading:
    devices: Tuple[DeviceReading, ...]
    errors: Tuple[ReadError, ...]  # what failed in this read
    # Files skipped since discovery and still skipped: counters not available, and anything that is not a
    # regular file where one belongs. The same objects every read until one changes, so a consumer can
    # log and count each once.
    unavailable: Tuple[ReadError, ...] = ()
    ignored: Tuple[Tuple[str, str], ...] = ()  # (RDMA device, why it is not EFA), e.g. an mlx5 HCA
