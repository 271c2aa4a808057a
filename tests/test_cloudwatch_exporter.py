"""The CloudWatch exporter against moto in server mode (real HTTP), behind a fault-injecting proxy.

The node is simulated; the data path is the agent's own (simulator tree -> SysfsReader -> Collector ->
CloudWatchExporter), driven on a controlled clock so every rate has an exact ground truth, or the whole
agent as a subprocess (SIGTERM). Nothing is mocked.
"""
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from aws_peers import NAMESPACE, QUICK_START_NAMES, cloudwatch, config_with, moto, node, proxy, statistics  # noqa: F401
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from waiting import wait_until


def test_the_quick_starts_queries_return_the_simulated_rate(proxy, moto, node):
    """list-metrics and get-metric-statistics with exactly the quick-start's parameters."""
    instance_id = "i-0a1b2c3d4e5f60001"
    n = node(config_with(batch_size=3), instance_id, gbps=100.0)
    for _ in range(7):  # the first collection gives totals only; six minutes of rates follow
        n.step(60)
    assert n.exporter.flush(10)

    client = cloudwatch(moto)
    listed = client.list_metrics(Namespace=NAMESPACE)["Metrics"]
    mine = [m for m in listed if m["Dimensions"] == [{"Name": "InstanceId", "Value": instance_id}]]
    assert sorted(m["MetricName"] for m in mine) == sorted(QUICK_START_NAMES)

    # aws cloudwatch get-metric-statistics --namespace ParallelCluster/Network --metric-name rx_bytes_rate
    #   --dimensions Name=InstanceId,Value=... --period 60 --statistics Average (one hour window)
    points = statistics(client, instance_id, "rx_bytes_rate", ["Average"])
    expected = n.node_rate("rx_bytes")
    assert expected == pytest.approx(100e9 / 8)
    assert len(points) == 6
    for point in points:
        assert point["Average"] == pytest.approx(expected, rel=0.01)
        assert point["Unit"] == "Bytes/Second"
    packets = statistics(client, instance_id, "tx_packets_rate", ["Average"])
    assert [p["Average"] for p in packets] == pytest.approx([n.node_rate("tx_pkts")] * 6, rel=0.01)
    # Cumulative error counts are the kernel totals of the last collection in each minute.
    n.sim.set_value(n.sim.device_names[0], "rx_drops", 41)
    n.step(60)
    assert n.exporter.flush(10)
    last = statistics(client, instance_id, "rx_errors", ["Maximum"])[-1]
    assert last["Maximum"] == 41 and last["Unit"] == "Count"


def check_limits(call) -> None:
    """PutMetricData's documented limits, which moto does not enforce."""
    data = call.payload["MetricData"]
    assert len(data) <= 1000
    assert call.body_bytes <= 1_000_000
    now = time.time()
    for datum in data:
        assert len(datum.get("Dimensions", [])) <= 30
        assert datum.get("StorageResolution", 60) in (1, 60)
        assert now - 14 * 86400 < datum["Timestamp"] < now + 7200
        assert ("Value" in datum) != ("Values" in datum)
        values = datum.get("Values", [datum.get("Value")])
        assert len(values) <= 150 and len(set(values)) == len(values)
        assert all(math.isfinite(v) for v in values)
        if "Counts" in datum:
            assert len(datum["Counts"]) == len(datum["Values"])


def test_calls_respect_the_limits_and_are_as_few_as_possible(proxy, moto, node):
    """p5.48xlarge (32 devices) with per-device dimensions and health events: 9 metrics x 33 series."""
    instance_id = "i-0limits000000001"
    config = config_with(batch_size=6, dimension_sets=["instance", "device"], health_events=True)
    n = node(config, instance_id, profile="p5.48xlarge")
    n.step(60)
    assert n.exporter.flush(10)
    before = len(proxy.puts())
    for _ in range(6):
        n.step(60)
    assert len(proxy.puts()) == before  # nothing is sent before the batch is complete
    assert n.exporter.flush(10)
    calls = proxy.puts()[before:]
    series = 1 + 32
    datums = 9 * series * 6  # nine metrics, each node total + per device, six one-minute samples
    assert sum(len(c.payload["MetricData"]) for c in calls) == datums
    assert len(calls) == math.ceil(datums / 1000) == 2
    for call in calls:
        check_limits(call)
        assert call.gzipped  # botocore compresses bodies above 10 KiB
    # Per-device values add up to the node total the quick-start's dimension shows.
    client = cloudwatch(moto)
    device = n.sim.device_names[3]
    per_device = statistics(client, instance_id, "rx_bytes_rate", ["Average"],
                            [{"Name": "InstanceId", "Value": instance_id}, {"Name": "EfaDevice", "Value": device}])
    assert [p["Average"] for p in per_device] == pytest.approx([n.sim.expected_rate(device, "rx_bytes")] * 6)


