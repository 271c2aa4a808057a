"""Reading EFA devices from sysfs: discovery, then one cheap pass per collection interval.

Layout (linux ``drivers/infiniband/core/sysfs.c``, ``drivers/infiniband/hw/efa/efa_verbs.c``)::

    <root>/class/infiniband/<dev>/hw_counters/<name>            device counters (newer kernels)
    <root>/class/infiniband/<dev>/ports/<n>/hw_counters/<name>  port counters (and, on older
                                                                kernels, the device counters too)
    <root>/class/infiniband/<dev>/ports/<n>/{state,phys_state,rate,link_layer,gids/0}
    <root>/class/infiniband/<dev>/{node_guid,fw_ver,device -> PCI function}

Counter files are opened once and re-read with ``os.pread(fd, n, 0)``: kernfs re-renders a seq_file
attribute on every read at offset 0, so a kept-open descriptor gives fresh values at the cost of one
syscall. Parsing is a pure function (:func:`parse_counter`) so it can be tested and fuzzed alone.
"""
import errno
import math
import os
import re
from dataclasses import dataclass, field
from itertools import repeat
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from otel_efa import catalog
from otel_efa.node import efa_devices, sysfs_file

U64_MAX = (1 << 64) - 1
READ_SIZE = 64  # a u64 in decimal is at most 20 digits and a newline

# Error reasons, the values of the ``reason`` attribute of ``otel_efa_read_errors``.
MISSING = "missing"
PERMISSION = "permission"
NOT_AVAILABLE = "not_available"
PARSE = "parse"
IO = "io"
REASONS = (MISSING, PERMISSION, NOT_AVAILABLE, PARSE, IO)

_ERRNO_REASON = {
    errno.ENOENT: MISSING,
    errno.ENODEV: MISSING,
    errno.ENXIO: MISSING,
    errno.EACCES: PERMISSION,
    errno.EPERM: PERMISSION,
    errno.EOPNOTSUPP: NOT_AVAILABLE,
    errno.EINVAL: NOT_AVAILABLE,
}


# What awsefareceiver takes to mean "this counter is not available here" when it meets it at discovery:
# such a counter is logged once, counted once under NOT_AVAILABLE, and quietly retried each read.
_NOT_AVAILABLE_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL})


class CounterValueError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# All a counter file may hold: ASCII digits and the whitespace around them. int() alone also takes a sign
# ("+5", "-0") and digit separators ("1_000"), which no kernel writes.
_DECIMAL = b"0123456789 \t\n\r\x0b\x0c"


def parse_counter(data: bytes) -> int:
    """One counter file's content as an int in 0..2**64-1, or CounterValueError saying why not.

    ``data`` is one read of READ_SIZE bytes: a full buffer means the file is longer than any u64 line,
    and is refused rather than judged by its beginning.
    """
    text = data.strip()
    if text.startswith(b"N/A"):
        raise CounterValueError(NOT_AVAILABLE, f"counter not available ({text[:32]!r})")
    if len(data) >= READ_SIZE:
        raise CounterValueError(PARSE, f"longer than {READ_SIZE - 1} bytes: {text[:32]!r}...")
    try:
        if data.translate(None, _DECIMAL):
            raise ValueError
        value = int(text)
    except ValueError:
        raise CounterValueError(PARSE, f"not a decimal number: {text[:32]!r}") from None
    if value > U64_MAX:
        raise CounterValueError(PARSE, f"not a u64: {text[:32]!r}")
    return value


def reason_for_oserror(error: OSError) -> str:
    return _ERRNO_REASON.get(error.errno, IO)


def parse_rate_gbps(text: str) -> Optional[float]:
    """``100 Gb/sec (4X EDR)`` -> 100.0; None for anything else, a speed not positive and finite too."""
    parts = text.split()
    if len(parts) >= 2 and parts[1].startswith("Gb/s"):
        try:
            gbps = float(parts[0])
        except ValueError:
            return None
        return gbps if 0 < gbps < math.inf else None  # float() also takes "nan", "inf", "-100"
    return None


def parse_state(text: str) -> Tuple[Optional[int], str]:
    """``4: ACTIVE`` -> (4, "ACTIVE")."""
    number, _, name = text.partition(":")
    try:
        return int(number), name.strip()
    except ValueError:
        return None, text.strip()


def parse_numa_node(text: str) -> Optional[int]:
    """A PCI function's ``numa_node`` file: the node number, or None when unknown.

    The kernel writes -1 when the host has no NUMA affinity to report. Only plain ASCII digits count
    (int() would also take "+1", "1_0" and non-ASCII digits); a node number has at most 4 digits
    (MAX_NUMNODES is at most 1024).
    """
    text = text.strip()
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 4 else None


