"""``otel-efa dashboard cloudwatch``: the quick-start's dashboard ``ParallelCluster-<cluster>-EFA``, with data.

The original efa_network_monitor.py named metrics without dimensions, so its widgets matched nothing. Here
every graph is a SEARCH over the exact schema the exporter publishes (``{namespace,InstanceId}``, or
``{namespace,ClusterName,InstanceId}`` when the cluster dimension set is on), built from the catalog and
the same config functions the exporter uses, so the nodes a cluster adds or replaces appear by
themselves. Throughput is shown in Gbps per node with the instance type's EFA line rate marked, and as a
cluster total. The error counters are each node's cumulative count, which a device reset lowers; they are
shown as the increase per period, clamped at zero, never as a sum of running totals nor as a negative
value: ``MAX([DIFF(c), TIME_SERIES(0)])``. A SEARCH gives an array of series, and the documented IF
syntaxes take single series only (CloudWatch User Guide, "Using metric math"), so the clamp is the
documented point-by-point MAX of an array: DIFF of every node's per-period maximum, and a series of
zeros. The line is the largest increase on any one node in the period (0 when none grew or one reset).
"""
import json
import sys
from typing import Any, Dict, List, Optional, Tuple

from otel_efa.catalog import (
    CLOUDWATCH_CLUSTER_DIMENSION,
    CLOUDWATCH_DEVICE_DIMENSION,
    CLOUDWATCH_DIMENSION_SETS,
    CLOUDWATCH_ERRORS,
    CLOUDWATCH_PACKET_RATES,
    CLOUDWATCH_THROUGHPUT,
    CloudWatchSpec,
)
from otel_efa.cloudwatch.metrics import dimension_sets, published_specs
from otel_efa.config import Config, ConfigError
from otel_efa.node.instance_types import INSTANCE_TYPES, InstanceType

PERIOD_S = 60
GBPS_PER_BYTE_PER_SECOND = "8/1000000000"


def dashboard_name(cluster_name: str) -> str:
    return f"ParallelCluster-{cluster_name}-EFA"


def dashboard_url(cluster_name: str, region: str) -> str:
    return (f"https://console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#dashboards:name={dashboard_name(cluster_name)}")


class _Builder:
    def __init__(self, config: Config, cluster_name: str, region: str, instance: Optional[InstanceType]):
        self.cw = config.cloudwatch
        self.cluster_name = cluster_name
        self.region = region
        self.instance = instance
        self.specs = {s.name: s for s in published_specs(self.cw)}
        scoped = "cluster" in self.cw.dimension_sets and self.cw.cluster_name == cluster_name
        self.node_dims: Tuple[str, ...] = CLOUDWATCH_DIMENSION_SETS["cluster" if scoped else "instance"]
        self.filters = {CLOUDWATCH_CLUSTER_DIMENSION: cluster_name} if scoped else {}
        self.widgets: List[Dict[str, Any]] = []
        self._y = 0
        self._x = 0

    def search(self, metric: str, dims: Tuple[str, ...], stat: str) -> str:
        schema = ",".join((self.cw.namespace,) + dims)
        terms = [f'MetricName="{metric}"'] + [f'{k}="{v}"' for k, v in self.filters.items() if k in dims]
        return f"SEARCH('{{{schema}}} {' '.join(terms)}', '{stat}', {PERIOD_S})"

    def add(self, widget_type: str, properties: Dict[str, Any], width: int = 12, height: int = 6) -> None:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + height
        self.widgets.append({"type": widget_type, "x": self._x, "y": self._y, "width": width,
                             "height": height, "properties": properties})
        self._x += width
        if self._x >= 24:
            self._x, self._y = 0, self._y + height

    def graph(self, title: str, metrics: List[List[Dict[str, Any]]], unit_label: str,
              annotations: Optional[List[Dict[str, Any]]] = None, width: int = 12) -> None:
        properties: Dict[str, Any] = {
            "title": title, "view": "timeSeries", "stacked": False, "region": self.region,
            "period": PERIOD_S, "metrics": metrics,
            "yAxis": {"left": {"label": unit_label, "min": 0, "showUnits": False}},
        }
        if annotations:
            properties["annotations"] = {"horizontal": annotations}
        self.add("metric", properties, width=width)

    def line_rate(self) -> List[Dict[str, Any]]:
        if self.instance is None:
            return []
        return [{"label": f"{self.instance.name} EFA line rate {self.instance.total_gbps} Gbps "
                          f"({self.instance.efa_devices} x {self.instance.gbps_per_device})",
                 "value": self.instance.total_gbps, "color": "#d62728"}]

    def throughput(self, dims: Tuple[str, ...], title: str, total: bool = False) -> None:
        metrics = []
        for i, name in enumerate((spec.name for spec in CLOUDWATCH_THROUGHPUT), 1):
            metrics.append([{"expression": self.search(name, dims, "Average"), "id": f"b{i}", "visible": False}])
            value = f"SUM(b{i})" if total else f"b{i}"
            direction = name.split("_")[0].upper()
            metrics.append([{"expression": f"{value}*{GBPS_PER_BYTE_PER_SECOND}", "id": f"g{i}",
                             "label": f"{direction} Gbps"}])
        annotations = self.line_rate() if not total and not dims_per_device(dims) else None
        self.graph(title, metrics, "Gbps", annotations)

    def rates(self, names: Tuple[str, ...], title: str) -> None:
        metrics = [[{"expression": self.search(n, self.node_dims, "Average"), "id": f"p{i}",
                     "label": n}] for i, n in enumerate(names, 1)]
        self.graph(title, metrics, "per second")

    def increases(self, names: List[str], title: str) -> None:
        metrics: List[List[Dict[str, Any]]] = []
        for i, n in enumerate(names, 1):
            metrics.append([{"expression": self.search(n, self.node_dims, "Maximum"), "id": f"c{i}",
                             "visible": False}])
            metrics.append([{"expression": largest_increase(f"c{i}"), "id": f"d{i}",
                             "label": f"{n}: most new on one node"}])
        self.graph(title, metrics, f"count per {PERIOD_S} s")

    def text(self) -> None:
        rows = ["| metric | unit | on the graphs | from the kernel's counters |", "|---|---|---|---|"]
        for spec in self.specs.values():
            rows.append(f"| `{spec.name}` | {spec.unit} | {_shown_as(spec)} | {spec.description} |")
        dims = " + ".join(f"`{d}`" for d in self.node_dims)
        scope = (f"the nodes of cluster `{self.cluster_name}`" if self.filters else
                 f"every instance publishing to `{self.cw.namespace}` in this region (turn on the "
                 f"`cluster` dimension set to scope it to one cluster)")
        rate = (f"The red line is the {self.instance.name} EFA line rate, {self.instance.total_gbps} Gbps "
                f"per node." if self.instance else "No instance type was given, so no line rate is marked.")
        markdown = "\n".join([
            f"## EFA network: cluster {self.cluster_name}",
            f"Published by `otel-efa` on each compute node to `{self.cw.namespace}` with dimensions {dims} "
            f"(node totals over all EFA devices); the graphs show {scope}. {rate}",
            "Error counters are cumulative on the node; the graphs show the largest increase on one node per "
            "period. A device reset lowers a count: that shows as 0, never as a negative value.",
            "", *rows])
        self.add("text", {"markdown": markdown}, width=24, height=3 + len(rows))

    def build(self) -> Dict[str, Any]:
        self.text()
        self.throughput(self.node_dims, "EFA throughput per node (Gbps)")
        self.throughput(self.node_dims, "EFA throughput, cluster total (Gbps)", total=True)
        self.rates(tuple(spec.name for spec in CLOUDWATCH_PACKET_RATES), "EFA packets per second per node")
        errors = [s.name for s in self.specs.values() if s in CLOUDWATCH_ERRORS]
        self.increases(errors, f"EFA errors: new per {PERIOD_S} s (most on one node)")
        health = [s.name for s in self.specs.values() if s.statistic == "total" and s.name not in errors]
        if health:
            self.increases(health, f"EFA SRD health events: new per {PERIOD_S} s (most on one node)")
        device_sets = [d for d in dimension_sets(self.cw) if dims_per_device(d)]
        if device_sets:
            self.throughput(device_sets[0], "EFA throughput per device (Gbps)")
        return {"start": "-PT3H", "periodOverride": "inherit", "widgets": self.widgets}


