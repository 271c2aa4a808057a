"""sysfs files kept open and read again each interval, and attributes read once at discovery.

A counter file is opened once and re-read with ``os.pread(fd, n, 0)``: kernfs re-renders a seq_file attribute
on every read at offset 0, so a kept-open descriptor gives fresh values at the cost of one syscall.
:class:`CounterSet` holds the counters of one hw_counters directory (probed when found: one not available
stays out of the reads and is retried), :class:`TextFile` a small attribute read the same way (a port's
state), :class:`WatchedDir` a directory whose changes one ``fstat`` tells. Every file is opened without
trusting what sits at its path (sysfs_file.py).
"""
import os
from dataclasses import dataclass, field
from itertools import repeat
from typing import Dict, List, Optional, Tuple

from otel_efa.node import sysfs_file
from otel_efa.node.counter_text import DECIMAL, READ_SIZE, U64_MAX, parse_counter
from otel_efa.node.read_errors import (
    MISSING,
    NOT_AVAILABLE,
    NOT_AVAILABLE_ERRNOS,
    CounterValueError,
    ReadError,
    reason_for_oserror,
)


def read_attribute(path: str, skipped: Optional[List[ReadError]] = None) -> str:
    """An attribute read once, "" when it cannot be; something that is not a file is noted in ``skipped``."""
    try:
        return sysfs_file.read_text(path)
    except sysfs_file.NotAFile as e:
        if skipped is not None:
            skipped.append(ReadError(path, NOT_AVAILABLE, e.strerror or str(e)))
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
    if max(map(len, contents)) >= READ_SIZE or b"".join(contents).translate(None, DECIMAL):
        return None
    try:
        values = list(map(int, contents))
    except ValueError:  # empty, or two numbers
        return None
    if max(values) > U64_MAX:
        return None
    return values


_open = sysfs_file.open_attribute


def probe(path: str) -> Tuple[Optional[int], Optional[ReadError]]:
    """Open a counter found at discovery and read it once: (fd, None) to keep reading it, (None, why)
    when it is not available (:data:`NOT_AVAILABLE_ERRNOS`, ``N/A``, not a file), (None, None) when the
    open failed otherwise (each read retries and reports it)."""
    try:
        fd = _open(path)
    except sysfs_file.NotAFile as e:
        return None, ReadError(path, NOT_AVAILABLE, e.strerror or str(e))
    except OSError as e:
        if e.errno in NOT_AVAILABLE_ERRNOS:
            return None, ReadError(path, NOT_AVAILABLE, e.strerror or str(e), quiet=True)
        return None, None
    try:
        parse_counter(os.pread(fd, READ_SIZE, 0))
    except CounterValueError as e:
        if e.reason == NOT_AVAILABLE:
            os.close(fd)
            return None, ReadError(path, NOT_AVAILABLE, str(e), quiet=True)
    except OSError as e:
        if e.errno in NOT_AVAILABLE_ERRNOS:
            os.close(fd)
            return None, ReadError(path, NOT_AVAILABLE, e.strerror or str(e), quiet=True)
    return fd, None


@dataclass
class CounterSet:
    """The open counter files of one hw_counters directory (or the port counters of one port)."""

    names: List[str] = field(default_factory=list)
    paths: List[str] = field(default_factory=list)
    fds: List[Optional[int]] = field(default_factory=list)
    unavailable: List[Tuple[str, ReadError]] = field(default_factory=list)  # (name, why), outside the plan

    def add(self, name: str, path: str) -> None:
        """Open and probe now; a counter not available stays out of the reads (see :meth:`retry`), a
        file that cannot be opened otherwise is retried, and reported, by each read."""
        fd, why = probe(path)
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
            fd, again = probe(why.path)
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
                    errors.append(ReadError(self.paths[i], NOT_AVAILABLE, e.strerror or str(e)))
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


class TextFile:
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
                self.skipped = ReadError(self.path, NOT_AVAILABLE, e.strerror or str(e))
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


class WatchedDir:
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