@dataclass(frozen=True)
class ReadError:
    path: str
    reason: str
    detail: str
    quiet: bool = False  # an expected absence (N/A, EOPNOTSUPP...): logged at info, not as a warning


@dataclass(frozen=True)
class DeviceInfo:
    """What does not change while a device exists; read once at discovery."""

    node_guid: str = ""
    fw_ver: str = ""
    pci_address: str = ""
    pci_vendor: str = ""
    numa_node: Optional[int] = None
    local_cpulist: str = ""


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


def _read_text(path: str, skipped: Optional[List[ReadError]] = None) -> str:
    """An attribute read once, "" when it cannot be; something that is not a file is noted in ``skipped``."""
    try:
        return sysfs_file.read_text(path)
    except sysfs_file.NotAFile as e:
        if skipped is not None:
            skipped.append(ReadError(path, NOT_AVAILABLE, e.strerror))
        return ""
    except OSError:
        return ""


def read_u64s(fds: List[int]) -> Optional[List[int]]:
    """Every file's value in C-level passes (``pread``; ``len``, ``join`` and ``translate`` to see only
    digits and whitespace in files shorter than the buffer; ``int``; ``max``): the common case.

    None when any read fails or any content is not what :func:`parse_counter` accepts; the caller then
    reads file by file to say what went wrong where.
    """
    try:
        contents = list(map(os.pread, fds, repeat(READ_SIZE), repeat(0)))
    except OSError:
        return None
    if not contents:
        return []
    if max(map(len, contents)) >= READ_SIZE or b"".join(contents).translate(None, _DECIMAL):
        return None
    try:
        values = list(map(int, contents))
    except ValueError:  # empty, or two numbers
        return None
    if max(values) > U64_MAX:
        return None
    return values


_open = sysfs_file.open_attribute


def _probe(path: str) -> Tuple[Optional[int], Optional[ReadError]]:
    """Open a counter found at discovery and read it once: (fd, None) to keep reading it, (None, why)
    when it is not available (:data:`_NOT_AVAILABLE_ERRNOS`, ``N/A``, not a file), (None, None) when the
    open failed otherwise (each read retries and reports it)."""
    try:
        fd = _open(path)
    except sysfs_file.NotAFile as e:
        return None, ReadError(path, NOT_AVAILABLE, e.strerror)
    except OSError as e:
        if e.errno in _NOT_AVAILABLE_ERRNOS:
            return None, ReadError(path, NOT_AVAILABLE, e.strerror or str(e), quiet=True)
        return None, None
    try:
        parse_counter(os.pread(fd, READ_SIZE, 0))
    except CounterValueError as e:
        if e.reason == NOT_AVAILABLE:
            os.close(fd)
            return None, ReadError(path, NOT_AVAILABLE, str(e), quiet=True)
    except OSError as e:
        if e.errno in _NOT_AVAILABLE_ERRNOS:
            os.close(fd)
            return None, ReadError(path, NOT_AVAILABLE, e.strerror or str(e), quiet=True)
    return fd, None


@dataclass
class _CounterSet:
    """The open counter files of one hw_counters directory (or the port counters of one port)."""

    names: List[str] = field(default_factory=list)
    paths: List[str] = field(default_factory=list)
    fds: List[Optional[int]] = field(default_factory=list)
    unavailable: List[Tuple[str, ReadError]] = field(default_factory=list)  # (name, why), outside the plan

    def add(self, name: str, path: str) -> None:
        """Open and probe now; a counter not available stays out of the reads (see :meth:`retry`), a
        file that cannot be opened otherwise is retried, and reported, by each read."""
        fd, why = _probe(path)
        if why is not None:
            self.unavailable.append((name, why))
            return
        self.names.append(name)
        self.paths.append(path)
        self.fds.append(fd)

    def retry(self) -> bool:
        """Probe the counters not available again (a mode fixed, a FIFO replaced); True when one joined."""
        if not self.unavailable:
            return False
        still = []
        for name, why in self.unavailable:
            fd, again = _probe(why.path)
            if again is not None:
                still.append((name, why if again == why else again))
                continue
            self.names.append(name)
            self.paths.append(why.path)
            self.fds.append(fd)
        joined = len(still) < len(self.unavailable)
        self.unavailable = still
        return joined

    def read_into(self, out: Dict[str, int], errors: List[ReadError]) -> bool:
        """Read every counter into ``out``; False when the device looks gone (ENODEV/ENOENT)."""
        values = read_u64s(self.fds) if None not in self.fds else None  # type: ignore[arg-type]
        if values is None:
            return self._read_each(out, errors)
        out.update(zip(self.names, values))
        return True

    def _read_each(self, out: Dict[str, int], errors: List[ReadError]) -> bool:
        alive = True
        fds = self.fds
        for i, fd in enumerate(fds):
            if fd is None:
                try:
                    fd = fds[i] = _open(self.paths[i])
                except sysfs_file.NotAFile as e:
                    errors.append(ReadError(self.paths[i], NOT_AVAILABLE, e.strerror))
                    continue
                except OSError as e:
                    errors.append(ReadError(self.paths[i], reason_for_oserror(e), e.strerror or str(e)))
                    continue
            try:
                data = os.pread(fd, READ_SIZE, 0)
            except OSError as e:
                reason = reason_for_oserror(e)
                errors.append(ReadError(self.paths[i], reason, e.strerror or str(e), quiet=reason == NOT_AVAILABLE))
                if reason == MISSING:
                    alive = False
                continue
            try:
                out[self.names[i]] = parse_counter(data)
            except CounterValueError as e:
                errors.append(ReadError(self.paths[i], e.reason, str(e), quiet=e.reason == NOT_AVAILABLE))
        return alive

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds = [None] * len(self.fds)


