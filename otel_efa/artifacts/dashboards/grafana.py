"""The Grafana dashboard (Prometheus or Amazon Managed Prometheus), generated from the catalog.

``otel-efa dashboard grafana > efa.json``, then import it in Grafana (AMG). Variables: the data source,
then cluster, instance and device, each narrowing the next. EFA panels sit beside the GPU panels of
NVIDIA's DCGM exporter (:9400) so one screen shows whether a slow step is the GPUs or the network.

The panels assume both exporters of a node carry the same ``cluster`` and ``instance`` labels (see
:mod:`otel_efa.artifacts.promql`). Bytes become bits (``* 8``) because link speeds are sold in Gb/s.
"""
import json
import sys
from typing import Any, Dict, List, Sequence, Tuple

from otel_efa import catalog
from otel_efa.artifacts import promql
from otel_efa.artifacts.promql import (
    CLUSTER,
    DCGM_FB_USED,
    DCGM_GPU_UTIL,
    DCGM_NVLINK,
    DCGM_PCIE_RX,
    DCGM_PCIE_TX,
    DCGM_POWER,
    DCGM_XID,
    DEVICE,
    INSTANCE,
    NODE,
    counter,
    device_counter,
    name,
    sum_increase,
    sum_rate,
)

UID = "otel-efa"
TITLE = "EFA network and GPUs (otel-efa)"
WINDOW = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

NODE_MATCH = f'{CLUSTER}=~"$cluster", {INSTANCE}=~"$instance"'
DEVICE_MATCH = f'{NODE_MATCH}, {DEVICE}=~"$device"'
# Titles the tests look panels up by (throughput panels are checked against the simulator's truth).
CLUSTER_THROUGHPUT = "Cluster EFA throughput vs line rate"
NODE_THROUGHPUT = "EFA throughput per node"
DEVICE_RX = "RX per device"
DEVICE_TX = "TX per device"
AGENTS_SILENT = "Agents stopped reporting"

Target = Tuple[str, str]  # (PromQL, legend)


def _rate_bits(kernel_name: str, labels: Sequence[str], matchers: str) -> str:
    return f"{sum_rate(counter(kernel_name), labels, WINDOW, matchers)} * 8"


def _cluster_panels() -> List[Dict[str, Any]]:
    link = name(catalog.LINK_SPEED.name)
    rx_total = f"sum(rate({counter(catalog.RX_BYTES)}{{{NODE_MATCH}}}[{WINDOW}]))"
    tx_total = f"sum(rate({counter(catalog.TX_BYTES)}{{{NODE_MATCH}}}[{WINDOW}]))"
    line_rate = f"sum({link}{{{NODE_MATCH}}})"
    nodes = f"count(count by ({promql.by(NODE)}) ({name(catalog.PORT_UP.name)}{{{NODE_MATCH}}}))"
    return [
        _panel(CLUSTER_THROUGHPUT, "timeseries", "bps", [
            (f"{rx_total} * 8", "RX"),
            (f"{tx_total} * 8", "TX"),
            (f"{line_rate} * 8", "line rate (per direction)"),
        ], width=12, description="Sum over the selected nodes; line rate is the sum of their EFA link speeds."),
        _panel("Cluster utilization", "stat", "percentunit", [
            (f"{rx_total} / {line_rate}", "RX"),
            (f"{tx_total} / {line_rate}", "TX"),
        ], width=6, description="Throughput / line rate, per direction."),
        _panel("Nodes reporting", "stat", "short", [(nodes, "nodes")], width=6),
    ]


def _node_panels() -> List[Dict[str, Any]]:
    per_device = promql.device_throughput(WINDOW, DEVICE_MATCH)
    node = promql.by(NODE)
    imbalance = (f"(max by ({node}) ({per_device}) - min by ({node}) ({per_device}))"
                 f" / avg by ({node}) ({per_device})")
    return [
        _panel(NODE_THROUGHPUT, "timeseries", "bps", [
            (_rate_bits(catalog.RX_BYTES, NODE, NODE_MATCH), "{{instance}} RX"),
            (_rate_bits(catalog.TX_BYTES, NODE, NODE_MATCH), "{{instance}} TX"),
        ], width=12),
        _panel("Imbalance across a node's devices", "timeseries", "percentunit", [(imbalance, "{{instance}}")],
               width=12, description="(busiest - idlest device) / mean device, RX+TX. NCCL spreads traffic "
                                     "evenly over the rails: a high value means one rail is slow or idle."),
    ]


