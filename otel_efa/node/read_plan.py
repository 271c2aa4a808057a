"""One read of every EFA device laid out once per device set, so a read is a few C-level passes (sysfs.py).

A :class:`ReadPlan` is made when the devices or their files change (sysfs.py drops it then): every counter
file of every device end to end, the port state files, the counter directories watched for changes, and
the few counter sets and devices with something not available. A read on it is then: one ``fstat`` pass
over the watched directories, one ``pread`` pass over the counters (``read_u64s``), one over the port
states (parsed again only when their bytes change), and the readings put together. Anything unusual (a
file not open, a read that fails, a value that does not parse) makes :meth:`ReadPlan.read` return None:
sysfs.py's careful path then reads file by file and says what failed where.
"""
import os
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Tuple

from otel_efa.node.counter_files import CounterSet, read_u64s
from otel_efa.node.counter_text import parse_state
from otel_efa.node.read_errors import ReadError
from otel_efa.node.reading import DeviceReading, PortReading

if TYPE_CHECKING:
    from otel_efa.node.sysfs import _Device

TEXT_SIZE = 256  # what TextFile reads of a port's state file
_MTIME = attrgetter("st_mtime_ns")
_LINKS = attrgetter("st_nlink")


class ReadPlan:
    """Every counter file of every device laid end to end, so one pass can read them all."""

    def __init__(self, devices: Iterable["_Device"]):
        devices = list(devices)
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
        # The port state files, two per port (state, phys_state), and what a reading repeats of each device.
        texts = [f for device in devices for port in device.ports for f in (port.state, port.phys_state)]
        self._text_fds = [f.fd for f in texts]
        self._raw_texts: Optional[List[bytes]] = None
        self._texts: List[str] = []
        self._layout = [(device.name, device.generation, device.info,
                         [(port.port, port.rate_text, port.gid0) for port in device.ports]) for device in devices]
        self.fast = self.ready and None not in self._text_fds
        # Only these can change what is unavailable without the plan being made anew.
        self._retrying: List[CounterSet] = [s for device in devices for _, s in device.counter_sets() if s.unavailable]
        self._unavailable_devices = [device for device in devices if device.unavailable()]
        watched = [directory for device in devices for directory in device.watched]
        fds = [d.fd for d in watched]
        self._watched_fds: Optional[List[int]] = None if None in fds else fds  # type: ignore[assignment]
        self._watched_mtimes = [d.mtime_ns for d in watched]

    def dirs_unchanged(self) -> bool:
        """True when no watched counter directory changed (mtime) or went (no links left), in one pass;
        False when one may have (each device's directories are then checked one by one)."""
        if self._watched_fds is None:
            return False
        stats = list(map(os.fstat, self._watched_fds))
        return list(map(_MTIME, stats)) == self._watched_mtimes and all(map(_LINKS, stats))

    def retry(self) -> bool:
        """Probe the counters not available again; True when one joined (the plan is then out of date)."""
        return True in [counter_set.retry() for counter_set in self._retrying]  # every set, no short cut

    def unavailable(self) -> Tuple[ReadError, ...]:
        return tuple(why for device in self._unavailable_devices for why in device.unavailable())

    def read(self) -> Optional[Tuple[DeviceReading, ...]]:
        """Every device's reading, or None when anything is unusual (the careful path then says what)."""
        if not self.fast:
            return None
        sets = self.counter_sets()
        if sets is None:
            return None
        try:
            raw = list(map(os.pread, self._text_fds, repeat(TEXT_SIZE), repeat(0)))  # type: ignore[arg-type]
        except OSError:
            return None
        if raw != self._raw_texts:
            self._texts = [data.decode("ascii", "replace").strip() for data in raw]
            self._texts[0::2] = [parse_state(text)[1] if text else "" for text in self._texts[0::2]]
            self._raw_texts = raw
        counters, texts = iter(sets), iter(self._texts)
        return tuple(DeviceReading(name, generation, next(counters),
                                   tuple(PortReading(port, next(counters), next(texts), rate_text, gid0, next(texts))
                                         for port, rate_text, gid0 in ports), info)
                     for name, generation, info, ports in self._layout)

    def counter_sets(self) -> Optional[List[Dict[str, int]]]:
        """Every counter of every device in three C-level passes (pread, int, min/max), one dict per
        counter set in device order; None when anything is unusual."""
        values = read_u64s(self.fds) if self.ready else None  # type: ignore[arg-type]
        if values is None:
            return None
        names = self.names
        return [dict(zip(names[start:end], values[start:end])) for start, end in self.bounds]
