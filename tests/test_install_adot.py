"""adot/install-adot.sh, the real script, on a fake root (never the host's /).

Stand-ins, all at the AWS boundary (tests/adot_stand_ins.py, tests/node_stand_ins.py): ADOT's release
package (a small tar laid out like the RPM/DEB payload, given with --package or served from a file://
mirror through ADOT_DOWNLOAD_BASE: nothing is downloaded from AWS), the package managers that install it
(rpm/dpkg/dpkg-deb/dpkg-query, which refuse to act without --root), ADOT's aws-otel-collector-ctl (inside
the stand-in package) and systemctl. Everything else (bash, sha256sum, curl on file://, awk, sort -V) is
the real program.
"""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from adot_stand_ins import CTL, VERSION_FILE, install_package_managers, make_package, package_files
from node_stand_ins import install_systemctl, systemctl_calls

from otel_efa.tools import adot_version

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "adot" / "install-adot.sh"
RELEASES = REPO / "adot" / "adot-releases.txt"
CONFIG_DIR = REPO / "otel-config"
AMP_URL = "https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-0a1b2c3d-4e5f/api/v1/remote_write"
OS_RELEASES = {
    "al2": 'NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2"\n',
    "al2023": 'NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2023"\n',
    "ubuntu": 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\n',
}
ENV_FILE = "etc/otel-efa/adot.env"


def fake_root(tmp_path: Path, os_name: str) -> Path:
    root = tmp_path / f"root-{os_name}"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(OS_RELEASES[os_name])
    return root


class Host:
    """PATH with the stand-ins first; their call logs."""

    def __init__(self, tmp_path: Path, systemctl: bool = False):
        self.bin = tmp_path / "bin"
        install_package_managers(self.bin)
        self.state = tmp_path / "systemctl-state"
        self.pm_calls = tmp_path / "pm-calls"
        self.ctl_calls = tmp_path / "ctl-calls"
        self.env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}", PM_CALLS=str(self.pm_calls),
                        ADOT_CTL_CALLS=str(self.ctl_calls), AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9")
        for name in ("ROOT", "SYSTEMCTL", "AWS_REGION", "AMP_REMOTE_WRITE_URL", "ADOT_DOWNLOAD_BASE"):
            self.env.pop(name, None)
        if systemctl:
            self.env["SYSTEMCTL"] = str(install_systemctl(self.bin, self.state))

    def install(self, *args, script: Path = SCRIPT, check=True, **env) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True,
                                timeout=60, env=dict(self.env, **env))
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def pm(self):
        return self.pm_calls.read_text().splitlines() if self.pm_calls.exists() else []


def changing(calls):
    """The package manager calls that install or remove."""
    return [c for c in calls if {"-U", "-i", "-e", "--purge"} & set(c.split())]


def tree(root: Path):
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def environment(root: Path):
    return dict(line.split("=", 1) for line in (root / ENV_FILE).read_text().splitlines() if "=" in line)


def _in_order(output: str, expected):
    lines = output.splitlines()
    position = 0
    for wanted in expected:
        found = [i for i, line in enumerate(lines[position:], position) if wanted in line]
        assert found, f"{wanted!r} not found after line {position} in:\n{output}"
        position = found[0] + 1


def test_releases_table_and_python_agree_on_the_minimum_and_the_default():
    """adot-releases.txt is the shell's source; otel_efa.tools.adot_version must say the same."""
    settings = dict(line.split()[:2] for line in RELEASES.read_text().splitlines()
                    if line.split()[:1] in (["minimum"], ["default"]))
    assert adot_version.parse(settings["minimum"]) == adot_version.MINIMUM == (0, 42, 0)
    assert settings["default"] == adot_version.DEFAULT == "v0.49.0"
    rows = [line.split() for line in RELEASES.read_text().splitlines() if line.startswith("v")]
    assert {(r[1], r[2]) for r in rows if r[0] == "v0.49.0"} == {(f, a) for f in ("rpm", "deb") for a in ("amd64", "arm64")}
    for row in rows:  # a checksum is 64 hex digits or "-" (none known); never anything else
        assert row[3] == "-" or (len(row[3]) == 64 and int(row[3], 16) >= 0), row


