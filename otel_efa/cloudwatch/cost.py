"""``otel-efa cost``: the monthly CloudWatch bill of a configuration, each line with its arithmetic.

A CloudWatch metric is a unique (namespace, name, dimensions) combination, so the count is
metrics x series per dimension set x nodes; PutMetricData calls follow from the interval, the batch
size and the 1000-datum limit per call; the dashboard is a flat fee. Prices (REFERENCE.md, us-east-1):
$0.30 per metric-month (the first 10,000), $0.01 per 1,000 requests, $3.00 per dashboard-month.
The seed's own estimate left out the per-device dimension its script published; ``compare`` shows it.
"""
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import List

from ..config import Config, ConfigError
from ..instance_types import INSTANCE_TYPES, InstanceType
from .metrics import dimension_sets, per_device, published_specs
from .packing import MAX_DATUMS_PER_CALL

PRICE_PER_METRIC_MONTH = 0.30
PRICE_PER_1000_REQUESTS = 0.01
PRICE_PER_DASHBOARD_MONTH = 3.00
MONTH_SECONDS = 30 * 24 * 3600  # a 30-day month, nodes up all of it
MONTH_HOURS = 30 * 24
DEFAULT_JOBS_PER_NODE = 30  # jobs a node runs in a month, for the "job" dimension set
DEFAULT_JOB_HOURS = 24


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


def report(config: Config, nodes: int, instance: InstanceType, jobs_per_node: float = DEFAULT_JOBS_PER_NODE,
           job_hours: float = DEFAULT_JOB_HOURS) -> str:
    cw = config.cloudwatch
    text = render(f"CloudWatch cost per month: {nodes} x {instance.name}, namespace {cw.namespace}, "
                  f"interval {config.interval:g} s, batch {cw.batch_size}",
                  estimate(config, nodes, instance, jobs_per_node=jobs_per_node, job_hours=job_hours))
    # The seed's estimate priced node totals only; show what the per-device dimension changes.
    if "device" in cw.dimension_sets:
        other = with_dimension_sets(config, [s for s in cw.dimension_sets if s != "device"] or ["instance"])
        title = "Without the per-device dimension:"
    else:
        other = with_dimension_sets(config, list(cw.dimension_sets) + ["device"])
        title = f"With the per-device dimension too ({instance.efa_devices} EFA devices per node):"
    text += "\n" + render(title, estimate(other, nodes, instance, jobs_per_node=jobs_per_node, job_hours=job_hours))
    text += ("\nPrices: us-east-1, metrics at the first-10,000 tier; metrics are prorated by the hour, so "
             "nodes that run part of the month cost less. The first 3 dashboards of an account are free.\n")
    return text


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("cost", help="monthly CloudWatch cost of the configured metrics")
    p.add_argument("--nodes", type=int, required=True, help="compute nodes publishing")
    p.add_argument("--instance-type", required=True, choices=sorted(INSTANCE_TYPES), metavar="TYPE",
                   help=f"one of {', '.join(INSTANCE_TYPES)}")
    p.add_argument("--config", help="the agent's YAML file (interval, cloudwatch.*)")
    p.add_argument("--jobs-per-node", type=float, default=DEFAULT_JOBS_PER_NODE, metavar="N",
                   help=f"Slurm jobs per node per month, priced when dimension set 'job' is on "
                        f"(default {DEFAULT_JOBS_PER_NODE})")
    p.add_argument("--job-hours", type=float, default=DEFAULT_JOB_HOURS, metavar="H",
                   help=f"hours a job runs (default {DEFAULT_JOB_HOURS})")
    p.set_defaults(handler=_cost)


def _cost(args) -> int:
    from .. import config as config_module

    if args.nodes < 1:
        raise ConfigError("--nodes", "must be at least 1")
    if args.jobs_per_node < 0 or args.job_hours <= 0:
        raise ConfigError("--jobs-per-node" if args.jobs_per_node < 0 else "--job-hours", "must be positive")
    # Without --config, price the defaults (not whatever /etc/otel-efa/config.yaml this machine has).
    config = config_module.load(args.config or os.devnull, environ={})
    sys.stdout.write(report(config, args.nodes, INSTANCE_TYPES[args.instance_type], args.jobs_per_node,
                            args.job_hours))
    return 0
