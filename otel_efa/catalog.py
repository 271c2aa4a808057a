"""The one declarative table of what otel-efa exports.

Every instrument, the README's metric table, the dashboards and the collector configs are derived from
the entries below, so a name, unit or description is written exactly once.

Port counters follow the OpenTelemetry Collector's ``awsefareceiver`` (``metadata.yaml``) and the
CloudWatch agent: ``efa_<kernel name>``, cumulative monotonic int sums, unit ``By`` or ``1``, attributes
``aws.efa.device``, ``aws.efa.port`` (and ``aws.efa.eni.id`` where resolved). A counter the kernel adds
later is exported as ``efa_<name>`` without a catalog entry (see :func:`port_counter_spec`).
Units decide Prometheus names on every path (``prometheusremotewrite`` to AMP, the agent's endpoint, the
OTel SDK's exporter): ``By`` adds ``_bytes``, a monotonic sum ``_total``, and a gauge in unit ``1`` gets
``_ratio`` from ``prometheusremotewrite`` alone. So a unit-``1`` gauge is named ``..._ratio`` here (then
every path agrees), and counts or states take a curly-brace annotation (``{port}``, ``{device}``), which
adds no suffix anywhere.
Kernel names: linux ``drivers/infiniband/hw/efa/efa_verbs.c`` (``EFA_DEFINE_PORT_STATS``,
``EFA_DEFINE_DEVICE_STATS``).
"""
from dataclasses import dataclass
from enum import Enum
from typing import Dict, Optional, Tuple

from otel_efa import names

ATTR_DEVICE = "aws.efa.device"
ATTR_PORT = "aws.efa.port"
ATTR_ENI = "aws.efa.eni.id"
ATTR_REASON = "reason"
# Where a device sits (efa_device_info): see otel_efa/node/topology.py.
ATTR_PCI_ADDRESS = "aws.efa.pci_address"
ATTR_NUMA_NODE = "aws.efa.numa_node"
ATTR_LOCAL_CPUS = "aws.efa.local_cpus"
ATTR_AFFINITY = "aws.efa.affinity"  # how the accelerators were found: pcie_switch, numa_node, none, unknown
ATTR_GPUS = "aws.efa.gpus"  # GPU indexes (nvidia-smi's numbering), comma-separated
ATTR_GPU_PCI_ADDRESSES = "aws.efa.gpu_pci_addresses"  # the same GPUs by PCI address (DCGM's pci_bus_id)
ATTR_NEURON_DEVICES = "aws.efa.neuron_devices"  # Neuron device indexes (/dev/neuronN), comma-separated
INFO_ATTRIBUTES = (ATTR_PCI_ADDRESS, ATTR_NUMA_NODE, ATTR_LOCAL_CPUS, ATTR_AFFINITY, ATTR_GPUS,
                   ATTR_GPU_PCI_ADDRESSES, ATTR_NEURON_DEVICES)
# Optional (slurm.enabled): the Slurm jobs running on the node, comma-separated, on OTLP and Prometheus.
ATTR_SLURM_JOB = "slurm.job.id"

PORT_ATTRIBUTES = (ATTR_DEVICE, ATTR_PORT)
DEVICE_ATTRIBUTES = (ATTR_DEVICE,)

# Not a counter: how long the rdma core caches a port's stats, in milliseconds.
NOT_COUNTERS = frozenset({"lifespan"})


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
    source: str  # where the number comes from, for people (README, dashboards)
    kernel_name: Optional[str] = None  # the hw_counters file, for counters read from sysfs
    extra_attributes: Tuple[str, ...] = ()  # beyond the scope's (an info metric's attributes)

    @property
    def attributes(self) -> Tuple[str, ...]:
        if self.scope is Scope.PORT:
            return PORT_ATTRIBUTES + self.extra_attributes
        if self.scope is Scope.DEVICE:
            return DEVICE_ATTRIBUTES + self.extra_attributes
        return self.extra_attributes

    @property
    def prometheus_name(self) -> str:
        """The name the OTel Prometheus exporter gives this metric (sanitized, unit suffix, then ``_total``).

        Before collisions are resolved: the agent's endpoint renders the name its renderer resolved
        (otel_efa/exporters/prometheus_text.py), the same as this one for every catalog metric.
        """
        return prometheus_name(names.prometheus_metric_name(self.name), self.kind, self.unit)