@pytest.mark.parametrize("os_name, package", [
    ("al2023", "amazon_linux/amd64/v0.49.0/aws-otel-collector.rpm"),
    ("al2", "amazon_linux/arm64/v0.49.0/aws-otel-collector.rpm"),
    ("ubuntu", "ubuntu/amd64/v0.49.0/aws-otel-collector.deb"),
])
def test_dry_run_prints_every_step_from_the_pinned_release_and_changes_nothing(tmp_path, os_name, package):
    root = fake_root(tmp_path, os_name)
    host = Host(tmp_path)
    arch = package.split("/")[1]
    before = tree(root)
    result = host.install("--root", root, "--dry-run", "--mode", "both", "--region", "us-west-2", "--amp-url", AMP_URL,
                          "--cluster-name", "llm", "--sha256", "ab" * 32, "--arch", arch)
    suffix = package[-3:]
    manager = f"rpm -U --replacepkgs --root {root}" if suffix == "rpm" else f"dpkg --root {root} -i"
    _in_order(result.stdout, [
        "dry run: nothing is changed",
        f"OS: {os_name}",
        "cluster: llm",
        f"+ curl -fsSL --retry 3 -o /tmp/aws-otel-collector.{suffix} https://aws-otel-collector.s3.amazonaws.com/{package}",
        "+ verify SHA-256",
        f"+ {manager} /tmp/aws-otel-collector.{suffix}",
        "+ write /etc/otel-efa/adot-both.yaml",
        "+ write /etc/otel-efa/adot.env",
        "+ write /etc/systemd/system/aws-otel-collector.service.d/otel-efa.conf",
        "+ write /etc/systemd/system/efa-monitor.service.d/after-adot.conf",
        "+ systemctl daemon-reload",
        f"+ {root}/{CTL} -c {root}/etc/otel-efa/adot-both.yaml -a start",
    ])
    assert tree(root) == before and changing(host.pm()) == []  # at most a version query


def test_install_under_the_root_writes_package_config_environment_then_a_second_run_changes_nothing(tmp_path):
    root = fake_root(tmp_path, "al2023")
    host = Host(tmp_path)
    package = tmp_path / "aws-otel-collector.rpm"
    digest = make_package(package, "v0.49.0")
    args = ["--mode", "both", "--region", "us-west-2", "--amp-url", AMP_URL, "--cluster-name", "llm-prod",
            "--package", package, "--sha256", digest]

    first = host.install(*args, ROOT=str(root))  # the root from the environment, as the node script may give it
    _in_order(first.stdout, ["+ verify SHA-256", "package: ADOT v0.49.0", f"+ rpm -U --replacepkgs --root {root} {package}",
                             "+ write /etc/otel-efa/adot-both.yaml", "-a start   (skipped: --root"])
    assert host.pm()[-1] == f"rpm -U --replacepkgs --root {root} {package}"
    for name in package_files():
        assert (root / name).is_file(), name
    assert (root / "etc/otel-efa/adot-both.yaml").read_text() == (CONFIG_DIR / "adot-both.yaml").read_text()
    assert environment(root) == {"AWS_REGION": "us-west-2", "AMP_REMOTE_WRITE_URL": AMP_URL,
                                 "OTEL_EFA_CLUSTER_NAME": "llm-prod"}
    assert (root / "etc/systemd/system/aws-otel-collector.service.d/otel-efa.conf").read_text() == \
        "[Service]\nEnvironmentFile=/etc/otel-efa/adot.env\n"
    ordering = (root / "etc/systemd/system/efa-monitor.service.d/after-adot.conf").read_text()
    assert "After=aws-otel-collector.service" in ordering and "Wants=aws-otel-collector.service" in ordering
    assert adot_version.installed(str(root)) == (0, 49, 0)

    written = tree(root)
    second = host.install(*args, "--root", root)
    assert "= ADOT v0.49.0 installed (v0.49.0 or newer)" in second.stdout, second.stdout
    assert "+ write" not in second.stdout and second.stdout.count("unchanged") == 4, second.stdout
    assert tree(root) == written and len(changing(host.pm())) == 1  # the first run's rpm -U


def _mirror_installer(tmp_path: Path, sha256: str) -> Path:
    """The real installer and table, copied with one line of the table pinned the way an operator pins a
    checksum they verified (adot-releases.txt beside the script)."""
    adot = tmp_path / "adot"
    adot.mkdir()
    shutil.copy2(SCRIPT, adot / SCRIPT.name)
    table = RELEASES.read_text().replace("v0.49.0    rpm     amd64  -", f"v0.49.0    rpm     amd64  {sha256}")
    assert sha256 in table
    (adot / RELEASES.name).write_text(table)
    shutil.copytree(CONFIG_DIR, tmp_path / "otel-config")
    return adot / SCRIPT.name


