"""Rates come from elapsed monotonic time, so scheduling jitter does not bend them."""
import random
import time

import pytest

from otel_efa.rates import RateTracker

from conftest import port_key


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


def test_rates_within_half_a_percent_under_jitter(make_simulator, make_pipeline):
    """1 s nominal interval, real sleeps of 0.7..1.3 s: the rate must follow the real elapsed time.

    The simulator writes its counters at a monotonic instant and the collector is handed that same
    instant, so the only thing under test is that rates divide by elapsed time, not the nominal interval.
    """
    sim = make_simulator("p5en.48xlarge", gbps=800)
    pipeline = make_pipeline(sim.root, "p5en.48xlarge")
    sampled_at = [time.monotonic()]
    pipeline.collector._clock = lambda: sampled_at[0]
    sim.advance(sampled_at[0])
    pipeline.collect()
    jitter = random.Random(7)
    for _ in range(4):
        time.sleep(jitter.uniform(0.7, 1.3))
        sampled_at[0] = time.monotonic()
        sim.advance(sampled_at[0])  # the counters move with the monotonic clock, as the hardware's do
        points = pipeline.collect()
        for device in sim.device_names:
            expected = sim.expected_rate(device, "rx_bytes")
            assert points[port_key("efa_rx_bytes_rate", device)] == pytest.approx(expected, rel=0.005)
            assert points[port_key("efa_tx_pkts_rate", device)] == pytest.approx(
                sim.expected_rate(device, "tx_pkts"), rel=0.005)