class _TextFile:
    """A small attribute file (the port state) kept open and re-read like the counters."""

    def __init__(self, path: str):
        self.path = path
        self.fd: Optional[int] = None
        self.skipped: Optional[ReadError] = None  # set while something not a file sits at the path

    def read(self) -> str:
        try:
            if self.fd is None:
                self.fd = _open(self.path)
                self.skipped = None
            return os.pread(self.fd, 256, 0).decode("ascii", "replace").strip()
        except sysfs_file.NotAFile as e:
            if self.skipped is None:
                self.skipped = ReadError(self.path, NOT_AVAILABLE, e.strerror)
            return ""
        except OSError:
            return ""

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


@dataclass
class _Port:
    port: str
    path: str
    counters: _CounterSet
    state: _TextFile
    phys_state: _TextFile
    rate_text: str  # read at discovery: the link rate does not change while the device exists
    gid0: str


@dataclass
class _Device:
    name: str
    path: str
    generation: int
    counters: _CounterSet  # device-level counters, wherever the kernel put them
    ports: List[_Port]
    info: DeviceInfo
    watched: List["_WatchedDir"] = field(default_factory=list)
    skipped: List[ReadError] = field(default_factory=list)  # attribute files read once that were not files

    def counter_sets(self) -> List[Tuple[str, _CounterSet]]:
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


