"""``otel-efa cost``: the monthly CloudWatch bill of a configuration, each line with its arithmetic, for
both ways the metrics reach CloudWatch.

* Direct (``exporters: [cloudwatch]``): a CloudWatch metric is a unique (namespace, name, dimensions)
  combination, so the count is metrics x series per dimension set x nodes; PutMetricData calls follow
  from the interval, the batch size and the 1000-datum limit per call; the dashboard is a flat fee. The
  quick-start's own estimate left out the per-device dimension its original efa_network_monitor.py
  published; the report shows it.
* ADOT (OTLP to the collector on the node, ``awsemf``): the collector writes one EMF log event per node
  and export to the log group ``/aws/parallelcluster/efa-monitor``; CloudWatch Logs bills the ingested
  bytes, and the metrics CloudWatch extracts from them are billed as custom metrics (the six, dimension
  ``InstanceId``). The event is sized from its real shape (:func:`emf_document`).

Every price is in :data:`PRICES`, with its source.
"""
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from otel_efa import __version__, catalog
from otel_efa.artifacts.collector_config import EMF_LOG_GROUP
from otel_efa.cli.types import at_least_one, non_negative, positive
from otel_efa.cloudwatch.metrics import dimension_sets, per_device, published_specs
from otel_efa.cloudwatch.packing import MAX_DATUMS_PER_CALL
from otel_efa.config import Config, ConfigError
from otel_efa.node.instance_types import INSTANCE_TYPES, InstanceType

PRICING_PAGE = "https://aws.amazon.com/cloudwatch/pricing/"
PRICING_REGION = "us-east-1 (US East, N. Virginia)"


@dataclass(frozen=True)
class Price:
    item: str
    dollars: float
    unit: str
    source: str


PRICES: Tuple[Price, ...] = (
    Price("custom metric", 0.30, "per metric-month, first 10,000 (EMF-extracted metrics too)",
          f"{PRICING_PAGE} Metrics"),
    Price("API requests", 0.01, "per 1,000 PutMetricData requests", f"{PRICING_PAGE} Metrics"),
    Price("dashboard", 3.00, "per dashboard-month (the first 3 of an account are free)",
          f"{PRICING_PAGE} Dashboards"),
    Price("logs ingestion", 0.50, "per GB ingested, Standard log class (EMF events are logs)",
          f"{PRICING_PAGE} Logs"),
)
_PRICE = {p.item: p.dollars for p in PRICES}
PRICE_PER_METRIC_MONTH = _PRICE["custom metric"]
PRICE_PER_1000_REQUESTS = _PRICE["API requests"]
PRICE_PER_DASHBOARD_MONTH = _PRICE["dashboard"]
PRICE_PER_GB_INGESTED = _PRICE["logs ingestion"]
BYTES_PER_GB = 2 ** 30  # AWS bills data in GB of 2^30 bytes
PUT_LOG_EVENTS_OVERHEAD = 26  # bytes PutLogEvents counts per event on top of the message
MONTH_SECONDS = 30 * 24 * 3600  # a 30-day month, nodes up all of it
MONTH_HOURS = 30 * 24
DEFAULT_JOBS_PER_NODE = 30  # jobs a node runs in a month, for the "job" dimension set
DEFAULT_JOB_HOURS = 24
PATHS = ("direct", "adot", "both")


@dataclass(frozen=True)
class Line:
    item: str
    arithmetic: str
    dollars: float


@dataclass(frozen=True)
class Estimate:
    lines: List[Line]
    metrics: int
    calls: int

    @property
    def total(self) -> float:
        return sum(line.dollars for line in self.lines)


def _money(dollars: float) -> str:
    return f"${dollars:,.2f}"


