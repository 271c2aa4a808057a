"""The ADOT collector configs and the head node's Prometheus config under otel-config/.

Structure here: each file is what the generator makes from the catalog, it parses, it names only
components ADOT ships, its metric patterns select exactly the catalog metrics they should, its
placeholders are documented, and Prometheus's own ``promtool`` accepts the Prometheus parts. What the
files do on a real collector (what lands in AMP and in the EMF documents) is tests/test_collector_path.py.
"""
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from fake_imds import FakeImds

from otel_efa import catalog, cli
from otel_efa.artifacts import collector_config
from otel_efa.catalog import Kind

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "otel-config"
ADOT_FILES = sorted(CONFIG_DIR.glob("adot-*.yaml"))
HEAD_NODE = CONFIG_DIR / "prometheus-head-node.yml"

# The ADOT collector's components, by configuration type name.
# Source: aws-observability/aws-otel-collector, pkg/defaultcomponents/defaults.go at commit
# ed0b1d595c795442480c8e83435b9bf7d79429b2 (2026-07-16), VERSION v0.49.0, built on collector-contrib v0.156.0.
# (datadog, logzio, signalfx exporters sit behind deprecation feature gates and are left out.)
ADOT_VERSION = "v0.49.0"
ADOT_COMPONENTS = {
    "extensions": {"awsproxy", "ecs_observer", "health_check", "pprof", "sigv4auth", "zpages", "file_storage"},
    "receivers": {"awsecscontainermetrics", "awscontainerinsightreceiver", "awsxray", "statsd", "prometheus",
                  "kafka", "jaeger", "zipkin", "otlp", "filelog"},
    "processors": {"groupbytrace", "tail_sampling", "attributes", "resource", "probabilistic_sampler", "span",
                   "filter", "metricstransform", "resourcedetection", "experimental_metricsgeneration",
                   "cumulativetodelta", "deltatorate", "batch", "memory_limiter", "k8sattributes"},
    "exporters": {"awsemf", "prometheusremotewrite", "prometheus", "file", "kafka", "debug", "otlp", "otlphttp",
                  "awsxray", "loadbalancing", "awscloudwatchlogs"},
}
ENV_PLACEHOLDER = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
CLOUDWATCH_NAMES = [c.name for c in catalog.CLOUDWATCH_METRICS]


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _collector_regex(pattern: str) -> "re.Pattern":
    """The collector reads ``$$`` as ``$``; the rest is RE2, which these simple patterns share with Python."""
    return re.compile(pattern.replace("$$", "$"))


def test_committed_files_are_what_the_generator_makes():
    generated = collector_config.files()
    committed = {p.name: p.read_text() for p in CONFIG_DIR.iterdir()}
    assert committed == generated, "run: otel-efa collector-config --write otel-config"


def test_one_file_per_monitoring_mode():
    assert [p.name for p in ADOT_FILES] == sorted(f"adot-{m}.yaml" for m in ("cloudwatch", "amp", "both"))
    exporters = {p.name: set(_load(p)["exporters"]) for p in ADOT_FILES}
    assert exporters == {"adot-cloudwatch.yaml": {"awsemf"}, "adot-amp.yaml": {"prometheusremotewrite"},
                         "adot-both.yaml": {"awsemf", "prometheusremotewrite"}}


@pytest.mark.parametrize("path", ADOT_FILES, ids=lambda p: p.name)
def test_every_component_is_in_adot_and_every_pipeline_is_whole(path):
    config = _load(path)
    service = config["service"]
    for kind, known in ADOT_COMPONENTS.items():
        for name in config.get(kind, {}):
            assert name.split("/")[0] in known, f"{name} is not a {kind[:-1]} of ADOT {ADOT_VERSION}"
    used = {kind: set() for kind in ("receivers", "processors", "exporters")}
    for pipeline_name, pipeline in service["pipelines"].items():
        assert pipeline_name.split("/")[0] == "metrics"
        for kind in used:
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{pipeline_name} uses undefined {name}"
                used[kind].add(name)
        assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch"
    for kind, names in used.items():
        assert names == set(config[kind]), f"{kind} defined but unused: {set(config[kind]) - names}"
    assert set(service["extensions"]) == set(config["extensions"])
    if "prometheusremotewrite" in config["exporters"]:
        assert config["exporters"]["prometheusremotewrite"]["auth"]["authenticator"] == "sigv4auth"
        assert config["extensions"]["sigv4auth"]["service"] == "aps"


