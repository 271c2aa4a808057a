"""Log rotation with the real logrotate (Debian package) while the agent writes the log."""
import re
import subprocess
from collections import defaultdict
from pathlib import Path

from node_stand_ins import REPO
from waiting import wait_until

from otel_efa.config import Config

INSTALLED_LOG = "/var/log/efa_monitor.log"
LINE = re.compile(r"^(\S+) (\S+): RX=(?:\d+\.\d\d|-) Mbps, TX=(?:\d+\.\d\d|-) Mbps")


def _groups(path: Path):
    """timestamp -> device names, one group per collection (the agent stamps a collection's lines alike)."""
    groups = defaultdict(list)
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"{path.name}: unexpected line {line!r}"
        groups[match.group(1)].append(match.group(2))
    return groups


def test_rotation_while_running_loses_nothing(tmp_path, make_simulator, run_agent):
    """Our logrotate rule (rename + create, no copytruncate, no signal) rotates the log under a running
    agent: the lines written before land in the rotated file, every later line in the new file, and no
    collection is lost or split between the two."""
    log = tmp_path / "efa_monitor.log"
    rule = (REPO / "systemd" / "efa-monitor.logrotate").read_text()
    directives = [line.split("#")[0].strip() for line in rule.splitlines()]
    assert f"{INSTALLED_LOG} {{" in directives and "copytruncate" not in directives
    config_file = tmp_path / "logrotate.conf"
    config_file.write_text(rule.replace(INSTALLED_LOG, str(log)))
    config_file.chmod(0o644)

    simulator = make_simulator("p4d.24xlarge")
    devices = sorted(simulator.device_names)
    with simulator.start(tick=0.02):
        agent = run_agent(Config(sysfs=simulator.root, exporters=["log"], log_file=str(log), interval=0.1,
                                 instance_type="p4d.24xlarge"), resource=None)
        wait_until(lambda: log.exists() and len(_groups(log)) >= 3, what="lines before rotation")
        done = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(config_file)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        rotated = tmp_path / "efa_monitor.log.1"
        assert rotated.exists(), sorted(p.name for p in tmp_path.iterdir())
        assert log.exists() and log.stat().st_ino != rotated.stat().st_ino
        wait_until(lambda: len(_groups(log)) >= 3, what="lines in the new file after rotation")
        agent.stop()

    before, after = _groups(rotated), _groups(log)
    assert before and after
    assert max(before) < min(after), "a line written after rotation went to the rotated file"
    for stamp, names in {**before, **after}.items():
        assert sorted(names) == devices, f"collection {stamp} is split or incomplete: {names}"
    # Every collection wrote its group (the first one with no rate yet: ``RX=- Mbps``).
    collections = agent.agent.collector.latest.collections
    assert len(before) + len(after) == collections