def estimate(config: Config, nodes: int, instance: InstanceType, dashboards: int = 1,
             jobs_per_node: float = DEFAULT_JOBS_PER_NODE, job_hours: float = DEFAULT_JOB_HOURS) -> Estimate:
    """``jobs_per_node`` and ``job_hours`` price the ``job`` dimension set: each job's metrics exist (and
    are billed, prorated by the hour) while it runs."""
    cw = config.cloudwatch
    specs = published_specs(cw)
    lines: List[Line] = []
    metrics_per_node = 0
    for name, dims in zip(cw.dimension_sets, dimension_sets(cw)):
        if name == "job":
            months = jobs_per_node * job_hours / MONTH_HOURS
            count = len(specs) * months * nodes
            metrics_per_node += len(specs)  # one job set at a time: the running jobs' ids, joined
            lines.append(Line(f"metrics [{', '.join(dims)}]",
                              f"{len(specs)} metrics x {jobs_per_node:g} jobs x {job_hours:g} h / {MONTH_HOURS} h x "
                              f"{nodes} nodes = {count:,.1f} metric-months x {_money(PRICE_PER_METRIC_MONTH)}",
                              count * PRICE_PER_METRIC_MONTH))
            continue
        series = instance.efa_devices if per_device(dims) else 1
        count = len(specs) * series * nodes
        metrics_per_node += len(specs) * series
        what = f"{series} devices" if per_device(dims) else "1 series"
        lines.append(Line(f"metrics [{', '.join(dims)}]",
                          f"{len(specs)} metrics x {what} x {nodes} nodes = {count:,} metrics x "
                          f"{_money(PRICE_PER_METRIC_MONTH)}", count * PRICE_PER_METRIC_MONTH))
    # Samples of one metric within one storage period travel as one datum (Values/Counts).
    flush_seconds = config.interval * cw.batch_size
    buckets = max(1, math.ceil(flush_seconds / max(config.interval, cw.storage_resolution)))
    datums = metrics_per_node * buckets
    calls_per_flush = math.ceil(datums / MAX_DATUMS_PER_CALL)
    flushes = MONTH_SECONDS / flush_seconds
    calls = round(nodes * flushes * calls_per_flush)
    lines.append(Line(
        "PutMetricData calls",
        f"{nodes} nodes x {flushes:,.0f} flushes (30 days / ({config.interval:g} s x batch {cw.batch_size})) x "
        f"{calls_per_flush} call{'s' if calls_per_flush > 1 else ''} ({datums:,} datums/flush, "
        f"<= {MAX_DATUMS_PER_CALL} per call) = {calls:,} calls x {_money(PRICE_PER_1000_REQUESTS)}/1000",
        calls * PRICE_PER_1000_REQUESTS / 1000))
    if dashboards:
        lines.append(Line("dashboard", f"{dashboards} x {_money(PRICE_PER_DASHBOARD_MONTH)}",
                          dashboards * PRICE_PER_DASHBOARD_MONTH))
    return Estimate(lines, metrics_per_node * nodes, calls)


def emf_document(instance: InstanceType) -> Dict[str, Any]:
    """One EMF log event as ``awsemf`` writes it for a node (EMF version 1): ``Version``, ``_aws`` with the
    namespace, the dimension set ``[[InstanceId]]`` and the six metrics with their units, the six values,
    and every label as a member: the resource attributes (``resource_to_telemetry_conversion``: the
    agent's service, EC2 identity and OTel SDK attributes, plus what the collector's ``resourcedetection``
    adds), ``InstanceId`` and ``OTelLib`` (the instrumentation scope). Values are worst-case wide: IDs at
    full length, rates with 17 significant digits."""
    line_rate = instance.total_gbps * 1e9 / 8
    values: Dict[str, Any] = {}
    for spec in catalog.CLOUDWATCH_METRICS:
        if spec.unit == "Bytes/Second":
            values[spec.name] = line_rate * 0.987654321012345
        elif spec.unit == "Count/Second":
            values[spec.name] = line_rate / 8400 * 0.987654321012345
        else:
            values[spec.name] = 18_446_744_073  # a cumulative count, 11 digits
    labels = {
        "service.name": "otel-efa", "service.version": __version__,
        "service.instance.id": "0b8e1c7a-3f2d-4c55-9a1e-6d2f4b7c8e90",
        "host.id": "i-0123456789abcdef0", "host.type": instance.name, "host.image.id": "ami-0123456789abcdef0",
        "host.name": "ip-172-31-123-234.ap-southeast-1.compute.internal",
        "cloud.provider": "aws", "cloud.platform": "aws_ec2", "cloud.account.id": "123456789012",
        "cloud.region": "ap-southeast-1", "cloud.availability_zone": "ap-southeast-1a",
        "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.45.2",
        catalog.CLOUDWATCH_DIMENSION: "i-0123456789abcdef0", "OTelLib": "otel_efa",
    }
    return {
        **labels, **values, "Version": "1",
        "_aws": {"CloudWatchMetrics": [{
            "Namespace": catalog.CLOUDWATCH_NAMESPACE, "Dimensions": [[catalog.CLOUDWATCH_DIMENSION]],
            "Metrics": [{"Name": c.name, "Unit": c.unit} for c in catalog.CLOUDWATCH_METRICS]}],
            "Timestamp": 1767225600000},
    }


