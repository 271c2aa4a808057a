"""The quick-start's human log line, one per device per interval, flushed at once::

    2026-11-28T12:00:00.123+00:00 rdmap0s6: RX=125.34 Mbps, TX=98.21 Mbps
    2026-11-28T12:00:00.123+00:00 rdmap0s6: RX=125.34 Mbps, TX=98.21 Mbps rx_errors=3 tx_discards=0

The error fields (cumulative, named as in CloudWatch) are added when either is non-zero, so the quick-start's
``grep -E "rx_errors|tx_discards"`` finds them. The file is reopened when logrotate moves it away.

Every collection writes its lines, the first one too: a rate the interval cannot give yet (the first
reading, a counter reset) is written ``-``, as in ``rdmap0s6: RX=- Mbps, TX=- Mbps``, so that ``otel-efa
run --count N`` writes N intervals' lines.

A log that cannot be written (disk full, read-only file system) costs the log lines of those intervals
and nothing else: one error when it starts, one warning with the count of lost intervals when writing
works again, and collection and the other exporters go on. The measurements themselves are cumulative
in the kernel and in every other exporter, so nothing measured is lost with the lines.
"""
import logging
import os
import sys
from datetime import datetime, timezone
from typing import List, Optional, TextIO

from otel_efa.catalog import LOG_ERROR_FIELDS, RX_BYTES, TX_BYTES
from otel_efa.exporters import Exporter, ExporterContext
from otel_efa.names import escape
from otel_efa.pipeline.interval import Interval
from otel_efa.pipeline.snapshot import DeviceSnapshot, Snapshot

log = logging.getLogger(__name__)


def mbps(bytes_per_second: Optional[float]) -> str:
    return "-" if bytes_per_second is None else f"{bytes_per_second * 8 / 1e6:.2f}"


def device_line(device: DeviceSnapshot) -> str:
    """``rdmap0s6: RX=125.34 Mbps, TX=98.21 Mbps`` (plus error fields); ``-`` for a rate not known yet.

    The device name is escaped as on every exporter (otel_efa/names.py): a newline or a byte that is
    not UTF-8 in it would otherwise split the line or fail the write."""
    rx, tx = device.rate(RX_BYTES), device.rate(TX_BYTES)
    line = f"{escape(device.name)}: RX={mbps(rx)} Mbps, TX={mbps(tx)} Mbps"
    errors = [(spec.name, sum(device.total(k) or 0 for k in spec.kernel_names)) for spec in LOG_ERROR_FIELDS]
    if any(value for _, value in errors):
        line += " " + " ".join(f"{name}={value}" for name, value in errors)
    return line


def format_lines(snapshot: Snapshot) -> List[str]:
    stamp = datetime.fromtimestamp(snapshot.wall_time, timezone.utc).isoformat(timespec="milliseconds")
    return [f"{stamp} {device_line(device)}" for device in snapshot.devices]


class ReopeningFile:
    """Append to a path; reopen it when it was moved or removed (logrotate without copytruncate), and
    after a failed write (the same file may take writes again once space is freed)."""

    def __init__(self, path: str):
        self.path = path
        self._file: Optional[TextIO] = None
        self._inode: Optional[int] = None

    def _open(self) -> TextIO:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._inode = os.fstat(self._file.fileno()).st_ino
        return self._file

    def write(self, text: str) -> None:
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if self._file is None or current != self._inode:
            self.close()
            self._open()
        assert self._file is not None
        try:
            self._file.write(text)
            self._file.flush()
        except OSError:
            self.discard()
            raise

    def discard(self) -> None:
        """Close without writing what is still buffered (it has failed once already: a half line at most)."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()  # the flush fails again, but the descriptor is closed all the same
            except OSError:
                pass

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


def _stdout_to_devnull() -> None:
    """Point standard output at /dev/null, so that later writes and the final flush do not fail again
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class LogLineExporter(Exporter):
    name = "log"

    def __init__(self, context: ExporterContext):
        super().__init__(context)
        log_file = context.config.log_file
        self._file = ReopeningFile(log_file) if log_file else None
        self.unwritten_intervals = 0  # in the current write failure

    def export(self, interval: Interval) -> None:
        lines = format_lines(interval.snapshot)
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        if self._file is None:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:  # ``otel-efa run | head``: the reader is gone, the agent goes on
                _stdout_to_devnull()
                log.warning("standard output is closed (its reader went away): the log lines stop; collection "
                            "and the other exporters go on")
            return
        try:
            self._file.write(text)
        except OSError as e:  # disk full, read-only: say so once (journald), keep collecting
            if not self.unwritten_intervals:
                log.error("cannot write the log lines to %s (%s); collection and the other exporters go on, "
                          "and writing resumes when it can", self._file.path, e.strerror or e)
            self.unwritten_intervals += 1
        else:
            if self.unwritten_intervals:
                log.warning("writing the log lines to %s again; %d interval(s) could not be written",
                            self._file.path, self.unwritten_intervals)
            self.unwritten_intervals = 0

    def shutdown(self, timeout: float) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                log.error("cannot write the last log lines to %s (%s)", self._file.path, e.strerror or e)