def test_many_samples_per_minute_fold_into_values_arrays_within_limits(proxy, moto, node):
    """200 collections in one minute: Values/Counts (150 at most per datum), 1 MB per call respected."""
    instance_id = "i-0folding00000001"
    config = config_with(batch_size=200, dimension_sets=["instance", "device"], health_events=True)
    n = node(config, instance_id, profile="p5.48xlarge")
    n.step(0.25)
    for i in range(199):
        for d, name in enumerate(n.sim.device_names):  # distinct rates at every step
            n.sim.set_device_level(name, 1.0 + (i * 37 + d) % 101 / 1000)
        n.step(0.25)
    assert n.exporter.flush(20)
    calls = proxy.puts()
    total_bytes = 0
    for call in calls:
        check_limits(call)
        total_bytes += call.body_bytes
    for call in calls[:-1]:  # every call but the last is well filled (no call per metric or per device)
        assert call.body_bytes > 400_000 or len(call.payload["MetricData"]) == 1000
    assert len(calls) <= math.ceil(total_bytes / 400_000)
    # moto matches a dimension filter as a subset (CloudWatch matches exactly), so asking by InstanceId
    # returns the node total and the 32 per-device series together: 33 series.
    point = statistics(cloudwatch(moto), instance_id, "rx_bytes_rate", ["SampleCount"])
    assert sum(p["SampleCount"] for p in point) == 199 * 33  # split datums lose nothing
    errors = statistics(cloudwatch(moto), instance_id, "rx_errors", ["SampleCount"])
    assert sum(p["SampleCount"] for p in errors) == 200 * 33
    assert any(len(d.get("Values", ())) == 150 for c in calls for d in c.payload["MetricData"])


def test_throttling_and_5xx_lose_nothing_and_back_off(proxy, moto, node):
    instance_id = "i-0throttle0000001"
    n = node(config_with(batch_size=2, max_attempts=3), instance_id)
    proxy.fail_next(["throttle", "503"])  # botocore's retries ride this out within one flush
    n.step(60)
    n.step(60)
    assert n.exporter.flush(20)
    first = proxy.puts()
    assert [c.status for c in first] == [400, 503, 200]
    assert [re.search(r"attempt=(\d+)", c.attempt).group(1) for c in first] == ["1", "2", "3"]
    assert first[0].payload == first[1].payload == first[2].payload  # the same call, retried
    # Backed off, not retried at once (~2 ms here). Newer botocore waits the proxy's x-amz-retry-after
    # (200 ms); the release for Python 3.9 draws full-jitter delays (uniform 0..1 s, then 0..2 s), whose
    # sum stays under 10 ms with odds of about 1 in 40,000.
    assert first[2].at - first[0].at >= 0.01

    proxy.fail_next(["503", "503", "503", "503"])  # longer than max_attempts: the buffer keeps it
    n.step(60)
    n.step(60)
    assert not n.exporter.flush(20)
    assert n.exporter.buffered_datapoints == 12
    n.step(60)
    n.step(60)
    assert n.exporter.flush(20)  # one 503 left, then the retry carries the old and the new data
    assert [c.status for c in proxy.puts()[3:]] == [503, 503, 503, 503, 200]
    assert n.exporter.stats.dropped_datapoints == 0

    client = cloudwatch(moto)
    rates = statistics(client, instance_id, "rx_bytes_rate", ["SampleCount", "Average"])
    assert [p["SampleCount"] for p in rates] == [1.0] * 5  # every minute once: none lost, none twice
    assert [p["Average"] for p in rates] == pytest.approx([n.node_rate("rx_bytes")] * 5)
    totals = statistics(client, instance_id, "tx_discards", ["SampleCount"])
    assert [p["SampleCount"] for p in totals] == [1.0] * 6


