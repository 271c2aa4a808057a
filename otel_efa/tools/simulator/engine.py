"""The simulated node: counters advanced in place by a traffic model, faults on demand, ground truth.

Counters grow as exact integers (fractions are carried, not lost), so a test can compare what the agent
exported with :meth:`Simulator.value` to the byte. Files are rewritten in place through kept-open
descriptors (``pwrite`` at offset 0), never renamed, as sysfs does: a reader's open descriptor keeps
seeing the current value.
"""
import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

from otel_efa.node.instance_types import INSTANCE_TYPES, InstanceType
from otel_efa.tools.simulator import faults as fault_specs
from otel_efa.tools.simulator import pci
from otel_efa.tools.simulator.faults import Fault
from otel_efa.tools.simulator.running import RunningSimulator
from otel_efa.tools.simulator.traffic import (
    DEFAULT_UPTIME_S,
    PACKET_BYTES,
    PATTERNS,
    PER_SECOND,
    STORM_ALL_PER_SECOND,
    STORM_TRAFFIC_SHARES,
    TRAFFIC_SHARES,
    active_seconds,
    lifetime_values,
)
from otel_efa.tools.simulator.tree import (
    IB_MIRRORS,
    IB_SOURCES,
    NEW_KERNEL,
    OLD_KERNEL,
    KernelFlavour,
    SimDevice,
    lay_out_device,
    lay_out_foreign_device,
    plan_devices,
)


@dataclass
class _File:
    path: str
    fd: Optional[int] = None