def natural_key(name: str) -> Tuple:
    """``rdmap16s0`` before ``rdmap128s0``, ``efa_2`` before ``efa_10``. The digit runs are the odd parts
    (str.isdigit() also holds for "¹", which int() refuses: a file of that name stopped every read)."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))


def _list_dir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path), key=natural_key)
    except OSError:
        return []


def _device_info(path: str, skipped: List[ReadError]) -> DeviceInfo:
    pci_path = os.path.realpath(os.path.join(path, "device"))
    has_pci = os.path.islink(os.path.join(path, "device"))

    def pci(name: str) -> str:
        return _read_text(os.path.join(pci_path, name), skipped) if has_pci else ""

    return DeviceInfo(
        node_guid=_read_text(os.path.join(path, "node_guid"), skipped),
        fw_ver=_read_text(os.path.join(path, "fw_ver"), skipped),
        pci_address=os.path.basename(pci_path) if has_pci else "",
        pci_vendor=pci("vendor"),
        numa_node=parse_numa_node(pci("numa_node")) if has_pci else None,
        local_cpulist=pci("local_cpulist"),
    )


class _WatchedDir:
    """A counter directory kept open: one ``fstat`` a read tells whether its entries changed
    (mtime) or it was removed (no links left), without a path lookup."""

    SAME, CHANGED, REPLACED = "same", "changed", "replaced"

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd: Optional[int] = sysfs_file.open_directory(path)
            self.mtime_ns: Optional[int] = os.fstat(self.fd).st_mtime_ns
        except OSError:
            self.fd, self.mtime_ns = None, None

    def check(self) -> str:
        if self.fd is None:
            return self.CHANGED if os.path.isdir(self.path) else self.SAME
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            return self.REPLACED
        return self.SAME if st.st_mtime_ns == self.mtime_ns else self.CHANGED

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _counter_dirs(path: str) -> List[str]:
    dirs = [os.path.join(path, "hw_counters")]
    dirs += [os.path.join(path, "ports", port, "hw_counters") for port in _list_dir(os.path.join(path, "ports"))]
    return dirs


def _discover_device(name: str, path: str, generation: int) -> _Device:
    # Note the directories' identity first: a change after this point is seen on the next read.
    watched = [_WatchedDir(d) for d in _counter_dirs(path)]
    device_counters = _CounterSet()
    for counter in _list_dir(os.path.join(path, "hw_counters")):
        if counter not in catalog.NOT_COUNTERS:
            device_counters.add(counter, os.path.join(path, "hw_counters", counter))
    ports = []
    skipped: List[ReadError] = []
    for port in _list_dir(os.path.join(path, "ports")):
        port_path = os.path.join(path, "ports", port)
        port_counters = _CounterSet()
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
            state=_TextFile(os.path.join(port_path, "state")),
            phys_state=_TextFile(os.path.join(port_path, "phys_state")),
            rate_text=_read_text(os.path.join(port_path, "rate"), skipped),
            gid0=_read_text(os.path.join(port_path, "gids", "0"), skipped),
        ))
    info = _device_info(path, skipped)
    return _Device(name, path, generation, device_counters, ports, info, watched, skipped)


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


class _Plan:
    """Every counter file of every device laid end to end, so one pass can read them all."""

    def __init__(self, devices: Iterable[_Device]):
        self.fds: List[Optional[int]] = []
        self.names: List[str] = []
        self.bounds: List[Tuple[int, int]] = []
        for device in devices:
            for _, counter_set in device.counter_sets():
                start = len(self.fds)
                self.fds.extend(counter_set.fds)
                self.names.extend(counter_set.names)
                self.bounds.append((start, len(self.fds)))
        self.ready = None not in self.fds  # a file that could not be opened takes the careful path


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
        self._stale: set = set()
        self._plan: Optional[_Plan] = None
        self._ignored: Dict[str, str] = {}  # RDMA devices that are not EFA -> why
        self._unavailable: Tuple[ReadError, ...] = ()

    def read(self) -> Reading:
        errors: List[ReadError] = []
        self._refresh_devices()
        for device in self._devices.values():
            for _, counter_set in device.counter_sets():
                if counter_set.retry():
                    self._plan = None
        at_once = self._read_all_at_once()
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
        if sets is None:
            self._plan = None  # the careful pass may have opened files: plan again next time
        unavailable = tuple(why for device in self._devices.values() for why in device.unavailable())
        if unavailable != self._unavailable:
            self._unavailable = unavailable
        return Reading(tuple(devices), tuple(errors), self._unavailable, tuple(self._ignored.items()))

    def _read_all_at_once(self) -> Optional[List[Dict[str, int]]]:
        """Every counter of every device in three C-level passes (pread, int, min/max), one dict per
        counter set in :meth:`_Device.counter_sets` order; None when anything is unusual, and the
        per-set path then says what and where."""
        plan = self._plan
        if plan is None:
            plan = self._plan = _Plan(self._devices.values())
        values = read_u64s(plan.fds) if plan.ready else None  # type: ignore[arg-type]
        if values is None:
            return None
        names = plan.names
        return [dict(zip(names[start:end], values[start:end])) for start, end in plan.bounds]

    def _refresh_devices(self) -> None:
        try:
            present = set(os.listdir(self.class_dir))
        except OSError:
            present = set()
        for name in present - self._devices.keys() - self._ignored.keys():
            efa, why = efa_devices.classify(os.path.join(self.class_dir, name))
            if not efa:
                self._ignored[name] = why
        for name in self._ignored.keys() - present:
            del self._ignored[name]
        present -= self._ignored.keys()
        for name in list(self._devices):
            device = self._devices[name]
            if name not in present or name in self._stale:
                self._devices.pop(name).close()
                self._plan = None
                continue
            states = {directory.check() for directory in device.watched}
            if states == {_WatchedDir.SAME}:
                continue
            self._plan = None
            if _WatchedDir.REPLACED in states:
                self._devices.pop(name).close()
            else:
                fresh = _discover_device(name, device.path, device.generation)
                _carry_vanished(device, fresh)
                device.close()
                self._devices[name] = fresh
        self._stale.clear()
        if present == self._devices.keys():
            return
        self._plan = None
        names = sorted(present, key=natural_key)
        for name in names:
            if name not in self._devices:
                self._generation += 1
                self._devices[name] = _discover_device(name, os.path.join(self.class_dir, name),
                                                       self._generation)
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

    def __enter__(self) -> "SysfsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