def test_download_from_the_release_path_is_checked_against_the_pinned_sha256(tmp_path):
    root = fake_root(tmp_path, "al2023")
    host = Host(tmp_path, systemctl=True)
    mirror = tmp_path / "mirror"
    digest = make_package(mirror / "amazon_linux/amd64/v0.49.0/aws-otel-collector.rpm", "v0.49.0")
    script = _mirror_installer(tmp_path, digest)
    done = host.install("--root", root, "--mode", "cloudwatch", "--arch", "amd64", "--cluster-name", "c1",
                        script=script, ADOT_DOWNLOAD_BASE=f"file://{mirror}")
    assert f"file://{mirror}/amazon_linux/amd64/v0.49.0/aws-otel-collector.rpm" in done.stdout
    assert "verify SHA-256" in done.stdout and "adot-releases.txt, v0.49.0 rpm amd64" in done.stdout
    assert (root / VERSION_FILE).read_text() == "v0.49.0\n"
    assert environment(root) == {"OTEL_EFA_CLUSTER_NAME": "c1"}
    # SYSTEMCTL names the systemctl of the running services: reloaded, and the collector started by its ctl
    assert host.ctl_calls.read_text().split() == ["-c", f"{root}/etc/otel-efa/adot-cloudwatch.yaml", "-a", "start"]
    assert "restart aws-otel-collector.service" in systemctl_calls(host.state)

    host.ctl_calls.unlink()
    again = host.install("--root", root, "--mode", "cloudwatch", "--arch", "amd64", "--cluster-name", "c1",
                         script=script, ADOT_DOWNLOAD_BASE=f"file://{mirror}")
    assert "aws-otel-collector is running with this configuration" in again.stdout
    assert not host.ctl_calls.exists()  # nothing changed: the collector is not restarted


