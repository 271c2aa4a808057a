"""Rates come from elapsed monotonic time, so scheduling jitter does not bend them."""
import random

import pytest
from conftest import port_key

from otel_efa.pipeline.rates import RateTracker, rate


def test_rate_tracker_rules():
    tracker = RateTracker(["n"])
    assert tracker.update("k", {"n": 100}, 10.0) == {}  # first sample
    assert tracker.update("k", {"n": 300, "other": 1}, 12.0) == {"n": 100.0}  # only the named counters
    assert tracker.update("k", {"n": 50}, 13.0) == {}  # went down: a reset, no negative rate
    assert tracker.update("k", {"n": 150}, 14.0) == {"n": 100.0}
    assert tracker.update("k", {"n": 250}, 15.0, generation=2) == {}  # the device came back
    assert tracker.update("k", {"n": 250}, 15.0, generation=2) == {}  # no time elapsed
    assert tracker.update("k", {}, 16.0, generation=2) == {}  # counter unreadable this time
    tracker.forget(set())
    assert tracker.update("k", {"n": 999}, 20.0, generation=2) == {}


U64 = 1 << 64
LINE = 12.5e9  # 100 Gb/s in bytes per second
LIMIT = 2 * LINE  # what the collector passes: twice the line rate


def test_u64_wrap_gives_the_true_rate():
    """From 1000 short of 2**64 to 4000 past it in one second at 5000 B/s: a wrap, 5000 per second."""
    assert rate(U64 - 1000, 4000, 1.0, LIMIT) == 5000.0
    assert rate(U64 - 1, 0, 0.5, LIMIT) == 2.0  # exactly onto 0: one count in half a second
    fastest = int(LIMIT * 0.25)  # at the limit, over a 0.25 s interval
    assert rate(U64 - fastest // 2, fastest // 2, 0.25, LIMIT) == pytest.approx(LIMIT)
    tracker = RateTracker(["n"])
    tracker.update("k", {"n": U64 - 10 * 1000}, 0.0, max_per_second=LIMIT)
    assert tracker.update("k", {"n": 10 * 1000}, 2.0, max_per_second=LIMIT) == {"n": 10_000.0}


def test_reset_is_never_read_as_a_wrap():
    """A reset from anywhere in the lower half, or from further below 2**64 than the port could have
    carried since the last read, gives no rate (the old value is gone; a wrap reading would be a spike)."""
    assert rate(5_000_000, 1000, 1.0, LIMIT) is None  # the common reset: low counter, driver reload
    assert rate((1 << 63) - 1, 0, 1e9, LIMIT) is None  # lower half, however long the gap
    assert rate(U64 - int(LIMIT) - 1, 0, 1.0, LIMIT) is None  # one more than a second at twice line rate
    assert rate(U64 - 1000, 0, 1.0) is None  # no limit given: every decrease is a reset
    assert rate(U64 - 1000, 5, 0.0, LIMIT) is None  # no time elapsed


def test_jump_no_link_can_carry_gives_no_rate():
    """A counter that leaps (set by hand, a glitch) is not traffic: no rate rather than a 1e19 spike."""
    assert rate(1_000_000, U64 - 1, 0.3, LIMIT) is None
    assert rate(1_000_000, 1_000_000 + int(LIMIT), 1.0, LIMIT) == LIMIT  # the limit itself is fine
    assert rate(1_000_000, U64 - 1, 0.3) == pytest.approx((U64 - 1 - 1_000_000) / 0.3)  # no limit known
    seen = []
    tracker = RateTracker(["n", "m", "p"], on_discontinuity=lambda key, found: seen.append((key, found)))
    tracker.update("k", {"n": 100, "m": U64 - 10, "p": 5}, 0.0, max_per_second=LIMIT)
    assert tracker.update("k", {"n": 50, "m": 10, "p": U64 - 1}, 1.0, max_per_second=LIMIT) == {"m": 20.0}
    assert seen == [("k", [("m", U64 - 10, 10, "wrap"), ("n", 100, 50, "reset"), ("p", 5, U64 - 1, "jump")])]


def test_wrap_rule_never_gives_a_spike():
    """Whatever two u64 values and interval: the rate is None or within [0, the limit]."""
    import random

    pick = random.Random(8)
    for _ in range(20_000):
        previous = pick.choice([pick.randrange(U64), U64 - 1 - pick.randrange(1 << 40)])
        value = pick.choice([pick.randrange(U64), pick.randrange(1 << 40), previous + pick.randrange(1 << 36)])
        elapsed = pick.choice([0.25, 1.0, 60.0, pick.uniform(1e-6, 3600)])
        per_second = rate(previous, value, elapsed, LIMIT)
        if per_second is not None:
            assert 0 <= per_second <= LIMIT, (previous, value, elapsed)
        if previous <= value <= previous + LIMIT * elapsed:
            assert per_second == (value - previous) / elapsed


def test_rates_within_half_a_percent_under_jitter(make_simulator, make_pipeline):
    """1 s nominal interval, collections 0.7..1.3 s apart: the rate must follow the elapsed time.

    The simulator and the collector share one monotonic clock that the test moves (as the hardware's
    counters and the agent share the node's), so the simulator writes its counters at the instant the
    collector is handed, and the only thing under test is that rates divide by elapsed time, not the
    nominal interval.
    """
    sampled_at = [1000.0]
    sim = make_simulator("p5en.48xlarge", gbps=800, clock=lambda: sampled_at[0])
    pipeline = make_pipeline(sim.root, "p5en.48xlarge", clock=lambda: sampled_at[0])
    sim.advance()
    pipeline.collect()
    jitter = random.Random(7)
    for _ in range(4):
        sampled_at[0] += jitter.uniform(0.7, 1.3)
        sim.advance()  # the counters move with the monotonic clock, as the hardware's do
        points = pipeline.collect()
        for device in sim.device_names:
            expected = sim.expected_rate(device, "rx_bytes")
            assert points[port_key("efa_rx_throughput", device)] == pytest.approx(expected, rel=0.005)
            assert points[port_key("efa_tx_pkts_rate", device)] == pytest.approx(
                sim.expected_rate(device, "tx_pkts"), rel=0.005)
