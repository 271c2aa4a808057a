"""``otel-efa alarms cloudwatch`` against moto in server mode (ThreadedMotoServer on loopback, real HTTP).

The CloudWatch exporter is not on this branch, so the metrics the alarms watch are put here with boto3
exactly as ``catalog.CLOUDWATCH_METRICS`` describes the agent's (the seed's six names and units,
namespace ParallelCluster/Network, dimension InstanceId). moto stores alarms but does not evaluate
metric math, so the ``DIFF`` alarms are checked for what they name, not for their state.
"""
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import boto3
import pytest
from botocore.validate import validate_parameters
from moto.server import ThreadedMotoServer

from otel_efa import catalog
from otel_efa.alarms import cloudwatch_alarms

from conftest import free_port

REGION = "us-east-1"
INSTANCES = ("i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2")


@pytest.fixture(scope="module")
def aws():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    env.pop("AWS_PROFILE", None)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    clients = {name: session.client(name, endpoint_url=env["AWS_ENDPOINT_URL"]) for name in ("cloudwatch", "ec2")}
    yield env, clients
    server.stop()


def _put_agent_metrics(cloudwatch, instance_id: str) -> None:
    now = datetime.now(timezone.utc)
    cloudwatch.put_metric_data(Namespace=catalog.CLOUDWATCH_NAMESPACE, MetricData=[
        {"MetricName": spec.name, "Unit": spec.unit, "Value": 1.0, "Timestamp": now,
         "Dimensions": [{"Name": catalog.CLOUDWATCH_DIMENSION, "Value": instance_id}]}
        for spec in catalog.CLOUDWATCH_METRICS])


def _cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_efa", "alarms", "cloudwatch", "--region", REGION, *args],
                          capture_output=True, text=True, env=env, timeout=60)


def _existing_metrics(cloudwatch) -> set:
    found = set()
    for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace=catalog.CLOUDWATCH_NAMESPACE):
        for metric in page["Metrics"]:
            dimensions = tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]))
            found.add((metric["Namespace"], metric["MetricName"], dimensions))
    return found


def _key(metric: dict) -> tuple:
    return (metric["Namespace"], metric["MetricName"],
            tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"])))


def test_alarms_are_created_and_watch_metrics_that_exist(aws):
    env, clients = aws
    cloudwatch = clients["cloudwatch"]
    for instance_id in INSTANCES:
        _put_agent_metrics(cloudwatch, instance_id)
    args = [a for i in INSTANCES for a in ("--instance-id", i)]
    result = _cli(env, "--cluster-name", "demo", *args)
    assert result.returncode == 0, result.stderr
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix="ParallelCluster-demo-EFA-")["MetricAlarms"]
    errors = [c.name for c in catalog.CLOUDWATCH_METRICS if c.statistic == "total"]
    assert errors == ["rx_errors", "tx_discards"]
    assert len(alarms) == len(INSTANCES) * (1 + len(errors))
    existing = _existing_metrics(cloudwatch)
    watched = set()
    for alarm in alarms:
        if alarm.get("MetricName"):
            metrics = [alarm]
        else:
            metrics = [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]
            assert any(q.get("Expression") == "DIFF(total)" for q in alarm["Metrics"])
        for metric in metrics:
            assert _key(metric) in existing, f"{alarm['AlarmName']} watches a metric nobody publishes: {metric}"
            watched.add(_key(metric))
    for instance_id in INSTANCES:
        dimension = ((catalog.CLOUDWATCH_DIMENSION, instance_id),)
        assert {(catalog.CLOUDWATCH_NAMESPACE, name, dimension) for name in ("rx_bytes_rate", *errors)} <= watched
    not_reporting = [a for a in alarms if a["AlarmName"].endswith("not-reporting")]
    assert all(a["TreatMissingData"] == "breaching" and a["Statistic"] == "SampleCount" for a in not_reporting)


def test_dry_run_prints_valid_requests_and_creates_nothing(aws):
    env, clients = aws
    result = _cli(env, "--cluster-name", "dry", "--instance-id", INSTANCES[0], "--dry-run")
    assert result.returncode == 0, result.stderr
    requests = json.loads(result.stdout)
    shape = clients["cloudwatch"].meta.service_model.operation_model("PutMetricAlarm").input_shape
    for request in requests:
        validate_parameters(request, shape)  # raises on anything PutMetricAlarm would reject client-side
        for metric in cloudwatch_alarms.metrics_named(request):
            assert metric["MetricName"] in {c.name for c in catalog.CLOUDWATCH_METRICS}
    assert clients["cloudwatch"].describe_alarms(AlarmNamePrefix="ParallelCluster-dry-")["MetricAlarms"] == []


def test_compute_nodes_are_found_by_parallelcluster_tags(aws):
    env, clients = aws
    ec2 = clients["ec2"]
    image = "ami-12c6146b"  # any well-formed id: moto does not check it exists (describing images is slow)

    def launch(node_type: str, cluster: str = "tagged") -> str:
        tags = [{"Key": cloudwatch_alarms.CLUSTER_TAG, "Value": cluster},
                {"Key": cloudwatch_alarms.NODE_TYPE_TAG, "Value": node_type}]
        launched = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="p5.48xlarge",
                                     TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        return launched["Instances"][0]["InstanceId"]

    computes = {launch("Compute"), launch("Compute")}
    others = {launch("HeadNode"), launch("Compute", cluster="another")}
    result = _cli(env, "--cluster-name", "tagged")
    assert result.returncode == 0, result.stderr
    names = {a["AlarmName"] for a in clients["cloudwatch"].describe_alarms(
        AlarmNamePrefix="ParallelCluster-tagged-EFA-")["MetricAlarms"]}
    assert names and all(any(i in n for i in computes) for n in names)
    assert all(any(i in n for n in names) for i in computes)
    assert not any(i in n for i in others for n in names), "head node and other clusters are left alone"


def test_a_cluster_without_nodes_is_one_clear_message(aws):
    env, _ = aws
    result = _cli(env, "--cluster-name", "nobody")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--instance-id" in result.stderr
