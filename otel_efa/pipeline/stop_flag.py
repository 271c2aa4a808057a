"""A stop flag whose timed wait runs on the monotonic clock on every Python the agent supports.

``threading.Event.wait(timeout)`` measures its timeout on the wall clock before Python 3.11 (CPython
bpo-41710), and Amazon Linux 2023's system Python is 3.9: a wall clock stepped back by X seconds (an NTP or
chrony step) during the agent's wait between collections would stall collection for X seconds. ``poll()``
takes a relative timeout, which the kernel keeps on the monotonic clock, so the agent waits for a pipe to
become readable instead, and ``set()`` writes one byte to it. (``poll``, not ``select``: the agent holds
over a thousand counter files open, and ``select`` cannot watch a descriptor numbered 1024 or above.)
"""
import os
import select
import threading


class StopFlag:
    """``set()`` once, from any thread or a signal handler; ``wait(timeout)`` returns early once set."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)
        self._is_set = False
        # Re-entrant: a signal handler (running on the main thread) may call set() while close() holds it.
        self._lock = threading.RLock()

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        with self._lock:
            if not self._is_set:
                self._is_set = True
                if self._write >= 0:
                    os.write(self._write, b"!")  # stays unread: every later wait() returns at once

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds of monotonic time, or until set; True when set."""
        if not self._is_set and self._read >= 0 and timeout > 0:
            self._poll.poll(timeout * 1000)  # milliseconds
        return self._is_set

    def close(self) -> None:
        with self._lock:
            if self._read >= 0:
                self._poll.unregister(self._read)
            for fd in (self._read, self._write):
                if fd >= 0:
                    os.close(fd)
            self._read = self._write = -1
