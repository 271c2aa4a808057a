"""The head node's path, for real: the Prometheus config `otel-efa collector-config head-node` prints, a
real Prometheus (Debian's) loading it and the generated alert rules, scraping a simulated compute node's
agent (:9464, a process), DCGM exporter (:9400) and node exporter (:9100); then the Grafana dashboard's
and the rules' queries run against what it stored.

Peers: the agent and Prometheus and node exporter are the real programs. Stand-ins only at the
AWS/hardware boundary: the simulator writes the EFA sysfs tree; tests/dcgm_stand_in.py serves
dcgm-exporter 4.x's default page (no GPUs here); EC2 service discovery is replaced by file_sd targets on
127.0.0.1 carrying the ``__meta_ec2_*`` labels EC2 SD would set, so the config's relabel_configs run
unchanged. Everything runs in a network namespace with only loopback (tests/netns.py), so the fixed
ports are this test's own and nothing can leave the machine.

What the config is changed in, and only that: ``ec2_sd_configs`` -> ``file_sd_configs`` (same port), and
the global scrape/evaluation interval 60 s -> 1 s (so the run takes seconds); the rules' rate window is
10 s for the same reason.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

import promql_checks
from dcgm_stand_in import DcgmExporterStandIn
from netns import isolated_network
from node_exporter_server import NodeExporter
from otel_efa.alarms import prometheus_rules
from otel_efa.dashboards import grafana
from otel_efa.promql import DEVICE
from prometheus_server import PrometheusServer

pytestmark = pytest.mark.collector

INSTANCE_ID = "i-0123456789abcdef0"
INSTANCE_TYPE = "p4d.24xlarge"
CLUSTER = "hpc-demo"
AGENT_PORT, DCGM_PORT, NODE_EXPORTER_PORT, PROMETHEUS_PORT = 9464, 9400, 9100, 9090
WINDOW = "10s"  # the rules' rate window here: 1 s scrapes fill it in seconds
EC2_META = {"__meta_ec2_instance_id": INSTANCE_ID, "__meta_ec2_instance_type": INSTANCE_TYPE,
            "__meta_ec2_tag_parallelcluster_cluster_name": CLUSTER,
            "__meta_ec2_tag_parallelcluster_node_type": "Compute"}


def poll(check, what: str, timeout: float = 30.0, every: float = 0.2):
    """check() until it returns something truthy; fail naming ``what`` and the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {value!r})")
        time.sleep(every)


def head_node_scrape_configs(sd_dir: Path) -> List[dict]:
    """The shipped head-node config's scrape jobs, EC2 SD swapped for file_sd on loopback; relabeling kept."""
    printed = subprocess.run([sys.executable, "-m", "otel_efa", "collector-config", "head-node"], check=True,
                             capture_output=True, text=True).stdout
    jobs = yaml.safe_load(printed)["scrape_configs"]
    for job in jobs:
        (ec2,) = job.pop("ec2_sd_configs")
        targets = sd_dir / f"{job['job_name']}.json"
        targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{ec2['port']}"], "labels": EC2_META}]))
        job["file_sd_configs"] = [{"files": [str(targets)]}]
    return jobs


class HeadNode:
    """One compute node (simulated EFA, the agent, DCGM and node exporter) and the head node's Prometheus."""

    def __init__(self, base: Path, simulator):
        self.simulator = simulator
        self.running = simulator.start(0.05)
        gpus = sorted({gpu for device in simulator.declared_topology().values() for gpu in device.gpus})
        self.dcgm = DcgmExporterStandIn(gpus, port=DCGM_PORT)
        self.node_exporter = NodeExporter(simulator.root, NODE_EXPORTER_PORT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
        env.update(AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1")
        self.agent_log = base / "agent.stderr"
        with open(self.agent_log, "w") as stderr:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "otel_efa", "run", "--sysfs", simulator.root, "--instance-type",
                 INSTANCE_TYPE, "--interval", "1", "--exporters", "prometheus",
                 "--prometheus-address", f"127.0.0.1:{AGENT_PORT}"], env=env, stdout=subprocess.DEVNULL,
                stderr=stderr)
        self.rules = base / "rules.yml"
        self.rules.write_text(yaml.safe_dump(prometheus_rules.rule_file(window=WINDOW), sort_keys=False))
        self.prometheus = PrometheusServer(head_node_scrape_configs(base), PROMETHEUS_PORT,
                                           rule_files=[str(self.rules)])

    def query(self, expr: str) -> list:
        return promql_checks.query(self.prometheus.url, expr)

    def stop(self) -> None:
        if self.agent.poll() is None:
            self.agent.terminate()
            self.agent.wait(10)
        self.prometheus.stop()
        self.node_exporter.stop()
        self.dcgm.stop()
        self.running.stop()


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    from otel_efa.simulator import Simulator

    base = tmp_path_factory.mktemp("head-node")
    (base / "sys").mkdir()
    with isolated_network():
        simulator = Simulator(INSTANCE_TYPE, str(base / "sys"))
        node = None
        try:
            node = HeadNode(base, simulator)
            # Every job scraped, and the agent's counters held for longer than the rules' window.
            poll(lambda: len(node.query("up == 1")) == 3, "all three jobs up")
            poll(lambda: node.query(f"count_over_time({grafana.promql.name('otel_efa_collections')}[1m]) > 12"),
                 "12 s of the agent's samples")
            yield node
        finally:
            if node:
                node.stop()
            simulator.close()