def prometheus_name(base: str, kind: "Kind", unit: str) -> str:
    """``base`` (a valid Prometheus name) with the unit suffix and, for a counter, ``_total``."""
    name = base
    suffix = _PROMETHEUS_UNIT_SUFFIX.get(unit, "")
    if suffix and not name.endswith(suffix):
        name = f"{name}_{suffix}"
    if kind is Kind.COUNTER:
        name += "_total"
    return name


_PROMETHEUS_UNIT_SUFFIX = {"By": "bytes", "By/s": "bytes_per_second", "s": "seconds", "1/s": "per_second"}


def _port_counter(kernel_name: str, unit: str, description: str, name: Optional[str] = None) -> MetricSpec:
    return MetricSpec(
        name=name or f"efa_{kernel_name}",
        kind=Kind.COUNTER,
        unit=unit,
        description=description,
        scope=Scope.PORT,
        source=f"ports/N/hw_counters/{kernel_name}",
        kernel_name=kernel_name,
    )


def _device_counter(kernel_name: str, description: str) -> MetricSpec:
    return MetricSpec(
        name=f"efa_device_{kernel_name}",
        kind=Kind.COUNTER,
        unit="1",
        description=description,
        scope=Scope.DEVICE,
        source=f"hw_counters/{kernel_name}",
        kernel_name=kernel_name,
    )


PORT_COUNTERS: Tuple[MetricSpec, ...] = (
    _port_counter("tx_bytes", "By", "The number of bytes transmitted"),
    _port_counter("tx_pkts", "1", "The number of packets transmitted"),
    _port_counter("rx_bytes", "By", "The number of bytes received"),
    _port_counter("rx_pkts", "1", "The number of packets received"),
    _port_counter("rx_drops", "1", "The number of packets that were received and then dropped",
                  name="efa_rx_dropped"),
    _port_counter("send_bytes", "By", "The number of bytes sent via send operations"),
    _port_counter("send_wrs", "1", "The number of send work requests completed"),
    _port_counter("recv_bytes", "By", "The number of bytes received via recv operations"),
    _port_counter("recv_wrs", "1", "The number of receive work requests completed"),
    _port_counter("rdma_read_wrs", "1", "The number of RDMA read work requests completed"),
    _port_counter("rdma_read_bytes", "By", "The number of bytes received using RDMA read operations"),
    _port_counter("rdma_read_wr_err", "1", "The number of RDMA read work request errors"),
    _port_counter("rdma_read_resp_bytes", "By", "The number of bytes sent in RDMA read response"),
    _port_counter("rdma_write_wrs", "1", "The number of RDMA write work requests completed"),
    _port_counter("rdma_write_bytes", "By",
                  "The number of bytes written by other instances using RDMA write operations"),
    _port_counter("rdma_write_wr_err", "1", "The number of RDMA write work request errors"),
    _port_counter("rdma_write_recv_bytes", "By", "The number of bytes received by RDMA write operations"),
    _port_counter("retrans_bytes", "By", "The number of EFA SRD bytes retransmitted"),
    _port_counter("retrans_pkts", "1", "The number of EFA SRD packets retransmitted"),
    _port_counter("retrans_timeout_events", "1",
                  "The number of times EFA SRD traffic timed out and resulted in a network path change"),
    _port_counter("unresponsive_remote_events", "1",
                  "The number of times an EFA SRD remote connection was unresponsive"),
    _port_counter("impaired_remote_conn_events", "1",
                  "The number of times EFA SRD connections entered an impaired state resulting in a "
                  "reduced throughput rate limit"),
)

DEVICE_COUNTERS: Tuple[MetricSpec, ...] = (
    _device_counter("submitted_cmds", "Admin commands submitted to the device"),
    _device_counter("completed_cmds", "Admin commands the device completed"),
    _device_counter("cmds_err", "Admin commands that failed"),
    _device_counter("no_completion_cmds", "Admin commands that got no completion"),
    _device_counter("keep_alive_rcvd", "Keep-alive events received from the device"),
    _device_counter("alloc_pd_err", "Failed protection domain allocations"),
    _device_counter("create_qp_err", "Failed queue pair creations"),
    _device_counter("create_cq_err", "Failed completion queue creations"),
    _device_counter("reg_mr_err", "Failed memory region registrations"),
    _device_counter("alloc_ucontext_err", "Failed user context allocations"),
    _device_counter("create_ah_err", "Failed address handle creations"),
    _device_counter("mmap_err", "Failed mmap calls"),
)