def test_an_outage_longer_than_the_buffer_drops_the_oldest_and_counts_them(proxy, moto, node):
    instance_id = "i-0outage000000001"
    n = node(config_with(batch_size=1, max_attempts=1, buffer_minutes=5), instance_id)
    reader = InMemoryMetricReader()
    n.instrumentor.instrument(MeterProvider(metric_readers=[reader]))
    proxy.outage = True
    for _ in range(10):
        n.step(60)
        assert not n.exporter.flush(10)
    proxy.outage = False
    assert n.exporter.flush(10)

    newest = n.snapshots[-1].wall_time
    kept = [s for s in n.snapshots if s.wall_time >= newest - 300]
    lost = [s for s in n.snapshots if s.wall_time < newest - 300]
    per_snapshot = {id(s): (2 if s is n.snapshots[0] else 6) for s in n.snapshots}  # first: totals only
    expected_dropped = sum(per_snapshot[id(s)] for s in lost)
    assert len(kept) == 6 and expected_dropped == 20
    assert n.exporter.stats.dropped_datapoints == expected_dropped
    n.instrumentor.interval(n.snapshots[-1])  # the next Interval carries the count, to the instruments too
    dropped_metric = [p.value for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
                      for m in sm.metrics if m.name == "otel_efa_dropped_datapoints" for p in m.data.data_points]
    assert dropped_metric == [expected_dropped]

    client = cloudwatch(moto)
    for name in ("rx_bytes_rate", "rx_errors"):
        points = statistics(client, instance_id, name, ["SampleCount"])
        stamps = [p["Timestamp"].timestamp() for p in points]
        assert stamps == [s.wall_time for s in kept]  # the newest five minutes and a bit, oldest gone
        assert all(p["SampleCount"] == 1 for p in points)  # none duplicated


def test_sigterm_mid_batch_delivers_the_batch(proxy, moto, tmp_path):
    """The agent as a subprocess with a batch it would not complete for minutes; SIGTERM sends it."""
    instance_id = "i-0sigterm00000001"
    log_file = tmp_path / "efa_monitor.log"
    env = dict(os.environ, OTEL_EFA_CLOUDWATCH_BATCH_SIZE="1000",
               OTEL_RESOURCE_ATTRIBUTES=f"host.id={instance_id}", PYTHONUNBUFFERED="1")
    agent = subprocess.Popen(
        [sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge", "--interval", "0.5",
         "--exporters", "cloudwatch,log", "--log-file", str(log_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 5 * 4, 30,
                   "five intervals in the log file (4 with a rate)")
        assert not proxy.puts(), "nothing is sent before the batch completes"
        agent.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        output, _ = agent.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, output.decode()
    assert took < 10
    rated = [line for line in log_file.read_text().splitlines() if "RX=-" not in line]  # the first: no rate
    intervals_with_rates = len(rated) // 4  # p4d: one line per device
    assert intervals_with_rates >= 4
    assert [c.status for c in proxy.puts()] == [200]
    client = cloudwatch(moto)
    rates = statistics(client, instance_id, "rx_bytes_rate", ["SampleCount", "Average"])
    assert sum(p["SampleCount"] for p in rates) == intervals_with_rates
    totals = statistics(client, instance_id, "rx_errors", ["SampleCount"])
    assert sum(p["SampleCount"] for p in totals) == intervals_with_rates + 1
    listed = client.list_metrics(Namespace=NAMESPACE, Dimensions=[{"Name": "InstanceId", "Value": instance_id}])
    assert sorted(m["MetricName"] for m in listed["Metrics"]) == sorted(QUICK_START_NAMES)
    mean = sum(p["Average"] * p["SampleCount"] for p in rates) / intervals_with_rates
    # The simulator's default is 40 % of line rate. Inside the agent process it ticks on its own thread,
    # so each 0.5 s rate carries a tick of jitter; the exact comparison is the quick-start query test's.
    assert mean == pytest.approx(400e9 * 0.4 / 8, rel=0.15)
