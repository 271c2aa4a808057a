"""EFA layout of the EC2 instance types we know, from the EC2 network specifications.

The documented per-device speed is what the utilization gauge divides by: kernels before late 2024
report a constant ``100 Gb/sec`` in the port's ``rate`` file whatever the real link speed.
"""
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class InstanceType:
    name: str
    efa_devices: int
    gbps_per_device: int
    has_rdma_write: bool = True
    accelerator: str = "nvidia"  # "nvidia" GPUs or "neuron" devices

    @property
    def total_gbps(self) -> int:
        return self.efa_devices * self.gbps_per_device

    @property
    def device_bytes_per_second(self) -> float:
        return self.gbps_per_device * 1e9 / 8

    @property
    def total_bytes_per_second(self) -> float:
        return self.total_gbps * 1e9 / 8


INSTANCE_TYPES: Dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("p4d.24xlarge", 4, 100, has_rdma_write=False),
        InstanceType("p5.48xlarge", 32, 100),
        InstanceType("p5e.48xlarge", 32, 100),
        InstanceType("p5en.48xlarge", 16, 200),
        InstanceType("p6-b200.48xlarge", 8, 400),
        InstanceType("trn1.32xlarge", 8, 100, accelerator="neuron"),
        InstanceType("trn1n.32xlarge", 16, 100, accelerator="neuron"),
        InstanceType("trn2.48xlarge", 16, 200, accelerator="neuron"),
    )
}


def lookup(name: Optional[str]) -> Optional[InstanceType]:
    """The known layout of an instance type, or None for one we have no figures for."""
    return INSTANCE_TYPES.get(name) if name else None
