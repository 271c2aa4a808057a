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
from typing import Callable, Dict, Iterable, Optional, Tuple

from otel_efa import catalog
from otel_efa.node.instance_types import INSTANCE_TYPES, InstanceType
from otel_efa.tools.simulator import pci
from otel_efa.tools.simulator.tree import (
    IB_MIRRORS,
    IB_SOURCES,
    NEW_KERNEL,
    OLD_KERNEL,
    KernelFlavour,
    SimDevice,
    efa_buses,
    lay_out_device,
    plan_devices,
)

PATTERNS = ("idle", "steady", "bursty")
PACKET_BYTES = 8192  # SRD packets carry up to ~8 KiB
BURST_PERIOD_S = 2.0
BURST_DUTY = 0.6

# Per-counter rate as a multiple of the device's bytes/s in each direction ("tx" or "rx"), or per second.
_TRAFFIC_SHARES: Dict[str, Tuple[str, float]] = {
    catalog.TX_BYTES: ("tx", 1.0),
    catalog.RX_BYTES: ("rx", 1.0),
    catalog.TX_PKTS: ("tx", 1.0 / PACKET_BYTES),
    catalog.RX_PKTS: ("rx", 1.0 / PACKET_BYTES),
    catalog.SEND_BYTES: ("tx", 0.02),
    catalog.SEND_WRS: ("tx", 0.02 / 4096),
    catalog.RECV_BYTES: ("rx", 0.02),
    catalog.RECV_WRS: ("rx", 0.02 / 4096),
    catalog.RDMA_READ_BYTES: ("rx", 0.3),
    catalog.RDMA_READ_WRS: ("rx", 0.3 / 65536),
    catalog.RDMA_READ_RESP_BYTES: ("tx", 0.3),
    catalog.RDMA_WRITE_BYTES: ("tx", 0.6),
    catalog.RDMA_WRITE_WRS: ("tx", 0.6 / 65536),
    catalog.RDMA_WRITE_RECV_BYTES: ("rx", 0.6),
    catalog.RETRANS_PKTS: ("tx", 1e-5 / PACKET_BYTES),
    catalog.RETRANS_BYTES: ("tx", 1e-5),
}
_PER_SECOND: Dict[str, float] = {catalog.KEEP_ALIVE_RCVD: 1.0, catalog.SUBMITTED_CMDS: 2.0,
                                 catalog.COMPLETED_CMDS: 2.0}


@dataclass
class _File:
    path: str
    fd: Optional[int] = None


class Simulator:
    """A simulated EFA node under ``root`` (use it as the agent's ``--sysfs``).

    ``gbps`` is the node's throughput in each direction, spread evenly over the devices (default: 40 %
    of their line rate). :meth:`set_device_level` scales one device (0 makes an idle rail).
    The PCIe tree puts GPUs or Neuron devices behind the EFA devices' switches (:meth:`declared_topology`
    is the ground truth); ``pci_links=False`` leaves out the PCI tree and the ``device`` links.
    ``devices`` keeps only the profile's first N EFA devices (same names, PCI places and speed), so the
    agent's cost can be measured against the number of devices on one device kind.
    """

    def __init__(self, profile: str, root: str, gbps: Optional[float] = None, pattern: str = "steady",
                 flavour: KernelFlavour = NEW_KERNEL, name_style: str = "rdmap",
                 clock: Callable[[], float] = time.monotonic, initial_value: int = 1_000_000,
                 pci_links: bool = True, infiniband_counters: bool = False, devices: Optional[int] = None):
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
        self._pci_plan = pci.plan(profile, efa_buses(self.profile.efa_devices))
        self._by_name = {d.name: d for d in self.devices}
        self._levels = {d.name: 1.0 for d in self.devices}
        self._values: Dict[Tuple[str, str], int] = {}
        self._carry: Dict[Tuple[str, str], float] = {}
        self._frozen: set = set()  # counters showing injected content; they keep their true value
        self._removed: set = set()
        self._files: Dict[Tuple[str, str], _File] = {}
        self._lock = threading.RLock()
        for device in self.devices:
            for name in device.port_counters + device.device_counters:
                self._values[(device.name, name)] = initial_value if name in _TRAFFIC_SHARES else 0
                self._carry[(device.name, name)] = 0.0
        self._time = clock()
        if pci_links:
            pci.lay_out(root, self._pci_plan)
        for device in self.devices:
            self._lay_out(device)

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
        if self.pattern == "idle":
            return _PER_SECOND.get(counter, 0.0)
        if counter in _PER_SECOND:
            return _PER_SECOND[counter]
        share = _TRAFFIC_SHARES.get(counter)
        return self.device_bytes_per_second(device) * share[1] if share else 0.0

    # --- traffic ------------------------------------------------------------------------------
    def set_device_level(self, device: str, level: float) -> None:
        with self._lock:
            self._levels[device] = level

    def _active_seconds(self, start: float, end: float) -> float:
        """Seconds of traffic in [start, end], scaled so the mean equals the configured rate."""
        if self.pattern == "idle":
            return 0.0
        if self.pattern == "steady":
            return end - start
        on = BURST_PERIOD_S * BURST_DUTY

        def on_time_until(t: float) -> float:
            periods, phase = divmod(t, BURST_PERIOD_S)
            return periods * on + min(phase, on)

        return (on_time_until(end) - on_time_until(start)) / BURST_DUTY

    def advance(self, now: Optional[float] = None) -> None:
        """Advance every counter to time ``now`` (default: the clock) and write what changed."""
        with self._lock:
            now = self._clock() if now is None else now
            elapsed = now - self._time
            if elapsed <= 0:
                return
            active = self._active_seconds(self._time, now)
            self._time = now
            for device in self.devices:
                if device.name in self._removed:
                    continue
                bytes_per_second = self.device_bytes_per_second(device.name)
                for name in device.port_counters + device.device_counters:
                    if name in _PER_SECOND:
                        amount = _PER_SECOND[name] * elapsed
                    elif name in _TRAFFIC_SHARES:
                        amount = _TRAFFIC_SHARES[name][1] * bytes_per_second * active
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
        path = os.path.join(self.root, "class", "infiniband", name)
        for counter in (catalog.RX_BYTES, catalog.TX_BYTES):
            os.makedirs(os.path.join(path, "ports", "1", "hw_counters"), exist_ok=True)
            with open(os.path.join(path, "ports", "1", "hw_counters", counter), "w") as f:
                f.write("42\n")
        with open(os.path.join(path, "ports", "1", "state"), "w") as f:
            f.write("4: ACTIVE\n")
        if pci:
            function = os.path.join(self.root, "devices", "pci0000:e0", pci_address)
            os.makedirs(function, exist_ok=True)
            with open(os.path.join(function, "vendor"), "w") as f:
                f.write(vendor + "\n")
            os.symlink(os.path.relpath(function, path), os.path.join(path, "device"))
        return path

    def set_port_state(self, device: str, state: str) -> None:
        """Write the port's state file, e.g. ``1: DOWN``."""
        with open(os.path.join(self._by_name[device].path, "ports", "1", "state"), "w") as f:
            f.write(state + "\n")

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


class RunningSimulator:
    """The simulator advancing in a background thread; stop() (or the with-block) ends it."""

    def __init__(self, simulator: Simulator, tick: float):
        self.simulator = simulator
        self._stop = threading.Event()
        self._thread = threading.Thread(target=simulator.run, args=(tick, self._stop),
                                        name="efa-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Simulator:
        return self.simulator

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["Simulator", "RunningSimulator", "PATTERNS", "NEW_KERNEL", "OLD_KERNEL", "KernelFlavour"]