@pytest.mark.parametrize("path", ADOT_FILES, ids=lambda p: p.name)
def test_receivers_listen_on_loopback_only_and_scrape_the_node(path):
    receivers = _load(path)["receivers"]
    for protocol in receivers["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("127.0.0.1:")
    if "prometheus" in receivers:
        targets = {t for job in receivers["prometheus"]["config"]["scrape_configs"]
                   for s in job["static_configs"] for t in s["targets"]}
        assert targets == {"127.0.0.1:9400", "127.0.0.1:9100"}  # DCGM exporter, node exporter


@pytest.mark.parametrize("path", [p for p in ADOT_FILES if "amp" not in p.name or "both" in p.name],
                         ids=lambda p: p.name)
def test_cloudwatch_pipeline_makes_the_quick_starts_six_metrics_from_catalog_metrics(path):
    config = _load(path)
    transforms = config["processors"]["metricstransform/cloudwatch"]["transforms"]
    by_name = {c.name: c for c in catalog.CLOUDWATCH_METRICS}
    assert [t["new_name"] for t in transforms] == CLOUDWATCH_NAMES
    for transform in transforms:
        spec = by_name[transform["new_name"]]
        pattern = _collector_regex(transform["include"])
        assert pattern.groups == 0, "combine turns capturing groups into labels"
        selected = {m.name for m in catalog.METRICS if pattern.search(m.name)}
        assert selected and selected == set(spec.otel_metrics), transform["new_name"]
        # metricstransform combines only metrics of one type, unit and attribute set.
        sources = [catalog.BY_NAME[name] for name in selected]
        assert len({(m.kind, m.unit, m.attributes) for m in sources}) == 1
        # Gauges only: awsemf would turn a cumulative sum into deltas (and a reset into a spike).
        assert sources[0].kind is Kind.GAUGE
        assert transform["action"] == "combine" and transform["aggregation_type"] == "sum"
        assert transform["operations"] == [{"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"}]

    assert config["processors"]["filter/cloudwatch"]["metrics"]["metric"] == \
        [collector_config.keep_only(CLOUDWATCH_NAMES)]
    resource = config["processors"]["resource/cloudwatch"]["attributes"]
    assert resource == [{"key": catalog.CLOUDWATCH_DIMENSION, "from_attribute": "host.id", "action": "insert"}]

    emf = config["exporters"]["awsemf"]
    assert emf["namespace"] == catalog.CLOUDWATCH_NAMESPACE
    assert emf["resource_to_telemetry_conversion"] == {"enabled": True}
    [declaration] = emf["metric_declarations"]
    assert declaration["dimensions"] == [[catalog.CLOUDWATCH_DIMENSION]]
    selectors = [_collector_regex(s) for s in declaration["metric_name_selectors"]]
    assert [[n for n in CLOUDWATCH_NAMES if s.search(n)] for s in selectors] == [[n] for n in CLOUDWATCH_NAMES]
    assert not [m.name for m in catalog.METRICS if any(s.search(m.name) for s in selectors)]
    assert {d["metric_name"]: d["unit"] for d in emf["metric_descriptors"]} == \
        {c.name: c.unit for c in catalog.CLOUDWATCH_METRICS}
    assert all(d["overwrite"] for d in emf["metric_descriptors"])


def test_every_environment_placeholder_is_documented_and_installed():
    documented = "".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    installer = (ROOT / "adot" / "install-adot.sh").read_text()
    used = set()
    for path in ADOT_FILES:
        text = path.read_text()
        used |= set(ENV_PLACEHOLDER.findall(text))
        leftover = ENV_PLACEHOLDER.sub("", text).replace("$$", "")
        assert "$" not in leftover, f"{path.name}: a $ that is neither ${{env:...}} nor $$"
    assert used == set(collector_config.ENVIRONMENT)
    for name in used:
        assert f"`{name}`" in documented, f"{name} is not documented in README.md or docs/"
        assert name in installer, f"install-adot.sh does not write {name}"


def _promtool(path: Path, imds: FakeImds) -> subprocess.CompletedProcess:
    """promtool resolves an EC2 SD config's region from instance metadata, as on the head node."""
    import os

    env = dict(os.environ, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint)
    return subprocess.run(["promtool", "check", "config", str(path)], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def imds():
    server = FakeImds({"region": "us-east-1", "availabilityZone": "us-east-1a", "instanceId": "i-0head"})
    yield server
    server.stop()


def test_promtool_accepts_the_head_node_config(imds, tmp_path):
    result = _promtool(HEAD_NODE, imds)
    assert result.returncode == 0, result.stdout + result.stderr
    scoped = tmp_path / "scoped.yml"
    scoped.write_text(collector_config.render(collector_config.head_node_prometheus("my-cluster")))
    result = _promtool(scoped, imds)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in _load(HEAD_NODE)["scrape_configs"]}
    assert {name: job["ec2_sd_configs"][0]["port"] for name, job in jobs.items()} == \
        {"otel-efa": 9464, "dcgm-exporter": 9400, "node-exporter": 9100}
    for job in jobs.values():
        assert {"name": "tag:parallelcluster:node-type", "values": ["Compute"]} in job["ec2_sd_configs"][0]["filters"]
        # One node's agent and DCGM series share `instance` and `cluster`: the dashboard joins on them.
        targets = {r["target_label"]: r["source_labels"] for r in job["relabel_configs"]}
        assert targets["instance"] == ["__meta_ec2_instance_id"]
        assert targets["cluster"] == ["__meta_ec2_tag_parallelcluster_cluster_name"]
    filters = _load(scoped)["scrape_configs"][0]["ec2_sd_configs"][0]["filters"]
    assert {"name": "tag:parallelcluster:cluster-name", "values": ["my-cluster"]} in filters


def test_promtool_accepts_the_scrape_config_inside_the_prometheus_receiver(imds, tmp_path):
    embedded = _load(CONFIG_DIR / "adot-amp.yaml")["receivers"]["prometheus"]["config"]
    path = tmp_path / "receiver.yml"
    path.write_text(yaml.safe_dump(embedded))
    result = _promtool(path, imds)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_prints_the_committed_files(capsys):
    assert cli.main(["collector-config", "adot", "cloudwatch"]) == 0
    assert capsys.readouterr().out == (CONFIG_DIR / "adot-cloudwatch.yaml").read_text()
    assert cli.main(["collector-config", "head-node"]) == 0
    assert capsys.readouterr().out == HEAD_NODE.read_text()
