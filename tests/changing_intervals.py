"""Intervals whose series change from one to the next, for the tests of the encoders' cached templates
(tests/test_otlp_encoder.py, tests/test_prometheus_text.py)."""
from typing import List

from otel_efa import catalog
from otel_efa.pipeline.interval import Interval, same_series
from otel_efa.pipeline.snapshot import Snapshot


def intervals_with_changing_series() -> List[Interval]:
    """Intervals as the agent loop hands them on, through what makes an encoder's cached layout stale: a
    metric that comes and goes, attributes equal but not the same objects, a counter above int64 and back, a
    gauge that is NaN, infinite or an int, a device's attributes grown (the same number of series), a device
    gone, an earlier set of series again, and nothing at all."""
    rx, throughput, imbalance = (catalog.BY_NAME[n] for n in
                                 ("efa_rx_bytes", "efa_rx_throughput", "efa_node_rail_imbalance_ratio"))
    specs = (rx, throughput, imbalance)
    latest: List[Interval] = []
    a, b, c = ({catalog.ATTR_DEVICE: f"rdmap{i}s0", catalog.ATTR_PORT: "1"} for i in range(3))
    node = {catalog.ATTR_SLURM_JOB: "7,8"}
    grown = {**c, catalog.ATTR_ENI: "eni-1"}  # its ENI id resolved: the same series count, new attributes

    def interval(second, *metrics):
        snapshot = Snapshot(monotonic=float(second), wall_time=1.7e9 + second, devices=(), read_errors={},
                            collections=second, duration=0.001)
        found = tuple((spec, tuple(points)) for spec, points in metrics)
        version = latest[-1].series_version if latest else 0
        if not latest or not same_series(latest[-1].metrics, found):
            version += 1  # as the instrumentor numbers them
        latest.append(Interval(snapshot, found, version, specs))
        return latest[-1]

    first = interval(1, (rx, [(a, 5), (b, 2 ** 40), (c, 0)]), (throughput, [(a, 1.5), (b, 0.0), (c, 1e-300)]),
                  (imbalance, [(node, 1.25)]))
    return [
        first,
        interval(2, (rx, [(a, 6), (b, 2 ** 40 + 9), (c, 1)]), (throughput, [(a, 2.5), (b, 1.0), (c, 3.25)])),
        interval(3, (rx, [(a, 7), (b, 2 ** 64 - 1), (c, 2)]), (throughput, [(a, 2.5), (b, 1.0), (c, 3.25)]),
              (imbalance, [(dict(node), 2.0)])),
        interval(4, (rx, [(a, 8), (b, 3), (c, 2 ** 63 - 1)]),
              (throughput, [(a, float("nan")), (b, float("inf")), (c, -float("inf"))]),
              (imbalance, [(dict(node), 1.0)])),
        interval(5, (rx, [(a, 9), (b, 4), (c, 3)]), (throughput, [(a, 1.0), (b, 2), (c, 3)]),
              (imbalance, [(dict(node), 1.0)])),
        interval(6, (rx, [(a, 10), (b, 5), (grown, 4)]), (throughput, [(a, 1.0), (b, 2.0), (grown, 3.0)]),
              (imbalance, [(node, 1.0)])),
        interval(7, (rx, [(a, 11), (grown, 5)]), (throughput, [(a, 0.5)])),
        interval(8, *((spec, [(attributes, value + 1) for attributes, value in points])
                   for spec, points in first.metrics)),
        interval(9),
    ]