class Simulator:
    """A simulated EFA node under ``root`` (use it as the agent's ``--sysfs``).

    Devices are named and placed as on a real node of the profile (:mod:`.layouts`); counters start where
    ``uptime`` seconds of use left them (0 starts a fresh node at 0; :mod:`.traffic`). ``gbps`` is the
    node's throughput in each direction, spread evenly over the devices (default: 40 % of their line
    rate). :meth:`set_device_level` scales one device (0 makes an idle rail). ``faults`` (:mod:`.faults`:
    ``Fault`` objects or ``KIND[:DEVICE][@SECONDS]`` texts) go on at once or that many seconds in.
    The PCIe tree puts GPUs or Neuron devices beside the EFA devices (:meth:`declared_topology` is the
    ground truth); ``pci_links=False`` leaves out the PCI tree and the ``device`` links.
    ``devices`` keeps only the profile's first N EFA devices (same names, PCI places and speed), so the
    agent's cost can be measured against the number of devices on one device kind.
    """

    def __init__(self, profile: str, root: str, gbps: Optional[float] = None, pattern: str = "steady",
                 flavour: KernelFlavour = NEW_KERNEL, name_style: str = "rdmap",
                 clock: Callable[[], float] = time.monotonic, uptime: float = DEFAULT_UPTIME_S,
                 pci_links: bool = True, infiniband_counters: bool = False, devices: Optional[int] = None,
                 faults: Iterable[Union[Fault, str]] = ()):
        if profile not in INSTANCE_TYPES:
            raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(INSTANCE_TYPES)}")
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {pattern!r}; choose from {', '.join(PATTERNS)}")
        self.profile: InstanceType = INSTANCE_TYPES[profile]
        if devices is not None and not 1 <= devices <= self.profile.efa_devices:
            raise ValueError(f"{profile} has {self.profile.efa_devices} EFA devices; cannot keep {devices}")
        self.root = root
        self.pattern = pattern
        self.flavour = flavour
        self._clock = clock
        self.pci_links = pci_links
        self.infiniband_counters = infiniband_counters
        self.devices = plan_devices(root, self.profile, flavour, name_style)[:devices]
        self.gbps = len(self.devices) * self.profile.gbps_per_device * 0.4 if gbps is None else float(gbps)
        self._pci_plan = pci.plan(profile)
        self.layout = self._pci_plan.layout
        self._by_name = {d.name: d for d in self.devices}
        self._levels = {d.name: 1.0 for d in self.devices}
        self._storms: set = set()  # devices in a retransmit storm
        self._values: Dict[Tuple[str, str], int] = {}
        self._carry: Dict[Tuple[str, str], float] = {}
        self._frozen: set = set()  # counters showing injected content; they keep their true value
        self._removed: set = set()
        self._files: Dict[Tuple[str, str], _File] = {}
        self._lock = threading.RLock()
        self._pending: List[Tuple[float, Fault]] = []  # faults still to come, by due time
        scheduled = [self.resolve_fault(f) for f in faults]
        for device in self.devices:
            names = device.port_counters + device.device_counters
            start = lifetime_values(device.index, self.profile.device_bytes_per_second, names, uptime)
            for name in names:
                self._values[(device.name, name)] = start[name]
                self._carry[(device.name, name)] = 0.0
        self._time = clock()
        if pci_links:
            pci.lay_out(root, self._pci_plan)
        for device in self.devices:
            self._lay_out(device)
        for fault in scheduled:
            self.inject(fault)

    # --- ground truth -------------------------------------------------------------------------
    def value(self, device: str, counter: str) -> int:
        with self._lock:
            return self._values[(device, counter)]

    def ib_value(self, device: str, counter: str) -> int:
        """Ground truth of a classic IB counter (``port_rcv_data`` in 4-byte words, as the file shows)."""
        if counter not in IB_SOURCES:
            return 0
        efa_name, divisor = IB_SOURCES[counter]
        return self.value(device, efa_name) // divisor

    def values(self) -> Dict[Tuple[str, str], int]:
        with self._lock:
            return dict(self._values)

    def declared_topology(self) -> Dict[str, pci.DeclaredDevice]:
        """Device name -> its PCI address, NUMA node, CPUs, switch and the accelerators behind it."""
        return {d.name: declared for d, declared in zip(self.devices, self._pci_plan.declared)}

    @property
    def device_names(self) -> Tuple[str, ...]:
        return tuple(d.name for d in self.devices if d.name not in self._removed)

    def device_bytes_per_second(self, device: str) -> float:
        """The steady (mean) bytes per second of ``device`` in each direction."""
        return self.gbps * 1e9 / 8 / len(self.devices) * self._levels[device]

    def expected_rate(self, device: str, counter: str) -> float:
        """The mean per-second rate of ``counter`` under the current traffic (0 when idle)."""
        per_second = self._per_second(device)
        if counter in per_second:
            return per_second[counter]
        if self.pattern == "idle":
            return 0.0
        share = self._shares(device).get(counter)
        return self.device_bytes_per_second(device) * share[1] if share else 0.0

    def _shares(self, device: str) -> Dict[str, Tuple[str, float]]:
        return STORM_TRAFFIC_SHARES if device in self._storms else TRAFFIC_SHARES

    def _per_second(self, device: str) -> Dict[str, float]:
        return STORM_ALL_PER_SECOND if device in self._storms else PER_SECOND

    # --- traffic ------------------------------------------------------------------------------
    def set_device_level(self, device: str, level: float) -> None:
        with self._lock:
            self._levels[device] = level

    def advance(self, now: Optional[float] = None) -> None:
        """Advance every counter to time ``now`` (default: the clock) and write what changed; faults due
        by then go on at their time, so the counters before and after follow the traffic of each."""
        with self._lock:
            now = self._clock() if now is None else now
            while self._pending and self._pending[0][0] <= now:
                due, fault = self._pending.pop(0)
                self._advance_to(due)
                fault_specs.apply(self, fault)
            self._advance_to(now)

    def _advance_to(self, now: float) -> None:
        elapsed = now - self._time
        if elapsed <= 0:
            return
        active = active_seconds(self.pattern, self._time, now)
        self._time = now
        for device in self.devices:
            if device.name in self._removed:
                continue
            bytes_per_second = self.device_bytes_per_second(device.name)
            shares, per_second = self._shares(device.name), self._per_second(device.name)
            for name in device.port_counters + device.device_counters:
                if name in per_second:
                    amount = per_second[name] * elapsed
                elif name in shares:
                    amount = shares[name][1] * bytes_per_second * active
                else:
                    continue
                self._add(device, name, amount)

    def idle_until(self, now: Optional[float] = None) -> None:
        """Let time pass to ``now`` (default: the clock) with the counters held still, as on a node that
        carried nothing meanwhile; without this, the next :meth:`advance` adds that time's traffic."""
        with self._lock:
            self._time = max(self._time, self._clock() if now is None else now)

    def advance_by(self, seconds: float) -> None:
        """Advance simulated time by ``seconds`` (tests that drive time themselves)."""
        with self._lock:
            self.advance(self._time + seconds)

    def _add(self, device: SimDevice, name: str, amount: float) -> None:
        key = (device.name, name)
        total = self._carry[key] + amount
        whole = int(total)
        self._carry[key] = total - whole
        if whole:
            self._values[key] = (self._values[key] + whole) & ((1 << 64) - 1)
            if key not in self._frozen:
                self._write_value(device, name, self._values[key])

    # --- faults -------------------------------------------------------------------------------
    def set_value(self, device: str, counter: str, value: int) -> None:
        """Put ``counter`` at ``value`` (e.g. near 2**64-1 to test a wrap)."""
        with self._lock:
            self._values[(device, counter)] = value
            self._carry[(device, counter)] = 0.0
            self._write_value(self._by_name[device], counter, value)

    def reset(self, devices: Optional[Iterable[str]] = None) -> None:
        """Every counter of ``devices`` (default all) back to 0, as after a driver reload."""
        with self._lock:
            for device in self.devices:
                if devices is None or device.name in devices:
                    for name in device.port_counters + device.device_counters:
                        self.set_value(device.name, name, 0)

    def corrupt(self, device: str, counter: str, content: bytes) -> None:
        """Make the file show ``content`` (garbage, empty, ``N/A (no PMA)``...) until :meth:`heal`."""
        with self._lock:
            self._frozen.add((device, counter))
            self._pwrite(self._by_name[device], counter, content)

    def deny(self, device: str, counter: str) -> None:
        """Remove read permission (affects non-root readers; root bypasses file modes)."""
        os.chmod(self.path_of(device, counter), 0)

    def heal(self, device: str, counter: str) -> None:
        """Undo :meth:`corrupt` and :meth:`deny`: the file shows the true value again."""
        with self._lock:
            self._frozen.discard((device, counter))
            os.chmod(self.path_of(device, counter), 0o444)
            self._write_value(self._by_name[device], counter, self._values[(device, counter)])

    def remove_counter(self, device: str, counter: str) -> None:
        """One counter file vanishes (ENOENT for a reader that looks for it) until :meth:`restore_counter`."""
        with self._lock:
            handle = self._files.pop((device, counter), None)
            if handle is not None and handle.fd is not None:
                os.close(handle.fd)
            self._frozen.add((device, counter))
            os.unlink(self.path_of(device, counter))

    def restore_counter(self, device: str, counter: str) -> None:
        with self._lock:
            with open(self.path_of(device, counter), "w") as f:
                f.write(f"{self._values[(device, counter)]}\n")
            self._frozen.discard((device, counter))

    def remove_device(self, device: str) -> None:
        """The device vanishes from sysfs, as on a driver unbind.

        It leaves the class directory in one rename, so a reader sees the whole device or none of it,
        never a tree half deleted (kernfs takes a removed device out of lookups before tearing it down).
        """
        with self._lock:
            self._removed.add(device)
            self._close_device(device)
            path = self._by_name[device].path
            gone = os.path.join(self.root, f".removed-{device}")
            os.rename(path, gone)
            shutil.rmtree(gone)

    def restore_device(self, device: str, reset: bool = True) -> None:
        """The device comes back; a re-probed device starts its counters at 0 unless ``reset`` is False."""
        with self._lock:
            self._removed.discard(device)
            sim_device = self._by_name[device]
            if reset:
                for name in sim_device.port_counters + sim_device.device_counters:
                    self._values[(device, name)] = 0
                    self._carry[(device, name)] = 0.0
            self._lay_out(sim_device)

    def add_foreign_device(self, name: str = "mlx5_0", vendor: str = "0x15b3", pci_address: str = "0000:e0:00.0",
                           pci: bool = True) -> str:
        """Another RDMA device beside the EFA devices (default a Mellanox HCA, PCI vendor 0x15b3) with the
        same kind of counter tree, which the agent must ignore; ``pci=False`` leaves out its PCI function
        (a soft-RoCE ``rxe0``). Returns its path. Not ground truth: nothing tracks its counters."""
        return lay_out_foreign_device(self.root, name, vendor, pci_address, pci)

    def set_port_state(self, device: str, state: str, phys_state: Optional[str] = None) -> None:
        """Write the port's state file, e.g. ``1: DOWN`` (and ``phys_state``, e.g. ``3: Disabled``)."""
        port = os.path.join(self._by_name[device].path, "ports", "1")
        for name, text in (("state", state), ("phys_state", phys_state)):
            if text is not None:
                with open(os.path.join(port, name), "w") as f:
                    f.write(text + "\n")

    def port_down(self, device: str) -> None:
        """The link goes down: the port says DOWN / Disabled and carries nothing until :meth:`port_up`."""
        with self._lock:
            self.set_port_state(device, "1: DOWN", "3: Disabled")
            self._levels[device] = 0.0

    def port_up(self, device: str) -> None:
        with self._lock:
            self.set_port_state(device, "4: ACTIVE", "5: LinkUp")
            self._levels[device] = 1.0

    def retransmit_storm(self, device: str, on: bool = True) -> None:
        """Retransmits jump to 3 % of the packets sent and timeouts and remote events count up
        (:data:`.traffic.STORM_SHARES`), until called with ``on=False``."""
        with self._lock:
            (self._storms.add if on else self._storms.discard)(device)

    def resolve_fault(self, fault: Union[Fault, str]) -> Fault:
        """A fault spec checked against this node (ValueError if it cannot happen here), device named."""
        spec = fault_specs.parse(fault) if isinstance(fault, str) else fault
        return fault_specs.resolve(spec, [d.name for d in self.devices], self.flavour.retrans_counters)

    def inject(self, fault: Union[Fault, str]) -> Fault:
        """Put a fault on the node now, or ``fault.after`` seconds from now; returns it resolved."""
        resolved = self.resolve_fault(fault)
        with self._lock:
            if resolved.after <= 0:
                fault_specs.apply(self, resolved)
            else:
                self._pending.append((self._time + resolved.after, resolved))
                self._pending.sort(key=lambda pending: pending[0])
        return resolved

    # --- files --------------------------------------------------------------------------------
    def path_of(self, device: str, counter: str) -> str:
        sim_device = self._by_name[device]
        if counter in sim_device.device_counters and self.flavour.split_device_counters:
            return os.path.join(sim_device.device_counter_dir, counter)
        return os.path.join(sim_device.port_dir, counter)

    def _lay_out(self, device: SimDevice) -> None:
        lay_out_device(self.root, self.profile, device, self.flavour,
                       {k: v for k, v in self._values.items() if k[0] == device.name}, self.pci_links,
                       self.infiniband_counters)

    def _write_value(self, device: SimDevice, name: str, value: int) -> None:
        self._pwrite(device, name, b"%d\n" % value)
        if self.infiniband_counters:
            for ib_name, divisor in IB_MIRRORS.get(name, ()):
                self._pwrite(device, "counters/" + ib_name, b"%d\n" % (value // divisor),
                             os.path.join(device.ib_counter_dir, ib_name))

    def _pwrite(self, device: SimDevice, name: str, content: bytes, path: Optional[str] = None) -> None:
        if device.name in self._removed:
            return
        key = (device.name, name)
        handle = self._files.get(key)
        if handle is None:
            handle = self._files[key] = _File(path or self.path_of(device.name, name))
        if handle.fd is None:
            handle.fd = os.open(handle.path, os.O_WRONLY | os.O_CLOEXEC)
        # Overwrite in place, then trim: a reader never sees an empty file, as with sysfs.
        os.pwrite(handle.fd, content, 0)
        os.ftruncate(handle.fd, len(content))

    def _close_device(self, device: str) -> None:
        for key in [k for k in self._files if k[0] == device]:
            handle = self._files.pop(key)
            if handle.fd is not None:
                os.close(handle.fd)

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                if handle.fd is not None:
                    os.close(handle.fd)
            self._files.clear()

    # --- running ------------------------------------------------------------------------------
    def run(self, tick: float, stop: threading.Event) -> None:
        """Advance every ``tick`` seconds until ``stop`` is set."""
        while not stop.wait(tick):
            self.advance()

    def start(self, tick: float = 0.05) -> "RunningSimulator":
        return RunningSimulator(self, tick)

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Simulator", "RunningSimulator", "PATTERNS", "PACKET_BYTES", "NEW_KERNEL", "OLD_KERNEL", "KernelFlavour"]
