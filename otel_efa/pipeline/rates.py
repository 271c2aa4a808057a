"""Per-second rates from counter deltas over elapsed monotonic time.

A rate needs two samples of the same port and device generation. The first sample, a counter reset, a
jump no link could carry and a device that came back give no rate for that interval instead of a
negative number or a spike.

A counter that went down is either a reset (driver reload, device reset: it restarts near 0 from
anywhere) or a u64 wrap (it passed 2**64-1). The kernel's counters are u64, so a wrap is possible in
principle; at 400 Gb/s a byte counter takes 11.7 years to get there, so in practice it needs a counter
that starts high. A decrease counts as a wrap, with delta ``value + 2**64 - previous``, only when

* ``previous`` is at least 2**63: a counter anywhere in the lower half never wrapped in one interval, and
* the wrapped delta is no more than ``max_per_second * elapsed``: what the port could have carried. No
  EFA counter grows faster than the port's bytes counter (packets, work requests and events are fewer
  than bytes), and the collector passes twice the port's line rate.

So a reset is read as a wrap only if the counter stood within one interval's line-rate traffic of
2**64 when it was reset, and even then the rate given is at most twice the line rate: never a spike.
Everything else that goes down is a reset. The same bound drops an increase no port could carry (a
counter that jumped: a glitch, a value set by hand), which would otherwise be a spike of its own.
"""
import math
from itertools import repeat
from operator import sub, truediv
from typing import Callable, Container, Dict, FrozenSet, Hashable, Iterable, List, Mapping, Optional, Tuple

U64_RANGE = 1 << 64
WRAP_FLOOR = 1 << 63  # a counter below this that goes down was reset, not wrapped
RESET, WRAP, JUMP = "reset", "wrap", "jump"  # the discontinuities a counter can show


def rate(previous: Optional[int], value: int, elapsed: float,
         max_per_second: Optional[float] = None) -> Optional[float]:
    """Per second from ``previous`` to ``value`` over ``elapsed`` seconds; None when there is no honest rate.

    ``max_per_second``: the fastest the counter can grow, or None when unknown (then every decrease is a
    reset and no increase is too big). ``not elapsed > 0`` also refuses a NaN elapsed time, and a delta
    over a vanishingly small elapsed time that overflows to infinity is no rate either.
    """
    if previous is None or not elapsed > 0:
        return None
    delta = value - previous
    if delta < 0:
        if max_per_second is None or previous < WRAP_FLOOR:
            return None  # a reset
        delta += U64_RANGE  # a wrap, if the port could have carried that much
    if max_per_second is not None and delta > max_per_second * elapsed:
        return None
    per_second = delta / elapsed
    return per_second if per_second < math.inf else None


def discontinuity(previous: Optional[int], value: int, per_second: Optional[float]) -> Optional[str]:
    """RESET, WRAP or JUMP when ``previous`` -> ``value`` was one, given the rate :func:`rate` returned."""
    if previous is None:
        return None
    if value < previous:
        return RESET if per_second is None else WRAP
    return JUMP if per_second is None and value > previous else None


# A counter that did not simply grow since the last read: (name, previous, value, RESET/WRAP/JUMP).
Discontinuity = Tuple[str, int, int, str]


class RateTracker:
    """Keeps the last counters of each port and gives the rates of the counters in ``names``.

    ``on_discontinuity(key, found)`` is told, once per port and read, which of those counters were reset,
    wrapped or jumped (the collector logs it: a reset is worth knowing).
    """

    def __init__(self, names: Iterable[str],
                 on_discontinuity: Optional[Callable[[Hashable, List[Discontinuity]], None]] = None):
        self.names: FrozenSet[str] = frozenset(names)
        self._names = tuple(self.names)  # in the set's order, for the C-level passes of update()
        self.on_discontinuity = on_discontinuity
        self._last: Dict[Hashable, Tuple[Mapping[str, int], float, int]] = {}

    def update(self, key: Hashable, counters: Mapping[str, int], now: float,
               generation: int = 0, max_per_second: Optional[float] = None) -> Dict[str, float]:
        """Record this port's ``counters`` read at monotonic ``now``; the rates since the last read.

        ``max_per_second``: the fastest any of this port's counters can grow (see the module docstring);
        None reads every decrease as a reset.
        """
        previous = self._last.get(key)
        self._last[key] = (counters, now, generation)
        if previous is None or previous[2] != generation:
            return {}
        last_counters, last_time, _ = previous
        elapsed = now - last_time
        rates = self._usual_rates(counters, last_counters, elapsed, max_per_second)
        if rates is not None:
            return rates
        rates = {}
        found: List[Discontinuity] = []
        for name in self.names:
            value = counters.get(name)
            if value is not None:
                last = last_counters.get(name)
                per_second = rate(last, value, elapsed, max_per_second)
                if per_second is not None:
                    rates[name] = per_second
                if elapsed > 0 and last is not None and (per_second is None or value < last):  # unusual only
                    kind = discontinuity(last, value, per_second)
                    if kind is not None:
                        found.append((name, last, value, kind))
        if found and self.on_discontinuity is not None:
            self.on_discontinuity(key, sorted(found))
        return rates

    def _usual_rates(self, counters: Mapping[str, int], last_counters: Mapping[str, int], elapsed: float,
                     max_per_second: Optional[float]) -> Optional[Dict[str, float]]:
        """The rates when every counter is there both times and grew by what the port could carry (what
        :func:`rate` gives then, in C-level passes); None otherwise, for the loop that looks at each."""
        names = self._names
        values = list(map(counters.get, names))
        lasts = list(map(last_counters.get, names))
        if not (names and elapsed > 0) or None in values or None in lasts:
            return None
        deltas = list(map(sub, values, lasts))
        if min(deltas) < 0 or (max_per_second is not None and max(deltas) > max_per_second * elapsed):
            return None
        rates = dict(zip(names, map(truediv, deltas, repeat(elapsed))))
        return rates if max(rates.values()) < math.inf else None

    def forget(self, keep: Container[Hashable]) -> None:
        """Drop every port not in ``keep`` (devices that went away), so memory stays bounded."""
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
