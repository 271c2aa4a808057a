"""ADOT collector configurations for a compute node, and the head node's Prometheus scrape config.

Generated from the catalog, so the quick-start's CloudWatch names, units and dimension are written once
(``catalog.CLOUDWATCH_METRICS``). The files under ``otel-config/`` are this module's output, committed so
they can be read and copied; a test keeps them equal (``otel-efa collector-config --write otel-config``), and
tests/test_collector_path.py runs them on a collector built from ADOT's components and checks what lands.

How the quick-start's six CloudWatch metrics come out of ADOT (upstream ``metricstransform`` and ``awsemf``):

* ``metricstransform`` ``combine`` gathers the source metrics of one CloudWatch metric under its name (the
  per-port rate gauges; for ``rx_errors``/``tx_discards`` the agent's node gauges ``efa_node_*``), then
  ``aggregate_labels`` with an empty label set sums away ``aws.efa.device``/``aws.efa.port``: node totals.
  The include patterns use non-capturing groups because ``combine`` turns every capturing group into a label.
* ``filter`` keeps only those six (each metric in the namespace costs money), with an OTTL condition: the
  form every ADOT release from v0.42.0 loads.
* ``resource`` copies ``host.id`` to ``InstanceId``; ``awsemf`` with ``resource_to_telemetry_conversion``
  makes it a label and ``metric_declarations`` makes it the only dimension; ``metric_descriptors`` set the
  quick-start's units (awsemf maps only a few OTel units itself).
* Only gauges reach ``awsemf``: it turns every cumulative sum into per-export deltas and publishes the raw value
  when a cumulative value goes down. The error counts therefore arrive as the agent's node gauges and land
  as the node's cumulative counts, as on the direct PutMetricData path.

On the AMP pipeline, ``resource/amp`` labels every series of the node (the agent's, DCGM's, the node
exporter's) with ``instance`` (the EC2 instance id) and ``cluster``, as the head node's relabeling does.
"""
import argparse
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from otel_efa import catalog
from otel_efa.artifacts import promql
from otel_efa.config import ConfigError

MODES = ("cloudwatch", "amp", "both")

HEALTH_CHECK = "127.0.0.1:13133"
DCGM_EXPORTER = "127.0.0.1:9400"
NODE_EXPORTER = "127.0.0.1:9100"
AGENT_PROMETHEUS_PORT = 9464
SCRAPE_INTERVAL = "60s"  # the agent's default collection interval
EMF_LOG_GROUP = "/aws/parallelcluster/efa-monitor"
EMF_LOG_STREAM = "otel-efa"

# Every ${env:NAME} the configs use, and what it is; install-adot.sh writes them, docs/telemetry-path.md lists them.
ENVIRONMENT: Dict[str, str] = {
    "AWS_REGION": "the AWS region of the CloudWatch and AMP endpoints, e.g. us-east-1",
    "AMP_REMOTE_WRITE_URL": "the AMP workspace's remote write URL, "
                            "https://aps-workspaces.REGION.amazonaws.com/workspaces/ws-ID/api/v1/remote_write",
    "OTEL_EFA_CLUSTER_NAME": "the ParallelCluster cluster's name: the cluster label of every series sent to AMP",
}

# ParallelCluster tags its instances; the head node finds the compute nodes by them.
PCLUSTER_NODE_TYPE_TAG = "parallelcluster:node-type"
PCLUSTER_CLUSTER_NAME_TAG = "parallelcluster:cluster-name"


def _env(name: str) -> str:
    assert name in ENVIRONMENT, name
    return "${env:" + name + "}"


def source_pattern(spec: catalog.CloudWatchSpec) -> str:
    """An anchored RE2 pattern matching exactly the agent metrics a CloudWatch metric is made from.

    ``$`` is written ``$$``: the collector's configuration expands ``$`` and reads ``$$`` as one ``$``.
    """
    names = "|".join(re.escape(name) for name in spec.otel_metrics)
    return f"^(?:{names})$$"


