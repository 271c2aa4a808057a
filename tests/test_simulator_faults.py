"""Faults on the simulated node show in what the agent reads: port DOWN, a retransmit jump, a device gone.

Stand-in: the simulator is the EC2 hardware boundary; the agent's own collector and instruments read it
(one fake clock for both, so rates are exact), and the CLI runs as a process.
"""
import json
import subprocess
import sys

import pytest
from conftest import port_key

from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.tools.simulator import FAULT_KINDS, Fault
from otel_efa.tools.simulator.faults import parse
from otel_efa.tools.simulator.traffic import STORM_PER_SECOND, STORM_RETRANSMIT_SHARE

PROFILE = "p5.48xlarge"
INTERVAL_S = 10.0


class _Node:
    """A simulator and the agent's collector on one fake clock; ``step()`` is one collection interval."""

    def __init__(self, make_simulator, profile=PROFILE, **kwargs):
        self.clock = [1000.0]
        self.simulator = make_simulator(profile, clock=lambda: self.clock[0], **kwargs)
        self.collector = Collector(SysfsReader(self.simulator.root), profile, clock=lambda: self.clock[0])
        self.collector.collect()

    def step(self):
        self.clock[0] += INTERVAL_S
        self.simulator.advance()
        return self.collector.collect()

    def close(self):
        self.collector.reader.close()


@pytest.fixture
def node(make_simulator):
    made = []

    def make(profile=PROFILE, **kwargs):
        made.append(_Node(make_simulator, profile, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_port_down_reads_down_and_stops_traffic(node):
    n = node(faults=["port-down:rdmap96s0"])
    snapshot = n.step()
    down, healthy = snapshot.device("rdmap96s0").ports[0], snapshot.device("rdmap79s0").ports[0]
    assert down.up is False and down.phys_state == 3 and healthy.up is True and healthy.phys_state == 5
    assert down.rates["tx_bytes"] == 0 and healthy.rates["tx_bytes"] > 0
    n.simulator.port_up("rdmap96s0")
    assert n.step().device("rdmap96s0").ports[0].up is True


def test_retransmit_storm_jumps_the_retransmit_ratio_and_the_events(node):
    n = node(faults=["retransmit-storm:rdmap80s0@15"])  # healthy for the first interval, stormy by the third
    healthy = n.step()
    before = n.step()
    stormy = n.step()
    for snapshot, device, ratio in ((healthy, "rdmap80s0", None), (stormy, "rdmap79s0", None),
                                    (stormy, "rdmap80s0", STORM_RETRANSMIT_SHARE)):
        port = snapshot.device(device).ports[0]
        measured = port.rates["retrans_pkts"] / port.rates["tx_pkts"]
        events = {name: port.counters[name] - before.device(device).ports[0].counters[name]
                  for name in STORM_PER_SECOND}
        if ratio is None:
            assert measured < 0.001
            assert snapshot is healthy or not any(events.values())
        else:
            assert measured == pytest.approx(ratio, rel=1e-3) and measured > 0.01  # the alert's threshold
            for name, rate in STORM_PER_SECOND.items():
                assert events[name] == pytest.approx(rate * INTERVAL_S, abs=1)
    # ground truth stays exact across the storm's start
    for name in ("retrans_pkts", "tx_bytes", "retrans_timeout_events"):
        assert stormy.device("rdmap80s0").ports[0].counters[name] == n.simulator.value("rdmap80s0", name)


def test_device_missing_leaves_discovery(node):
    n = node(faults=[Fault("device-missing", "rdmap201s0", after=INTERVAL_S * 1.5)])
    assert len(n.step().devices) == 32
    snapshot = n.step()
    assert [d.name for d in snapshot.devices] == list(n.simulator.device_names)
    assert "rdmap201s0" not in n.simulator.device_names and len(snapshot.devices) == 31
    assert n.collector.instance_type.efa_devices == 32  # what EfaDevicesMissing compares against


def test_a_fault_on_a_device_already_gone_changes_nothing(node):
    n = node(faults=["device-missing:rdmap82s0", "port-down:rdmap82s0@5", "counter-reset:rdmap82s0@5"])
    truth = n.simulator.values()
    snapshot = n.step()  # both later faults fall due inside this interval
    assert "rdmap82s0" not in [d.name for d in snapshot.devices]
    assert all(n.simulator.value(d, c) == v for (d, c), v in truth.items() if d == "rdmap82s0")


def test_idle_rail_and_counter_reset(node):
    n = node(profile="p4d.24xlarge", faults=["idle-rail:rdmap32s27", "counter-reset:rdmap144s27"])
    assert n.simulator.value("rdmap144s27", "tx_bytes") < n.simulator.value("rdmap16s27", "tx_bytes") // 1000
    snapshot = n.step()
    assert snapshot.device("rdmap32s27").ports[0].rates["rx_bytes"] == 0
    assert snapshot.device("rdmap16s27").ports[0].rates["rx_bytes"] > 0
    reset = snapshot.device("rdmap144s27").ports[0]
    assert "tx_bytes" not in reset.rates or 0 <= reset.rates["tx_bytes"] <= n.simulator.device_bytes_per_second(
        "rdmap144s27")  # a reset is no spike
    assert n.step().device("rdmap144s27").ports[0].rates["tx_bytes"] == pytest.approx(
        n.simulator.device_bytes_per_second("rdmap144s27"), rel=1e-6)


def test_faults_show_in_the_exported_metrics(make_simulator, make_pipeline):
    simulator = make_simulator("p4d.24xlarge", faults=["port-down:rdmap144s27"])
    points = make_pipeline(simulator.root, "p4d.24xlarge").collect()
    assert points[port_key("efa_port_up", "rdmap144s27")] == 0
    assert points[port_key("efa_port_up", "rdmap16s27")] == 1


@pytest.mark.parametrize("text,problem", [
    ("bogus", "unknown fault"), ("port-down:", "names no device"), ("port-down@x", "seconds"),
    ("port-down@-5", "seconds"), ("port-down@nan", "seconds"), ("port-down:rdmap1s0", "no EFA device"),
])
def test_bad_fault_specs_are_refused(make_simulator, text, problem):
    simulator = make_simulator("p4d.24xlarge")
    with pytest.raises(ValueError, match=problem):
        simulator.inject(text)


def test_specs_round_trip():
    for kind in FAULT_KINDS:
        for text in (kind, f"{kind}:rdmap79s0", f"{kind}:rdmap79s0@2.5"):
            assert str(parse(text)) == text


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "otel_efa", *args], capture_output=True, text=True, timeout=60)