def _device_panels() -> List[Dict[str, Any]]:
    labels = (INSTANCE, DEVICE)
    legend = "{{instance}} {{" + DEVICE + "}}"
    utilization = [(f"max by ({promql.by(labels)}) ({name(m.name)}{{{DEVICE_MATCH}}})", f"{legend} {d}")
                   for m, d in ((catalog.RX_UTILIZATION, "RX"), (catalog.TX_UTILIZATION, "TX"))]
    return [
        _panel(DEVICE_RX, "timeseries", "bps", [(_rate_bits(catalog.RX_BYTES, labels, DEVICE_MATCH), legend)],
               width=8),
        _panel(DEVICE_TX, "timeseries", "bps", [(_rate_bits(catalog.TX_BYTES, labels, DEVICE_MATCH), legend)],
               width=8),
        _panel("Utilization per device", "timeseries", "percentunit", utilization, width=8),
        _panel("Ports down", "stat", "short",
               [(f"count({name(catalog.PORT_UP.name)}{{{DEVICE_MATCH}}} == 0) or vector(0)", "ports down")],
               width=6),
        _panel("Devices reporting vs expected", "timeseries", "short", [
            (f"count by ({promql.by(NODE)}) ({name(catalog.PORT_UP.name)}{{{NODE_MATCH}}})",
             "{{instance}} reporting"),
            (f"{name(catalog.EXPECTED_DEVICES.name)}{{{NODE_MATCH}}}", "{{instance}} expected"),
        ], width=18),
    ]


def _health_panels() -> List[Dict[str, Any]]:
    labels = (INSTANCE, DEVICE)
    legend = "{{instance}} {{" + DEVICE + "}}"
    retrans_ratio = (f"{sum_rate(counter(catalog.RETRANS_PKTS), NODE, WINDOW, DEVICE_MATCH)}"
                     f" / {sum_rate(counter(catalog.TX_PKTS), NODE, WINDOW, DEVICE_MATCH)}")
    events = [(sum_increase(counter(k), labels, WINDOW, DEVICE_MATCH), f"{legend} {k}")
              for k in catalog.SRD_HEALTH_EVENTS]
    errors = [
        (sum_increase(counter(catalog.RX_DROPS), labels, WINDOW, DEVICE_MATCH), f"{legend} {catalog.RX_DROPS}"),
        (promql.sum_increase_optional(counter(catalog.RDMA_READ_WR_ERR), counter(catalog.RDMA_WRITE_WR_ERR), labels,
                                      WINDOW, DEVICE_MATCH), f"{legend} RDMA work request errors"),
    ]
    return [
        _panel("Retransmitted packets / sent packets", "timeseries", "percentunit",
               [(retrans_ratio, "{{instance}}")], width=8),
        _panel("Retransmitted bytes per device", "timeseries", "bps",
               [(_rate_bits(catalog.RETRANS_BYTES, labels, DEVICE_MATCH), legend)], width=8),
        _panel("SRD health events", "timeseries", "short", events, width=8,
               description="Path changes after timeouts, unresponsive and impaired remote connections."),
        _panel("Drops and work request errors", "timeseries", "short", errors, width=12),
        _panel("Device admin command errors", "timeseries", "short",
               [(sum_increase(device_counter(catalog.CMDS_ERR), labels, WINDOW, DEVICE_MATCH), legend)], width=12),
    ]


def _gpu_panels() -> List[Dict[str, Any]]:
    node = promql.by(NODE)
    match = NODE_MATCH
    return [
        _panel("GPU utilization (DCGM)", "timeseries", "percent",
               [(f"avg by ({node}) ({DCGM_GPU_UTIL}{{{match}}})", "{{instance}}")], width=8),
        _panel("GPU power (DCGM)", "timeseries", "watt",
               [(f"sum by ({node}) ({DCGM_POWER}{{{match}}})", "{{instance}}")], width=8),
        _panel("GPU memory used (DCGM)", "timeseries", "decmbytes",
               [(f"sum by ({node}) ({DCGM_FB_USED}{{{match}}})", "{{instance}}")], width=8),
        _panel("NVLink bandwidth counter rate (DCGM)", "timeseries", "short",
               [(f"sum by ({node}) (rate({promql.dcgm_counter(DCGM_NVLINK, match)}[{WINDOW}]))", "{{instance}}")],
               width=8),
        _panel("GPU PCIe throughput (DCGM)", "timeseries", "Bps", [
            (f"sum by ({node}) ({DCGM_PCIE_TX}{{{match}}})", "{{instance}} TX"),
            (f"sum by ({node}) ({DCGM_PCIE_RX}{{{match}}})", "{{instance}} RX"),
        ], width=8, description="DCGM profiling fields (bytes per second), in dcgm-exporter's defaults since 4.0."),
        _panel("Last XID error (DCGM)", "stat", "short",
               [(f"max by ({node}) ({DCGM_XID}{{{match}}})", "{{instance}}")], width=8),
    ]


