"""What one entry of the catalog (otel_efa/catalog.py) is, and the Prometheus name it gets.

The entries themselves, every name among them, are the catalog's; this module holds no names.
"""
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Tuple

from otel_efa import names


class Kind(Enum):
    COUNTER = "counter"  # cumulative monotonic sum
    GAUGE = "gauge"


class Scope(Enum):
    PORT = "port"
    DEVICE = "device"
    NODE = "node"  # one value for the whole node, computed across its devices
    AGENT = "agent"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    unit: str
    description: str
    scope: Scope
    source: str  # where the number comes from, for people (docs/metrics.md, dashboards)
    kernel_name: Optional[str] = None  # the hw_counters file, for counters read from sysfs
    attributes: Tuple[str, ...] = ()  # the keys of the metric's own series (docs/metrics.md lists them)
    context_attributes: Tuple[str, ...] = ()  # keys the node adds where it knows them: on some points, or none

    @property
    def declared_attributes(self) -> Tuple[str, ...]:
        """Every key a point of this metric may carry."""
        return self.attributes + self.context_attributes

    @property
    def prometheus_name(self) -> str:
        """The name the OTel Prometheus exporter gives this metric (sanitized, unit suffix, then ``_total``).

        Before collisions are resolved: the agent's endpoint renders the name its renderer resolved
        (otel_efa/exporters/prometheus_text.py), the same as this one for every catalog metric.
        """
        return prometheus_name(names.prometheus_metric_name(self.name), self.kind, self.unit)


def prometheus_name(base: str, kind: Kind, unit: str) -> str:
    """``base`` (a valid Prometheus name) with the unit suffix and, for a counter, ``_total``."""
    name = base
    suffix = _PROMETHEUS_UNIT_SUFFIX.get(unit, "")
    if suffix and not name.endswith(suffix):
        name = f"{name}_{suffix}"
    if kind is Kind.COUNTER:
        name += "_total"
    return name


_PROMETHEUS_UNIT_SUFFIX = {"By": "bytes", "By/s": "bytes_per_second", "s": "seconds", "1/s": "per_second"}
