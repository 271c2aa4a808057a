"""What the CloudWatch exporter publishes, derived from the catalog and the config.

The exporter, the dashboard and the cost estimate all call these functions, so a dashboard widget asks
for exactly the (metric, dimensions) combinations the exporter sends and the cost prices exactly them.
"""
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

from otel_efa.catalog import (
    CLOUDWATCH_CLUSTER_DIMENSION,
    CLOUDWATCH_DEVICE_DIMENSION,
    CLOUDWATCH_DIMENSION,
    CLOUDWATCH_DIMENSION_SETS,
    CLOUDWATCH_HEALTH_METRICS,
    CLOUDWATCH_JOB_DIMENSION,
    CLOUDWATCH_METRICS,
    CloudWatchSpec,
)
from otel_efa.config import CloudWatchConfig
from otel_efa.names import cloudwatch_value
from otel_efa.pipeline.snapshot import DeviceSnapshot, Snapshot

Dimensions = Tuple[Tuple[str, str], ...]


def published_specs(config: CloudWatchConfig) -> Tuple[CloudWatchSpec, ...]:
    """The quick-start's six metrics, plus the SRD health events when the config turns them on."""
    return CLOUDWATCH_METRICS + (CLOUDWATCH_HEALTH_METRICS if config.health_events else ())


def dimension_sets(config: CloudWatchConfig) -> List[Tuple[str, ...]]:
    """The dimension names of every set the config enables, in config order.

    With the cluster set on, the per-device series carry the cluster's name too, so a cluster's
    dashboard can select its own devices (the number of metrics stays the same).
    """
    sets = []
    for name in config.dimension_sets:
        names = CLOUDWATCH_DIMENSION_SETS[name]
        if name == "device" and "cluster" in config.dimension_sets:
            names = (CLOUDWATCH_CLUSTER_DIMENSION,) + names
        sets.append(names)
    return sets


def per_device(names: Tuple[str, ...]) -> bool:
    return CLOUDWATCH_DEVICE_DIMENSION in names


@dataclass(frozen=True)
class Sample:
    """One value of one CloudWatch metric at one collection."""

    name: str
    unit: str
    dimensions: Dimensions
    timestamp: float  # seconds since the epoch
    value: float
    monotonic: float = 0.0  # the collection's monotonic time: ages that a wall-clock step cannot skew


def spec_value(spec: CloudWatchSpec, source: Union[Snapshot, DeviceSnapshot]) -> Optional[float]:
    """The node's (or one device's) value of ``spec``; None when no counter behind it was read."""
    read = source.rate if spec.statistic == "rate" else source.total
    values = [v for v in (read(k) for k in spec.kernel_names) if v is not None]
    if not values:
        return None
    value = float(sum(values))
    return value if value == value and abs(value) != float("inf") else None


def samples(snapshot: Snapshot, specs: Iterable[CloudWatchSpec], sets: Iterable[Tuple[str, ...]],
            instance_id: str, cluster_name: Optional[str] = None, job_id: Optional[str] = None) -> List[Sample]:
    """Every sample of one collection: each spec under each dimension set (per device where the set
    has the device dimension; node totals otherwise). A set with the job dimension is skipped while no
    job runs (``job_id`` None)."""
    fixed: Dict[str, str] = {CLOUDWATCH_DIMENSION: instance_id}
    if cluster_name:
        fixed[CLOUDWATCH_CLUSTER_DIMENSION] = cluster_name
    if job_id:
        fixed[CLOUDWATCH_JOB_DIMENSION] = job_id
    specs = tuple(specs)
    out: List[Sample] = []
    for names in sets:
        if any(name not in fixed and name != CLOUDWATCH_DEVICE_DIMENSION for name in names):
            continue
        sources: List[Tuple[Union[Snapshot, DeviceSnapshot], Dict[str, str]]]
        if per_device(names):
            # a dimension value must be printable ASCII: the device's name escaped (otel_efa/names.py)
            sources = [(d, {**fixed, CLOUDWATCH_DEVICE_DIMENSION: cloudwatch_value(d.name)})
                       for d in snapshot.devices]
        else:
            sources = [(snapshot, fixed)]
        for source, values in sources:
            dimensions = tuple((n, values[n]) for n in names)
            for spec in specs:
                value = spec_value(spec, source)
                if value is not None:
                    out.append(Sample(spec.name, spec.unit, dimensions, snapshot.wall_time, value,
                                      snapshot.monotonic))
    return out