# Per-second rates computed from counter deltas over elapsed monotonic time.
RATE_SOURCES: Dict[str, str] = {
    "efa_rx_throughput": "rx_bytes",
    "efa_tx_throughput": "tx_bytes",
    "efa_rx_pkts_rate": "rx_pkts",
    "efa_tx_pkts_rate": "tx_pkts",
}

# The counters the collector keeps rates for: the gauges' sources, plus what the views show per second.
RATE_COUNTERS = frozenset(RATE_SOURCES.values()) | {"retrans_pkts", "rx_drops"}


def _rate_gauge(name: str, kernel_name: str) -> MetricSpec:
    unit = "By/s" if kernel_name.endswith("bytes") else "1/s"
    what = "bytes" if unit == "By/s" else "packets"
    direction = "received" if kernel_name.startswith("rx") else "transmitted"
    return MetricSpec(
        name=name,
        kind=Kind.GAUGE,
        unit=unit,
        description=f"{what.capitalize()} {direction} per second over the last collection interval",
        scope=Scope.PORT,
        source=f"delta of {kernel_name} / elapsed monotonic time",
        kernel_name=kernel_name,
    )


PORT_GAUGES: Tuple[MetricSpec, ...] = tuple(_rate_gauge(n, k) for n, k in RATE_SOURCES.items()) + (
    MetricSpec("efa_port_up", Kind.GAUGE, "{port}", "1 when the port state is ACTIVE, else 0", Scope.PORT,
               "ports/N/state"),
    MetricSpec("efa_port_phys_state", Kind.GAUGE, "{state}",
               "Physical port state number (5 is LinkUp); the EFA driver reports a fixed LinkUp", Scope.PORT,
               "ports/N/phys_state"),
    MetricSpec("efa_link_speed", Kind.GAUGE, "By/s",
               "Link speed of the port: the instance type's documented EFA speed where known, "
               "else the port's rate file", Scope.PORT, "instance type table, else ports/N/rate"),
    MetricSpec("efa_rx_utilization_ratio", Kind.GAUGE, "1", "Received bytes per second / link speed (0..1)",
               Scope.PORT, "efa_rx_throughput / efa_link_speed"),
    MetricSpec("efa_tx_utilization_ratio", Kind.GAUGE, "1", "Transmitted bytes per second / link speed (0..1)",
               Scope.PORT, "efa_tx_throughput / efa_link_speed"),
)

INFO_METRICS: Tuple[MetricSpec, ...] = (
    MetricSpec("efa_device_info", Kind.GAUGE, "{device}",
               "Always 1; the attributes say where the device sits: PCI address, NUMA node, local CPUs "
               "and the GPUs or Neuron devices behind the same PCIe switch (else on the same NUMA node)",
               Scope.DEVICE, "sysfs PCI tree: <dev>/device link, /sys/bus/pci/devices",
               extra_attributes=INFO_ATTRIBUTES),
)

# Rail balance: how evenly the node's traffic spreads over its EFA devices (otel_efa/pipeline/rails.py).
NODE_METRICS: Tuple[MetricSpec, ...] = (
    MetricSpec("efa_node_rail_imbalance_ratio", Kind.GAUGE, "1",
               "Busiest device's rx+tx bytes per second / the devices' mean (1 = balanced); "
               "absent while the node is idle", Scope.NODE, "per-device efa_rx_throughput + efa_tx_throughput"),
    MetricSpec("efa_node_idle_rails", Kind.GAUGE, "{device}",
               "Devices carrying under a tenth of the mean device's rx+tx bytes per second while the node "
               "is busy (0 while it is idle)", Scope.NODE, "per-device efa_rx_throughput + efa_tx_throughput"),
)

