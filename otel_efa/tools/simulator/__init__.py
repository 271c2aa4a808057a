"""A kernel-faithful simulated EFA node: how a laptop and every test see the hardware."""
from otel_efa.tools.simulator.engine import (
    NEW_KERNEL,
    OLD_KERNEL,
    PATTERNS,
    KernelFlavour,
    RunningSimulator,
    Simulator,
)

__all__ = ["Simulator", "RunningSimulator", "PATTERNS", "NEW_KERNEL", "OLD_KERNEL", "KernelFlavour"]
