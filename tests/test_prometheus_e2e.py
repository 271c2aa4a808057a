"""A real Prometheus server scrapes the agent on simulated nodes.

Two agents: one scraped at its collection interval (0.5 s) for accuracy, one scraped 12.5 times per
collection interval with a second OTel reader attached, to show sysfs is read once per interval.
"""
import threading
import time

import pytest
from conftest import free_port
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_server import PrometheusServer
from waiting import wait_until

from otel_efa import catalog
from otel_efa.config import Config, PrometheusConfig
from otel_efa.node.sysfs import SysfsReader

RX_BYTES = catalog.BY_NAME["efa_rx_bytes"].prometheus_name
TX_PKTS = catalog.BY_NAME["efa_tx_pkts"].prometheus_name
RX_RATE = catalog.BY_NAME["efa_rx_throughput"].prometheus_name
ACCURACY_INTERVAL = 0.5  # scraped at the same period: a rate window of 16 scrapes, a gauge average of 10
FAST_INTERVAL = 1.25
FAST_WINDOW_S = 5  # 50 scrapes of the fast job, 4 or 5 of its reads
LONGEST_WINDOW_S = 8  # the longest range the tests below query


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """Both agents, their simulators, and one Prometheus scraping them; yields once data is in."""
    from conftest import RunningAgent

    from otel_efa.tools.simulator import Simulator

    reads = {}
    real_read = SysfsReader.read

    def counting_read(reader):  # a spy: the real read runs, and is counted per reader
        reads.setdefault(id(reader), []).append(time.monotonic())
        return real_read(reader)

    SysfsReader.read = counting_read
    sims, agents = [], []
    ports = []
    for index, interval in enumerate((ACCURACY_INTERVAL, FAST_INTERVAL)):
        root = tmp_path_factory.mktemp(f"node{index}")
        sim = Simulator("p4d.24xlarge", str(root), gbps=200)
        sims.append(sim)
        port = free_port()
        ports.append(port)
        config = Config(interval=interval, sysfs=str(root), instance_type="p4d.24xlarge",
                        exporters=["prometheus"], prometheus=PrometheusConfig(f"127.0.0.1:{port}"))
        extra = [InMemoryMetricReader()] if index == 1 else []
        agents.append(RunningAgent(config, metric_readers=extra))
    running = [sim.start(tick=0.005) for sim in sims]
    stop_polling = threading.Event()
    polls = {"count": 0}

    def poll_second_reader():
        while not stop_polling.wait(0.1):
            agents[1].agent._extra_readers[0].get_metrics_data()
            polls["count"] += 1

    poller = threading.Thread(target=poll_second_reader, daemon=True)
    poller.start()
    prometheus = PrometheusServer([
        {"job_name": "accuracy", "scrape_interval": f"{ACCURACY_INTERVAL * 1000:.0f}ms", "static_configs": [{"targets": [f"127.0.0.1:{ports[0]}"]}]},
        {"job_name": "fast", "scrape_interval": "100ms", "static_configs": [{"targets": [f"127.0.0.1:{ports[1]}"]}]},
    ], free_port())
    try:
        prometheus.wait_for(f'{RX_BYTES}{{job="accuracy"}}', count=4)
        # The tests' windows hold a whole window of scrapes once each job's first scrape is older than
        # the longest of them: the newest sample's timestamp now is no earlier than that first scrape.
        first = max(float(r["value"][1]) for r in prometheus.query('timestamp(up{job=~"accuracy|fast"})'))
        wait_until(lambda: time.time() - first > LONGEST_WINDOW_S + 1, 60,
                   f"{LONGEST_WINDOW_S + 1} s of scrapes since the first", every=0.25)
        yield {"sims": sims, "agents": agents, "prometheus": prometheus, "reads": reads, "polls": polls}
    finally:
        stop_polling.set()
        prometheus.stop()
        for agent in agents:
            agent.stop()
        for run in running:
            run.stop()
        for sim in sims:
            sim.close()
        SysfsReader.read = real_read


def test_promql_rate_matches_ground_truth(node):
    sim, prometheus = node["sims"][0], node["prometheus"]
    rates = prometheus.values(f'rate({RX_BYTES}{{job="accuracy"}}[8s])', "aws_efa_device")
    packets = prometheus.values(f'rate({TX_PKTS}{{job="accuracy"}}[8s])', "aws_efa_device")
    assert set(rates) == set(sim.device_names) == set(packets)
    for device in sim.device_names:
        assert rates[device] == pytest.approx(sim.expected_rate(device, "rx_bytes"), rel=0.02)
        assert packets[device] == pytest.approx(sim.expected_rate(device, "tx_pkts"), rel=0.02)


def test_rate_gauges_match_ground_truth(node):
    sim, prometheus = node["sims"][0], node["prometheus"]
    gauges = prometheus.values(f'avg_over_time({RX_RATE}{{job="accuracy"}}[5s])', "aws_efa_device")
    assert set(gauges) == set(sim.device_names)
    for device in sim.device_names:
        assert gauges[device] == pytest.approx(sim.expected_rate(device, "rx_bytes"), rel=0.02)


def test_sysfs_read_once_per_interval_whatever_the_scrapes(node):
    prometheus, agent = node["prometheus"], node["agents"][1].agent
    read_times = node["reads"][id(agent.collector.reader)]
    collections = agent.collector.latest.collections
    assert len(read_times) in (collections, collections + 1)  # every read is a collection
    scrapes = prometheus.values(f'count_over_time(up{{job="fast"}}[{FAST_WINDOW_S}s])', "job")["fast"]
    reads = sum(1 for t in read_times if t >= time.monotonic() - FAST_WINDOW_S)
    assert reads <= FAST_WINDOW_S / FAST_INTERVAL + 1
    assert scrapes >= 8 * reads, (scrapes, reads)
    assert node["polls"]["count"] >= 8 * len(read_times)
