"""``otel-efa top`` in a real terminal (tmux, 80x24) on a simulated p5.48xlarge, and as plain lines.

The simulator runs in this process with a steady pattern, so every device's true rate is known.
``top`` reads sysfs on its own 2 s schedule while the simulator advances every 0.05 s: a reading lags
the truth by at most one tick (plus thread scheduling), so a rate over one interval is off by at most
0.05/2 = 2.5 % from the tick, and we allow 5 % for scheduling on a loaded 2-core machine.
"""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import table_figures
from waiting import wait_until

from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.tools.simulator.engine import PACKET_BYTES
from otel_efa.tools.top.view import CHROME_LINES

PROFILE = "p5.48xlarge"
NODE_GBPS = 1600.0  # 50 Gb/s per device in each direction
INTERVAL_S = 2.0
TICK_S = 0.05
TOLERANCE = 0.05
SGR = re.compile(r"\x1b\[[0-9;]*m")


def _rows(screen: str) -> Dict[str, dict]:
    return table_figures.rows([SGR.sub("", line) for line in screen.splitlines()])


def _drawn_with(screen: str) -> Dict[str, set]:
    """Device -> the attributes its row starts with, replaying tmux's SGR codes (they carry across lines)."""
    names = {"1": "bold", "7": "reverse", "31": "red"}
    active: set = set()

    def apply(escapes: str) -> None:
        for params in SGR.findall(escapes):
            for code in (params[2:-1] or "0").split(";"):
                if code in ("", "0"):
                    active.clear()
                elif code == "39":
                    active.discard("red")
                elif code in names:
                    active.add(names[code])

    drawn = {}
    for line in screen.splitlines():
        prefix = re.match(r"(?:\x1b\[[0-9;]*m)*", line).group(0)
        apply(prefix)
        match = table_figures.ROW.match(SGR.sub("", line))
        if match:
            drawn[match["name"]] = set(active)
        apply(line[len(prefix):])
    return drawn


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= TOLERANCE * want


def _shown(text: str) -> float:
    value = table_figures.figure(text)
    assert value is not None, text
    return value[0]


def _check_figures(rows: Dict[str, dict], simulator) -> None:
    link_gbps = INSTANCE_TYPES[PROFILE].gbps_per_device
    for name, row in rows.items():
        truth = simulator.device_bytes_per_second(name)
        gbps = truth * 8 / 1e9
        assert _close(_shown(row["rx_gbps"]), gbps) and _close(_shown(row["tx_gbps"]), gbps), (row["raw"], gbps)
        pps = truth / PACKET_BYTES
        assert _close(_shown(row["rx_pps"]), pps) and _close(_shown(row["tx_pps"]), pps), (row["raw"], pps)
        assert abs(_shown(row["util"]) - 100 * gbps / link_gbps) <= 100 * TOLERANCE * gbps / link_gbps + 1, row["raw"]


class Tmux:
    """A private tmux server (its own socket), so nothing else running tmux is touched."""

    def __init__(self, socket_dir: Path):
        self.socket = str(socket_dir / "tmux.sock")

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def screen(self, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "top")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "top", *keys)

    def wait_for(self, predicate, timeout: float = 20.0, escapes: bool = False) -> str:
        """The first screen that satisfies ``predicate``."""
        def matching():
            screen = self.screen(escapes)
            return screen if predicate(screen) else None

        return wait_until(matching, timeout, "a screen showing what was expected", every=0.2)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    server = Tmux(tmp_path)
    yield server
    server.kill()


def _refreshes(screen: str) -> str:
    return re.search(r"\d\d:\d\d:\d\d", screen.splitlines()[0]).group(0) if screen.strip() else ""


