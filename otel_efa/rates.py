"""Per-second rates from counter deltas over elapsed monotonic time.

A rate needs two samples of the same port and device generation. The first sample, a counter that went
down (a reset, or a u64 wrap, which cannot be told apart from one), and a device that came back all give
no rate for that interval instead of a negative number or a spike.
"""
import math
from typing import Dict, FrozenSet, Hashable, Iterable, Mapping, Optional, Tuple


def rate(previous: Optional[int], value: int, elapsed: float) -> Optional[float]:
    """Per second, or None. ``not elapsed > 0`` also refuses a NaN elapsed time; a delta over a
    vanishingly small elapsed time can overflow to infinity, which is no rate either."""
    if previous is None or value < previous or not elapsed > 0:
        return None
    per_second = (value - previous) / elapsed
    return per_second if per_second < math.inf else None


class RateTracker:
    """Keeps the last counters of each port and gives the rates of the counters in ``names``."""

    def __init__(self, names: Iterable[str]):
        self.names: FrozenSet[str] = frozenset(names)
        self._last: Dict[Hashable, Tuple[Mapping[str, int], float, int]] = {}

    def update(self, key: Hashable, counters: Mapping[str, int], now: float,
               generation: int = 0) -> Dict[str, float]:
        """Record this port's ``counters`` read at monotonic ``now``; the rates since the last read."""
        previous = self._last.get(key)
        self._last[key] = (counters, now, generation)
        if previous is None or previous[2] != generation:
            return {}
        last_counters, last_time, _ = previous
        elapsed = now - last_time
        rates = {}
        for name in self.names:
            value = counters.get(name)
            if value is not None:
                per_second = rate(last_counters.get(name), value, elapsed)
                if per_second is not None:
                    rates[name] = per_second
        return rates

    def forget(self, keep) -> None:
        """Drop every port not in ``keep`` (devices that went away), so memory stays bounded."""
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