AGENT_METRICS: Tuple[MetricSpec, ...] = (
    MetricSpec("otel_efa_read_errors", Kind.COUNTER, "1",
               "Counter reads that failed, by reason (missing, permission, not_available, parse, io)",
               Scope.AGENT, "the agent"),
    MetricSpec("otel_efa_collections", Kind.COUNTER, "1", "Completed collection cycles", Scope.AGENT,
               "the agent"),
    MetricSpec("otel_efa_collection_duration", Kind.GAUGE, "s", "Wall time of the last collection cycle",
               Scope.AGENT, "the agent"),
    MetricSpec("otel_efa_missed_intervals", Kind.COUNTER, "1",
               "Collection intervals skipped because the agent fell behind (a slow cycle, a starved or "
               "suspended process); collections + missed intervals = elapsed time / interval",
               Scope.AGENT, "the agent"),
    MetricSpec("otel_efa_dropped_datapoints", Kind.COUNTER, "1",
               "Datapoints an exporter dropped, oldest first, because its outage buffer was full",
               Scope.AGENT, "the agent (CloudWatch exporter buffer)"),
)

# What the node should have, so an alert can compare it with the devices that report (absent when the
# instance type is not in the table).
INSTANCE_METRICS: Tuple[MetricSpec, ...] = (
    MetricSpec("efa_expected_devices", Kind.GAUGE, "{device}",
               "EFA devices the instance type documents; fewer efa_port_up series means a device is missing",
               Scope.AGENT, "instance type table"),
)

PORT_COUNTER_BY_KERNEL: Dict[str, MetricSpec] = {m.kernel_name: m for m in PORT_COUNTERS}
DEVICE_COUNTER_BY_KERNEL: Dict[str, MetricSpec] = {m.kernel_name: m for m in DEVICE_COUNTERS}


def is_device_counter(kernel_name: str) -> bool:
    """Older kernels list device counters under the port; the name tells which is which."""
    return kernel_name in DEVICE_COUNTER_BY_KERNEL


def port_counter_spec(kernel_name: str) -> MetricSpec:
    """The catalog entry for a port counter, or a generic one for a counter newer than the catalog.

    A file name can be any bytes: the generic entry's name is a valid instrument name (``efa_<name>``
    where that is one, else its mapping, see otel_efa/names.py) and its description and source name
    the file escaped; ``kernel_name`` stays the file's own name, which the callbacks look up.
    """
    known = PORT_COUNTER_BY_KERNEL.get(kernel_name)
    if known:
        return known
    unit = "By" if kernel_name.endswith("_bytes") else "1"
    shown = names.escape(kernel_name)
    return MetricSpec(names.instrument_name(f"efa_{kernel_name}"), Kind.COUNTER, unit,
                      f"EFA port counter {shown} (reported by the kernel, not yet in the catalog)",
                      Scope.PORT, f"ports/N/hw_counters/{shown}", kernel_name)


def device_counter_spec(kernel_name: str) -> MetricSpec:
    known = DEVICE_COUNTER_BY_KERNEL.get(kernel_name)
    if known:
        return known
    shown = names.escape(kernel_name)
    return MetricSpec(names.instrument_name(f"efa_device_{kernel_name}"), Kind.COUNTER, "1",
                      f"EFA device counter {shown} (reported by the kernel, not yet in the catalog)",
                      Scope.DEVICE, f"hw_counters/{shown}", kernel_name)


@dataclass(frozen=True)
class CloudWatchSpec:
    """One of the quick-start's CloudWatch metrics: a node total derived from port counters.

    EFA has no counters named ``rx_errors`` or ``tx_discards``; these are the nearest the kernel has.
    """

    name: str
    unit: str  # CloudWatch StandardUnit
    statistic: str  # "rate": per-second rate of the summed counters; "total": cumulative sum
    kernel_names: Tuple[str, ...]
    description: str

    @property
    def otel_metrics(self) -> Tuple[str, ...]:
        """The agent's OTel metrics this is built from (for collector configs): the per-port rate gauges,
        or for a total the node gauge that carries it (:data:`NODE_TOTALS`)."""
        if self.statistic == "rate":
            return tuple(n for n, k in RATE_SOURCES.items() if k in self.kernel_names)
        return (node_total_name(self),)


def node_total_name(spec: CloudWatchSpec) -> str:
    return f"efa_node_{spec.name}"


CLOUDWATCH_NAMESPACE = "ParallelCluster/Network"
CLOUDWATCH_DIMENSION = "InstanceId"
CLOUDWATCH_DEVICE_DIMENSION = "EfaDevice"
CLOUDWATCH_CLUSTER_DIMENSION = "ClusterName"
CLOUDWATCH_JOB_DIMENSION = "SlurmJobId"