def cloudwatch_transforms() -> List[Dict[str, Any]]:
    return [{
        "include": source_pattern(spec),
        "match_type": "regexp",
        "action": "combine",
        "new_name": spec.name,
        "aggregation_type": "sum",
        "operations": [{"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"}],
    } for spec in catalog.CLOUDWATCH_METRICS]


def otlp_receiver(protocol: str) -> str:
    """Where the node's collector listens: where the agent sends by default (one resolver decides both)."""
    from otel_efa.config import OtlpConfig
    from otel_efa.otlp_settings import receiver_endpoint, resolve_settings

    host, port = receiver_endpoint(resolve_settings(OtlpConfig(protocol=protocol), {}))
    return f"{host}:{port}"


def _receivers(mode: str) -> Dict[str, Any]:
    receivers: Dict[str, Any] = {"otlp": {"protocols": {"grpc": {"endpoint": otlp_receiver("grpc")},
                                                        "http": {"endpoint": otlp_receiver("http/protobuf")}}}}
    if mode != "cloudwatch":
        receivers["prometheus"] = {"config": {"scrape_configs": [
            {"job_name": "dcgm-exporter", "scrape_interval": SCRAPE_INTERVAL,
             "static_configs": [{"targets": [DCGM_EXPORTER]}]},
            {"job_name": "node-exporter", "scrape_interval": SCRAPE_INTERVAL,
             "static_configs": [{"targets": [NODE_EXPORTER]}]},
        ]}}
    return receivers


def _processors(mode: str) -> Dict[str, Any]:
    processors: Dict[str, Any] = {
        "memory_limiter": {"check_interval": "1s", "limit_mib": 200, "spike_limit_mib": 50},
        "resourcedetection": {"detectors": ["env", "ec2"], "timeout": "2s", "override": False},
        "batch": {"timeout": "10s"},
    }
    if mode != "amp":
        processors.update({
            "metricstransform/cloudwatch": {"transforms": cloudwatch_transforms()},
            "filter/cloudwatch": {"error_mode": "ignore", "metrics": {"metric": [keep_only(
                c.name for c in catalog.CLOUDWATCH_METRICS)]}},
            "resource/cloudwatch": {"attributes": [
                {"key": catalog.CLOUDWATCH_DIMENSION, "from_attribute": "host.id", "action": "insert"}]},
        })
    if mode != "cloudwatch":
        processors["resource/amp"] = {"attributes": amp_node_labels()}
    return processors


def keep_only(names: Iterable[str]) -> str:
    """An OTTL condition that drops every metric but ``names``: filterprocessor drops what matches.

    The OTTL form loads on every release from ADOT v0.42.0 (contrib 0.115) on; ``include: match_type``
    is deprecated since contrib 0.151, and ``metric_conditions`` exists only since then.
    """
    return "not (" + " or ".join(f'name == "{name}"' for name in names) + ")"


def amp_node_labels() -> List[Dict[str, str]]:
    """Resource attributes that become the labels a node is selected and joined by on AMP.

    ``prometheusremotewrite`` makes ``instance`` from ``service.instance.id``, which the prometheus
    receiver sets to the scrape target (DCGM: ``127.0.0.1:9400``): with the EC2 instance id there, the
    agent's and DCGM's series of one node share ``instance``, as on the head node's scrape path
    (:func:`head_node_prometheus` relabels the same labels from EC2 service discovery).
    """
    return [
        {"key": "service.instance.id", "from_attribute": "host.id", "action": "upsert"},
        {"key": "instance_id", "from_attribute": "host.id", "action": "upsert"},
        {"key": "instance_type", "from_attribute": "host.type", "action": "upsert"},
        {"key": promql.CLUSTER, "value": _env("OTEL_EFA_CLUSTER_NAME"), "action": "upsert"},
    ]


