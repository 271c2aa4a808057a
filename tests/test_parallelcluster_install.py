"""The compute node OnNodeConfigured script, run for real against a fake root (never the host's /).

Real: bash, the bundle built by ``otel_efa.tools.deploy.build_bundle`` (the wheel from this checkout and its
SHA256SUMS), the real adot/install-adot.sh called by the node script, the node's Python (this interpreter)
building the venv, pip installing the agent wheel, systemd-sysusers --root creating the user,
install/sed/awk/sha256sum, curl (on file://), shellcheck, envsubst. Stand-ins, at the AWS boundary only
(tests/node_stand_ins.py, tests/adot_stand_ins.py): systemctl (there is no systemd as PID 1 here), IMDS
(no EC2 here), ADOT's release package (served from a file:// mirror through ADOT_DOWNLOAD_BASE; nothing is
downloaded from AWS) with its aws-otel-collector-ctl, and rpm/dpkg (which act only under --root). The
bundle pins the stand-in package's SHA-256 in adot/adot-releases.txt, as an operator pins one they
verified. The main test downloads the bundle with the real AWS CLI (``aws s3 sync``) from moto's S3 in
server mode; the others give it as a directory (BUNDLE=...), the way a bundle on /fsx is used. pip installs
the wheel without its dependencies (PIP_NO_DEPS, PIP_NO_INDEX): they would come from PyPI or the bundle's
wheels/ (the network here is loopback only), and ``otel-efa --version`` runs without them.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from adot_stand_ins import VERSION_FILE, install_package_managers, make_package, package_files
from aws_peers import Moto
from conftest import free_port
from node_stand_ins import REPO, FakeImds, install_systemctl, systemctl_calls, tree_state

from otel_efa import __version__, config
from otel_efa.tools import adot_version, deploy
from otel_efa.tools.simulator import Simulator

SCRIPT = REPO / "parallelcluster" / "compute-node-efa-monitor.sh"
TEMPLATE = REPO / "parallelcluster" / "cluster-config.yaml.template"
UNIT = "efa-monitor.service"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
RELEASE_PATH = f"amazon_linux/{ARCH}/{adot_version.DEFAULT}/aws-otel-collector.rpm"
AMP_URL = "https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-0a1b2c3d-4e5f/api/v1/remote_write"
AL2023 = 'NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2023"\n'
# The table in README.md and docs/operations.md: monitoring type -> exporters in /etc/otel-efa/config.yaml,
# and ADOT or not.
MODES = {
    "none": (["prometheus", "log"], False),
    "cloudwatch": (["cloudwatch", "prometheus", "log"], False),
    "self-hosting": (["cloudwatch", "prometheus", "log"], False),
    "amp-only": (["otlp", "cloudwatch", "log"], True),
    "amp+amg": (["otlp", "cloudwatch", "log"], True),
}


def pin_adot_sha256(bundle: Path, digest: str) -> None:
    """Pin the default release's rpm for this machine in the bundle's adot/adot-releases.txt, the way an
    operator pins a checksum they verified before `otel-efa deploy upload`; SHA256SUMS follows."""
    table = bundle / "adot" / "adot-releases.txt"
    row = f"{adot_version.DEFAULT}    rpm     {ARCH}  "
    text = table.read_text()
    assert row + "-" in text
    table.write_text(text.replace(row + "-", row + digest))
    listed = [line.split("  ", 1)[1] for line in (bundle / deploy.MANIFEST).read_text().splitlines()]
    deploy.write_manifest(bundle, listed)


@pytest.fixture(scope="module")
def adot_mirror(tmp_path_factory):
    """ADOT's S3 release layout on disk (file://), holding a stand-in package of the default release."""
    mirror = tmp_path_factory.mktemp("adot-mirror")
    digest = make_package(mirror / RELEASE_PATH, adot_version.DEFAULT)
    return mirror, digest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, adot_mirror):
    """What `otel-efa deploy upload` puts in the bucket, built by its own bundle builder."""
    path = tmp_path_factory.mktemp("bundle")
    deploy.build_bundle(REPO, path)
    pin_adot_sha256(path, adot_mirror[1])
    return path