def _queries() -> List[tuple]:
    return promql_checks.dashboard_queries(grafana.dashboard())


def _rules() -> Dict[str, str]:
    return dict(promql_checks.alert_rules(prometheus_rules.rule_file(window=WINDOW)))


def test_every_metric_the_dashboard_and_rules_use_exists(head_node):
    """Every name exists, except counters this node's devices do not have: the rdma_write_* group exists
    only on EFA v2 and later (p4d is v1), which the dashboard reads as optional (counted as 0)."""
    names = set()
    for _, expr in _queries() + list(_rules().items()):
        names |= promql_checks.metric_names(expr)
    missing = sorted(n for n in names if not head_node.query(f'count({{__name__="{n}"}})'))
    device = head_node.simulator.device_names[0]
    absent_here = sorted(grafana.promql.counter(k) for k in ("rdma_write_wr_err",)
                         if not os.path.exists(head_node.simulator.path_of(device, k)))
    assert absent_here == ["efa_rdma_write_wr_err_total"], "p4d.24xlarge's devices should lack rdma_write_*"
    assert missing == absent_here, f"no series named {sorted(set(missing) - set(absent_here))}"


def test_every_dashboard_query_returns_series(head_node):
    """Counters with known label values exist at 0 from the first collection, so even the error panels
    have a series on a healthy node."""
    empty = [f"{title}: {expr}" for title, expr in _queries() if not head_node.query(expr)]
    assert not empty, "no data:\n" + "\n".join(empty)


def test_efa_gpu_and_node_series_share_the_node_labels(head_node):
    node = {(CLUSTER, INSTANCE_ID)}
    for selector in ("up", grafana.promql.name("efa_port_up"), grafana.promql.DCGM_GPU_UTIL):
        got = {(r["metric"].get("cluster"), r["metric"].get("instance"))
               for r in head_node.query(f"count by (cluster, instance) ({selector})")}
        assert got == node, selector
    jobs = {r["metric"]["job"] for r in head_node.query("up == 1")}
    assert jobs == {"otel-efa", "dcgm-exporter", "node-exporter"}
    # The variables list this cluster and node, and the node's devices.
    variables = dict(_queries())
    assert [r["metric"]["cluster"] for r in head_node.query(variables["variable cluster"])] == [CLUSTER]
    assert [r["metric"]["instance"] for r in head_node.query(variables["variable instance"])] == [INSTANCE_ID]
    devices = {r["metric"][DEVICE] for r in head_node.query(variables["variable device"])}
    assert devices == set(head_node.simulator.device_names)


def test_query_reports_what_prometheus_rejects(head_node):
    with pytest.raises(AssertionError, match="bad_data"):
        head_node.query("sum(")


def _firing(node: HeadNode, alert: str) -> List[Dict[str, str]]:
    return [r["metric"] for r in node.query(_rules()[alert])]


def _expect(node: HeadNode, alert: str, **labels: str) -> None:
    """The alert's expression returns exactly one series, carrying ``labels``."""
    want = dict(labels, cluster=CLUSTER, instance=INSTANCE_ID)

    def matches():
        series = _firing(node, alert)
        return series if len(series) == 1 and all(series[0].get(k) == v for k, v in want.items()) else None

    poll(matches, f"{alert} with {want}", timeout=30)


def test_alerts_quiet_when_healthy_and_firing_on_each_fault(head_node):
    """Healthy: no alert expression returns anything. Then one fault at a time, each alert's expression
    returns its series. Stops the agent at the end (module's last test).

    EfaAgentStalled (the agent answers but its collection loop is stuck) has no fault a real agent can be
    put in from outside; its firing is covered by the promtool cases only (tests/test_alert_rules.py)."""
    node = head_node
    quiet = {alert: _firing(node, alert) for alert in _rules()}
    assert not {a: s for a, s in quiet.items() if s}, "alerts on a healthy node"
    sim = node.simulator
    down, slow, events, gone = sim.device_names[:4]

    sim.set_port_state(down, "1: DOWN")
    _expect(node, "EfaPortDown", **{DEVICE: down})

    sim.set_device_level(slow, 0.05)
    _expect(node, "EfaDeviceImbalance", **{DEVICE: slow})

    for alert, kernel_name, _ in prometheus_rules.SRD_EVENTS:
        sim.set_value(events, kernel_name, sim.value(events, kernel_name) + 1)
        _expect(node, alert, **{DEVICE: events})
    sim.set_value(events, "retrans_pkts", sim.value(events, "retrans_pkts") + 50_000_000)
    _expect(node, "EfaRetransmitRatioHigh", **{DEVICE: events})

    sim.remove_device(gone)
    _expect(node, "EfaDevicesMissing")

    assert not _firing(node, "EfaAgentDown") and not _firing(node, "EfaAgentAbsent")
    node.agent.terminate()
    node.agent.wait(10)
    _expect(node, "EfaAgentDown")  # staleness: the scrape fails, the node's DCGM and node exporter still answer
    poll(lambda: node.query(_rules()["EfaAgentAbsent"]), "EfaAgentAbsent")
