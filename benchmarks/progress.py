"""Progress of a long benchmark on standard error: how far it is, and an estimate of the time left.

Result tables go to standard output once, at the end; progress never mixes into them, so
``benchmarks/soak.py > soak.txt`` keeps the tables and the terminal shows how long to wait. On a terminal
the progress line is redrawn in place; elsewhere (a log, CI) a line is written at most every ``every``
seconds, and at the end.
"""
import sys
import time
from typing import Callable, Optional, TextIO


def duration(seconds: float) -> str:
    """``45 s``, ``6 min 30 s``, ``1 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def line(what: str, done: float, total: float, elapsed: float, left: Optional[float] = None,
         unit: str = "", note: str = "") -> str:
    """``soak: 35% (210/600 s), about 6 min 30 s left; 209 collections``.

    ``left``: seconds still to go when known (a fixed-length run); otherwise extrapolated from the pace so far.
    """
    share = min(1.0, done / total) if total > 0 else 0.0
    if left is None and done > 0:
        left = elapsed * (total - done) / done
    estimate = f"about {duration(left)} left" if left is not None else "estimating the time left"
    amount = f"{done:g}/{total:g}{' ' + unit if unit else ''}"
    return f"{what}: {share:.0%} ({amount}), {estimate}" + (f"; {note}" if note else "")


class Progress:
    """``update(done, total)`` as work advances; ``finish()`` once, before the results are printed.

    The time left is extrapolated from the pace since the last ``update`` with nothing done yet (so that
    start-up before the measured work does not count as its pace), unless ``left`` is given.
    """

    def __init__(self, what: str, unit: str = "", stream: Optional[TextIO] = None, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.what = what
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.clock = clock
        self.started = self._counting_since = clock()
        self._last_written: Optional[float] = None
        self._redraw = self.stream.isatty()
        self._drawn = False

    def update(self, done: float, total: float, left: Optional[float] = None, note: str = "") -> None:
        now = self.clock()
        if done == 0:
            self._counting_since = now
        if not self._redraw and self._last_written is not None and now - self._last_written < self.every:
            return
        text = line(self.what, done, total, now - self._counting_since, left, self.unit, note)
        if self._redraw:
            self.stream.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last_written = now

    def finish(self, note: str = "") -> None:
        text = f"{self.what}: done in {duration(self.clock() - self.started)}" + (f"; {note}" if note else "")
        self.stream.write(("\r\x1b[K" if self._drawn else "") + text + "\n")
        self.stream.flush()
