"""The efa-monitor unit, checked by systemd's own tools (systemd-analyze from the Debian package)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from node_stand_ins import NOBODY, REPO, run_as_nobody

from otel_efa.tools.simulator import Simulator

UNIT = REPO / "systemd" / "efa-monitor.service"
MAX_EXPOSURE = 2.0
INSTALLED_AGENT = "/opt/otel-efa/venv/bin/otel-efa"


def _directives(text: str):
    pairs = []
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_security_exposure_is_at_most_2():
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for efa-monitor\.service: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security --offline=yes systemd/efa-monitor.service: {exposure} {match.group(2)}")
    assert exposure <= MAX_EXPOSURE, done.stdout


def test_verify_is_clean(tmp_path):
    """``systemd-analyze verify`` insists that ExecStart's binary exists, and /opt/otel-efa/venv exists
    only on an installed node; ``--root`` would need a whole systemd tree (sysinit.target, ...) under the
    fake root. So verify a copy whose ExecStart points at this checkout's own ``otel-efa`` entry point
    (everything else byte-identical), and check separately that the original names the installed path."""
    text = UNIT.read_text()
    exec_start = dict(_directives(text))["ExecStart"]
    assert exec_start == f"{INSTALLED_AGENT} run --config /etc/otel-efa/config.yaml"
    agent = Path(sys.executable).parent / "otel-efa"
    assert agent.exists(), agent
    copy = tmp_path / "efa-monitor.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_AGENT}", f"ExecStart={agent}"))
    assert copy.read_text().count(str(agent)) == 1
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_unit_keeps_what_the_agent_needs():
    """Hardening that would break the agent: no write access to the log, no sockets, too few fds."""
    settings = _directives(UNIT.read_text())
    values = dict(settings)
    assert values["User"] == "efa-monitor" and values["NoNewPrivileges"] == "yes"
    assert values["ProtectSystem"] == "strict" and values["CapabilityBoundingSet"] == ""
    assert "/var/log" in values["ReadWritePaths"].split()  # /var/log/efa_monitor.log, rotated by rename
    assert set(values["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert int(values["LimitNOFILE"]) >= 4096  # ~1,200 counter fds on a p5
    assert values["Restart"] == "on-failure" and values["RestartSec"]
    assert "aws-otel-collector.service" in values["After"].split()
    assert "aws-otel-collector.service" in values["Wants"].split()
    for key in ("MemoryMax", "CPUQuota", "StartLimitBurst", "StartLimitIntervalSec"):
        assert values.get(key), key
    # Obsolete spellings systemd-analyze accepts with a warning only.
    assert not {"MemoryLimit", "CPUShares", "StartLimitInterval"} & {k for k, _ in settings}


def _read_tree(root: str):
    from otel_efa.node.sysfs import SysfsReader

    probe = os.path.join(root, "probe")
    try:
        open(probe, "w").close()
        writable = True
    except OSError:
        writable = False
    with SysfsReader(root) as reader:
        reading = reader.read()
    return writable, os.getuid(), reading


def test_counters_readable_read_only_and_unprivileged():
    """What the sandbox does to the agent's view of sysfs, rebuilt with the kernel's own mechanisms:
    ProtectKernelTunables= remounts /sys read-only (here: a read-only bind mount of a simulated tree in
    a private mount namespace), and User= drops root (here: setuid to nobody). The agent's reader must
    still read every counter, with the simulator's exact values."""
    assert {"ProtectKernelTunables": "yes"}.items() <= dict(_directives(UNIT.read_text())).items()
    base = Path(tempfile.mkdtemp(prefix="otel-efa-ro-"))  # world-traversable, unlike pytest's tmp_path
    try:
        base.chmod(0o755)
        simulator = Simulator("p4d.24xlarge", str(base / "sim"))
        simulator.close()
        (base / "ro").mkdir()
        writable, uid, reading = run_as_nobody(_read_tree, str(base / "ro"),
                                               read_only_bind=(str(base / "sim"), str(base / "ro")))
        assert (writable, uid) == (False, NOBODY)
        assert reading.errors == ()
        assert [d.name for d in reading.devices] == list(simulator.device_names)
        for device in reading.devices:
            for port in device.ports:
                assert port.counters, device.name
                for counter, value in port.counters.items():
                    assert value == simulator.value(device.name, counter), (device.name, counter)
    finally:
        shutil.rmtree(base)