def _exporters(mode: str) -> Dict[str, Any]:
    exporters: Dict[str, Any] = {}
    if mode != "amp":
        exporters["awsemf"] = {
            "region": _env("AWS_REGION"),
            "namespace": catalog.CLOUDWATCH_NAMESPACE,
            "log_group_name": EMF_LOG_GROUP,
            "log_stream_name": EMF_LOG_STREAM,
            "dimension_rollup_option": "NoDimensionRollup",
            "resource_to_telemetry_conversion": {"enabled": True},
            "metric_declarations": [{
                "dimensions": [[catalog.CLOUDWATCH_DIMENSION]],
                "metric_name_selectors": [f"^{re.escape(c.name)}$$" for c in catalog.CLOUDWATCH_METRICS],
            }],
            "metric_descriptors": [{"metric_name": c.name, "unit": c.unit, "overwrite": True}
                                   for c in catalog.CLOUDWATCH_METRICS],
        }
    if mode != "cloudwatch":
        exporters["prometheusremotewrite"] = {
            "endpoint": _env("AMP_REMOTE_WRITE_URL"),
            "auth": {"authenticator": "sigv4auth"},
            "resource_to_telemetry_conversion": {"enabled": True},
        }
    return exporters


def adot_config(mode: str) -> Dict[str, Any]:
    """The collector configuration for one of the quick-start's monitoring modes."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    extensions: Dict[str, Any] = {"health_check": {"endpoint": HEALTH_CHECK}}
    pipelines: Dict[str, Any] = {}
    if mode != "amp":
        pipelines["metrics/cloudwatch"] = {
            "receivers": ["otlp"],
            "processors": ["memory_limiter", "resourcedetection", "metricstransform/cloudwatch",
                           "filter/cloudwatch", "resource/cloudwatch", "batch"],
            "exporters": ["awsemf"],
        }
    if mode != "cloudwatch":
        extensions["sigv4auth"] = {"region": _env("AWS_REGION"), "service": "aps"}
        pipelines["metrics/amp"] = {
            "receivers": ["otlp", "prometheus"],
            "processors": ["memory_limiter", "resourcedetection", "resource/amp", "batch"],
            "exporters": ["prometheusremotewrite"],
        }
    return {
        "extensions": extensions,
        "receivers": _receivers(mode),
        "processors": _processors(mode),
        "exporters": _exporters(mode),
        "service": {"extensions": list(extensions), "pipelines": pipelines},
    }


def head_node_prometheus(cluster_name: Optional[str] = None) -> Dict[str, Any]:
    """Prometheus on the head node (self-hosted mode): every compute node's agent, DCGM and node exporter,
    found through EC2 service discovery on the ParallelCluster tags (region from the instance's metadata)."""
    def filters() -> List[Dict[str, Any]]:
        chosen = [{"name": f"tag:{PCLUSTER_NODE_TYPE_TAG}", "values": ["Compute"]},
                  {"name": "instance-state-name", "values": ["running"]}]
        if cluster_name:
            chosen.append({"name": f"tag:{PCLUSTER_CLUSTER_NAME_TAG}", "values": [cluster_name]})
        return chosen

    def relabel() -> List[Dict[str, Any]]:
        # ``instance`` becomes the instance id, so the agent's and DCGM's series of one node share it
        # (the Grafana dashboard and the alert rules join GPU and EFA on it).
        return [{"source_labels": [f"__meta_ec2_{meta}"], "target_label": label} for meta, label in (
            ("instance_id", promql.INSTANCE), ("instance_id", "instance_id"), ("instance_type", "instance_type"),
            ("tag_" + re.sub(r"[^a-zA-Z0-9_]", "_", PCLUSTER_CLUSTER_NAME_TAG), promql.CLUSTER))]

    jobs = (("otel-efa", AGENT_PROMETHEUS_PORT), ("dcgm-exporter", int(DCGM_EXPORTER.rsplit(":", 1)[1])),
            ("node-exporter", int(NODE_EXPORTER.rsplit(":", 1)[1])))
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": job,
            "ec2_sd_configs": [{"port": port, "refresh_interval": SCRAPE_INTERVAL, "filters": filters()}],
            "relabel_configs": relabel(),
        } for job, port in jobs],
    }


