"""PromQL pieces over the catalog's Prometheus names, shared by the Grafana dashboard and the alert rules.

Names come from :attr:`MetricSpec.prometheus_name`, never typed here (DCGM's own names, below, are the
exception: they are NVIDIA's). A node is identified by the ``cluster`` and ``instance`` labels, the same
on both paths: ``instance`` is the EC2 instance id and ``cluster`` the ParallelCluster name, set by the
ADOT collector's ``resource/amp`` processor on the way to Amazon Managed Prometheus and by the head
node's relabeling of EC2 service discovery labels. So the agent's, DCGM exporter's and node exporter's
series of one node share them, and every query here runs unchanged on pushed and on scraped data.
"""
import re
from typing import Iterable

from otel_efa import catalog

CLUSTER = "cluster"
INSTANCE = "instance"
NODE = (CLUSTER, INSTANCE)
# Jobs as both paths name them: the head node's scrape jobs, and on the AMP path the ADOT collector's
# scrape jobs (its prometheus receiver) and, for the agent's OTLP, service.name.
AGENT_JOB = "otel-efa"
PEER_JOBS = ("dcgm-exporter", "node-exporter")
# How long a node that stopped reporting is remembered: longer than any alert's ``for`` plus AMP's 5 minute
# lookback, short enough that a node scaled down hours ago is forgotten.
REMEMBER = "1h"

# NVIDIA dcgm-exporter 4.x default fields (etc/default-counters.csv): DCGM's names, not ours, so not in the
# catalog. DCGM_FI_DEV_PCIE_{TX,RX}_THROUGHPUT left the defaults in 3.3.7; PCIe traffic is the profiling
# fields below, gauges already in bytes per second.
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # gauge, %
DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"  # gauge, W
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"  # gauge, MiB
DCGM_NVLINK = "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"  # counter, all lanes
DCGM_PCIE_TX = "DCGM_FI_PROF_PCIE_TX_BYTES"  # gauge, B/s
DCGM_PCIE_RX = "DCGM_FI_PROF_PCIE_RX_BYTES"  # gauge, B/s
DCGM_XID = "DCGM_FI_DEV_XID_ERRORS"  # gauge, last XID


def dcgm_counter(name: str, matchers: str = "") -> str:
    """A selector for one of dcgm-exporter's counters on both paths: its names lack ``_total``, which the
    head node's scrape keeps so, while ``prometheusremotewrite`` (AMP) appends it to every monotonic sum."""
    extra = f", {matchers}" if matchers else ""
    return f'{{__name__=~"{name}(_total)?"{extra}}}'


DCGM_NAMES = (DCGM_GPU_UTIL, DCGM_POWER, DCGM_FB_USED, DCGM_NVLINK, DCGM_PCIE_TX, DCGM_PCIE_RX, DCGM_XID)


def label(attribute: str) -> str:
    """The Prometheus label of an OTel attribute (``aws.efa.device`` -> ``aws_efa_device``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute)


DEVICE = label(catalog.ATTR_DEVICE)
REASON = label(catalog.ATTR_REASON)


def name(metric: str) -> str:
    """The Prometheus name of a catalog metric, by OTel name (``catalog.PORT_UP.name``)."""
    return catalog.BY_NAME[metric].prometheus_name


def counter(kernel_name: str) -> str:
    """The Prometheus name of a port counter, by kernel name (``rx_bytes`` -> ``efa_rx_bytes_total``)."""
    return catalog.PORT_COUNTER_BY_KERNEL[kernel_name].prometheus_name


def device_counter(kernel_name: str) -> str:
    """The Prometheus name of a device counter, by kernel name (``cmds_err`` -> ``efa_device_cmds_err_total``)."""
    return catalog.DEVICE_COUNTER_BY_KERNEL[kernel_name].prometheus_name


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
    return (f"({sum_rate(counter(catalog.RX_BYTES), labels, window, matchers)}"
            f" + {sum_rate(counter(catalog.TX_BYTES), labels, window, matchers)})")


def node_stopped_reporting(metric_name: str, matchers: str = "", remember: str = REMEMBER) -> str:
    """Nodes whose ``metric_name`` had samples in the last ``remember`` but has none now.

    Works on both paths without ``up``: on the head node's scrape a dead target's series end with a
    staleness marker, so they vanish at once; pushed series (AMP) carry no markers and vanish after the
    5 minute lookback. ``max_over_time`` still sees them for ``remember``.
    """
    node = by(NODE)
    series = selector(metric_name, matchers)
    return f"max by ({node}) (max_over_time({series}[{remember}])) unless max by ({node}) ({series})"


def node_alive(matchers: str = "") -> str:
    """Nodes whose DCGM or node exporter still answers: ``up`` of the head node's scrape jobs, or of the
    ADOT collector's own scrape of them on the AMP path (its prometheus receiver writes ``up`` too)."""
    jobs = "|".join(PEER_JOBS)
    extra = f", {matchers}" if matchers else ""
    return f'max by ({by(NODE)}) (up{{job=~"{jobs}"{extra}}} == 1)'