def test_a_download_that_does_not_match_the_pinned_sha256_is_refused_and_nothing_installed(tmp_path):
    root = fake_root(tmp_path, "al2023")
    host = Host(tmp_path)
    mirror = tmp_path / "mirror"
    make_package(mirror / "amazon_linux/amd64/v0.49.0/aws-otel-collector.rpm", "v0.49.0")
    script = _mirror_installer(tmp_path, hashlib.sha256(b"what AWS published").hexdigest())
    before = tree(root)
    done = host.install("--root", root, "--mode", "cloudwatch", "--arch", "amd64", script=script, check=False,
                        ADOT_DOWNLOAD_BASE=f"file://{mirror}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and "SHA-256 of" in done.stderr and "not installing it" in done.stderr
    assert tree(root) == before and changing(host.pm()) == []


@pytest.mark.parametrize("extra, message", [
    (["--sha256", "00" * 32], "SHA-256"),
    ([], "no known SHA-256 for ADOT v0.49.0 deb amd64 (AWS publishes none): pass --sha256 HEX, or --signature"),
    (["--mode", "amp", "--sha256", "00" * 32], "--amp-url URL"),
    (["--mode", "amp", "--sha256", "00" * 32, "--amp-url", "http://example.com/write"], "--amp-url"),
    (["--mode", "wrong"], "--mode"),
    (["--version", "v0.41.1", "--sha256", "00" * 32], "older than the minimum v0.42.0"),
    (["--cluster-name", "no spaces allowed"], "--cluster-name"),
    (["--bogus"], "unknown argument"),
])
def test_bad_input_stops_with_one_message_and_writes_nothing(tmp_path, extra, message):
    root = fake_root(tmp_path, "ubuntu")
    host = Host(tmp_path)
    package = tmp_path / "aws-otel-collector.deb"
    make_package(package, "v0.49.0")
    before = tree(root)
    result = host.install("--root", root, "--region", "us-west-2", "--mode", "cloudwatch", "--arch", "amd64",
                          "--package", package, *extra, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree(root) == before and changing(host.pm()) == []


def test_a_package_older_than_the_minimum_is_refused_before_it_is_installed(tmp_path):
    """The checksum matches, but the package itself says v0.41.1 (the metricstransform regression)."""
    root = fake_root(tmp_path, "al2023")
    host = Host(tmp_path)
    package = tmp_path / "aws-otel-collector.rpm"
    digest = make_package(package, "v0.41.1")
    before = tree(root)
    done = host.install("--root", root, "--mode", "cloudwatch", "--package", package, "--sha256", digest, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"install-adot: {package} is ADOT v0.41.1, older than the minimum v0.42.0 "
                                   "(its metricstransform forms no node totals): use v0.42.0 or newer")
    assert tree(root) == before and changing(host.pm()) == []


def test_an_installed_old_adot_is_upgraded_in_place_and_a_newer_one_kept(tmp_path):
    root = fake_root(tmp_path, "ubuntu")
    host = Host(tmp_path)
    old, new, newer = tmp_path / "old.deb", tmp_path / "new.deb", tmp_path / "newer.deb"
    old_sum, new_sum, newer_sum = make_package(old, "v0.41.1"), make_package(new, "v0.49.0"), make_package(newer, "v0.50.0")
    # v0.41.1 was put there by someone else (the package manager stand-in, directly)
    subprocess.run([str(host.bin / "dpkg"), "--root", str(root), "-i", str(old)], check=True, env=host.env)
    assert adot_version.installed(str(root)) == (0, 41, 1)

    done = host.install("--root", root, "--mode", "cloudwatch", "--package", new, "--sha256", new_sum)
    assert "ADOT v0.41.1 installed: installing v0.49.0 over it" in done.stdout
    assert adot_version.installed(str(root)) == (0, 49, 0)

    host.install("--root", root, "--mode", "cloudwatch", "--version", "v0.50.0", "--package", newer, "--sha256", newer_sum)
    kept = host.install("--root", root, "--mode", "cloudwatch", "--package", new, "--sha256", new_sum)
    assert "= ADOT v0.50.0 installed (v0.49.0 or newer)" in kept.stdout
    assert adot_version.installed(str(root)) == (0, 50, 0)
    del old_sum, newer_sum


def test_uninstall_removes_what_it_installed_and_nothing_else(tmp_path):
    root = fake_root(tmp_path, "al2023")
    host = Host(tmp_path, systemctl=True)
    package = tmp_path / "aws-otel-collector.rpm"
    digest = make_package(package, "v0.49.0")
    # what was there before: the agent's config and its own drop-in (the node script's), unrelated files
    agent = {"etc/otel-efa/config.yaml": "exporters: [otlp]\n",
             "etc/systemd/system/efa-monitor.service.d/parallelcluster.conf": "[Service]\n"}
    for name, text in agent.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    before = tree(root)
    host.install("--root", root, "--mode", "amp", "--region", "us-west-2", "--amp-url", AMP_URL,
                 "--package", package, "--sha256", digest)
    assert (root / VERSION_FILE).exists() and (root / ENV_FILE).exists()

    host.ctl_calls.unlink()
    done = host.install("--root", root, "--uninstall")
    assert f"rpm -e --root {root} aws-otel-collector" in host.pm()
    assert host.ctl_calls.read_text().split() == ["-a", "stop"]
    assert tree(root) == before, done.stdout
    assert not (root / "etc/systemd/system/aws-otel-collector.service.d").exists()
    again = host.install("--root", root, "--uninstall")
    assert "- remove" not in again.stdout and tree(root) == before


def test_uninstall_leaves_an_adot_package_it_did_not_install(tmp_path):
    root = fake_root(tmp_path, "ubuntu")
    host = Host(tmp_path)
    package = tmp_path / "aws-otel-collector.deb"
    make_package(package, "v0.49.0")
    subprocess.run([str(host.bin / "dpkg"), "--root", str(root), "-i", str(package)], check=True, env=host.env)
    host.install("--root", root, "--mode", "cloudwatch", "--region", "us-west-2")  # v0.49.0 there: kept, no package
    assert (root / ENV_FILE).exists()
    done = host.install("--root", root, "--uninstall")
    assert "was not installed by install-adot.sh: left in place" in done.stdout
    assert not (root / ENV_FILE).exists() and (root / VERSION_FILE).exists()
    assert not any("--purge" in call for call in host.pm())


def test_shellcheck_is_clean_on_every_script():
    scripts = sorted((REPO / "adot").glob("*.sh"))
    assert SCRIPT in scripts
    result = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
