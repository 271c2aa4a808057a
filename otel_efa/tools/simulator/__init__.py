"""A kernel-faithful simulated EFA node: how a laptop and every test see the hardware."""
from otel_efa.tools.simulator.engine import (
    NEW_KERNEL,
    OLD_KERNEL,
    PATTERNS,
    KernelFlavour,
    RunningSimulator,
    Simulator,
)
from otel_efa.tools.simulator.faults import FAULT_KINDS, Fault
from otel_efa.tools.simulator.traffic import DEFAULT_UPTIME_S

__all__ = ["Simulator", "RunningSimulator", "PATTERNS", "NEW_KERNEL", "OLD_KERNEL", "KernelFlavour", "Fault",
           "FAULT_KINDS", "DEFAULT_UPTIME_S"]