@pytest.fixture(scope="module")
def s3(bundle):
    """moto's S3 on a loopback port holding the bundle under s3://otel-efa-test/otel-efa/."""
    server = Moto(free_port()).start()
    env = {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
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


@pytest.fixture(scope="module")
def installed_agent(tmp_path_factory, bundle, imds):
    """/opt/otel-efa of a node the script has installed the agent on (its venv and the wheel's stamp).
    The tests about what comes beside or after the agent (an image root's unit, ADOT refused, cfnconfig,
    uninstall) start from it, as a node's second run does, instead of each building the same venv; the
    tests about the venv build their own."""
    node = Node(tmp_path_factory.mktemp("installed"), bundle, imds)
    done = node.install("c", "us-east-1", "b", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    return node.root / "opt/otel-efa"


def with_agent_installed(node: "Node", installed: Path) -> "Node":
    shutil.copytree(installed / "venv", node.root / "opt/otel-efa/venv", symlinks=True)
    shutil.copy2(installed / "installed-wheel.sha256", node.root / "opt/otel-efa")
    return node


class Node:
    def __init__(self, tmp_path: Path, bundle: Path, imds: FakeImds, efa: bool = True, s3=None, mirror=None):
        self.root = tmp_path / "root"
        (self.root / "etc").mkdir(parents=True)
        (self.root / "etc/os-release").write_text(AL2023)
        self.state = tmp_path / "systemctl-state"
        self.adot_calls = tmp_path / "adot-ctl-calls"
        self.systemctl = install_systemctl(tmp_path / "bin", self.state)
        install_package_managers(tmp_path / "bin")
        if efa:
            Simulator("p4d.24xlarge", str(self.root / "sys")).close()
        else:
            (self.root / "sys" / "class").mkdir(parents=True)  # a node without /sys/class/infiniband
        self.env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", BUNDLE=str(bundle),
                        PYTHON=sys.executable, PIP_NO_DEPS="1", PIP_NO_INDEX="1",
                        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint, ADOT_CTL_CALLS=str(self.adot_calls),
                        SYSTEMCTL=str(self.systemctl), PM_CALLS=str(tmp_path / "pm-calls"))
        if mirror is not None:
            self.env["ADOT_DOWNLOAD_BASE"] = f"file://{mirror}"
        if s3 is not None:  # download the bundle with the AWS CLI installed beside this interpreter
            del self.env["BUNDLE"]
            self.env.update(s3, PATH=f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}")

    def install(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args, "--root", str(self.root)], env=self.env,
                              capture_output=True, text=True, timeout=300)