def largest_increase(query_id: str) -> str:
    """Metric math over the SEARCH ``query_id`` (one cumulative count per node): per period, the largest
    increase on one node, 0 where no count grew or a count went down."""
    return f"MAX([DIFF({query_id}), TIME_SERIES(0)])"


def dims_per_device(dims: Tuple[str, ...]) -> bool:
    return CLOUDWATCH_DEVICE_DIMENSION in dims


def _shown_as(spec: CloudWatchSpec) -> str:
    if spec.statistic == "rate":
        return "Gbps per node and cluster total" if spec.unit == "Bytes/Second" else "average per node"
    return f"largest increase on one node per {PERIOD_S} s"


def build(config: Config, cluster_name: str, region: str, instance_type: Optional[str] = None) -> Dict[str, Any]:
    """The dashboard body for ``cluster_name`` (a dict; json.dumps it for PutDashboard)."""
    instance = INSTANCE_TYPES.get(instance_type) if instance_type else None
    return _Builder(config, cluster_name, region, instance).build()


def add_parser(kinds) -> None:
    """``otel-efa dashboard cloudwatch``: one kind of the ``dashboard`` group (otel_efa/artifacts/dashboards)."""
    cw = kinds.add_parser("cloudwatch", help="create or update ParallelCluster-<cluster>-EFA")
    cw.add_argument("--cluster-name", required=True, metavar="NAME",
                    help="ParallelCluster cluster name: the dashboard is ParallelCluster-NAME-EFA")
    cw.add_argument("--region", required=True, help="AWS region of the cluster and its metrics")
    cw.add_argument("--instance-type", choices=sorted(INSTANCE_TYPES), metavar="TYPE",
                    help="the compute nodes' type, to mark its EFA line rate (default: no line rate marked)")
    cw.add_argument("--config", metavar="PATH",
                    help="the agent's YAML file, for namespace, dimension sets and health events (default: the "
                         "agent's defaults, not this machine's config file)")
    cw.add_argument("--dry-run", action="store_true", help="print the dashboard JSON, create nothing")
    cw.set_defaults(handler=_dashboard)


def _dashboard(args) -> int:
    import os

    from otel_efa import config as config_module
    from otel_efa.cloudwatch.session import client

    if not args.cluster_name.strip():
        raise ConfigError("--cluster-name", "must not be empty")
    config = config_module.load(args.config or os.devnull, environ={})
    body = json.dumps(build(config, args.cluster_name, args.region, args.instance_type), indent=1)
    if args.dry_run:
        sys.stdout.write(body + "\n")
        return 0
    answer = client("cloudwatch", args.region).put_dashboard(
        DashboardName=dashboard_name(args.cluster_name), DashboardBody=body)
    problems = answer.get("DashboardValidationMessages") or []
    for problem in problems:
        sys.stderr.write(f"otel-efa: dashboard: {problem.get('DataPath', '')}: {problem.get('Message', '')}\n")
    sys.stdout.write(dashboard_url(args.cluster_name, args.region) + "\n")
    return 1 if problems else 0