def _header(what: str, command: str) -> str:
    return (f"# {what}\n# Generated by `otel-efa collector-config {command}` from otel_efa/catalog.py; "
            f"do not edit.\n")


def render(data: Dict[str, Any]) -> str:
    import yaml  # only when rendering

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)


def files(cluster_name: Optional[str] = None) -> Dict[str, str]:
    """File name -> content for the whole otel-config/ directory."""
    out = {}
    for mode in MODES:
        what = {"cloudwatch": "ADOT on a compute node: EFA node totals to CloudWatch (EMF)",
                "amp": "ADOT on a compute node: EFA, DCGM and node exporter metrics to Amazon Managed Prometheus",
                "both": "ADOT on a compute node: CloudWatch (EMF) and Amazon Managed Prometheus"}[mode]
        out[f"adot-{mode}.yaml"] = _header(what, f"adot {mode}") + render(adot_config(mode))
    command = "head-node" + (f" --cluster-name {cluster_name}" if cluster_name else "")
    out["prometheus-head-node.yml"] = _header(
        "Prometheus on the head node: every compute node's otel-efa (:9464), DCGM exporter and node exporter",
        command) + render(head_node_prometheus(cluster_name))
    return out


COLLECTORS = {"adot": "the ADOT collector on each compute node",
              "head-node": "Prometheus on the head node, scraping every compute node"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("collector-config",
                              help="print the ADOT collector config or the head node's Prometheus config")
    p.add_argument("collector", nargs="?", choices=tuple(COLLECTORS), metavar="COLLECTOR",
                   help="whose config: " + "; ".join(f"{name}: {what}" for name, what in COLLECTORS.items())
                        + " (needed unless --write, and refused with it)")
    p.add_argument("destination", nargs="?", choices=MODES, metavar="DESTINATION",
                   help=f"adot only: where it sends, one of {', '.join(MODES)} (default both)")
    p.add_argument("--cluster-name", metavar="NAME",
                   help="head-node only: scrape only this cluster's compute nodes (default: every running "
                        "ParallelCluster compute node in the region)")
    p.add_argument("--write", metavar="DIR",
                   help="write every collector's and destination's file into DIR, as committed in otel-config/ "
                        "(default: print the one chosen on standard output)")
    p.set_defaults(handler=_handle, usage_check=_usage_problem)


def _usage_problem(args: argparse.Namespace) -> Optional[str]:
    """What the arguments ask for that would be ignored: refused rather than dropped."""
    if args.write is not None:
        if args.collector or args.destination:
            given = " ".join(filter(None, (args.collector, args.destination)))
            return f"--write writes every collector's files; drop {given!r}"
        return None
    if args.collector is None:
        return f"name the collector ({' or '.join(COLLECTORS)}) or give --write DIR"
    if args.collector != "adot" and args.destination is not None:
        return f"DESTINATION ({args.destination}) is for adot only"
    if args.collector != "head-node" and args.cluster_name is not None:
        return "--cluster-name is for head-node only"
    return None


def _handle(args: argparse.Namespace) -> int:
    if args.write:
        directory = Path(args.write)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, content in files(args.cluster_name).items():
                (directory / name).write_text(content)
                print(directory / name)
        except OSError as e:
            raise ConfigError("--write", f"cannot write {e.filename or directory}: {e.strerror or e}") from None
        return 0
    if args.collector == "adot":
        sys.stdout.write(files()[f"adot-{args.destination or 'both'}.yaml"])
    else:
        sys.stdout.write(files(args.cluster_name)["prometheus-head-node.yml"])
    return 0