def test_gpu_node_with_efa_installs_enables_and_second_run_changes_nothing(tmp_path, bundle, imds, s3, adot_mirror):
    """The real node script with the real ADOT installer: agent, ADOT (checked against the pinned
    SHA-256) and their environments land under the root; a second run changes nothing."""
    node = Node(tmp_path, bundle, imds, s3=s3, mirror=adot_mirror[0])
    done = node.install("my-cluster", "us-west-2", "otel-efa-test", "amp+amg", "gpu", AMP_URL)
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
    assert "Environment=OTEL_EFA_CLUSTER_NAME=my-cluster" in drop_in.splitlines()
    assert (root / "etc/logrotate.d/efa-monitor").read_bytes() == \
        (REPO / "systemd/efa-monitor.logrotate").read_bytes()
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert "efa-monitor" in users and users["efa-monitor"][6] == "/usr/sbin/nologin"
    log = (root / "var/log/efa_monitor.log").stat()
    assert (log.st_uid, log.st_mode & 0o777) == (int(users["efa-monitor"][2]), 0o640)

    calls = systemctl_calls(node.state)
    assert "daemon-reload" in calls and f"enable {UNIT}" in calls and f"restart {UNIT}" in calls

    # ADOT: the stand-in package from the release path, verified, installed under the root, started
    assert f"file://{adot_mirror[0]}/{RELEASE_PATH}" in done.stdout
    assert f"(adot-releases.txt, {adot_version.DEFAULT} rpm {ARCH})" in done.stdout
    for name in package_files():
        assert (root / name).is_file(), name
    assert adot_version.installed(str(root)) == adot_version.parse(adot_version.DEFAULT)
    assert (root / "etc/otel-efa/adot-amp.yaml").read_bytes() == (REPO / "otel-config/adot-amp.yaml").read_bytes()
    environment = (root / "etc/otel-efa/adot.env").read_text().splitlines()
    assert [line for line in environment if not line.startswith("#")] == [
        "AWS_REGION=us-west-2", f"AMP_REMOTE_WRITE_URL={AMP_URL}", "OTEL_EFA_CLUSTER_NAME=my-cluster"]
    assert node.adot_calls.read_text().split() == ["-c", f"{root}/etc/otel-efa/adot-amp.yaml", "-a", "start"]
    assert "restart aws-otel-collector.service" in calls

    before = tree_state(root)
    (node.state / "calls").unlink()
    node.adot_calls.unlink()
    again = node.install("my-cluster", "us-west-2", "otel-efa-test", "amp+amg", "gpu", AMP_URL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_state(root) == before
    changing = [c for c in systemctl_calls(node.state) if not c.startswith("is-")]
    assert changing == [], changing
    assert "already up to date and running" in again.stdout
    assert "aws-otel-collector is running with this configuration" in again.stdout
    assert not node.adot_calls.exists()


def test_each_monitoring_type_gets_its_exporters_and_a_restart(tmp_path, bundle, imds, adot_mirror):
    """One node switched through every monitoring type: the venv is built once and reused, the config
    changes, and each change restarts the service once; ADOT is installed for the amp types."""
    node = Node(tmp_path, bundle, imds, mirror=adot_mirror[0])
    outputs = []
    for mode, (exporters, needs_adot) in MODES.items():
        if (node.state / "calls").exists():
            (node.state / "calls").unlink()
        done = node.install("c", "eu-west-1", "b", mode, "gpu", AMP_URL if needs_adot else "")
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
        assert config.load(str(node.root / "etc/otel-efa/config.yaml"), environ={}).exporters == exporters
        assert ("installing the ADOT collector" in done.stdout) == needs_adot, mode
        assert (node.root / "etc/otel-efa/adot.env").exists() == needs_adot, mode  # the amp types come last
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
    before = tree_state(node.root)
    done = node.install("c", "us-east-1", "b", "grafana")
    assert done.returncode == 2
    assert "MONITORING_TYPE" in done.stderr and "'grafana'" in done.stderr
    assert tree_state(node.root) == before


def test_image_root_is_enabled_with_the_real_systemctl_and_nothing_started(tmp_path, bundle, imds, installed_agent):
    """--root without SYSTEMCTL: the real ``systemctl --root`` enables the unit inside the root (the
    wants/ symlink) and nothing is started or reloaded on this host; a second run changes nothing."""
    node = with_agent_installed(Node(tmp_path, bundle, imds), installed_agent)
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


def _bundle_copy(tmp_path: Path, bundle: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def test_a_bundle_that_does_not_match_its_sha256sums_installs_nothing(tmp_path, bundle, imds):
    copy = _bundle_copy(tmp_path, bundle)
    with open(copy / "systemd/efa-monitor.service", "a") as unit:
        unit.write("ExecStartPre=/bin/true\n")  # changed after `otel-efa deploy upload`
    node = Node(tmp_path, copy, imds)
    before = tree_state(node.root)
    done = node.install("c", "us-east-1", "b", "cloudwatch")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"efa-monitor setup: error: {copy} does not match its SHA256SUMS (systemd/efa-monitor.service: FAILED): "
        "upload the bundle again with 'otel-efa deploy upload'; nothing installed"]
    assert tree_state(node.root) == before and systemctl_calls(node.state) == []


@pytest.mark.parametrize("served, message", [
    ("other bytes", "SHA-256 of"),          # the download is not the package whose checksum was pinned
    ("v0.41.1", "is ADOT v0.41.1, older than the minimum v0.42.0"),  # pinned, but the metricstransform regression
])
def test_adot_refused_by_the_installer_stops_the_node_script_with_its_one_line(tmp_path, bundle, imds, served, message,
                                                                              installed_agent):
    mirror = tmp_path / "mirror"
    copy = _bundle_copy(tmp_path, bundle)
    if served == "other bytes":
        make_package(mirror / RELEASE_PATH, adot_version.DEFAULT)
        pin_adot_sha256_again = hashlib.sha256(b"what the operator verified").hexdigest()
    else:
        pin_adot_sha256_again = make_package(mirror / RELEASE_PATH, served)
    table = copy / "adot/adot-releases.txt"
    table.write_text("\n".join(line if not line.startswith(f"{adot_version.DEFAULT}    rpm     {ARCH}")
                               else f"{adot_version.DEFAULT}    rpm     {ARCH}  {pin_adot_sha256_again}"
                               for line in table.read_text().splitlines()) + "\n")
    deploy.write_manifest(copy, [line.split("  ", 1)[1] for line in (copy / "SHA256SUMS").read_text().splitlines()])
    node = with_agent_installed(Node(tmp_path, copy, imds, mirror=mirror), installed_agent)
    done = node.install("c", "us-west-2", "b", "amp-only", "gpu", AMP_URL)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("Creating ")]  # systemd-sysusers' notes
    assert len(errors) == 1 and errors[0].startswith("install-adot: ") and message in errors[0], done.stderr
    assert adot_version.installed(str(node.root)) is None
    assert not (node.root / "etc/otel-efa/adot.env").exists() and not (node.root / VERSION_FILE).exists()


