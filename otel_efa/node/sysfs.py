"""Reading EFA devices from sysfs: discovery, then one cheap pass per collection interval.

Layout (linux ``drivers/infiniband/core/sysfs.c``, ``drivers/infiniband/hw/efa/efa_verbs.c``)::

    <root>/class/infiniband/<dev>/hw_counters/<name>            device counters (newer kernels)
    <root>/class/infiniband/<dev>/ports/<n>/hw_counters/<name>  port counters (and, on older
                                                                kernels, the device counters too)
    <root>/class/infiniband/<dev>/ports/<n>/{state,phys_state,rate,link_layer,gids/0}
    <root>/class/infiniband/<dev>/{node_guid,fw_ver,device -> PCI function}

Counter files are opened once and re-read with ``os.pread(fd, n, 0)`` (counter_files.py); one pass reads every
counter of every device laid end to end (read_plan.py). Parsing is pure functions (counter_text.py), the
reasons a read fails are read_errors.py's, and a device's PCI identity is read once, at discovery, by
pci.py. This module discovers the devices and puts each read together (reading.py has its shape).
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from otel_efa import catalog
from otel_efa.node import efa_devices, pci
from otel_efa.node.counter_files import CounterSet, TextFile, WatchedDir, read_attribute, read_u64s
from otel_efa.node.counter_text import (
    READ_SIZE,
    U64_MAX,
    natural_key,
    parse_counter,
    parse_rate_gbps,
    parse_state,
)
from otel_efa.node.pci import parse_numa_node
from otel_efa.node.read_errors import (
    IO,
    MISSING,
    NOT_AVAILABLE,
    PARSE,
    PERMISSION,
    REASONS,
    CounterValueError,
    ReadError,
    reason_for_oserror,
)
from otel_efa.node.read_plan import ReadPlan
from otel_efa.node.reading import DeviceInfo, DeviceReading, PortReading, Reading

# What other modules have always imported from here.
__all__ = ["IO", "MISSING", "NOT_AVAILABLE", "PARSE", "PERMISSION", "READ_SIZE", "REASONS", "U64_MAX",
           "CounterValueError", "DeviceInfo", "DeviceReading", "PortReading", "ReadError", "Reading", "SysfsReader",
           "natural_key", "parse_counter", "parse_numa_node", "parse_rate_gbps", "parse_state", "read_u64s",
           "reason_for_oserror"]


@dataclass
class _Port:
    port: str
    path: str
    counters: CounterSet
    state: TextFile
    phys_state: TextFile
    rate_text: str  # read at discovery: the link rate does not change while the device exists
    gid0: str


@dataclass
class _Device:
    name: str
    path: str
    generation: int
    counters: CounterSet  # device-level counters, wherever the kernel put them
    ports: List[_Port]
    info: DeviceInfo
    watched: List["WatchedDir"] = field(default_factory=list)
    skipped: List[ReadError] = field(default_factory=list)  # attribute files read once that were not files
    identity: Optional["_Identity"] = None  # kept for a re-listing in place (not read again)

    def counter_sets(self) -> List[Tuple[str, CounterSet]]:
        """("", device counters) then (port, port counters) for each port."""
        return [("", self.counters)] + [(port.port, port.counters) for port in self.ports]

    def close(self) -> None:
        self.counters.close()
        for directory in self.watched:
            directory.close()
        for port in self.ports:
            port.counters.close()
            port.state.close()
            port.phys_state.close()

    def unavailable(self) -> List[ReadError]:
        """What is skipped on this device now: counters not available, attributes that are not files."""
        found = list(self.skipped)
        for _, counter_set in self.counter_sets():
            found.extend(why for _, why in counter_set.unavailable)
        for port in self.ports:
            found.extend(f.skipped for f in (port.state, port.phys_state) if f.skipped is not None)
        return found


def _list_dir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path), key=natural_key)
    except OSError:
        return []


class _Identity(NamedTuple):
    info: DeviceInfo
    skipped: List[ReadError]  # its attribute files that were not files


def _read_identity(path: str) -> Tuple[bool, str, _Identity]:
    """(is EFA, why, identity) of the RDMA device at ``path``: its PCI function read once, for the
    classification and for as long as the device exists."""
    pci_skipped: List[ReadError] = []
    function = pci.function_of(path, pci_skipped)
    efa, why = efa_devices.classify(path, function)
    skipped: List[ReadError] = []
    if not efa:
        return efa, why, _Identity(DeviceInfo(pci=function), skipped)
    node_guid = read_attribute(os.path.join(path, "node_guid"), skipped)
    fw_ver = read_attribute(os.path.join(path, "fw_ver"), skipped)
    return efa, why, _Identity(DeviceInfo(node_guid=node_guid, fw_ver=fw_ver, pci=function), skipped + pci_skipped)


def _counter_dirs(path: str) -> List[str]:
    dirs = [os.path.join(path, "hw_counters")]
    dirs += [os.path.join(path, "ports", port, "hw_counters") for port in _list_dir(os.path.join(path, "ports"))]
    return dirs


def _discover_device(name: str, path: str, generation: int, identity: _Identity) -> _Device:
    # Note the directories' identity first: a change after this point is seen on the next read.
    watched = [WatchedDir(d) for d in _counter_dirs(path)]
    device_counters = CounterSet()
    for counter in _list_dir(os.path.join(path, "hw_counters")):
        if counter not in catalog.NOT_COUNTERS:
            device_counters.add(counter, os.path.join(path, "hw_counters", counter))
    ports = []
    skipped: List[ReadError] = []
    for port in _list_dir(os.path.join(path, "ports")):
        port_path = os.path.join(path, "ports", port)
        port_counters = CounterSet()
        for counter in _list_dir(os.path.join(port_path, "hw_counters")):
            if counter in catalog.NOT_COUNTERS:
                continue
            counter_path = os.path.join(port_path, "hw_counters", counter)
            if catalog.is_device_counter(counter):  # older kernels: device counters under the port
                if counter not in device_counters.names:
                    device_counters.add(counter, counter_path)
            else:
                port_counters.add(counter, counter_path)
        ports.append(_Port(
            port=port,
            path=port_path,
            counters=port_counters,
            state=TextFile(os.path.join(port_path, "state")),
            phys_state=TextFile(os.path.join(port_path, "phys_state")),
            rate_text=read_attribute(os.path.join(port_path, "rate"), skipped),
            gid0=read_attribute(os.path.join(port_path, "gids", "0"), skipped),
        ))
    return _Device(name, path, generation, device_counters, ports, identity.info, watched, skipped + identity.skipped,
                   identity)


def _carry_vanished(old: _Device, new: _Device) -> None:
    """Counter files that vanished stay listed, unopened: each read reports them missing until they return."""
    new_sets = dict(new.counter_sets())
    present = {p for _, counter_set in new.counter_sets() for p in counter_set.paths}
    present.update(why.path for _, counter_set in new.counter_sets() for _, why in counter_set.unavailable)
    for port, counter_set in old.counter_sets():
        target = new_sets.get(port)
        for name, path in zip(counter_set.names, counter_set.paths):
            if target is not None and path not in present:
                target.names.append(name)
                target.paths.append(path)
                target.fds.append(None)


class SysfsReader:
    """Finds the EFA devices under ``<root>/class/infiniband`` and reads them, one pass per call.

    A device that appears or vanishes is noticed on the next :meth:`read`; one whose files start
    failing with ENODEV/ENOENT, or whose counter directories were replaced, is rediscovered, and its
    generation changes so no rate spans the gap. A counter directory whose entries changed (mtime) is
    re-listed in place: new counters join, vanished ones are reported missing.
    """

    def __init__(self, root: str = "/sys"):
        self.root = root
        self.class_dir = os.path.join(root, "class", "infiniband")
        self._devices: Dict[str, _Device] = {}
        self._generation = 0
        self._stale: Set[str] = set()
        self._plan: Optional[ReadPlan] = None
        self._ignored: Dict[str, str] = {}  # RDMA devices that are not EFA -> why
        self._unavailable: Tuple[ReadError, ...] = ()

    def read(self) -> Reading:
        self._refresh_devices()
        plan = self._plan or ReadPlan(self._devices.values())
        if plan.retry():  # counters not available that joined: they are in the next plan
            plan = ReadPlan(self._devices.values())
        self._plan = plan
        devices = plan.read()
        if devices is None:
            return self._read_carefully(plan)
        unavailable = plan.unavailable()
        if unavailable != self._unavailable:
            self._unavailable = unavailable
        return Reading(devices, (), self._unavailable, tuple(self._ignored.items()))

    def _read_carefully(self, plan: ReadPlan) -> Reading:
        """File by file where needed, saying what failed where; the plan is made anew on the next read
        (files may have been opened here)."""
        errors: List[ReadError] = []
        at_once = plan.counter_sets()
        sets = iter(at_once) if at_once is not None else None
        devices = []
        for device in self._devices.values():
            alive = True
            if sets is not None:
                device_counters = next(sets)
            else:
                device_counters = {}
                alive = device.counters.read_into(device_counters, errors)
            ports = []
            for port in device.ports:
                if sets is not None:
                    port_counters = next(sets)
                else:
                    port_counters = {}
                    alive = port.counters.read_into(port_counters, errors) and alive
                state_text = port.state.read()
                ports.append(PortReading(
                    port=port.port,
                    counters=port_counters,
                    state=parse_state(state_text)[1] if state_text else "",
                    rate_text=port.rate_text,
                    gid0=port.gid0,
                    phys_state=port.phys_state.read(),
                ))
            if not alive:
                self._stale.add(device.name)
            devices.append(DeviceReading(device.name, device.generation, device_counters, tuple(ports),
                                         device.info))
        self._plan = None  # the careful pass may have opened files: plan again next time
        unavailable = tuple(why for device in self._devices.values() for why in device.unavailable())
        if unavailable != self._unavailable:
            self._unavailable = unavailable
        return Reading(tuple(devices), tuple(errors), self._unavailable, tuple(self._ignored.items()))

    def _refresh_devices(self) -> None:
        try:
            present = set(os.listdir(self.class_dir))
        except OSError:
            present = set()
        identities: Dict[str, _Identity] = {}
        for name in present - self._devices.keys() - self._ignored.keys():
            efa, why, identity = _read_identity(os.path.join(self.class_dir, name))
            if efa:
                identities[name] = identity
            else:
                self._ignored[name] = why
        for name in self._ignored.keys() - present:
            del self._ignored[name]
        present -= self._ignored.keys()
        unchanged = self._plan is not None and self._plan.dirs_unchanged()  # one pass, before any closes
        for name in list(self._devices):
            device = self._devices[name]
            if name not in present or name in self._stale:
                self._devices.pop(name).close()
                self._plan = None
                continue
            if unchanged:
                continue
            states = {directory.check() for directory in device.watched}
            if states == {WatchedDir.SAME}:
                continue
            self._plan = None
            if WatchedDir.REPLACED in states:
                self._devices.pop(name).close()
            else:
                fresh = _discover_device(name, device.path, device.generation,
                                         device.identity or _read_identity(device.path)[2])
                _carry_vanished(device, fresh)
                device.close()
                self._devices[name] = fresh
        self._stale.clear()
        if present == self._devices.keys():
            return
        self._plan = None
        names = sorted(present, key=natural_key)
        for name in names:
            if name not in self._devices:  # new, or gone stale or replaced above: its identity read anew
                self._generation += 1
                path = os.path.join(self.class_dir, name)
                identity = identities.get(name) or _read_identity(path)[2]
                self._devices[name] = _discover_device(name, path, self._generation, identity)
        self._devices = {name: self._devices[name] for name in names}

    def descriptors(self) -> List[int]:
        """The open files one :meth:`read` reads (counters, port states and physical states): the benchmark's floor."""
        fds: List[int] = []
        for device in self._devices.values():
            for _, counter_set in device.counter_sets():
                fds.extend(fd for fd in counter_set.fds if fd is not None)
            fds.extend(f.fd for port in device.ports for f in (port.state, port.phys_state) if f.fd is not None)
        return fds

    @property
    def device_names(self) -> Tuple[str, ...]:
        return tuple(self._devices)

    def close(self) -> None:
        for device in self._devices.values():
            device.close()
        self._devices.clear()
        self._plan = None  # its descriptors are closed

    def __enter__(self) -> "SysfsReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
