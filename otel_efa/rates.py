"""Per-second rates from counter deltas over elapsed monotonic time.

A rate needs two samples of the same device generation. The first sample of a counter, a counter that
went down (a reset, or a u64 wrap, which cannot be told apart from one), and a device that came back
all give no rate for that interval instead of a negative number or a spike.
"""
from typing import Dict, Hashable, Optional, Tuple


class RateTracker:
    def __init__(self) -> None:
        self._last: Dict[Hashable, Tuple[int, float, int]] = {}

    def update(self, key: Hashable, value: int, now: float, generation: int = 0) -> Optional[float]:
        """Record ``value`` read at monotonic time ``now``; the rate since the previous sample, if any."""
        previous = self._last.get(key)
        self._last[key] = (value, now, generation)
        if previous is None:
            return None
        last_value, last_time, last_generation = previous
        elapsed = now - last_time
        if last_generation != generation or value < last_value or elapsed <= 0:
            return None
        return (value - last_value) / elapsed

    def forget(self, keep) -> None:
        """Drop every key not in ``keep`` (devices that went away), so memory stays bounded."""
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
