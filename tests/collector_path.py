"""One compute node's telemetry path, for real: the agent -> the test collector (ADOT's components, with
the config ``otel-efa collector-config adot both`` prints) -> Amazon Managed Prometheus and CloudWatch.

Real peers: the collector (``make collector``), Prometheus with its remote-write receiver standing where
AMP stands, behind a gate that verifies each write's SigV4 signature as AMP does (``sigv4_gate``:
``prometheusremotewrite`` signs through ``sigv4auth``), Debian's node exporter on :9100, moto in server mode for CloudWatch Logs (where
``awsemf`` writes its EMF documents). Stand-ins at the AWS boundary only: IMDS on loopback (for the agent
and the collector's ec2 resource detector), the simulator for the EFA hardware, a dcgm-exporter
stand-in on :9400 (no GPU here). Everything runs inside the caller's network namespace
(``netns.isolated_network()``): the config's fixed ports are the test's own and nothing leaves loopback.

The config is changed only where a user changes it too: endpoints (awsemf's ``endpoint``), and intervals
(scrape every second, batch for a second) so that a test sees many exports in seconds.
"""
import json
import os
import sys
from pathlib import Path
from typing import Dict, List

import boto3
from agent_process import AgentProcess
from aws_peers import REGION, Moto
from collector_process import CollectorProcess
from dcgm_stand_in import DcgmExporterStandIn
from fake_imds import FakeImds
from node_exporter_server import NodeExporter
from prometheus_server import PrometheusServer
from sigv4_gate import SigV4Gate

from otel_efa.artifacts import collector_config
from otel_efa.tools.simulator import Simulator

PROFILE = "p4d.24xlarge"
INSTANCE_ID = "i-0c011ec7012345678"
CLUSTER = "e2e-cluster"
LOOKBACK = "10s"
AMP_PORT, PROMETHEUS_PORT, MOTO_PORT, IMDS_PORT = 8080, 9090, 5000, 1338
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
IDENTITY = {"instanceId": INSTANCE_ID, "instanceType": PROFILE, "region": REGION,
            "availabilityZone": f"{REGION}a", "accountId": "123456789012", "imageId": "ami-0e2e0000000000000"}


def test_config(release: str, mode: str = "both") -> dict:
    """The shipped config, with the test's endpoints and one-second intervals."""
    config = collector_config.adot_config(mode)
    for job in config["receivers"].get("prometheus", {}).get("config", {}).get("scrape_configs", []):
        job["scrape_interval"] = "1s"
    config["processors"]["batch"]["timeout"] = "1s"
    if "awsemf" in config["exporters"]:
        config["exporters"]["awsemf"]["endpoint"] = f"http://127.0.0.1:{MOTO_PORT}"
    return config


class NodePath:
    """Every peer of one node's path, started in order and stopped in reverse."""

    def __init__(self, release: str, workdir: Path):
        self.release = release
        self._stops: List = []
        self.imds = self._keep(FakeImds(IDENTITY, port=IMDS_PORT, hostname="ip-10-1-2-3.ec2.internal"))
        self.moto = self._keep(Moto(MOTO_PORT).start())
        self.moto.reset()  # moto keeps its state in the process: the previous path's EMF documents too
        # AMP keeps a pushed series visible for 5 minutes after its last sample (the query lookback); at
        # the test's one-second pace 10 s stand for them, so a stopped agent shows in seconds.
        self.amp = self._keep(PrometheusServer([], PROMETHEUS_PORT, extra_args=[
            "--web.enable-remote-write-receiver", f"--query.lookback-delta={LOOKBACK}"]))
        self.gate = self._keep(SigV4Gate(f"{self.amp.url}/api/v1/write", AMP_PORT, CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                         CREDENTIALS["AWS_SECRET_ACCESS_KEY"], REGION))
        self.simulator = Simulator(PROFILE, str(workdir / "sys"))
        self._stops.append(self.simulator.close)
        self.running = self.simulator.start(tick=0.01)
        self._stops.append(self.running.stop)
        self.dcgm = self._keep(DcgmExporterStandIn(_gpus(self.simulator), port=9400))
        self.node_exporter = self._keep(NodeExporter(str(workdir / "sys"), port=9100))
        aws = {**CREDENTIALS, "AWS_REGION": REGION, "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds.endpoint}
        self.collector = self._keep(CollectorProcess(test_config(release), release, env={
            **aws, "AMP_REMOTE_WRITE_URL": self.gate.url, "OTEL_EFA_CLUSTER_NAME": CLUSTER}))
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AWS_"))}
        environment.update(aws, PYTHONUNBUFFERED="1", OTEL_EFA_CLUSTER_NAME=CLUSTER)
        self.agent = AgentProcess(["--sysfs", str(workdir / "sys"), "--interval", "1", "--exporters", "otlp"],
                                  environment, workdir / "agent.stderr")
        self._stops.append(lambda: self.agent.alive() and self.agent.stop())

    def _keep(self, peer):
        self._stops.append(peer.stop)
        return peer

    def stop(self) -> None:
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception as e:  # keep stopping the rest; the namespace goes with the last one
                print(f"stopping a peer failed: {e!r}", file=sys.stderr)

    def query(self, expression: str) -> list:
        return self.amp.query(expression)

    def stop_agent(self) -> None:
        self.agent.stop()

    def diagnostics(self) -> str:
        return f"\n--- agent ---\n{self.agent.log()[-3000:]}\n--- collector ---\n{self.collector.log()[-5000:]}"

    def emf_documents(self) -> List[Dict]:
        """Every EMF document awsemf wrote to CloudWatch Logs, oldest first."""
        logs = boto3.client("logs", region_name=REGION, endpoint_url=self.moto.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            events = logs.get_log_events(logGroupName=collector_config.EMF_LOG_GROUP,
                                         logStreamName=collector_config.EMF_LOG_STREAM, startFromHead=True)
        except logs.exceptions.ResourceNotFoundException:
            return []
        return [json.loads(e["message"]) for e in events["events"]]


def _gpus(simulator: Simulator) -> List[str]:
    """PCI addresses of the node's GPUs (where the simulator put them)."""
    return sorted({gpu for device in simulator.declared_topology().values() for gpu in device.gpus})
