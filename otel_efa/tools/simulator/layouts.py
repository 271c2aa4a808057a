"""Where each instance type puts its EFA devices, accelerators and drives on the PCI bus, from public captures.

The kernel's EFA driver registers each device under the name rdma-core's udev rule gives it from its PCI
address, ``rdmap<bus>s<slot>`` (bus and slot in decimal: ``0000:4f:00.0`` is ``rdmap79s0``), so the names a
node shows follow from this layout. Two shapes occur:

* a PCIe switch behind a root port (Nitro cards on p5, p5en, p6, trn2): host bridge ``pci0000:RR``, root
  port ``RR:00.0``, the switch's upstream port on bus RR+1, its downstream ports on bus RR+2 (port k is
  ``RR+2:<k//8>.<k%8>``), and the device behind port k on bus RR+3+k. Captures show unused ports in
  between (ENA devices, empty slots), which is why the EFA devices start at port 8 or 14;
* a flat bus under a host bridge (p4d): EFA device, GPUs and NVMe drives are slots of one bus, with no
  PCIe switch between them and no bridge that a topology reader could call shared.

Sources, per profile (the ``sources`` of each layout):

* p4d.24xlarge: aws/aws-ofi-nccl ``tests/unit/fixtures/topology/p4d/topology.xml`` (an lstopo capture,
  commit a090e25d6af8) and ``tests/unit/topo_fixture.cpp`` (rdmap16s27 at 0000:10:1b.0, rdmap32s27,
  rdmap144s27, rdmap160s27: "p4d EFA NICs and GPUs meet at host bridges, not PCIe switches"), and the
  static ``topology/p4d-24xl-topo.xml`` (GPUs at <bus>:1c.0 and <bus>:1d.0 beside the NIC at <bus>:1b.0).
* p5.48xlarge / p5e.48xlarge: the EFA and GPU addresses printed by ``src/8_topo.cpp`` of libfabric-efa-demo
  (read in the fork whn09/libfabric-efa-demo): rdmap79s0..rdmap82s0 at 0000:4f..52:00.0 with GPU 0 at
  0000:53:00.0, then groups of four every 0x11 buses up to rdmap198s0..rdmap201s0 (0000:c6..c9) with GPU 7 at
  0000:ca:00.0, GPUs 0-3 on NUMA node 0; the names also in aws/aws-ofi-nccl ``topology/p5.48xl-topo.xml``.
* p5en.48xlarge: aws/aws-ofi-nccl ``tests/unit/fixtures/topology/p5en/topology.xml`` and ``topo_fixture.cpp``
  (rdmap85s0..rdmap88s0, rdmap110s0..113, rdmap135s0..138, rdmap160s0..163; four EFA devices, two H200
  GPUs and two NVMe drives behind each switch; four NVSwitches behind their own switch at bus 0xa8).
* p6-b200.48xlarge: aws/aws-ofi-nccl ``tests/unit/fixtures/topology/p6-b200/topology.xml`` and
  ``topo_fixture.cpp`` (rdmap79s0, rdmap80s0, rdmap96s0, 97, rdmap113s0, 114, rdmap132s0, 133; two EFA devices
  and two B200 GPUs per switch; two ConnectX-7 functions share the third switch).
* trn2.48xlarge: the EFA address of each Neuron device in the vLLM Neuron worker's hardware configuration
  (trn2 ``efa_bdf_mapping``: 0000:56, 57, 6c, 6d, 82, 83, 98, 99, b3, b4, c9, ca, df, e0, f5, f6), and
  kvcache-ai/Mooncake PR #3888 ("8 PCIe switches x 2 EFA NICs"; Neuron device 0 with rdmap201s0 and
  rdmap202s0).
* trn1.32xlarge / trn1n.32xlarge: no public listing of their EFA names or PCI addresses was found; the layout
  is made up in the same shape and marked approximate.

What no source shows is marked in each layout's ``approximate`` text (the simulator says so too).
"""
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

EFA = "efa"
GPU = "gpu"
NEURON = "neuron"
NVME = "nvme"
NVSWITCH = "nvswitch"
CONNECTX = "connectx"  # a Mellanox ConnectX-7 function (p6-b200); not EFA, not an accelerator


@dataclass(frozen=True)
class Endpoint:
    kind: str
    bus: int
    slot: int = 0

    @property
    def address(self) -> str:
        return f"0000:{self.bus:02x}:{self.slot:02x}.0"


@dataclass(frozen=True)
class Group:
    """Endpoints that share a PCIe switch (``root_bus`` set) or one host bridge's bus (``root_bus`` None)."""

    numa_node: int
    endpoints: Tuple[Endpoint, ...]
    root_bus: Optional[int] = None

    def port_of(self, endpoint: Endpoint) -> int:
        """The switch's downstream port the endpoint sits behind (switch groups only)."""
        assert self.root_bus is not None
        return endpoint.bus - self.root_bus - 3