# Dimension sets the CloudWatch exporter can publish (config ``cloudwatch.dimension_sets``); every set is
# a separate CloudWatch metric per value combination, so each one is priced by ``otel-efa cost``.
# "instance" is the quick-start's contract and the default; "device" is per EFA device of a node; "cluster" is
# the node total again under the cluster's name, so a dashboard can select one cluster's nodes.
CLOUDWATCH_DIMENSION_SETS: Dict[str, Tuple[str, ...]] = {
    "instance": (CLOUDWATCH_DIMENSION,),
    "device": (CLOUDWATCH_DIMENSION, CLOUDWATCH_DEVICE_DIMENSION),
    "cluster": (CLOUDWATCH_CLUSTER_DIMENSION, CLOUDWATCH_DIMENSION),
    # The Slurm jobs running on the node (comma-joined ids): new metrics for every job, so opt-in only.
    "job": (CLOUDWATCH_DIMENSION, CLOUDWATCH_JOB_DIMENSION),
}

CLOUDWATCH_METRICS: Tuple[CloudWatchSpec, ...] = (
    CloudWatchSpec("rx_bytes_rate", "Bytes/Second", "rate", ("rx_bytes",),
                   "Bytes received per second, all EFA devices of the node"),
    CloudWatchSpec("tx_bytes_rate", "Bytes/Second", "rate", ("tx_bytes",),
                   "Bytes transmitted per second, all EFA devices of the node"),
    CloudWatchSpec("rx_packets_rate", "Count/Second", "rate", ("rx_pkts",),
                   "Packets received per second, all EFA devices of the node"),
    CloudWatchSpec("tx_packets_rate", "Count/Second", "rate", ("tx_pkts",),
                   "Packets transmitted per second, all EFA devices of the node"),
    CloudWatchSpec("rx_errors", "Count", "total", ("rx_drops",),
                   "Received packets dropped (kernel rx_drops), cumulative"),
    CloudWatchSpec("tx_discards", "Count", "total", ("rdma_read_wr_err", "rdma_write_wr_err"),
                   "Send-path work request errors (rdma_read_wr_err + rdma_write_wr_err), cumulative"),
)

# SRD health events, published as node totals when ``cloudwatch.health_events`` is on (newer kernels).
CLOUDWATCH_HEALTH_METRICS: Tuple[CloudWatchSpec, ...] = tuple(
    CloudWatchSpec(k, "Count", "total", (k,), PORT_COUNTER_BY_KERNEL[k].description + ", cumulative")
    for k in ("retrans_timeout_events", "unresponsive_remote_events", "impaired_remote_conn_events"))


def _node_total(spec: CloudWatchSpec) -> MetricSpec:
    return MetricSpec(node_total_name(spec), Kind.GAUGE, "{error}",
                      f"{spec.description} as the kernel counts it, all EFA devices of the node: a gauge, so "
                      "that a collector's awsemf passes it on unchanged (it turns every cumulative sum into "
                      "deltas, and a device reset into a spike); a reset lowers it",
                      Scope.NODE, "sum of " + " + ".join(f"ports/N/hw_counters/{k}" for k in spec.kernel_names))


# The quick-start's cumulative error counts as node gauges: what CloudWatch gets through ADOT.
NODE_TOTALS: Tuple[MetricSpec, ...] = tuple(_node_total(c) for c in CLOUDWATCH_METRICS if c.statistic == "total")
NODE_TOTAL_SOURCES: Dict[str, CloudWatchSpec] = {node_total_name(c): c for c in CLOUDWATCH_METRICS
                                                 if c.statistic == "total"}

METRICS: Tuple[MetricSpec, ...] = (PORT_COUNTERS + DEVICE_COUNTERS + PORT_GAUGES + INFO_METRICS + NODE_METRICS
                                   + NODE_TOTALS + INSTANCE_METRICS + AGENT_METRICS)
BY_NAME: Dict[str, MetricSpec] = {m.name: m for m in METRICS}

# The log line's error fields use the CloudWatch names so `grep -E "rx_errors|tx_discards"` finds them.
LOG_ERROR_FIELDS: Tuple[CloudWatchSpec, ...] = tuple(c for c in CLOUDWATCH_METRICS if c.statistic == "total")