def test_the_simulate_command_puts_faults_on_the_tree(tmp_path):
    root = str(tmp_path / "sys")
    done = _cli("simulate", "p5en.48xlarge", "--root", root, "--fault", "port-down:rdmap110s0",
                "--fault", "device-missing:rdmap163s0", "--once")
    assert done.returncode == 0 and "port-down:rdmap110s0" in done.stdout, done.stderr
    snapshot = json.loads(_cli("snapshot", "--sysfs", root, "--json").stdout)
    states = {d["name"]: d["ports"][0]["state"] for d in snapshot["devices"]}
    assert states.pop("rdmap110s0") == "DOWN" and "rdmap163s0" not in states
    assert len(states) == 14 and set(states.values()) == {"ACTIVE"}


@pytest.mark.parametrize("argv", [
    ["run", "--simulate", PROFILE, "--fault", "port-down:rdmap16s0", "--count", "1"],
    ["run", "--simulate", PROFILE, "--fault", "melt", "--count", "1"],
    ["simulate", PROFILE, "--root", "{tmp}", "--kernel", "old", "--fault", "retransmit-storm", "--once"],
    ["top", "--fault", "port-down", "--count", "1", "--plain"],
])
def test_bad_faults_on_the_command_line_are_one_line_naming_the_flag(argv, tmp_path):
    done = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--fault" in lines[0], done.stderr