def emf_event_bytes(instance: InstanceType) -> int:
    """The EMF event's size as ingested: compact JSON (Go's encoding/json writes no spaces) plus the 26
    bytes PutLogEvents counts per event (an upper bound of what is billed)."""
    text = json.dumps(emf_document(instance), separators=(",", ":"))
    return len(text.encode()) + PUT_LOG_EVENTS_OVERHEAD


def adot_estimate(config: Config, nodes: int, instance: InstanceType, dashboards: int = 1) -> Estimate:
    """The ADOT path: the agent exports OTLP once per collection ``interval``; the collector's batch
    processor (timeout 10 s) forwards each export and ``awsemf`` writes one EMF event per node and export
    (one timestamp, one label set). Its metrics do not depend on ``cloudwatch.dimension_sets`` (the
    collector's ``metric_declarations`` publish ``InstanceId`` only)."""
    names = len(catalog.CLOUDWATCH_METRICS)
    metrics = names * nodes
    lines = [Line("metrics [InstanceId], extracted from EMF",
                  f"{names} metrics x 1 series x {nodes} nodes = {metrics:,} metrics x "
                  f"{_money(PRICE_PER_METRIC_MONTH)}", metrics * PRICE_PER_METRIC_MONTH)]
    event = emf_event_bytes(instance)
    events = round(nodes * MONTH_SECONDS / config.interval)
    gigabytes = events * event / BYTES_PER_GB
    lines.append(Line(f"EMF log events to {EMF_LOG_GROUP}",
                      f"{nodes} nodes x {MONTH_SECONDS / config.interval:,.0f} exports (30 days / "
                      f"{config.interval:g} s) = {events:,} events x {event:,} bytes = {gigabytes:,.3f} GB "
                      f"x {_money(PRICE_PER_GB_INGESTED)}/GB", gigabytes * PRICE_PER_GB_INGESTED))
    if dashboards:
        lines.append(Line("dashboard", f"{dashboards} x {_money(PRICE_PER_DASHBOARD_MONTH)}",
                          dashboards * PRICE_PER_DASHBOARD_MONTH))
    return Estimate(lines, metrics, 0)


_KINDS = (("metrics", "metrics"), ("PutMetricData", "API requests"), ("EMF", "log ingestion"),
          ("dashboard", "dashboard"))


def side_by_side(direct: Estimate, adot: Estimate) -> str:
    """The two paths' totals next to each other, by kind of charge."""
    def by_kind(result: Estimate) -> Dict[str, float]:
        kinds: Dict[str, float] = {}
        for line in result.lines:
            kind = next(k for prefix, k in _KINDS if line.item.startswith(prefix))
            kinds[kind] = kinds.get(kind, 0.0) + line.dollars
        return kinds

    left, right = by_kind(direct), by_kind(adot)
    kinds = list(dict.fromkeys(list(left) + list(right)))
    rows = ["Side by side, per month:", f"  {'':<14}  {'direct':>10}  {'ADOT':>10}"]
    for kind in kinds:
        rows.append(f"  {kind:<14}  {_money(left.get(kind, 0.0)):>10}  {_money(right.get(kind, 0.0)):>10}")
    rows.append(f"  {'total':<14}  {_money(direct.total):>10}  {_money(adot.total):>10}")
    return "\n".join(rows) + "\n"


def render_prices() -> str:
    rows = [f"Prices ({PRICING_REGION}; other regions differ):"]
    for price in PRICES:
        rows.append(f"  {price.item:<15} {_money(price.dollars):>6} {price.unit}  [{price.source}]")
    rows.append("  Not priced: log storage ($0.03 per GB-month, compressed, while the log group keeps the "
                "events: set its retention), alarms, free tiers. Metrics are prorated by the hour, so nodes "
                "that run part of the month cost less.")
    return "\n".join(rows) + "\n"


def with_dimension_sets(config: Config, sets: List[str]) -> Config:
    cloudwatch = dataclasses.replace(config.cloudwatch, dimension_sets=sets)
    return dataclasses.replace(config, cloudwatch=cloudwatch)


