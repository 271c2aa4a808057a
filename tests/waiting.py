"""How tests wait for something to happen: ``wait_until`` polls a readiness probe, never a fixed sleep.

Every test and helper waits through it (servers coming up, exports arriving, log lines, series in a
Prometheus), so a timeout always fails the same way: naming what did not happen and the probe's last answer.
Waiting on an event a peer signals (a ``threading.Condition``) is better still, where the peer has one.
"""
import time
from typing import Callable, Tuple, Type, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "the condition",
               every: float = 0.05, ignoring: Tuple[Type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` every ``every`` seconds until it returns something truthy, and return that.

    ``ignoring``: exceptions that mean "not yet" (``OSError`` while a server starts). After ``timeout``
    seconds, AssertionError naming ``what`` and the last answer (or exception).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = predicate()
        except ignoring as error:
            last = error  # type: ignore[assignment]
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            shown = repr(last)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: "
                                 f"{shown[:300]}{'...' if len(shown) > 300 else ''})")
        time.sleep(every)
