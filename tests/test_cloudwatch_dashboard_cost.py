"""The dashboard against what the exporter really published (moto in server mode), its error graphs
evaluated over the stored data (``cloudwatch_math``), the head-node hook, and the cost command on
hand-computed cases and on the AWS ParallelCluster EFA monitoring quick-start's 4-node example."""
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import cloudwatch_math as cwm
import pytest
from aws_peers import REGION, cloudwatch, config_with, moto, node, proxy  # noqa: F401

from otel_efa.cli import main
from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.tools import cost

HOOK = Path(__file__).resolve().parent.parent / "parallelcluster" / "headnode-create-dashboard.sh"
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} ([^']*)', '(\w+)', (\d+)\)")


@pytest.fixture
def aws(moto, proxy):
    """moto behind the recording proxy, which takes gzip off as CloudWatch's front end would."""
    return moto


def searches(body):
    """Every SEARCH of every metric widget: (widget title, namespace, dimension names, terms, stat)."""
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        for row in widget["properties"]["metrics"]:
            for item in row:
                for schema, terms, stat, _period in SEARCH.findall(item.get("expression", "")):
                    namespace, *dims = schema.split(",")
                    yield widget["properties"]["title"], namespace, tuple(sorted(dims)), \
                        dict(re.findall(r'(\w+)="([^"]*)"', terms)), stat


def publish(node, config, instance_id, minutes=3, profile="p5en.48xlarge"):
    n = node(config, instance_id, profile=profile)
    n.sim.set_value(n.sim.device_names[0], "rx_drops", 5)
    for _ in range(minutes):
        n.step(60)
    assert n.exporter.flush(10)
    return n


def check_dashboard(client, cluster, expect_scoped):
    body = json.loads(client.get_dashboard(DashboardName=f"ParallelCluster-{cluster}-EFA")["DashboardBody"])
    found = list(searches(body))
    assert found, "the dashboard references no metrics"
    for title, namespace, dims, terms, _stat in found:
        pages = client.get_paginator("list_metrics").paginate(Namespace=namespace, MetricName=terms["MetricName"])
        listed = [m for page in pages for m in page["Metrics"]]
        matching = [m for m in listed if tuple(sorted(d["Name"] for d in m["Dimensions"])) == dims
                    and all(d["Value"] == terms[d["Name"]] for d in m["Dimensions"] if d["Name"] in terms)]
        assert matching, f"{title}: no {terms['MetricName']} with exactly {dims} {terms}"
        assert ("ClusterName" in dims) == expect_scoped
    return body, found


def test_every_widget_metric_exists_with_exactly_its_dimensions(aws, node, capsys):
    publish(node, config_with(), "i-0dash0000000001")
    assert main(["dashboard", "cloudwatch", "--cluster-name", "alpha", "--region", REGION,
                 "--instance-type", "p5en.48xlarge"]) == 0
    assert "#dashboards:name=ParallelCluster-alpha-EFA" in capsys.readouterr().out
    body, found = check_dashboard(cloudwatch(aws), "alpha", expect_scoped=False)
    assert {t["MetricName"] for *_, t, _s in found} == {
        "rx_bytes_rate", "tx_bytes_rate", "rx_packets_rate", "tx_packets_rate", "rx_errors", "tx_discards"}

    graphs = {w["properties"]["title"]: w["properties"] for w in body["widgets"] if w["type"] == "metric"}
    per_node = graphs["EFA throughput per node (Gbps)"]
    assert [a["value"] for a in per_node["annotations"]["horizontal"]] == [3200]  # p5en: 16 x 200 Gbps
    expressions = [i["expression"] for row in per_node["metrics"] for i in row]
    assert any(e.endswith("*8/1000000000") for e in expressions)  # bytes/s -> Gbps
    total = graphs["EFA throughput, cluster total (Gbps)"]
    assert any(i["expression"].startswith("SUM(") for row in total["metrics"] for i in row)
    errors = next(p for t, p in graphs.items() if t.startswith("EFA errors"))
    items = [i for row in errors["metrics"] for i in row]
    shown = [i["expression"] for i in items if i.get("visible", True)]
    # increase per period, clamped at 0, not a sum of running totals
    assert shown == ["MAX([DIFF(c1), TIME_SERIES(0)])", "MAX([DIFF(c2), TIME_SERIES(0)])"]
    assert all("'Maximum'" in i["expression"] for i in items if not i.get("visible", True))
    text = next(w for w in body["widgets"] if w["type"] == "text")["properties"]["markdown"]
    for name in ("rx_bytes_rate", "tx_bytes_rate", "rx_packets_rate", "tx_packets_rate", "rx_errors", "tx_discards"):
        assert f"`{name}`" in text
    assert "rx_drops" in text and "3200 Gbps" in text


def stored_search(client, expression: str, start: float, end: float):
    """A SEARCH as CloudWatch answers it (moto has no SEARCH): every metric with exactly the schema's
    dimensions and the terms, each asked of moto with GetMetricData at the SEARCH's stat and period."""
    (schema, terms, stat, period), = SEARCH.findall(expression)
    namespace, *dims = schema.split(",")
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', terms))
    listed = [m for page in client.get_paginator("list_metrics").paginate(
        Namespace=namespace, MetricName=wanted["MetricName"]) for m in page["Metrics"]]
    matching = [m for m in listed if sorted(d["Name"] for d in m["Dimensions"]) == sorted(dims)]
    queries = [{"Id": f"s{i}", "MetricStat": {"Metric": m, "Period": int(period), "Stat": stat}}
               for i, m in enumerate(matching)]
    answer = client.get_metric_data(MetricDataQueries=queries, StartTime=datetime.fromtimestamp(start, timezone.utc),
                                    EndTime=datetime.fromtimestamp(end, timezone.utc))
    return [{int(t.timestamp()): v for t, v in zip(r["Timestamps"], r["Values"])} for r in answer["MetricDataResults"]]


def test_error_graphs_show_new_errors_and_a_reset_as_zero(aws, node, capsys):
    """Two nodes: one counts 7 new drops, the other's device resets (its count drops by 40). Evaluated
    over what moto stored, each error line is one series, never negative, 7 where the drops came."""
    growing = node(config_with(), "i-0dasherrors00001")
    resetting = node(config_with(), "i-0dasherrors00002")
    resetting.sim.set_value(resetting.sim.device_names[0], "rx_drops", 40)
    resetting.sim.set_value(resetting.sim.device_names[1], "rx_drops", 2)
    for minute in range(12):
        if minute == 5:
            growing.sim.set_value(growing.sim.device_names[0], "rx_drops", 7)
        if minute == 8:
            resetting.sim.reset([resetting.sim.device_names[0]])
        growing.step(60)
        resetting.step(60)
    assert growing.exporter.flush(10) and resetting.exporter.flush(10)
    assert main(["dashboard", "cloudwatch", "--cluster-name", "errs", "--region", REGION]) == 0
    capsys.readouterr()
    client = cloudwatch(aws)
    body = json.loads(client.get_dashboard(DashboardName="ParallelCluster-errs-EFA")["DashboardBody"])
    widget = next(w["properties"] for w in body["widgets"] if w["properties"].get("title", "").startswith("EFA errors"))
    items = [i for row in widget["metrics"] for i in row]
    start = min(growing.wall0, resetting.wall0) // 60 * 60
    end = start + 20 * 60
    grid = list(range(int(start), int(end), widget["period"]))
    values = {i["id"]: stored_search(client, i["expression"], start, end) for i in items if not i.get("visible", True)}
    assert len(values["c1"]) == 2  # rx_errors of both nodes
    drops = [cwm.evaluate(i["expression"], values, grid) for i in items if i.get("visible", True)]
    for line in drops:
        assert isinstance(line, dict), "one line per error metric"
        assert all(v >= 0 for v in line.values()), line
    rx_errors, tx_discards = drops
    assert max(rx_errors.values()) == 7 and sorted(rx_errors.values())[-2] == 0
    assert set(tx_discards.values()) == {0}
    raw = cwm.evaluate("DIFF(c1)", values, grid)
    assert min(v for s in raw for v in s.values()) == -40  # the reset is in the data the graph reads


def test_cluster_device_and_health_dimensions_flow_into_the_dashboard(aws, node, tmp_path, capsys):
    config = config_with(dimension_sets=["instance", "cluster", "device"], cluster_name="beta",
                         health_events=True)
    publish(node, config, "i-0dash0000000002", profile="trn1.32xlarge")
    config_file = tmp_path / "config.yaml"
    config_file.write_text("cloudwatch:\n  dimension_sets: [instance, cluster, device]\n"
                           "  cluster_name: beta\n  health_events: true\n")
    assert main(["dashboard", "cloudwatch", "--cluster-name", "beta", "--region", REGION,
                 "--instance-type", "trn1.32xlarge", "--config", str(config_file)]) == 0
    capsys.readouterr()
    body, found = check_dashboard(cloudwatch(aws), "beta", expect_scoped=True)
    names = {t["MetricName"] for *_, t, _s in found}
    assert {"retrans_timeout_events", "unresponsive_remote_events", "impaired_remote_conn_events"} <= names
    assert ("ClusterName", "EfaDevice", "InstanceId") in {dims for _, _, dims, _, _ in found}  # per device
    graphs = {w["properties"]["title"]: w["properties"] for w in body["widgets"] if w["type"] == "metric"}
    assert [a["value"] for a in graphs["EFA throughput per node (Gbps)"]["annotations"]["horizontal"]] == [800]


def test_dry_run_prints_json_and_creates_nothing(aws, capsys):
    assert main(["dashboard", "cloudwatch", "--cluster-name", "gamma", "--region", REGION, "--dry-run"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["widgets"] and all(w["properties"].get("region", REGION) == REGION for w in body["widgets"])
    names = [d["DashboardName"] for d in cloudwatch(aws).list_dashboards()["DashboardEntries"]]
    assert "ParallelCluster-gamma-EFA" not in names


def test_head_node_hook_creates_the_dashboard(aws, node, tmp_path):
    """The hook as ParallelCluster runs it, with otel-efa already on PATH (this venv) and moto as AWS."""
    publish(node, config_with(), "i-0dash0000000003")
    subprocess.run(["shellcheck", str(HOOK)], check=True)
    cfnconfig = tmp_path / "cfnconfig"
    cfnconfig.write_text(f"stack_name=delta\ncfn_region={REGION}\ncfn_node_type=HeadNode\n")
    cluster_config = tmp_path / "cluster-config.yaml"
    cluster_config.write_text("HeadNode:\n  InstanceType: m5.xlarge\nScheduling:\n  SlurmQueues:\n"
                              "    - Name: gpu\n      ComputeResources:\n        - Name: p4d\n"
                              "          InstanceType: p4d.24xlarge\n")
    bin_dir = str(Path(os.sys.executable).parent)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CFNCONFIG=str(cfnconfig),
               CLUSTER_CONFIG=str(cluster_config), OTEL_EFA_STRICT="1")
    result = subprocess.run(["bash", str(HOOK)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ParallelCluster-delta-EFA" in result.stderr
    body, _ = check_dashboard(cloudwatch(aws), "delta", expect_scoped=False)
    graphs = {w["properties"]["title"]: w["properties"] for w in body["widgets"] if w["type"] == "metric"}
    assert [a["value"] for a in graphs["EFA throughput per node (Gbps)"]["annotations"]["horizontal"]] == [400]


def money(text: str, title_prefix: str) -> str:
    section = text.split(title_prefix, 1)[1]
    return re.search(r"total per month\s+(\$[\d,.]+)", section).group(1)


def test_cost_of_a_hand_computed_case(tmp_path, capsys):
    """3 p4d nodes (4 EFA devices), interval 30 s, batch 4, node + per-device series, health events on.

    Metrics: 9 names x (1 + 4) series x 3 nodes = 135 -> $40.50. Flushes: 2,592,000 s / 120 s = 21,600
    per node, 45 datums x 4 samples = 180 datums each -> 1 call: 64,800 calls -> $0.648. Dashboard $3.
    Total $44.148.
    """
    config = tmp_path / "c.yaml"
    config.write_text("interval: 30\ncloudwatch:\n  batch_size: 4\n  dimension_sets: [instance, device]\n"
                      "  health_events: true\n")
    assert main(["cost", "--nodes", "3", "--instance-type", "p4d.24xlarge", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    first = out.split("Without the per-device dimension:")[0]
    assert "= 27 metrics x $0.30" in first and "= 108 metrics x $0.30" in first
    assert "64,800 calls" in first
    assert money(out, "CloudWatch cost per month") == "$44.15"
    # Without the per-device series: 27 metrics ($8.10), 36 datums/flush -> 64,800 calls, + $3.
    assert money(out, "Without the per-device dimension:") == "$11.75"


def test_cost_of_the_quick_starts_example_and_what_per_device_adds(tmp_path, capsys):
    """The guide: 6 metrics x 4 nodes x $0.30 = $7.20, ~17,000 calls = $0.17, dashboard $3: ~$10.37.

    Its script also published per interface; on p5en (16 devices) that is 6 x 16 x 4 = 384 more metrics
    ($115.20), and 1,020 datums per 10-minute flush need 2 calls: 34,560 calls ($0.35). $125.75.
    """
    config = tmp_path / "quick-start.yaml"
    config.write_text("interval: 60\ncloudwatch:\n  batch_size: 10\n")
    assert main(["cost", "--nodes", "4", "--instance-type", "p5en.48xlarge", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert money(out, "CloudWatch cost per month") == "$10.37"
    assert "17,280 calls" in out
    assert money(out, "With the per-device dimension too") == "$125.75"


# One EMF event of a p4d.24xlarge node as awsemf writes it, by hand: the resource attributes (agent, EC2
# identity, OTel SDK, the collector's resourcedetection), InstanceId, OTelLib, the six values, Version, _aws.
EMF_P4D = (
    '{"service.name":"otel-efa","service.version":"0.1.0","service.instance.id":"0b8e1c7a-3f2d-4c55-9a1e-6d2f4b7c8e90",'
    '"host.id":"i-0123456789abcdef0","host.type":"p4d.24xlarge","host.image.id":"ami-0123456789abcdef0",'
    '"host.name":"ip-172-31-123-234.ap-southeast-1.compute.internal","cloud.provider":"aws",'
    '"cloud.platform":"aws_ec2","cloud.account.id":"123456789012","cloud.region":"ap-southeast-1",'
    '"cloud.availability_zone":"ap-southeast-1a","telemetry.sdk.language":"python",'
    '"telemetry.sdk.name":"opentelemetry","telemetry.sdk.version":"1.45.2","InstanceId":"i-0123456789abcdef0",'
    '"OTelLib":"otel_efa","rx_bytes_rate":49382716050.61725,"tx_bytes_rate":49382716050.61725,'
    '"rx_packets_rate":5878894.767930625,"tx_packets_rate":5878894.767930625,"rx_errors":18446744073,'
    '"tx_discards":18446744073,"Version":"1","_aws":{"CloudWatchMetrics":[{"Namespace":"ParallelCluster/Network",'
    '"Dimensions":[["InstanceId"]],"Metrics":[{"Name":"rx_bytes_rate","Unit":"Bytes/Second"},'
    '{"Name":"tx_bytes_rate","Unit":"Bytes/Second"},{"Name":"rx_packets_rate","Unit":"Count/Second"},'
    '{"Name":"tx_packets_rate","Unit":"Count/Second"},{"Name":"rx_errors","Unit":"Count"},'
    '{"Name":"tx_discards","Unit":"Count"}]}],"Timestamp":1767225600000}}')


def test_the_emf_event_priced_has_the_real_shape():
    document = cost.emf_document(INSTANCE_TYPES["p4d.24xlarge"])
    assert document == json.loads(EMF_P4D)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    names = [m["Name"] for m in directive["Metrics"]]
    assert names == ["rx_bytes_rate", "tx_bytes_rate", "rx_packets_rate", "tx_packets_rate", "rx_errors",
                     "tx_discards"]
    assert directive["Dimensions"] == [["InstanceId"]] and directive["Namespace"] == "ParallelCluster/Network"
    assert all(isinstance(document[n], (int, float)) for n in names)  # EMF: each metric a member
    for key in ("host.id", "host.type", "cloud.region", "cloud.availability_zone", "cloud.provider",
                "cloud.platform", "service.name", "service.instance.id", "InstanceId"):
        assert key in document
    assert len(EMF_P4D) == 1206
    assert cost.emf_event_bytes(INSTANCE_TYPES["p4d.24xlarge"]) == 1206 + 26  # + PutLogEvents' 26 per event


def test_cost_of_both_paths_by_hand(tmp_path, capsys):
    """3 p4d nodes, interval 30 s. ADOT: 6 metrics x 3 nodes = 18 -> $5.40; 3 x 2,592,000 s / 30 s =
    259,200 EMF events x 1,232 bytes = 319,334,400 bytes = 0.2974 GB (2^30) x $0.50 = $0.1487; dashboard
    $3: $8.5487. Direct: 18 metrics $5.40, 259,200 PutMetricData calls $2.592, dashboard $3: $10.992."""
    config = tmp_path / "c.yaml"
    config.write_text("interval: 30\n")
    assert main(["cost", "--nodes", "3", "--instance-type", "p4d.24xlarge", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "259,200 events x 1,232 bytes = 0.297 GB x $0.50/GB" in out
    assert money(out, "ADOT path") == "$8.55"
    assert money(out, "CloudWatch cost per month") == "$10.99"
    side = out.split("Side by side, per month:")[1]
    assert re.search(r"log ingestion\s+\$0\.00\s+\$0\.15", side)
    assert re.search(r"API requests\s+\$2\.59\s+\$0\.00", side)
    assert re.search(r"total\s+\$10\.99\s+\$8\.55", side)
    assert "$0.50 per GB ingested" in out and "aws.amazon.com/cloudwatch/pricing" in out

    assert main(["cost", "--nodes", "3", "--instance-type", "p4d.24xlarge", "--config", str(config),
                 "--path", "adot"]) == 0
    only = capsys.readouterr().out
    assert "ADOT path" in only and "CloudWatch cost per month" not in only and "Side by side" not in only
    assert main(["cost", "--nodes", "3", "--instance-type", "p4d.24xlarge", "--config", str(config),
                 "--path", "direct"]) == 0
    only = capsys.readouterr().out
    assert "ADOT path" not in only and money(only, "CloudWatch cost per month") == "$10.99"


def test_cost_rejects_bad_input_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:  # a usage error now: argparse's --nodes type refuses it
        main(["cost", "--nodes", "0", "--instance-type", "p4d.24xlarge"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--nodes" in err


def test_cost_prices_the_job_dimension_by_the_hour(tmp_path, capsys):
    """2 trn2 nodes, job dimension on, 20 jobs a node a month of 36 h each (the defaults are 30 x 24 h).

    Job metrics exist only while their job runs: 6 x 20 x 36 h / 720 h x 2 nodes = 12 metric-months, $3.60.
    Node series 6 x 2 = 12 metrics, $3.60. Datums per flush 6 + 6 = 12 -> 1 call: 2 x 43,200 = 86,400 calls
    ($0.864). Dashboard $3. Total $11.064.
    """
    config = tmp_path / "jobs.yaml"
    config.write_text("interval: 60\ncloudwatch:\n  dimension_sets: [instance, job]\nslurm:\n  enabled: true\n")
    assert main(["cost", "--nodes", "2", "--instance-type", "trn2.48xlarge", "--config", str(config),
                 "--jobs-per-node", "20", "--job-hours", "36"]) == 0
    out = capsys.readouterr().out
    assert "6 metrics x 20 jobs x 36 h / 720 h x 2 nodes = 12.0 metric-months x $0.30" in out
    assert "86,400 calls" in out
    assert money(out, "CloudWatch cost per month") == "$11.06"
