"""adot/install-adot.sh on a fake root: the steps it prints, the files it writes, and that a second run
changes nothing.

What cannot run here is only printed by the script under --root: the package manager, systemctl and
aws-otel-collector-ctl (ADOT is not installable on this machine). An "installed ADOT" is a stand-in
executable at the control script's path in the fake root.
"""
import hashlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "adot" / "install-adot.sh"
CONFIG_DIR = ROOT / "otel-config"
CTL = "/opt/aws/aws-otel-collector/bin/aws-otel-collector-ctl"
AMP_URL = "https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-0a1b2c3d-4e5f/api/v1/remote_write"
OS_RELEASES = {
    "al2": 'NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2"\n',
    "al2023": 'NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2023"\n',
    "ubuntu": 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\n',
}


def fake_root(tmp_path: Path, os_name: str) -> Path:
    root = tmp_path / f"root-{os_name}"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(OS_RELEASES[os_name])
    return root


def install(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree(root: Path):
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _in_order(output: str, expected):
    lines = output.splitlines()
    position = 0
    for wanted in expected:
        found = [i for i, line in enumerate(lines[position:], position) if wanted in line]
        assert found, f"{wanted!r} not found after line {position} in:\n{output}"
        position = found[0] + 1


@pytest.mark.parametrize("os_name, install_command, package", [
    ("al2023", "dnf install -y", "amazon_linux/amd64/latest/aws-otel-collector.rpm"),
    ("al2", "yum install -y", "amazon_linux/amd64/latest/aws-otel-collector.rpm"),
    ("ubuntu", "apt-get install -y", "ubuntu/amd64/latest/aws-otel-collector.deb"),
])
def test_dry_run_prints_every_step_and_changes_nothing(tmp_path, os_name, install_command, package):
    root = fake_root(tmp_path, os_name)
    before = tree(root)
    result = install("--root", root, "--dry-run", "--mode", "both", "--region", "us-west-2", "--amp-url", AMP_URL,
                     "--sha256", "ab" * 32, "--arch", "amd64")
    _in_order(result.stdout, [
        "dry run: nothing is changed",
        f"OS: {os_name}",
        f"+ curl -fsSL --retry 3 -o /tmp/aws-otel-collector.{package[-3:]} "
        f"https://aws-otel-collector.s3.amazonaws.com/{package}",
        "+ verify SHA-256",
        f"+ {install_command} /tmp/aws-otel-collector.{package[-3:]}",
        "+ write /etc/otel-efa/adot-both.yaml",
        "+ write /etc/otel-efa/adot.env",
        "+ write /etc/systemd/system/aws-otel-collector.service.d/otel-efa.conf",
        "+ write /etc/systemd/system/efa-monitor.service.d/after-adot.conf",
        "+ systemctl daemon-reload",
        f"+ {CTL} -c /etc/otel-efa/adot-both.yaml -a start",
    ])
    assert tree(root) == before


def test_install_writes_config_environment_and_ordering_then_a_second_run_changes_nothing(tmp_path):
    root = fake_root(tmp_path, "al2023")
    package = tmp_path / "aws-otel-collector.rpm"
    package.write_bytes(b"not really an rpm, but its checksum is what matters here")
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    args = ["--root", root, "--mode", "both", "--region", "us-west-2", "--amp-url", AMP_URL,
            "--package", package, "--sha256", digest]

    first = install(*args)
    _in_order(first.stdout, ["+ verify SHA-256", f"+ dnf install -y {package}   (skipped: --root",
                             "+ write /etc/otel-efa/adot-both.yaml", f"-a start   (skipped: --root"])
    etc = root / "etc"
    assert (etc / "otel-efa" / "adot-both.yaml").read_text() == (CONFIG_DIR / "adot-both.yaml").read_text()
    environment = (etc / "otel-efa" / "adot.env").read_text().splitlines()
    assert "AWS_REGION=us-west-2" in environment and f"AMP_REMOTE_WRITE_URL={AMP_URL}" in environment
    assert (etc / "systemd/system/aws-otel-collector.service.d/otel-efa.conf").read_text() == \
        "[Service]\nEnvironmentFile=/etc/otel-efa/adot.env\n"
    ordering = (etc / "systemd/system/efa-monitor.service.d/after-adot.conf").read_text()
    assert "After=aws-otel-collector.service" in ordering and "Wants=aws-otel-collector.service" in ordering

    ctl = root / CTL.lstrip("/")  # the package would have installed this
    ctl.parent.mkdir(parents=True)
    ctl.write_text("#!/bin/sh\n")
    ctl.chmod(0o755)
    written = tree(root)
    second = install(*args)
    assert "already installed" in second.stdout
    assert "+ write" not in second.stdout and second.stdout.count("unchanged") == 4, second.stdout
    assert tree(root) == written


@pytest.mark.parametrize("extra, message", [
    (["--sha256", "00" * 32], "SHA-256"),
    ([], "refusing to install an unverified package"),
    (["--mode", "amp", "--sha256", "00" * 32, "--amp-url", "http://example.com/write"], "--amp-url"),
    (["--mode", "wrong"], "--mode"),
])
def test_bad_input_stops_with_one_message_and_writes_nothing(tmp_path, extra, message):
    root = fake_root(tmp_path, "ubuntu")
    package = tmp_path / "aws-otel-collector.deb"
    package.write_bytes(b"package")
    before = tree(root)
    result = install("--root", root, "--region", "us-west-2", "--mode", "cloudwatch", "--package", package,
                     *extra, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree(root) == before


def test_shellcheck_is_clean_on_every_script():
    scripts = sorted((ROOT / "adot").glob("*.sh"))
    assert SCRIPT in scripts
    result = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
