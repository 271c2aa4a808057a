"""The compute node OnNodeConfigured script, run for real against a fake root.

Real: bash, the node's Python (this interpreter) building the venv, pip installing the agent wheel
built from this checkout, systemd-sysusers --root creating the user, install/sed/awk, shellcheck,
envsubst. Stand-ins (tests/node_stand_ins.py): systemctl (there is no systemd as PID 1 here) and IMDS
(no EC2 here). The main test downloads the bundle with the real AWS CLI (``aws s3 sync``) from moto's
S3 in server mode; the others give it as a directory (BUNDLE=...), the way a bundle on /fsx is used.
pip installs the wheel without its dependencies (PIP_NO_DEPS, PIP_NO_INDEX): they would come from PyPI
or the bundle's wheels/ (the network here is loopback only), and ``otel-efa --version`` runs without them.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from conftest import free_port
from node_stand_ins import REPO, FakeImds, install_systemctl, systemctl_calls, tree_state
from otel_efa import __version__, config
from otel_efa.simulator import Simulator

SCRIPT = REPO / "parallelcluster" / "compute-node-efa-monitor.sh"
TEMPLATE = REPO / "parallelcluster" / "cluster-config.yaml.template"
UNIT = "efa-monitor.service"
# The README's table: monitoring type -> exporters in /etc/otel-efa/config.yaml, and ADOT or not.
MODES = {
    "none": (["prometheus", "log"], False),
    "cloudwatch": (["cloudwatch", "prometheus", "log"], False),
    "self-hosting": (["cloudwatch", "prometheus", "log"], False),
    "amp-only": (["otlp", "cloudwatch", "log"], True),
    "amp+amg": (["otlp", "cloudwatch", "log"], True),
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """What `otel-efa deploy upload` puts in the bucket: the wheel, systemd/, parallelcluster/, adot/.
    adot/install-adot.sh is a stand-in that records its arguments (the real one is another module's)."""
    path = tmp_path_factory.mktemp("bundle")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(path),
                           str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shutil.copytree(REPO / "systemd", path / "systemd")
    shutil.copytree(REPO / "parallelcluster", path / "parallelcluster")
    (path / "adot").mkdir()
    (path / "adot" / "install-adot.sh").write_text('#!/bin/bash\necho "$*" >> "$ADOT_CALLS"\n')
    return path


@pytest.fixture(scope="module")
def s3(bundle):
    """moto's S3 on a loopback port holding the bundle under s3://otel-efa-test/otel-efa/."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="otel-efa-test")
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        client.upload_file(str(path), "otel-efa-test", f"otel-efa/{path.relative_to(bundle)}")
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def imds():
    with FakeImds({"meta-data/instance-type": "p4d.24xlarge"}) as server:
        yield server


class Node:
    def __init__(self, tmp_path: Path, bundle: Path, imds: FakeImds, efa: bool = True, s3=None):
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.state = tmp_path / "systemctl-state"
        self.adot_calls = tmp_path / "adot-calls"
        self.systemctl = install_systemctl(tmp_path / "bin", self.state)
        if efa:
            Simulator("p4d.24xlarge", str(self.root / "sys")).close()
        else:
            (self.root / "sys" / "class").mkdir(parents=True)  # a node without /sys/class/infiniband
        self.env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", BUNDLE=str(bundle),
                        PYTHON=sys.executable, PIP_NO_DEPS="1", PIP_NO_INDEX="1",
                        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint, ADOT_CALLS=str(self.adot_calls),
                        SYSTEMCTL=str(self.systemctl))
        if s3 is not None:  # download the bundle with the AWS CLI installed beside this interpreter
            del self.env["BUNDLE"]
            self.env.update(s3, PATH=f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}")

    def install(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args, "--root", str(self.root)], env=self.env,
                              capture_output=True, text=True, timeout=300)


def test_gpu_node_with_efa_installs_enables_and_second_run_changes_nothing(tmp_path, bundle, imds, s3):
    node = Node(tmp_path, bundle, imds, s3=s3)
    done = node.install("my-cluster", "us-west-2", "otel-efa-test", "amp+amg", "gpu")
    assert done.returncode == 0, done.stdout + done.stderr
    root = node.root
    synced = root / "opt/otel-efa/bundle"
    assert sorted(str(p.relative_to(synced)) for p in synced.rglob("*") if p.is_file()) == \
        sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())

    agent = root / "opt/otel-efa/venv/bin/otel-efa"
    version = subprocess.run([str(agent), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"otel-efa {__version__}"
    venv_python = subprocess.run([str(root / "opt/otel-efa/venv/bin/python"), "-c",
                                  "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert venv_python.stdout.strip() == str(sys.version_info[:2])

    loaded = config.load(str(root / "etc/otel-efa/config.yaml"), environ={})
    assert loaded.exporters == MODES["amp+amg"][0]
    assert loaded.log_file == "/var/log/efa_monitor.log"
    assert (root / "etc/systemd/system" / UNIT).read_bytes() == (REPO / "systemd" / UNIT).read_bytes()
    drop_in = (root / "etc/systemd/system/efa-monitor.service.d/parallelcluster.conf").read_text()
    assert "AWS_DEFAULT_REGION=us-west-2" in drop_in and "cluster_name=my-cluster" in drop_in
    assert (root / "etc/logrotate.d/efa-monitor").read_bytes() == \
        (REPO / "systemd/efa-monitor.logrotate").read_bytes()
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert "efa-monitor" in users and users["efa-monitor"][6] == "/usr/sbin/nologin"
    log = (root / "var/log/efa_monitor.log").stat()
    assert (log.st_uid, log.st_mode & 0o777) == (int(users["efa-monitor"][2]), 0o640)

    calls = systemctl_calls(node.state)
    assert "daemon-reload" in calls and f"enable {UNIT}" in calls and f"restart {UNIT}" in calls
    assert node.adot_calls.read_text().split() == ["my-cluster", "us-west-2", "amp+amg"]

    before = tree_state(root)
    (node.state / "calls").unlink()
    again = node.install("my-cluster", "us-west-2", "otel-efa-test", "amp+amg", "gpu")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_state(root) == before
    changing = [c for c in systemctl_calls(node.state) if not c.startswith("is-")]
    assert changing == [], changing
    assert "already up to date and running" in again.stdout


def test_each_monitoring_type_gets_its_exporters_and_a_restart(tmp_path, bundle, imds):
    """One node switched through every monitoring type: the venv is built once and reused, the config
    changes, and each change restarts the service once."""
    node = Node(tmp_path, bundle, imds)
    outputs = []
    for mode, (exporters, needs_adot) in MODES.items():
        if node.adot_calls.exists():
            node.adot_calls.unlink()
        if (node.state / "calls").exists():
            (node.state / "calls").unlink()
        done = node.install("c", "eu-west-1", "b", mode)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
        assert config.load(str(node.root / "etc/otel-efa/config.yaml"), environ={}).exporters == exporters
        assert node.adot_calls.exists() == needs_adot, mode
        assert systemctl_calls(node.state).count(f"restart {UNIT}") == 1, mode
    assert ["creating /opt/otel-efa/venv" in out for out in outputs] == [True] + [False] * (len(MODES) - 1)


@pytest.mark.parametrize("case", ["cpu setup type", "no EFA devices"])
def test_nothing_to_do_changes_nothing_and_exits_0(tmp_path, bundle, case):
    setup_type = "cpu" if case == "cpu setup type" else "gpu"
    with FakeImds({"meta-data/instance-type": "p4d.24xlarge" if setup_type == "cpu" else "m5.xlarge"}) as imds:
        node = Node(tmp_path, bundle, imds, efa=setup_type == "cpu")
        before = tree_state(node.root, skip=())
        done = node.install("c", "us-east-1", "b", "cloudwatch", setup_type)
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout
    assert ("'cpu'" in done.stdout) if setup_type == "cpu" else ("no EFA devices" in done.stdout)
    assert tree_state(node.root, skip=()) == before
    assert systemctl_calls(node.state) == []


def test_efa_instance_without_efa_enabled_says_how_to_enable_it(tmp_path, bundle):
    with FakeImds({"meta-data/instance-type": "p5.48xlarge"}) as imds:
        node = Node(tmp_path, bundle, imds, efa=False)
        done = node.install("c", "us-east-1", "b")
    assert done.returncode == 0 and "p5.48xlarge supports EFA" in done.stdout and "Enabled: true" in done.stdout


def test_unknown_monitoring_type_is_a_config_error(tmp_path, bundle, imds):
    node = Node(tmp_path, bundle, imds)
    done = node.install("c", "us-east-1", "b", "grafana")
    assert done.returncode == 2
    assert "MONITORING_TYPE" in done.stderr and "'grafana'" in done.stderr
    assert not (node.root / "etc").exists()


def test_image_root_is_enabled_with_the_real_systemctl_and_nothing_started(tmp_path, bundle, imds):
    """--root without SYSTEMCTL: the real ``systemctl --root`` enables the unit inside the root (the
    wants/ symlink) and nothing is started or reloaded on this host; a second run changes nothing."""
    node = Node(tmp_path, bundle, imds)
    del node.env["SYSTEMCTL"]
    node.env["PATH"] = os.environ["PATH"]
    done = node.install("c", "us-east-1", "b", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    wants = node.root / "etc/systemd/system/multi-user.target.wants" / UNIT
    assert os.readlink(wants) == f"/etc/systemd/system/{UNIT}"
    assert "starts when that system boots" in done.stdout
    before = tree_state(node.root)
    assert node.install("c", "us-east-1", "b", "none").returncode == 0
    assert tree_state(node.root) == before
    assert systemctl_calls(node.state) == []


def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted(str(p) for p in (REPO / "parallelcluster").glob("*.sh"))
    assert str(SCRIPT) in scripts
    done = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


def test_cluster_config_template_runs_the_script_with_the_seeds_arguments():
    values = {"S3_BUCKET": "my-bucket", "REGION": "us-east-2", "CLUSTER_NAME": "llm", "KEY_PAIR_NAME": "kp",
              "MONITORING_TYPE": "amp+amg", "OS_TYPE": "alinux2023", "HEAD_NODE_INSTANCE_TYPE": "m5.8xlarge",
              "PUBLIC_SUBNET_ID": "subnet-pub", "PRIVATE_SUBNET_ID": "subnet-priv", "QUEUE_NAME": "gpu",
              "COMPUTE_RESOURCE_NAME": "p5en", "COMPUTE_INSTANCE_TYPE": "p5en.48xlarge", "MIN_COUNT": "0",
              "MAX_COUNT": "4"}
    done = subprocess.run(["envsubst"], input=TEMPLATE.read_text(), capture_output=True, text=True,
                          env=dict(os.environ, **values), timeout=30)
    assert done.returncode == 0
    assert "${" not in done.stdout, "a placeholder the template uses is missing from this test's values"
    cluster = yaml.safe_load(done.stdout)
    assert cluster["Region"] == "us-east-2"
    assert cluster["HeadNode"]["Ssh"]["KeyName"] == "kp"
    queue = cluster["Scheduling"]["SlurmQueues"][0]
    assert queue["ComputeResources"][0]["Efa"]["Enabled"] is True
    step = queue["CustomActions"]["OnNodeConfigured"]["Sequence"][0]
    assert step["Script"] == f"s3://my-bucket/otel-efa/parallelcluster/{SCRIPT.name}"
    assert step["Args"] == ["llm", "us-east-2", "my-bucket", "amp+amg", "gpu"]
    head = cluster["HeadNode"]["CustomActions"]["OnNodeConfigured"]["Sequence"][0]
    assert head["Script"].endswith("/parallelcluster/headnode-create-dashboard.sh")
    assert head["Args"] == ["llm", "us-east-2"]