def render(title: str, result: Estimate) -> str:
    width = max(len(line.item) for line in result.lines)
    rows = [title]
    for line in result.lines:
        rows.append(f"  {line.item:<{width}}  {_money(line.dollars):>10}   {line.arithmetic}")
    rows.append(f"  {'total per month':<{width}}  {_money(result.total):>10}")
    return "\n".join(rows) + "\n"


def direct_report(config: Config, nodes: int, instance: InstanceType, jobs_per_node: float,
                  job_hours: float) -> str:
    cw = config.cloudwatch
    text = render(f"CloudWatch cost per month: {nodes} x {instance.name}, namespace {cw.namespace}, "
                  f"interval {config.interval:g} s, batch {cw.batch_size}",
                  estimate(config, nodes, instance, jobs_per_node=jobs_per_node, job_hours=job_hours))
    # The quick-start's estimate priced node totals only; show what the per-device dimension changes.
    if "device" in cw.dimension_sets:
        other = with_dimension_sets(config, [s for s in cw.dimension_sets if s != "device"]
                                    or list(catalog.CLOUDWATCH_DEFAULT_DIMENSION_SETS))
        title = "Without the per-device dimension:"
    else:
        other = with_dimension_sets(config, list(cw.dimension_sets) + ["device"])
        title = f"With the per-device dimension too ({instance.efa_devices} EFA devices per node):"
    return text + "\n" + render(title, estimate(other, nodes, instance, jobs_per_node=jobs_per_node,
                                                 job_hours=job_hours))


def adot_report(config: Config, nodes: int, instance: InstanceType) -> str:
    return render(f"ADOT path (OTLP -> collector -> awsemf -> CloudWatch Logs EMF), cost per month: {nodes} x "
                  f"{instance.name}, interval {config.interval:g} s", adot_estimate(config, nodes, instance))


def report(config: Config, nodes: int, instance: InstanceType, jobs_per_node: float = DEFAULT_JOBS_PER_NODE,
           job_hours: float = DEFAULT_JOB_HOURS, path: str = "both") -> str:
    """``path``: ``direct`` (PutMetricData from the node), ``adot`` (EMF through the collector) or
    ``both`` (each, then side by side)."""
    parts = []
    if path in ("direct", "both"):
        parts.append(direct_report(config, nodes, instance, jobs_per_node, job_hours))
    if path in ("adot", "both"):
        parts.append(adot_report(config, nodes, instance))
    if path == "both":
        parts.append(side_by_side(estimate(config, nodes, instance, jobs_per_node=jobs_per_node,
                                           job_hours=job_hours), adot_estimate(config, nodes, instance)))
    parts.append(render_prices())
    return "\n".join(parts)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("cost", help="monthly CloudWatch cost of the configured metrics")
    p.add_argument("--nodes", type=at_least_one, required=True, help="compute nodes publishing")
    p.add_argument("--instance-type", required=True, choices=sorted(INSTANCE_TYPES), metavar="TYPE",
                   help=f"one of {', '.join(INSTANCE_TYPES)}")
    p.add_argument("--config", metavar="PATH",
                   help="the agent's YAML file, for interval and cloudwatch.* (default: the agent's defaults, not "
                        "this machine's config file)")
    p.add_argument("--jobs-per-node", type=non_negative, default=DEFAULT_JOBS_PER_NODE, metavar="N",
                   help=f"Slurm jobs per node per month, priced when dimension set 'job' is on "
                        f"(default {DEFAULT_JOBS_PER_NODE})")
    p.add_argument("--job-hours", type=positive, default=DEFAULT_JOB_HOURS, metavar="H",
                   help=f"hours a job runs (default {DEFAULT_JOB_HOURS})")
    p.add_argument("--path", choices=PATHS, default="both",
                   help="direct: PutMetricData from the node; adot: EMF through the ADOT collector; "
                        "both (default): each, then side by side")
    p.set_defaults(handler=_cost)


def _cost(args) -> int:
    from otel_efa import config as config_module

    if args.nodes < 1:
        raise ConfigError("--nodes", "must be at least 1")
    if args.jobs_per_node < 0 or args.job_hours <= 0:
        raise ConfigError("--jobs-per-node" if args.jobs_per_node < 0 else "--job-hours", "must be positive")
    # Without --config, price the defaults (not whatever /etc/otel-efa/config.yaml this machine has).
    config = config_module.load(args.config or os.devnull, environ={})
    sys.stdout.write(report(config, args.nodes, INSTANCE_TYPES[args.instance_type], args.jobs_per_node,
                            args.job_hours, args.path))
    return 0
