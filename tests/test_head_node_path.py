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
from pathlib import Path
from typing import List

import path_checks
import promql_checks
import pytest
import yaml
from dcgm_stand_in import DcgmExporterStandIn
from netns import isolated_network
from node_exporter_server import NodeExporter
from prometheus_server import PrometheusServer
from waiting import wait_until

from otel_efa.artifacts.alarms import prometheus_rules
from otel_efa.artifacts.dashboards import grafana

pytestmark = pytest.mark.collector

INSTANCE_ID = "i-0123456789abcdef0"
INSTANCE_TYPE = "p4d.24xlarge"
CLUSTER = "hpc-demo"
AGENT_PORT, DCGM_PORT, NODE_EXPORTER_PORT, PROMETHEUS_PORT = 9464, 9400, 9100, 9090
WINDOW = "10s"  # the rules' rate window here: 1 s scrapes fill it in seconds
EC2_META = {"__meta_ec2_instance_id": INSTANCE_ID, "__meta_ec2_instance_type": INSTANCE_TYPE,
            "__meta_ec2_tag_parallelcluster_cluster_name": CLUSTER,
            "__meta_ec2_tag_parallelcluster_node_type": "Compute"}


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

    def stop_agent(self) -> None:
        self.agent.terminate()
        self.agent.wait(10)

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
    from otel_efa.tools.simulator import Simulator

    base = tmp_path_factory.mktemp("head-node")
    (base / "sys").mkdir()
    with isolated_network():
        simulator = Simulator(INSTANCE_TYPE, str(base / "sys"))
        node = None
        try:
            node = HeadNode(base, simulator)
            # Every job scraped, and the agent's counters held for longer than the rules' window.
            wait_until(lambda: len(node.query("up == 1")) == 3, 30, "all three jobs up", every=0.2)
            collections = grafana.promql.name("otel_efa_collections")
            wait_until(lambda: node.query(f"count_over_time({collections}[1m]) > 12"), 30,
                       "12 s of the agent's samples", every=0.2)
            yield node
        finally:
            if node:
                node.stop()
            simulator.close()


def test_every_metric_the_dashboard_and_rules_use_exists(head_node):
    path_checks.assert_every_used_metric_exists(head_node, WINDOW)


def test_every_dashboard_query_returns_series(head_node):
    path_checks.assert_every_dashboard_query_returns_series(head_node)


def test_efa_gpu_and_node_series_share_the_node_labels(head_node):
    path_checks.assert_series_share_node_labels(head_node, CLUSTER, INSTANCE_ID)
    jobs = {r["metric"]["job"] for r in head_node.query("up == 1")}
    assert jobs == {"otel-efa", "dcgm-exporter", "node-exporter"}


def test_query_reports_what_prometheus_rejects(head_node):
    with pytest.raises(AssertionError, match="bad_data"):
        head_node.query("sum(")


def test_alerts_quiet_when_healthy_and_firing_on_each_fault(head_node):
    """Stops the agent at the end (the module's last test); EfaAgentDown then fires through staleness:
    the scrape fails while the node's DCGM and node exporter still answer."""
    path_checks.assert_alerts_quiet_then_firing_on_each_fault(head_node, WINDOW, CLUSTER, INSTANCE_ID)