def _agent_panels() -> List[Dict[str, Any]]:
    node = promql.by(NODE)
    return [
        _panel("Agent collections per second", "timeseries", "short",
               [(sum_rate(name(catalog.COLLECTIONS.name), NODE, WINDOW, NODE_MATCH), "{{instance}}")], width=6),
        _panel("Agent collection duration", "timeseries", "s",
               [(f"max by ({node}) ({name(catalog.COLLECTION_DURATION.name)}{{{NODE_MATCH}}})", "{{instance}}")],
               width=6),
        _panel("Agent counter read errors", "timeseries", "short", [
            (sum_rate(name(catalog.READ_ERRORS.name), NODE + (promql.REASON,), WINDOW, NODE_MATCH),
             "{{instance}} {{" + promql.REASON + "}}")], width=6),
        _panel(AGENTS_SILENT, "stat", "short",
               [(f"count({promql.node_stopped_reporting(name(catalog.COLLECTIONS.name), NODE_MATCH)}) or vector(0)",
                 "nodes")], width=6,
               description=f"Nodes whose agent reported in the last {promql.REMEMBER} but not now (pushed data: "
                           "after the 5 minute lookback). Includes nodes scaled down meanwhile; the "
                           "EfaAgentDown alert counts only nodes whose DCGM or node exporter still reports."),
    ]


ROWS = (
    ("Cluster", _cluster_panels),
    ("Nodes", _node_panels),
    ("GPUs (DCGM exporter)", _gpu_panels),
    ("Devices", _device_panels),
    ("Retransmits and SRD health", _health_panels),
    ("Agent health", _agent_panels),
)


def _panel(title: str, kind: str, unit: str, targets: Sequence[Target], width: int,
           description: str = "") -> Dict[str, Any]:
    panel: Dict[str, Any] = {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"w": width, "h": 8},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if description:
        panel["description"] = description
    if kind == "timeseries":
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}}
    return panel


def _query_variable(variable: str, query: str, label_text: str) -> Dict[str, Any]:
    return {
        "name": variable,
        "label": label_text,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": variable},
        "refresh": 2,  # on time range change: nodes come and go
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _variables() -> List[Dict[str, Any]]:
    up = name(catalog.PORT_UP.name)
    return [
        {"name": "datasource", "label": "Prometheus / AMP", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        _query_variable("cluster", f"label_values({up}, {CLUSTER})", "Cluster"),
        _query_variable("instance", f'label_values({up}{{{CLUSTER}=~"$cluster"}}, {INSTANCE})', "Instance"),
        _query_variable("device", f"label_values({up}{{{NODE_MATCH}}}, {DEVICE})", "EFA device"),
    ]


def _lay_out(rows) -> List[Dict[str, Any]]:
    """Grafana wants absolute grid positions: fill 24 columns left to right, a row header per row."""
    panels: List[Dict[str, Any]] = []
    y = 0
    for title, make in rows:
        panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
        y += 1
        x = 0
        row_height = 0
        for panel in make():
            grid = panel["gridPos"]
            if x + grid["w"] > 24:
                x, y, row_height = 0, y + row_height, 0
            grid.update(x=x, y=y)
            x += grid["w"]
            row_height = max(row_height, grid["h"])
            panels.append(panel)
        y += row_height
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return panels


def dashboard() -> Dict[str, Any]:
    return {
        "uid": UID,
        "title": TITLE,
        "description": "EFA metrics from otel-efa beside NVIDIA DCGM exporter GPU metrics. Generated from "
                       "the metric catalog by `otel-efa dashboard grafana`; do not edit by hand.",
        "tags": ["efa", "otel-efa", "gpu", "dcgm"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "panels": _lay_out(ROWS),
    }


def render() -> str:
    """The dashboard as the JSON text committed in ``dashboards/grafana-efa.json``."""
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def add_parser(kinds) -> None:
    p = kinds.add_parser("grafana", help="Grafana dashboard JSON (Prometheus / AMP data source) on stdout")
    p.set_defaults(handler=_grafana)


def _grafana(_args) -> int:
    sys.stdout.write(render())
    return 0
