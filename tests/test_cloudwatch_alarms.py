"""``otel-efa alarms cloudwatch`` against moto in server mode (ThreadedMotoServer on loopback, real HTTP).

moto stores alarms but evaluates neither metric math nor alarms, so what the alarms decide is checked
with ``cloudwatch_math`` (the documented semantics, implemented in the tests): first on the guide's own
examples, then on the alarm requests exactly as the command builds them, over the datapoints the agent
really stored in moto (simulated node, CloudWatch exporter, GetMetricData), and over plain lists.
"""
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import boto3
import cloudwatch_math as cwm
import pytest
from aws_peers import cloudwatch, config_with, moto, node, proxy  # noqa: F401
from botocore.validate import validate_parameters

from otel_efa import catalog
from otel_efa.artifacts.alarms import cloudwatch_alarms

REGION = "us-east-1"
INSTANCES = ("i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2")


@pytest.fixture(scope="module")
def aws(moto):
    env = dict(os.environ, AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    env.pop("AWS_PROFILE", None)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    clients = {name: session.client(name, endpoint_url=env["AWS_ENDPOINT_URL"]) for name in ("cloudwatch", "ec2")}
    return env, clients


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
            assert any(q.get("Expression") == cloudwatch_alarms.clamped_increase("total") for q in alarm["Metrics"])
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


# --- the evaluator on the CloudWatch User Guide's own examples ---------------------------------------
T = [0, 60, 120, 180, 240]


def series(values):
    """[30, None, 20] -> {0: 30.0, 120: 20.0}: None is a missing point, as "-" in the guide's tables."""
    return {t: float(v) for t, v in zip(T, values) if v is not None}


def listed(result):
    return [result.get(t) for t in T[:len(result) and T.index(max(result)) + 1]] if result else []


def test_comparison_and_logical_operators_as_documented():
    values = {"metric1": series([30, 20, 0, 0]), "metric2": series([20, None, 20, None])}
    assert cwm.evaluate("metric1 < metric2", values) == series([0, 0, 1, 0])
    assert cwm.evaluate("metric1 >= 30", values) == series([1, 0, 0, 0])
    assert cwm.evaluate("metric1 > 15 AND metric2 > 15", values) == series([1, 0, 0, 0])


def test_if_as_documented():
    values = {"metric1": series([1, 1, 0, 0, None]), "metric2": series([30, None, 0, 0, 30]),
              "metric3": series([0, 0, 20, None, 20])}
    assert cwm.evaluate("IF(metric1, metric2, metric3)", values) == series([30, 0, 20, None, None])
    assert cwm.evaluate("IF(metric1, 5, metric3)", values) == series([5, 5, 20, None, None])
    assert cwm.evaluate("IF(metric1, metric2, 5)", values) == series([30, 0, 5, 5, None])
    assert cwm.evaluate("IF(metric1 < 1, 10, 2)", values) == series([2, 2, 10, 10, None])


def test_diff_arithmetic_and_arrays():
    values = {"m": series([5, 7, 3, None, 10]), "k": series([1, 1, 1, 1, 1])}
    assert cwm.evaluate("DIFF(m)", values) == {60: 2.0, 120: -4.0, 240: 7.0}  # the preceding value
    assert cwm.evaluate("RATE(m)", values) == {60: 2 / 60, 120: -4 / 60, 240: 7 / 120}
    assert cwm.evaluate("m - k", values) == series([4, 6, 2, -1, 9])  # missing counts as 0
    assert cwm.evaluate("k / (m - m)", values) == {}  # divisions by zero are dropped
    assert cwm.evaluate("FILL(m, 0)", values, T) == series([5, 7, 3, 0, 10])
    assert cwm.evaluate("MAX([m, k])", values) == series([5, 7, 3, 1, 10])
    assert cwm.evaluate("TIME_SERIES(4)", values, T) == series([4] * 5)
    assert cwm.evaluate("MAX(m) - m", values) == series([5, 3, 7, None, 0])
    with pytest.raises(cwm.Unsupported):  # IF's documented syntaxes take single series
        cwm.evaluate("IF([m, k] > 0, 1, 0)", values)


def test_the_clamp_reads_a_drop_as_no_increase():
    values = {"total": series([5, 5, 12, 3, 4])}
    assert cwm.evaluate("DIFF(total)", values)[180] == -9  # what plain DIFF shows after a reset
    clamped = cwm.evaluate(cloudwatch_alarms.clamped_increase("total"), values)
    assert clamped == {60: 0.0, 120: 7.0, 180: 0.0, 240: 1.0}


ALARM_TABLES = [
    # (DatapointsToAlarm, EvaluationPeriods, points, {TreatMissingData: state}); "-" missing, X breaching
    (3, 3, "0 - X - X", {"missing": "OK", "ignore": "OK", "breaching": "OK", "notBreaching": "OK"}),
    (3, 3, "0 - - - -", {"breaching": "OK", "notBreaching": "OK"}),
    (3, 3, "- - - - -", {"missing": "INSUFFICIENT_DATA", "ignore": "previous", "breaching": "ALARM",
                         "notBreaching": "OK"}),
    (3, 3, "0 X X - X", {"missing": "ALARM", "ignore": "ALARM", "breaching": "ALARM", "notBreaching": "ALARM"}),
    (3, 3, "- - - - X", {"breaching": "ALARM", "notBreaching": "OK"}),
    (3, 3, "X - - - -", {"breaching": "ALARM", "notBreaching": "OK"}),
    (2, 3, "0 - X - X", {"missing": "ALARM", "ignore": "ALARM", "breaching": "ALARM", "notBreaching": "ALARM"}),
    (2, 3, "0 0 X 0 X", {"missing": "ALARM", "ignore": "ALARM", "breaching": "ALARM", "notBreaching": "ALARM"}),
    (2, 3, "0 - X - -", {"breaching": "ALARM", "notBreaching": "OK"}),
    (2, 3, "- - - - 0", {"breaching": "ALARM", "notBreaching": "OK"}),
    (2, 3, "- - - - X", {"breaching": "ALARM", "notBreaching": "OK"}),
]


@pytest.mark.parametrize("m,n,points,expected", ALARM_TABLES)
def test_alarm_evaluation_follows_the_guides_tables(m, n, points, expected):
    """"How alarm state is evaluated when data is missing": Period 5 min, 5 periods retrieved."""
    period = 300
    for treat, state in expected.items():
        alarm = {"MetricName": "x", "Period": period, "Statistic": "Maximum", "Threshold": 5.0,
                 "ComparisonOperator": "GreaterThanThreshold", "EvaluationPeriods": n, "DatapointsToAlarm": m,
                 "TreatMissingData": treat}
        samples = [(i * period, 10.0 if p == "X" else 0.0) for i, p in enumerate(points.split()) if p != "-"]
        assert cwm.state_at(alarm, {"x": samples}, 4 * period, previous="previous") == state, (points, treat)


def test_what_the_guide_leaves_open_is_refused_not_guessed():
    """missing/ignore with some but too few points: the guide's rows "- - - - X" and "X - - - -" disagree."""
    alarm = {"MetricName": "x", "Period": 300, "Statistic": "Maximum", "Threshold": 5.0, "EvaluationPeriods": 3,
             "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "missing"}
    with pytest.raises(cwm.Unsupported):
        cwm.state_at(alarm, {"x": [(1200, 10.0)]}, 1200)


# --- the alarms as the command builds them ---------------------------------------------------------
def error_alarm(name: str, instance_id: str = "i-0aaaaaaaaaaaaaaa1") -> dict:
    requests = cloudwatch_alarms.alarms("demo", [instance_id])
    return next(r for r in requests if r["AlarmName"].endswith(name.replace("_", "-") + "-increasing"))


def test_error_alarm_over_a_plain_list_of_cumulative_counts():
    """The reusable form: cumulative counts as published once a minute (EMF documents, PutMetricData)."""
    alarm = error_alarm("rx_errors")
    minutes = [5] * 10 + [12] * 5 + [3] * 10 + [9] * 5  # +7, then a reset (-9), then +6
    samples = {"total": [(1_800_000_000 + 60 * i, v) for i, v in enumerate(minutes)]}
    states = cwm.evaluate_alarm(alarm, samples)
    values = cwm.alarm_values(alarm, samples)
    assert [s for _, s in states] == ["OK", "OK", "ALARM", "OK", "OK", "ALARM"]
    assert [v for _, v in values] == [0, 7, 0, 0, 6]
    assert all(v >= 0 for _, v in values)


def test_not_reporting_alarm_fires_when_samples_stop():
    alarm = next(r for r in cloudwatch_alarms.alarms("demo", ["i-1"]) if r["AlarmName"].endswith("not-reporting"))
    start = 1_800_000_000
    samples = {alarm["MetricName"]: [(start + 60 * i, 1.0) for i in range(15)]}
    states = cwm.evaluate_alarm(alarm, samples, end=start + 60 * 35)
    # Samples in periods 0-2. The range (2 + 2 periods) still holds 2 real points at period 4 and one at
    # period 5 (1 real + 1 missing-as-breaching of 2: OK), so the guide's rules fire at period 6, not 4.
    assert [s for _, s in states] == ["OK"] * 6 + ["ALARM", "ALARM"]


# --- the alarms over what the agent stored in moto -------------------------------------------------
def stored_inputs(moto_server, alarm: dict, node_) -> dict:
    """The alarm's MetricStat queries, asked of moto with GetMetricData exactly as written."""
    queries = [dict(q, ReturnData=True) for q in alarm["Metrics"] if "MetricStat" in q]
    period = queries[0]["MetricStat"]["Period"]
    start = int(node_.wall0) // period * period - period
    answer = cloudwatch(moto_server).get_metric_data(
        MetricDataQueries=queries, StartTime=datetime.fromtimestamp(start, timezone.utc),
        EndTime=datetime.fromtimestamp(node_.wall0 + 7200, timezone.utc))
    return {r["Id"]: sorted((t.timestamp(), v) for t, v in zip(r["Timestamps"], r["Values"]))
            for r in answer["MetricDataResults"]}


def run_minutes(n, minutes: int) -> None:
    for _ in range(minutes):
        n.step(60)
    assert n.exporter.flush(10)


def test_direct_path_errors_that_grow_fire_the_alarm(proxy, moto, node):
    """Errors already counted at start do not alarm; new ones do, on each counter, then it clears."""
    instance_id = "i-0alarmfires00001"
    n = node(config_with(), instance_id)
    dev0, dev1 = n.sim.device_names[:2]
    n.sim.set_value(dev0, "rx_drops", 5)  # history from before the agent started
    run_minutes(n, 11)
    n.sim.set_value(dev0, "rx_drops", 12)
    n.sim.set_value(dev1, "rdma_read_wr_err", 2)
    run_minutes(n, 11)
    for name, grew_by in (("rx_errors", 7), ("tx_discards", 2)):
        alarm = error_alarm(name, instance_id)
        samples = stored_inputs(moto, alarm, n)
        assert samples["total"], f"nothing stored for {name}"
        states = [s for _, s in cwm.evaluate_alarm(alarm, samples)]
        assert "ALARM" in states, (name, states)
        first_alarm = states.index("ALARM")
        assert set(states[:first_alarm]) == {"OK"} and states[first_alarm + 1:] and \
            set(states[first_alarm + 1:]) == {"OK"}, (name, states)
        assert max(v for _, v in cwm.alarm_values(alarm, samples)) == grew_by


def test_direct_path_device_reset_is_no_increase(proxy, moto, node):
    """A reset lowers the stored count: no alarm, no negative value, and the rates neither go negative
    nor spike."""
    instance_id = "i-0alarmreset00001"
    n = node(config_with(), instance_id)
    dev0, dev1 = n.sim.device_names[:2]
    n.sim.set_value(dev0, "rx_drops", 50)
    n.sim.set_value(dev1, "rx_drops", 30)
    run_minutes(n, 11)
    n.sim.reset([dev0])
    run_minutes(n, 11)
    alarm = error_alarm("rx_errors", instance_id)
    samples = stored_inputs(moto, alarm, n)
    stored = [v for _, v in samples["total"]]
    assert stored[0] == 80 and stored[-1] == 30, stored  # the count really dropped where CloudWatch holds it
    values = [v for _, v in cwm.alarm_values(alarm, samples)]
    assert values and all(v == 0 for v in values), values
    assert {s for _, s in cwm.evaluate_alarm(alarm, samples)} == {"OK"}
    line_rate = n.node_rate("rx_bytes")
    rates = cloudwatch(moto).get_metric_statistics(
        Namespace=catalog.CLOUDWATCH_NAMESPACE, MetricName="rx_bytes_rate",
        Dimensions=[{"Name": catalog.CLOUDWATCH_DIMENSION, "Value": instance_id}],
        StartTime=datetime.fromtimestamp(n.wall0, timezone.utc),
        EndTime=datetime.fromtimestamp(n.wall0 + 7200, timezone.utc), Period=60, Statistics=["Maximum", "Minimum"])
    points = rates["Datapoints"]
    assert len(points) >= 20
    assert all(0 <= p["Minimum"] and p["Maximum"] <= line_rate * 1.01 for p in points)