def test_amp_types_without_the_amp_url_are_a_config_error(tmp_path, bundle, imds):
    node = Node(tmp_path, bundle, imds)
    before = tree_state(node.root)
    done = node.install("c", "us-west-2", "b", "amp+amg")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "AMP_REMOTE_WRITE_URL" in done.stderr and "--amp-url" in done.stderr
    assert tree_state(node.root) == before


def test_cluster_name_and_region_come_from_cfnconfig_when_the_arguments_are_empty(tmp_path, bundle, imds, adot_mirror,
                                                                                   installed_agent):
    """ParallelCluster's /etc/parallelcluster/cfnconfig, as its cookbook writes it (shell variables)."""
    node = with_agent_installed(Node(tmp_path, bundle, imds, mirror=adot_mirror[0]), installed_agent)
    cfnconfig = node.root / "etc/parallelcluster/cfnconfig"
    cfnconfig.parent.mkdir(parents=True)
    cfnconfig.write_text("stack_name=llm-train\ncfn_region=eu-central-1\ncfn_node_type=ComputeFleet\n")
    done = node.install("", "", "b", "amp-only", "gpu", "--amp-url", AMP_URL)
    assert done.returncode == 0, done.stdout + done.stderr
    drop_in = (node.root / "etc/systemd/system/efa-monitor.service.d/parallelcluster.conf").read_text()
    assert "Environment=OTEL_EFA_CLUSTER_NAME=llm-train" in drop_in and "AWS_DEFAULT_REGION=eu-central-1" in drop_in
    environment = (node.root / "etc/otel-efa/adot.env").read_text()
    assert "OTEL_EFA_CLUSTER_NAME=llm-train\n" in environment and "AWS_REGION=eu-central-1\n" in environment
    cfnconfig.unlink()
    missing = node.install("", "", "b", "amp-only", "gpu", AMP_URL)
    assert missing.returncode == 2 and "stack_name" in missing.stderr


def test_uninstall_after_the_node_script_removes_adot_and_keeps_the_agent(tmp_path, bundle, imds, adot_mirror,
                                                                         installed_agent):
    node = with_agent_installed(Node(tmp_path, bundle, imds, mirror=adot_mirror[0]), installed_agent)
    assert node.install("c", "us-west-2", "b", "none").returncode == 0
    agent_only = {k: v for k, v in tree_state(node.root).items()}
    done = node.install("c", "us-west-2", "b", "amp-only", "gpu", AMP_URL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (node.root / VERSION_FILE).exists()
    removed = subprocess.run(["bash", str(REPO / "adot/install-adot.sh"), "--uninstall", "--root", str(node.root)],
                             env=node.env, capture_output=True, text=True, timeout=60)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    left = tree_state(node.root)
    assert not any(path.startswith("opt/aws") for path in left)
    for path in ("etc/otel-efa/adot.env", "etc/otel-efa/adot-amp.yaml",
                 "etc/systemd/system/efa-monitor.service.d/after-adot.conf"):
        assert path not in left, path
    # the agent is still there: what the "none" install wrote, but for its config (the exporters changed)
    assert {p for p in agent_only if p != "etc/otel-efa/config.yaml"} - set(left) == set()


def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted(str(p) for p in (REPO / "parallelcluster").glob("*.sh"))
    assert str(SCRIPT) in scripts
    done = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


def test_cluster_config_template_runs_the_script_with_the_quick_starts_arguments():
    values = {"S3_BUCKET": "my-bucket", "REGION": "us-east-2", "CLUSTER_NAME": "llm", "KEY_PAIR_NAME": "kp",
              "MONITORING_TYPE": "amp+amg", "OS_TYPE": "alinux2023", "HEAD_NODE_INSTANCE_TYPE": "m5.8xlarge",
              "PUBLIC_SUBNET_ID": "subnet-pub", "PRIVATE_SUBNET_ID": "subnet-priv", "QUEUE_NAME": "gpu",
              "COMPUTE_RESOURCE_NAME": "p5en", "COMPUTE_INSTANCE_TYPE": "p5en.48xlarge", "MIN_COUNT": "0",
              "MAX_COUNT": "4", "AMP_REMOTE_WRITE_URL": AMP_URL}
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
    assert step["Args"] == ["llm", "us-east-2", "my-bucket", "amp+amg", "gpu", AMP_URL]
    head = cluster["HeadNode"]["CustomActions"]["OnNodeConfigured"]["Sequence"][0]
    assert head["Script"].endswith("/parallelcluster/headnode-create-dashboard.sh")
    assert head["Args"] == ["llm", "us-east-2"]