def test_top_in_a_terminal_shows_every_device_highlights_faults_and_quits(tmp_path, tmux, make_simulator):
    simulator = make_simulator(PROFILE, gbps=NODE_GBPS)
    devices = list(simulator.device_names)
    assert len(devices) == 32
    rc_file = tmp_path / "rc"
    command = (f"AWS_EC2_METADATA_DISABLED=true {sys.executable} -m otel_efa top --sysfs {simulator.root} "
               f"--instance-type {PROFILE} --interval {INTERVAL_S:g}; echo $? > {rc_file}")
    with simulator.start(TICK_S):
        tmux.run("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", "-e", "TERM=screen", command)
        # The first reading gives no rate; wait for a screen whose first row has figures.
        first = tmux.wait_for(lambda s: any(r["rx_gbps"] != "-" for r in _rows(s).values())
                              and len(_rows(s)) >= 24 - CHROME_LINES)
        page1 = tmux.wait_for(lambda s: _refreshes(s) != _refreshes(first))  # one more interval: steady
        assert all(len(line) <= 80 for line in page1.splitlines())
        rows = _rows(page1)
        assert len(rows) == 24 - CHROME_LINES, "one device per line between header and footer"
        tmux.keys("NPage")
        rows.update(_rows(tmux.wait_for(lambda s: devices[-1] in _rows(s))))
        assert set(rows) == set(devices), "scrolling reaches every device"
        _check_figures(rows, simulator)
        node = re.search(r"NODE RX ([\d.]+) TX ([\d.]+) Gb/s of (\d+)", page1)
        assert _close(float(node[1]), NODE_GBPS) and _close(float(node[2]), NODE_GBPS)
        assert int(node[3]) == INSTANCE_TYPES[PROFILE].total_gbps
        assert not any(r["mark"] == "!" for r in rows.values())

        # Faults: 7 dropped packets on the last device, the port of the 20th goes down. The drops show as a
        # rate for one interval; the mark stays (errors since top started).
        dropping, down = devices[-1], devices[19]
        simulator.set_value(dropping, "rx_drops", simulator.value(dropping, "rx_drops") + 7)
        simulator.set_port_state(down, "1: DOWN")
        tmux.keys("e")  # sort by errors: faults first
        screen = tmux.wait_for(lambda s: _rows(s).get(dropping, {}).get("mark") == "!"
                               and _rows(s).get(down, {}).get("state") == "DOWN", escapes=True)
        faults = _rows(screen)
        first_two = [name for name in faults][:2]
        assert set(first_two) == {dropping, down}, "sorting by errors puts the faults on top"
        assert faults[dropping]["mark"] == "!" and faults[down]["mark"] == "!"
        healthy = next(r for n, r in faults.items() if n not in (dropping, down))
        assert healthy["mark"] == " "
        highlighted = {name for name, attributes in _drawn_with(screen).items() if {"bold", "red"} <= attributes}
        assert highlighted == {dropping, down}, "only the faulty rows are drawn in bold red"

        tmux.keys("q")
        wait_until(rc_file.exists, 10, "top's exit status after q")
    assert rc_file.read_text().strip() == "0"


def test_top_prints_plain_lines_when_not_a_terminal(make_simulator):
    simulator = make_simulator("p4d.24xlarge")
    with simulator.start(TICK_S):
        result = subprocess.run(
            [sys.executable, "-m", "otel_efa", "top", "--sysfs", simulator.root, "--instance-type", "p4d.24xlarge",
             "--interval", "1", "--count", "3"],
            capture_output=True, text=True, timeout=30, env=dict(os.environ, AWS_EC2_METADATA_DISABLED="true"))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    blocks: List[str] = [b for b in result.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == 3
    last = _rows(blocks[-1])
    assert set(last) == set(simulator.device_names)
    for name, row in last.items():
        gbps = simulator.device_bytes_per_second(name) * 8 / 1e9
        assert abs(_shown(row["rx_gbps"]) - gbps) <= 0.1 * gbps, row["raw"]  # 1 s interval: tick/interval = 5 %


def test_top_rejects_a_bad_interval():
    result = subprocess.run([sys.executable, "-m", "otel_efa", "top", "--interval", "0"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "--interval" in result.stderr and result.stderr.count("\n") == 1
