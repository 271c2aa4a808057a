"""CloudWatch alarms on the ``ParallelCluster/Network`` metrics (``otel-efa alarms cloudwatch``).

CloudWatch only has node totals per ``InstanceId`` (catalog.CLOUDWATCH_METRICS), so of the Prometheus
alerts only those that node totals can express exist here: the agent not reporting (no samples of the
first rate metric, missing data counts as breaching) and every cumulative error count increasing.

The error counts are the node's cumulative counts as the kernel reports them, and a device reset LOWERS
them. So the alarm watches the increase per period clamped at zero, ``IF(DIFF(total) > 0, DIFF(total),
0)`` over the per-period maximum: a drop reads as no increase, never as a negative value or a spike,
and an old error does not alarm forever (the mistake of alarming on the total itself). Documented
semantics relied on (CloudWatch User Guide, "Using metric math"): DIFF is each value minus the preceding
one; ``TS > S`` is 1 or 0 per point; ``IF(TS, TS, S)`` takes the true value where the condition is not
0, the scalar where it is 0, and drops a point the condition lacks (the first period: no DIFF), which
TreatMissingData ``notBreaching`` reads as OK. Per-device alerts (port down, imbalance, retransmits, SRD
events) need the Prometheus rules.

Instances: ``--instance-id`` (repeatable), else the running compute nodes of the cluster found by
ParallelCluster's tags.
"""
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from otel_efa import catalog

PERIOD_S = 300
NOT_REPORTING_PERIODS = 2  # 10 minutes without a sample
CLUSTER_TAG = "parallelcluster:cluster-name"
NODE_TYPE_TAG = "parallelcluster:node-type"


def clamped_increase(query_id: str) -> str:
    """Metric math: the increase of a cumulative count per period, 0 where the count went down."""
    return f"IF(DIFF({query_id}) > 0, DIFF({query_id}), 0)"


def _reporting_metric() -> catalog.CloudWatchSpec:
    return next(c for c in catalog.CLOUDWATCH_METRICS if c.statistic == "rate")


def _error_metrics() -> Sequence[catalog.CloudWatchSpec]:
    return tuple(c for c in catalog.CLOUDWATCH_METRICS if c.statistic == "total")


def alarm_name(cluster: str, instance_id: str, what: str) -> str:
    return f"ParallelCluster-{cluster}-EFA-{instance_id}-{what}"


def alarms(cluster: str, instance_ids: Sequence[str], namespace: str = catalog.CLOUDWATCH_NAMESPACE,
           actions: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """PutMetricAlarm requests, one dict of keyword arguments each."""
    requests = []
    for instance_id in instance_ids:
        dimensions = [{"Name": catalog.CLOUDWATCH_DIMENSION, "Value": instance_id}]
        common: Dict[str, Any] = {"ActionsEnabled": bool(actions), "AlarmActions": list(actions),
                                  "EvaluationPeriods": NOT_REPORTING_PERIODS}
        reporting = _reporting_metric()
        requests.append(dict(
            common,
            AlarmName=alarm_name(cluster, instance_id, "not-reporting"),
            AlarmDescription=f"otel-efa on {instance_id} ({cluster}) sent no {reporting.name} for "
                             f"{NOT_REPORTING_PERIODS * PERIOD_S // 60} minutes",
            Namespace=namespace, MetricName=reporting.name, Dimensions=dimensions,
            Statistic="SampleCount", Period=PERIOD_S, Threshold=1.0,
            ComparisonOperator="LessThanThreshold", TreatMissingData="breaching"))
        for spec in _error_metrics():
            requests.append(dict(
                common,
                AlarmName=alarm_name(cluster, instance_id, spec.name.replace("_", "-") + "-increasing"),
                AlarmDescription=f"{spec.name} increased on {instance_id} ({cluster}): {spec.description}",
                EvaluationPeriods=1,
                Metrics=[
                    {"Id": "total", "ReturnData": False,
                     "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": spec.name,
                                               "Dimensions": dimensions},
                                    "Period": PERIOD_S, "Stat": "Maximum"}},
                    {"Id": "increase", "Expression": clamped_increase("total"),
                     "Label": f"{spec.name} increase (a reset counts as none)",
                     "ReturnData": True},
                ],
                Threshold=0.0, ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching"))
    return requests


def metrics_named(request: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The (Namespace, MetricName, Dimensions) an alarm request watches."""
    if "MetricName" in request:
        return [{k: request[k] for k in ("Namespace", "MetricName", "Dimensions")}]
    return [dict(q["MetricStat"]["Metric"]) for q in request["Metrics"] if "MetricStat" in q]


def cluster_instances(ec2, cluster: str) -> List[str]:
    """Running compute nodes of a ParallelCluster cluster, by the tags ParallelCluster puts on them."""
    filters = [{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]},
               {"Name": f"tag:{NODE_TYPE_TAG}", "Values": ["Compute"]},
               {"Name": "instance-state-name", "Values": ["running"]}]
    ids = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            ids += [i["InstanceId"] for i in reservation["Instances"]]
    return sorted(ids)


def add_parser(kinds) -> None:
    p = kinds.add_parser("cloudwatch", help="create CloudWatch alarms on the ParallelCluster/Network metrics")
    p.add_argument("--cluster-name", required=True, help="ParallelCluster cluster name (alarm names, discovery)")
    p.add_argument("--region", required=True, help="AWS region of the cluster")
    p.add_argument("--instance-id", action="append", dest="instance_ids", metavar="ID",
                   help="an instance to watch (repeatable); default: the cluster's running compute nodes")
    p.add_argument("--namespace", default=catalog.CLOUDWATCH_NAMESPACE, help="default %(default)s")
    p.add_argument("--alarm-action", action="append", dest="actions", default=[], metavar="ARN",
                   help="SNS topic (or other action) ARN to notify, repeatable (default: none, the alarms "
                        "only change state)")
    p.add_argument("--dry-run", action="store_true", help="print the PutMetricAlarm requests as JSON, create nothing")
    p.set_defaults(handler=_cloudwatch)


def _cloudwatch(args) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session(region_name=args.region)
    try:
        instance_ids: Optional[List[str]] = args.instance_ids
        if not instance_ids:
            instance_ids = cluster_instances(session.client("ec2"), args.cluster_name)
            if not instance_ids:
                sys.stderr.write(f"otel-efa: no running compute nodes tagged {CLUSTER_TAG}={args.cluster_name} "
                                 f"in {args.region}; pass --instance-id\n")
                return 1
        requests = alarms(args.cluster_name, instance_ids, args.namespace, args.actions)
        if args.dry_run:
            json.dump(requests, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        cloudwatch = session.client("cloudwatch")
        for request in requests:
            cloudwatch.put_metric_alarm(**request)
            sys.stdout.write(f"created {request['AlarmName']}\n")
    except (BotoCoreError, ClientError) as e:
        sys.stderr.write(f"otel-efa: {e}\n")
        return 1
    return 0
