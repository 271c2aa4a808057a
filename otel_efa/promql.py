"""PromQL pieces over the catalog's Prometheus names, shared by the Grafana dashboard and the alert rules.

Names come from :attr:`MetricSpec.prometheus_name`, never typed here. A node is identified by the
``cluster`` and ``instance`` labels: ``instance`` is what Prometheus gives every target (relabel it to
the node's name or instance id so the agent and DCGM exporter on one node share it), ``cluster`` is a
label the scrape configuration adds (ParallelCluster: from the ``parallelcluster:cluster-name`` tag).
"""
import re
from typing import Iterable

from . import catalog

CLUSTER = "cluster"
INSTANCE = "instance"
NODE = (CLUSTER, INSTANCE)
# The job the agent's endpoint is scraped as; with OTLP to AMP the job is the service.name, the same.
AGENT_JOB = "otel-efa"


def label(attribute: str) -> str:
    """The Prometheus label of an OTel attribute (``aws.efa.device`` -> ``aws_efa_device``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute)


DEVICE = label(catalog.ATTR_DEVICE)
REASON = label(catalog.ATTR_REASON)


def name(metric: str) -> str:
    """The Prometheus name of a catalog metric, by OTel name (``efa_port_up``)."""
    return catalog.BY_NAME[metric].prometheus_name


def counter(kernel_name: str) -> str:
    """The Prometheus name of a port counter, by kernel name (``rx_bytes`` -> ``efa_rx_bytes_total``)."""
    return catalog.PORT_COUNTER_BY_KERNEL[kernel_name].prometheus_name


def by(labels: Iterable[str]) -> str:
    return ", ".join(labels)


def selector(metric_name: str, matchers: str = "") -> str:
    return f"{metric_name}{{{matchers}}}" if matchers else metric_name


def sum_rate(metric_name: str, labels: Iterable[str], window: str, matchers: str = "") -> str:
    """Per-second rate of a counter, summed by ``labels``."""
    return f"sum by ({by(labels)}) (rate({selector(metric_name, matchers)}[{window}]))"


def sum_increase(metric_name: str, labels: Iterable[str], window: str, matchers: str = "") -> str:
    return f"sum by ({by(labels)}) (increase({selector(metric_name, matchers)}[{window}]))"


def sum_increase_optional(always: str, optional: str, labels: Iterable[str], window: str,
                          matchers: str = "") -> str:
    """Increase of ``always`` plus that of ``optional``, a counter some devices lack (rdma_write_* exists
    only on EFA v2 and later): where ``optional`` is missing it counts as 0 instead of emptying the sum."""
    labels = tuple(labels)
    base = sum_increase(always, labels, window, matchers)
    return f"{base} + ({sum_increase(optional, labels, window, matchers)} or {base} * 0)"


def device_throughput(window: str, matchers: str = "") -> str:
    """Bytes per second through each device, both directions: the basis of the imbalance figures."""
    labels = NODE + (DEVICE,)
    return (f"({sum_rate(counter('rx_bytes'), labels, window, matchers)}"
            f" + {sum_rate(counter('tx_bytes'), labels, window, matchers)})")
