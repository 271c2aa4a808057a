"""The one declarative table of what otel-efa exports.

Every instrument, the metric reference (docs/metrics.md), the dashboards and the collector configs are derived from
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

Every other module names a metric, a kernel counter, a group of counters or a CloudWatch metric through
the constants below (``catalog.RX_BYTES``, ``catalog.PORT_UP.name``, ``catalog.SRD_HEALTH_EVENTS``), never
as a string of its own: tests/test_catalog_names.py fails on such a string.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from otel_efa import names

# Re-exported explicitly (mypy's no_implicit_reexport): callers say catalog.Kind, catalog.MetricSpec, catalog.Scope.
from otel_efa.metric_spec import Kind as Kind
from otel_efa.metric_spec import MetricSpec as MetricSpec
from otel_efa.metric_spec import Scope as Scope
from otel_efa.metric_spec import prometheus_name as prometheus_name  # for callers of catalog.prometheus_name

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

# The kernel's counter files, in the kernel's order. A port's, on every kernel:
TX_BYTES = "tx_bytes"
TX_PKTS = "tx_pkts"
RX_BYTES = "rx_bytes"
RX_PKTS = "rx_pkts"
RX_DROPS = "rx_drops"
SEND_BYTES = "send_bytes"
SEND_WRS = "send_wrs"
RECV_BYTES = "recv_bytes"
RECV_WRS = "recv_wrs"
RDMA_READ_WRS = "rdma_read_wrs"
RDMA_READ_BYTES = "rdma_read_bytes"
RDMA_READ_WR_ERR = "rdma_read_wr_err"
RDMA_READ_RESP_BYTES = "rdma_read_resp_bytes"
# ... on devices with RDMA write (EFA v2 and later):
RDMA_WRITE_WRS = "rdma_write_wrs"
RDMA_WRITE_BYTES = "rdma_write_bytes"
RDMA_WRITE_WR_ERR = "rdma_write_wr_err"
RDMA_WRITE_RECV_BYTES = "rdma_write_recv_bytes"
# ... on newer kernels (since mid-2025): SRD retransmits and the SRD health events.
RETRANS_BYTES = "retrans_bytes"
RETRANS_PKTS = "retrans_pkts"
RETRANS_TIMEOUT_EVENTS = "retrans_timeout_events"
UNRESPONSIVE_REMOTE_EVENTS = "unresponsive_remote_events"
IMPAIRED_REMOTE_CONN_EVENTS = "impaired_remote_conn_events"
# A device's (<dev>/hw_counters; an older kernel lists them under the port):
SUBMITTED_CMDS = "submitted_cmds"
COMPLETED_CMDS = "completed_cmds"
CMDS_ERR = "cmds_err"
NO_COMPLETION_CMDS = "no_completion_cmds"
KEEP_ALIVE_RCVD = "keep_alive_rcvd"
ALLOC_PD_ERR = "alloc_pd_err"
CREATE_QP_ERR = "create_qp_err"
CREATE_CQ_ERR = "create_cq_err"
REG_MR_ERR = "reg_mr_err"
ALLOC_UCONTEXT_ERR = "alloc_ucontext_err"
CREATE_AH_ERR = "create_ah_err"
MMAP_ERR = "mmap_err"

# Groups, each defined here once.
BASE_PORT_COUNTERS = (TX_BYTES, TX_PKTS, RX_BYTES, RX_PKTS, RX_DROPS, SEND_BYTES, SEND_WRS, RECV_BYTES, RECV_WRS,
                      RDMA_READ_WRS, RDMA_READ_BYTES, RDMA_READ_WR_ERR, RDMA_READ_RESP_BYTES)
RDMA_WRITE_COUNTERS = (RDMA_WRITE_WRS, RDMA_WRITE_BYTES, RDMA_WRITE_WR_ERR, RDMA_WRITE_RECV_BYTES)
SRD_HEALTH_EVENTS = (RETRANS_TIMEOUT_EVENTS, UNRESPONSIVE_REMOTE_EVENTS, IMPAIRED_REMOTE_CONN_EVENTS)
RETRANS_COUNTERS = (RETRANS_BYTES, RETRANS_PKTS) + SRD_HEALTH_EVENTS
# Counters that only grow when something goes wrong: drops, work request errors, SRD health events.
FAULT_PORT_COUNTERS = (RX_DROPS, RDMA_READ_WR_ERR, RDMA_WRITE_WR_ERR) + SRD_HEALTH_EVENTS
FAULT_DEVICE_COUNTERS = (CMDS_ERR, NO_COMPLETION_CMDS, ALLOC_PD_ERR, CREATE_QP_ERR, CREATE_CQ_ERR, REG_MR_ERR,
                         ALLOC_UCONTEXT_ERR, CREATE_AH_ERR, MMAP_ERR)


# The keys of a scope's own series, and what the node adds to them where it knows it
# (otel_efa/node/attribution.py): the device's ENI once IMDS named it, the running Slurm jobs while job
# attribution is on (slurm.enabled, off by default).
SCOPE_ATTRIBUTES: Dict[Scope, Tuple[str, ...]] = {
    Scope.PORT: PORT_ATTRIBUTES, Scope.DEVICE: DEVICE_ATTRIBUTES, Scope.NODE: (), Scope.AGENT: ()}
CONTEXT_ATTRIBUTES: Dict[Scope, Tuple[str, ...]] = {
    Scope.PORT: (ATTR_ENI, ATTR_SLURM_JOB), Scope.DEVICE: (ATTR_ENI, ATTR_SLURM_JOB), Scope.NODE: (ATTR_SLURM_JOB,),
    Scope.AGENT: ()}


def _metric(name: str, kind: Kind, unit: str, description: str, scope: Scope, source: str,
            kernel_name: Optional[str] = None, extra_attributes: Tuple[str, ...] = ()) -> MetricSpec:
    """An entry whose points carry its scope's attributes (plus ``extra_attributes``) and its scope's context."""
    return MetricSpec(name, kind, unit, description, scope, source, kernel_name,
                      SCOPE_ATTRIBUTES[scope] + extra_attributes, CONTEXT_ATTRIBUTES[scope])


def _port_counter(kernel_name: str, unit: str, description: str, name: Optional[str] = None) -> MetricSpec:
    return _metric(name or f"efa_{kernel_name}", Kind.COUNTER, unit, description, Scope.PORT,
                   f"ports/N/hw_counters/{kernel_name}", kernel_name)


def _device_counter(kernel_name: str, description: str) -> MetricSpec:
    return _metric(f"efa_device_{kernel_name}", Kind.COUNTER, "1", description, Scope.DEVICE,
                   f"hw_counters/{kernel_name}", kernel_name)


PORT_COUNTERS: Tuple[MetricSpec, ...] = (
    _port_counter(TX_BYTES, "By", "The number of bytes transmitted"),
    _port_counter(TX_PKTS, "1", "The number of packets transmitted"),
    _port_counter(RX_BYTES, "By", "The number of bytes received"),
    _port_counter(RX_PKTS, "1", "The number of packets received"),
    _port_counter(RX_DROPS, "1", "The number of packets that were received and then dropped",
                  name="efa_rx_dropped"),
    _port_counter(SEND_BYTES, "By", "The number of bytes sent via send operations"),
    _port_counter(SEND_WRS, "1", "The number of send work requests completed"),
    _port_counter(RECV_BYTES, "By", "The number of bytes received via recv operations"),
    _port_counter(RECV_WRS, "1", "The number of receive work requests completed"),
    _port_counter(RDMA_READ_WRS, "1", "The number of RDMA read work requests completed"),
    _port_counter(RDMA_READ_BYTES, "By", "The number of bytes received using RDMA read operations"),
    _port_counter(RDMA_READ_WR_ERR, "1", "The number of RDMA read work request errors"),
    _port_counter(RDMA_READ_RESP_BYTES, "By", "The number of bytes sent in RDMA read response"),
    _port_counter(RDMA_WRITE_WRS, "1", "The number of RDMA write work requests completed"),
    _port_counter(RDMA_WRITE_BYTES, "By",
                  "The number of bytes written by other instances using RDMA write operations"),
    _port_counter(RDMA_WRITE_WR_ERR, "1", "The number of RDMA write work request errors"),
    _port_counter(RDMA_WRITE_RECV_BYTES, "By", "The number of bytes received by RDMA write operations"),
    _port_counter(RETRANS_BYTES, "By", "The number of EFA SRD bytes retransmitted"),
    _port_counter(RETRANS_PKTS, "1", "The number of EFA SRD packets retransmitted"),
    _port_counter(RETRANS_TIMEOUT_EVENTS, "1",
                  "The number of times EFA SRD traffic timed out and resulted in a network path change"),
    _port_counter(UNRESPONSIVE_REMOTE_EVENTS, "1",
                  "The number of times an EFA SRD remote connection was unresponsive"),
    _port_counter(IMPAIRED_REMOTE_CONN_EVENTS, "1",
                  "The number of times EFA SRD connections entered an impaired state resulting in a "
                  "reduced throughput rate limit"),
)

DEVICE_COUNTERS: Tuple[MetricSpec, ...] = (
    _device_counter(SUBMITTED_CMDS, "Admin commands submitted to the device"),
    _device_counter(COMPLETED_CMDS, "Admin commands the device completed"),
    _device_counter(CMDS_ERR, "Admin commands that failed"),
    _device_counter(NO_COMPLETION_CMDS, "Admin commands that got no completion"),
    _device_counter(KEEP_ALIVE_RCVD, "Keep-alive events received from the device"),
    _device_counter(ALLOC_PD_ERR, "Failed protection domain allocations"),
    _device_counter(CREATE_QP_ERR, "Failed queue pair creations"),
    _device_counter(CREATE_CQ_ERR, "Failed completion queue creations"),
    _device_counter(REG_MR_ERR, "Failed memory region registrations"),
    _device_counter(ALLOC_UCONTEXT_ERR, "Failed user context allocations"),
    _device_counter(CREATE_AH_ERR, "Failed address handle creations"),
    _device_counter(MMAP_ERR, "Failed mmap calls"),
)

# Per-second rates computed from counter deltas over elapsed monotonic time.
RATE_SOURCES: Dict[str, str] = {
    "efa_rx_throughput": RX_BYTES,
    "efa_tx_throughput": TX_BYTES,
    "efa_rx_pkts_rate": RX_PKTS,
    "efa_tx_pkts_rate": TX_PKTS,
}

# The counters the collector keeps rates for: the gauges' sources, plus what the views show per second.
RATE_COUNTERS = frozenset(RATE_SOURCES.values()) | {RETRANS_PKTS, RX_DROPS}


def _rate_gauge(name: str, kernel_name: str) -> MetricSpec:
    unit = "By/s" if kernel_name.endswith("bytes") else "1/s"
    what = "bytes" if unit == "By/s" else "packets"
    direction = "received" if kernel_name.startswith("rx") else "transmitted"
    return _metric(name, Kind.GAUGE, unit, f"{what.capitalize()} {direction} per second over the last collection "
                   "interval", Scope.PORT, f"delta of {kernel_name} / elapsed monotonic time", kernel_name)


PORT_UP = _metric("efa_port_up", Kind.GAUGE, "{port}", "1 when the port state is ACTIVE, else 0", Scope.PORT,
                  "ports/N/state")
PORT_PHYS_STATE = _metric("efa_port_phys_state", Kind.GAUGE, "{state}",
                          "Physical port state number (5 is LinkUp); the EFA driver reports a fixed LinkUp",
                          Scope.PORT, "ports/N/phys_state")
LINK_SPEED = _metric("efa_link_speed", Kind.GAUGE, "By/s",
                     "Link speed of the port: the instance type's documented EFA speed where known, "
                     "else the port's rate file", Scope.PORT, "instance type table, else ports/N/rate")
RX_UTILIZATION = _metric("efa_rx_utilization_ratio", Kind.GAUGE, "1",
                         "Received bytes per second / link speed (0..1)", Scope.PORT,
                         "efa_rx_throughput / efa_link_speed")
TX_UTILIZATION = _metric("efa_tx_utilization_ratio", Kind.GAUGE, "1",
                         "Transmitted bytes per second / link speed (0..1)", Scope.PORT,
                         "efa_tx_throughput / efa_link_speed")
PORT_GAUGES: Tuple[MetricSpec, ...] = tuple(_rate_gauge(n, k) for n, k in RATE_SOURCES.items()) + (
    PORT_UP, PORT_PHYS_STATE, LINK_SPEED, RX_UTILIZATION, TX_UTILIZATION)

DEVICE_INFO = _metric("efa_device_info", Kind.GAUGE, "{device}",
                      "Always 1; the attributes say where the device sits: PCI address, NUMA node, local CPUs "
                      "and the GPUs or Neuron devices behind the same PCIe switch (else on the same NUMA node)",
                      Scope.DEVICE, "sysfs PCI tree: <dev>/device link, /sys/bus/pci/devices",
                      extra_attributes=INFO_ATTRIBUTES)
INFO_METRICS: Tuple[MetricSpec, ...] = (DEVICE_INFO,)

# Rail balance: how evenly the node's traffic spreads over its EFA devices (otel_efa/pipeline/rails.py).
RAIL_IMBALANCE = _metric("efa_node_rail_imbalance_ratio", Kind.GAUGE, "1",
                         "Busiest device's rx+tx bytes per second / the devices' mean (1 = balanced); "
                         "absent while the node is idle", Scope.NODE,
                         "per-device efa_rx_throughput + efa_tx_throughput")
IDLE_RAILS = _metric("efa_node_idle_rails", Kind.GAUGE, "{device}",
                     "Devices carrying under a tenth of the mean device's rx+tx bytes per second while the node "
                     "is busy (0 while it is idle)", Scope.NODE, "per-device efa_rx_throughput + efa_tx_throughput")
NODE_METRICS: Tuple[MetricSpec, ...] = (RAIL_IMBALANCE, IDLE_RAILS)

READ_ERRORS = _metric("otel_efa_read_errors", Kind.COUNTER, "1",
                      "Counter reads that failed, by reason (missing, permission, not_available, parse, io)",
                      Scope.AGENT, "the agent", extra_attributes=(ATTR_REASON,))
COLLECTIONS = _metric("otel_efa_collections", Kind.COUNTER, "1", "Completed collection cycles", Scope.AGENT,
                      "the agent")
COLLECTION_DURATION = _metric("otel_efa_collection_duration", Kind.GAUGE, "s",
                              "Wall time of the last collection cycle", Scope.AGENT, "the agent")
MISSED_INTERVALS = _metric("otel_efa_missed_intervals", Kind.COUNTER, "1",
                           "Collection intervals skipped because the agent fell behind (a slow cycle, a starved "
                           "or suspended process); collections + missed intervals = elapsed time / interval",
                           Scope.AGENT, "the agent")
DROPPED_DATAPOINTS = _metric("otel_efa_dropped_datapoints", Kind.COUNTER, "1",
                             "Datapoints an exporter dropped, oldest first, because its outage buffer was full",
                             Scope.AGENT, "the agent (CloudWatch exporter buffer)")
AGENT_METRICS: Tuple[MetricSpec, ...] = (READ_ERRORS, COLLECTIONS, COLLECTION_DURATION, MISSED_INTERVALS,
                                         DROPPED_DATAPOINTS)

# What the node should have, so an alert can compare it with the devices that report (absent when the
# instance type is not in the table).
EXPECTED_DEVICES = _metric("efa_expected_devices", Kind.GAUGE, "{device}",
                           "EFA devices the instance type documents; fewer efa_port_up series means a device "
                           "is missing", Scope.AGENT, "instance type table")
INSTANCE_METRICS: Tuple[MetricSpec, ...] = (EXPECTED_DEVICES,)

PORT_COUNTER_BY_KERNEL: Dict[str, MetricSpec] = {m.kernel_name: m for m in PORT_COUNTERS if m.kernel_name}
DEVICE_COUNTER_BY_KERNEL: Dict[str, MetricSpec] = {m.kernel_name: m for m in DEVICE_COUNTERS if m.kernel_name}


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
    return _metric(names.instrument_name(f"efa_{kernel_name}"), Kind.COUNTER, unit,
                   f"EFA port counter {shown} (reported by the kernel, not yet in the catalog)",
                   Scope.PORT, f"ports/N/hw_counters/{shown}", kernel_name)


def device_counter_spec(kernel_name: str) -> MetricSpec:
    known = DEVICE_COUNTER_BY_KERNEL.get(kernel_name)
    if known:
        return known
    shown = names.escape(kernel_name)
    return _metric(names.instrument_name(f"efa_device_{kernel_name}"), Kind.COUNTER, "1",
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
CLOUDWATCH_DEFAULT_DIMENSION_SETS: Tuple[str, ...] = ("instance",)  # config cloudwatch.dimension_sets

# The quick-start's six metrics, published by default, in three groups the dashboard draws.
CLOUDWATCH_THROUGHPUT: Tuple[CloudWatchSpec, ...] = (
    CloudWatchSpec("rx_bytes_rate", "Bytes/Second", "rate", (RX_BYTES,),
                   "Bytes received per second, all EFA devices of the node"),
    CloudWatchSpec("tx_bytes_rate", "Bytes/Second", "rate", (TX_BYTES,),
                   "Bytes transmitted per second, all EFA devices of the node"),
)
CLOUDWATCH_PACKET_RATES: Tuple[CloudWatchSpec, ...] = (
    CloudWatchSpec("rx_packets_rate", "Count/Second", "rate", (RX_PKTS,),
                   "Packets received per second, all EFA devices of the node"),
    CloudWatchSpec("tx_packets_rate", "Count/Second", "rate", (TX_PKTS,),
                   "Packets transmitted per second, all EFA devices of the node"),
)
CLOUDWATCH_ERRORS: Tuple[CloudWatchSpec, ...] = (
    CloudWatchSpec("rx_errors", "Count", "total", (RX_DROPS,),
                   f"Received packets dropped (kernel {RX_DROPS}), cumulative"),
    CloudWatchSpec("tx_discards", "Count", "total", (RDMA_READ_WR_ERR, RDMA_WRITE_WR_ERR),
                   f"Send-path work request errors ({RDMA_READ_WR_ERR} + {RDMA_WRITE_WR_ERR}), cumulative"),
)
CLOUDWATCH_METRICS: Tuple[CloudWatchSpec, ...] = CLOUDWATCH_THROUGHPUT + CLOUDWATCH_PACKET_RATES + CLOUDWATCH_ERRORS

# SRD health events, published as node totals when ``cloudwatch.health_events`` is on (off by default; newer
# kernels).
CLOUDWATCH_HEALTH_METRICS: Tuple[CloudWatchSpec, ...] = tuple(
    CloudWatchSpec(k, "Count", "total", (k,), PORT_COUNTER_BY_KERNEL[k].description + ", cumulative")
    for k in SRD_HEALTH_EVENTS)


def _node_total(spec: CloudWatchSpec) -> MetricSpec:
    return _metric(node_total_name(spec), Kind.GAUGE, "{error}",
                   f"{spec.description} as the kernel counts it, all EFA devices of the node: a gauge, so "
                   "that a collector's awsemf passes it on unchanged (it turns every cumulative sum into "
                   "deltas, and a device reset into a spike); a reset lowers it",
                   Scope.NODE, "sum of " + " + ".join(f"ports/N/hw_counters/{k}" for k in spec.kernel_names))


# The quick-start's cumulative error counts as node gauges: what CloudWatch gets through ADOT.
NODE_TOTALS: Tuple[MetricSpec, ...] = tuple(_node_total(c) for c in CLOUDWATCH_ERRORS)
NODE_TOTAL_SOURCES: Dict[str, CloudWatchSpec] = {node_total_name(c): c for c in CLOUDWATCH_ERRORS}

METRICS: Tuple[MetricSpec, ...] = (PORT_COUNTERS + DEVICE_COUNTERS + PORT_GAUGES + INFO_METRICS + NODE_METRICS
                                   + NODE_TOTALS + INSTANCE_METRICS + AGENT_METRICS)
BY_NAME: Dict[str, MetricSpec] = {m.name: m for m in METRICS}

# The log line's error fields use the CloudWatch names so `grep -E "rx_errors|tx_discards"` finds them.
LOG_ERROR_FIELDS: Tuple[CloudWatchSpec, ...] = CLOUDWATCH_ERRORS
