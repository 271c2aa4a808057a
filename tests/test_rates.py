"""Rates come from elapsed monotonic time, so scheduling jitter does not bend them."""
import random
import time

import pytest

from otel_efa.rates import RateTracker

from conftest import port_key


def test_rate_tracker_rules():
    tracker = RateTracker()
    assert tracker.update("k", 100, 10.0) is None  # first sample
    assert tracker.update("k", 300, 12.0) == 100.0
    assert tracker.update("k", 50, 13.0) is None  # went down: a reset, no negative rate
    assert tracker.update("k", 150, 14.0) == 100.0
    assert tracker.update("k", 250, 15.0, generation=2) is None  # the device came back
    assert tracker.update("k", 250, 15.0, generation=2) is None  # no time elapsed
    tracker.forget(set())
    assert tracker.update("k", 999, 20.0, generation=2) is None


def test_rates_within_half_a_percent_under_jitter(make_simulator, make_pipeline):
    """1 s nominal interval, real sleeps of 0.7..1.3 s: the rate must follow the real elapsed time."""
    sim = make_simulator("p5en.48xlarge", gbps=800)
    pipeline = make_pipeline(sim.root, "p5en.48xlarge")
    sim.advance()
    pipeline.collect()
    jitter = random.Random(7)
    for _ in range(4):
        time.sleep(jitter.uniform(0.7, 1.3))
        sim.advance()  # the counters move with the monotonic clock, as the hardware's do
        points = pipeline.collect()
        for device in sim.device_names:
            expected = sim.expected_rate(device, "rx_bytes")
            assert points[port_key("efa_rx_bytes_rate", device)] == pytest.approx(expected, rel=0.005)
            assert points[port_key("efa_tx_pkts_rate", device)] == pytest.approx(
                sim.expected_rate(device, "tx_pkts"), rel=0.005)
