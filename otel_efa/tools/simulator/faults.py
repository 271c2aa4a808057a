"""Faults a simulated node can show on demand, so that alerts and dashboards can be seen firing.

A fault is written ``KIND[:DEVICE][@SECONDS]``: which fault, on which EFA device (default the node's first),
starting how many seconds after the simulation starts (default at once), e.g.
``retransmit-storm:rdmap79s0@60``. The kinds, and what the agent then reads:

    port-down         the port's state file says DOWN (phys_state Disabled) and its traffic stops:
                      efa_port_up 0, EfaPortDown
    retransmit-storm  3 % of the packets sent are retransmitted; timeouts, unresponsive and impaired remotes
                      count up: EfaRetransmitRatioHigh, EfaRetransTimeouts, EfaUnresponsiveRemote, ...
    device-missing    the device leaves /sys/class/infiniband, as on a driver unbind: EfaDevicesMissing
    idle-rail         the device carries no traffic while the others do: EfaDeviceImbalance
    counter-reset     every counter of the device goes back to 0, as after a driver reload (no rate spike)

Ground truth stays exact under every fault: :meth:`Simulator.value` follows what the files say. On the
command line, ``--fault`` (repeatable) goes wherever ``--simulate`` does, and on ``otel-efa simulate``; in a
config file, ``simulate_faults``; in Python, ``Simulator(..., faults=[...])`` or :meth:`Simulator.inject`.
"""
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

PORT_DOWN = "port-down"
RETRANSMIT_STORM = "retransmit-storm"
DEVICE_MISSING = "device-missing"
IDLE_RAIL = "idle-rail"
COUNTER_RESET = "counter-reset"
FAULT_KINDS = (PORT_DOWN, RETRANSMIT_STORM, DEVICE_MISSING, IDLE_RAIL, COUNTER_RESET)
SYNTAX = "KIND[:DEVICE][@SECONDS]"


@dataclass(frozen=True)
class Fault:
    kind: str
    device: Optional[str] = None  # None: the node's first EFA device
    after: float = 0.0  # seconds after the simulation starts

    def __str__(self) -> str:
        text = self.kind + (f":{self.device}" if self.device else "")
        return text + (f"@{self.after:g}" if self.after else "")


def parse(text: str) -> Fault:
    """``retransmit-storm:rdmap79s0@60`` -> Fault; ValueError with a one-line reason when it is not one."""
    spec, at, delay = text.strip().partition("@")
    kind, _, device = spec.partition(":")
    if kind not in FAULT_KINDS:
        where = "" if kind == text else f" in {text!r}"
        raise ValueError(f"unknown fault {kind!r}{where}; choose from {', '.join(FAULT_KINDS)} (written {SYNTAX})")
    if ":" in spec and not device.strip():
        raise ValueError(f"{text!r} names no device after ':' (written {SYNTAX})")
    after = 0.0
    if at:
        try:
            after = float(delay)
        except ValueError:
            after = math.nan
        if not (math.isfinite(after) and after >= 0):
            raise ValueError(f"{text!r}: the delay after '@' must be a number of seconds, 0 or more")
    return Fault(kind, device.strip() or None, after)


def resolve(fault: Fault, device_names: Sequence[str], retrans_counters: bool = True) -> Fault:
    """The fault with its device named, checked against the node: ValueError when it cannot happen there."""
    if not device_names:
        raise ValueError("the node has no EFA device to put a fault on")
    device = fault.device or device_names[0]
    if device not in device_names:
        raise ValueError(f"{str(fault)!r}: no EFA device {device!r} on this node; its devices are "
                         f"{device_names[0]} ... {device_names[-1]}")
    if fault.kind == RETRANSMIT_STORM and not retrans_counters:
        raise ValueError(f"{str(fault)!r}: this kernel has no retransmit counters (an older EFA driver)")
    return replace(fault, device=device)


def apply(simulator, fault: Fault) -> None:
    """Put a resolved fault on ``simulator`` now."""
    device = fault.device or simulator.devices[0].name
    if device not in simulator.device_names:  # gone already (an earlier device-missing): nothing left to break
        return
    if fault.kind == PORT_DOWN:
        simulator.port_down(device)
    elif fault.kind == RETRANSMIT_STORM:
        simulator.retransmit_storm(device)
    elif fault.kind == DEVICE_MISSING:
        simulator.remove_device(device)
    elif fault.kind == IDLE_RAIL:
        simulator.set_device_level(device, 0.0)
    elif fault.kind == COUNTER_RESET:
        simulator.reset([device])
    else:  # parse() lets no other kind through
        raise ValueError(f"unknown fault {fault.kind!r}")


def check_specs(profile: str, specs: Sequence[str], retrans_counters: bool = True, name_style: str = "rdmap",
                devices: Optional[int] = None) -> Optional[str]:
    """The first reason one of ``specs`` cannot go on a simulated ``profile`` node (its first ``devices``
    devices, named in ``name_style``), or None when they all can."""
    from otel_efa.tools.simulator.pci import plan
    from otel_efa.tools.simulator.tree import device_names

    names = device_names(plan(profile), name_style)[:devices]
    for text in specs:
        try:
            resolve(parse(text), names, retrans_counters)
        except ValueError as e:
            return str(e)
    return None


def argument(text: str) -> str:
    """argparse ``type`` for ``--fault``: the text when it reads as a fault, else argparse's usage error."""
    import argparse

    try:
        parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