@dataclass(frozen=True)
class NodeLayout:
    groups: Tuple[Group, ...]
    efa_device_id: str  # PCI device id: 0xefa0 (first generation) ... 0xefa3
    sources: str
    approximate: str = ""  # what is made up, "" when every address comes from a source

    def endpoints(self, kind: str) -> Tuple[Endpoint, ...]:
        return tuple(sorted((e for g in self.groups for e in g.endpoints if e.kind == kind),
                            key=lambda e: (e.bus, e.slot)))

    @property
    def efa_devices(self) -> Tuple[Endpoint, ...]:
        return self.endpoints(EFA)


def device_name(endpoint: Endpoint) -> str:
    """rdma-core's udev name of a device at function 0: ``rdmap<bus>s<slot>``, both in decimal."""
    return f"rdmap{endpoint.bus}s{endpoint.slot}"


def _switch(root_bus: int, numa_node: int, **ports: Iterable[int]) -> Group:
    """A switch group: ``ports`` maps a kind to the downstream ports its devices sit behind."""
    endpoints = [Endpoint(kind, root_bus + 3 + port) for kind, numbers in ports.items() for port in numbers]
    return Group(numa_node, tuple(sorted(endpoints, key=lambda e: e.bus)), root_bus)


def _flat(bus: int, numa_node: int, **slots: Iterable[int]) -> Group:
    """Endpoints as slots of one bus straight under the host bridge ``pci0000:<bus>``."""
    endpoints = [Endpoint(kind, bus, slot) for kind, numbers in slots.items() for slot in numbers]
    return Group(numa_node, tuple(sorted(endpoints, key=lambda e: e.slot)))


def _p4d() -> NodeLayout:
    groups = tuple(_flat(bus, numa, efa=(0x1b,), gpu=(0x1c, 0x1d), nvme=(0x1e, 0x1f))
                   for bus, numa in ((0x10, 0), (0x20, 0), (0x90, 1), (0xa0, 1)))
    nvswitches = _flat(0x80, 1, nvswitch=range(0x1a, 0x20))
    return NodeLayout(groups + (nvswitches,), "0xefa0", "aws/aws-ofi-nccl p4d lstopo capture and topology file",
                      approximate="the NVMe slots of buses 0x10 and 0x20 (seen on 0x90 and 0xa0)")


def _p5() -> NodeLayout:
    groups = tuple(_switch(0x44 + 0x11 * g, g // 4, efa=range(8, 12), gpu=(12,), nvme=(13,)) for g in range(8))
    nvswitches = _switch(0x44 + 0x11 * 8, 1, nvswitch=range(4))
    return NodeLayout(groups + (nvswitches,), "0xefa1", "libfabric-efa-demo 8_topo output (EFA and GPU addresses)",
                      approximate="the bridges, NVMe drives and NVSwitches (shaped like the p6-b200 capture)")


def _p5en() -> NodeLayout:
    groups = tuple(_switch(root, g // 2, efa=range(14, 18), gpu=(18, 19), nvme=(20, 21))
                   for g, root in enumerate((0x44, 0x5d, 0x76, 0x8f)))
    nvswitches = _switch(0xa8, 1, nvswitch=range(4))
    return NodeLayout(groups + (nvswitches,), "0xefa2", "aws/aws-ofi-nccl p5en lstopo capture",
                      approximate="the NUMA nodes of the first two switches (the capture's part read shows the "
                                  "last two on node 1)")


def _p6_b200() -> NodeLayout:
    groups = (
        _switch(0x44, 0, efa=(8, 9), gpu=(10, 11), nvme=(12, 13)),
        _switch(0x55, 0, efa=(8, 9), gpu=(10, 11), nvme=(12, 13)),
        _switch(0x66, 1, efa=(8, 9), connectx=(10, 11), gpu=(12, 13), nvme=(14, 15)),
        _switch(0x79, 1, efa=(8, 9), gpu=(10, 11), nvme=(12, 13)),
    )
    return NodeLayout(groups, "0xefa3", "aws/aws-ofi-nccl p6-b200 lstopo capture")


def _trn2() -> NodeLayout:
    groups = tuple(_switch(first - 3, g // 4, efa=(0, 1), neuron=(2, 3))
                   for g, first in enumerate((0x56, 0x6c, 0x82, 0x98, 0xb3, 0xc9, 0xdf, 0xf5)))
    return NodeLayout(groups, "0xefa3", "vLLM Neuron trn2 efa_bdf_mapping; Mooncake PR #3888",
                      approximate="the bridges, NUMA nodes and the Neuron devices' addresses (the EFA addresses "
                                  "are from the source)")


def _trn1(efa_per_switch: int) -> NodeLayout:
    groups = tuple(_switch(0x10 + 0x1c * g, g // 4, efa=range(efa_per_switch),
                           neuron=range(efa_per_switch, efa_per_switch + 2)) for g in range(8))
    return NodeLayout(groups, "0xefa1", "none found",
                      approximate="everything: no public listing of trn1 EFA names or PCI addresses was found")


LAYOUTS: Dict[str, NodeLayout] = {
    "p4d.24xlarge": _p4d(),
    "p5.48xlarge": _p5(),
    "p5e.48xlarge": _p5(),
    "p5en.48xlarge": _p5en(),
    "p6-b200.48xlarge": _p6_b200(),
    "trn1.32xlarge": _trn1(1),
    "trn1n.32xlarge": _trn1(2),
    "trn2.48xlarge": _trn2(),
}
