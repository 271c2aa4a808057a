"""The console exporter's table: every column a per-second rate equal to the simulator's ground truth (its
counters' delta over the elapsed time) to the digits printed, a dash before the first rate, units in the
header, and at most 80 columns on a 16-device p5en.48xlarge and a 32-device p5.48xlarge.

The simulator stands in for the EFA hardware; time is driven by hand (the simulator's and the collector's
clocks are one variable), so the elapsed time is exact.
"""
import os
import subprocess
import sys

import pytest
from table_figures import COLUMNS, assert_shows, rows

from otel_efa.exporters.console import ConsoleTable
from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.tools.top.model import DROPS, ERROR_DEVICE_COUNTERS, ERROR_PORT_COUNTERS
from otel_efa.tools.top.view import COLUMN_HEADER, DeviceRow, device_line, device_name

WIDTH = 80
ELAPSED_S = 2.0
ERRORS = tuple(k for k in ERROR_PORT_COUNTERS + ERROR_DEVICE_COUNTERS if k != DROPS)


class Node:
    """A simulated node, a collector on it and the console's table, all on one hand-driven clock."""

    def __init__(self, make_simulator, profile: str):
        self.now = [0.0]
        self.sim = make_simulator(profile, clock=lambda: self.now[0])
        self.reader = SysfsReader(self.sim.root)
        self.collector = Collector(self.reader, profile, clock=lambda: self.now[0])
        self.table = ConsoleTable()

    def render_at(self, seconds: float):
        self.sim.advance(seconds)
        self.now[0] = seconds
        return self.table.render(self.collector.collect())


@pytest.fixture
def node(make_simulator, request):
    made = Node(make_simulator, request.param)
    yield made
    made.reader.close()


def _delta(before, after, device: str, counters) -> int:
    return sum(after[(device, c)] - before[(device, c)] for c in counters if (device, c) in after)


@pytest.mark.parametrize("node", ["p5en.48xlarge", "p5.48xlarge"], indirect=True)
def test_every_column_is_the_ground_truth_rate_within_80_columns(node):
    first = node.render_at(10.0)
    devices = node.sim.device_names
    assert len(devices) == INSTANCE_TYPES[node.sim.profile.name].efa_devices
    assert all(len(line) <= WIDTH for line in first), max(first, key=len)
    shown = rows(first)
    assert set(shown) == {device_name(d) for d in devices}
    # No rate yet: a dash in every rate column, not a zero and not a total.
    assert all(row[c] == "-" for row in shown.values() for c in COLUMNS), first

    # Faults with known counts during the next interval, on devices taken from the simulator.
    before = node.sim.values()
    node.sim.advance(10.0 + ELAPSED_S)
    retransmitting, dropping, failing = devices[0], devices[len(devices) // 2], devices[-1]
    node.sim.set_value(retransmitting, "retrans_pkts", node.sim.value(retransmitting, "retrans_pkts") + 2_500)
    node.sim.set_value(dropping, DROPS, node.sim.value(dropping, DROPS) + 7)
    for counter in ("rdma_read_wr_err", "unresponsive_remote_events"):
        node.sim.set_value(failing, counter, node.sim.value(failing, counter) + 3)
    after = node.sim.values()
    second = node.render_at(10.0 + ELAPSED_S)
    assert all(len(line) <= WIDTH for line in second), max(second, key=len)
    shown = rows(second)
    assert set(shown) == {device_name(d) for d in devices}
    link = INSTANCE_TYPES[node.sim.profile.name].device_bytes_per_second
    for device in devices:
        row = shown[device_name(device)]

        def per_second(*counters: str) -> float:
            return _delta(before, after, device, counters) / ELAPSED_S  # noqa: B023 (used at once)

        assert_shows(row["rx_gbps"], per_second("rx_bytes") * 8 / 1e9, f"{device} RX Gb/s")
        assert_shows(row["tx_gbps"], per_second("tx_bytes") * 8 / 1e9, f"{device} TX Gb/s")
        assert_shows(row["util"], 100 * max(per_second("rx_bytes"), per_second("tx_bytes")) / link, f"{device} UTIL")
        assert_shows(row["rx_pps"], per_second("rx_pkts"), f"{device} RX pkt/s")
        assert_shows(row["tx_pps"], per_second("tx_pkts"), f"{device} TX pkt/s")
        assert_shows(row["retrans_pps"], per_second("retrans_pkts"), f"{device} RETR pkt/s")
        assert_shows(row["drops_pps"], per_second(DROPS), f"{device} DROP pkt/s")
        assert_shows(row["errors_pps"], per_second(*ERRORS), f"{device} ERR/s")
    # The injected counts show as rates over the interval, not as totals.
    assert_shows(shown[device_name(dropping)]["drops_pps"], 7 / ELAPSED_S, "drops")
    assert_shows(shown[device_name(failing)]["errors_pps"], 6 / ELAPSED_S, "errors")
    assert shown[device_name(failing)]["mark"] == "!" and shown[device_name(dropping)]["mark"] == "!"

    # An interval without faults: the rates fall back to 0 (a total would have stayed).
    third = rows(node.render_at(10.0 + 2 * ELAPSED_S))
    assert third[device_name(dropping)]["drops_pps"] == "0"
    assert third[device_name(failing)]["errors_pps"] == "0"


@pytest.mark.parametrize("node", ["p5.48xlarge"], indirect=True)
def test_header_names_the_units_and_human_figures(node):
    node.render_at(1.0)
    lines = node.render_at(2.0)
    assert lines[2:4] == list(COLUMN_HEADER)
    units = lines[3].split()
    assert units.count("Gb/s") == 2 and units.count("pkt/s") == 4 and "%" in units and "err/s" in units
    packets = rows(lines)[device_name(node.sim.device_names[0])]["rx_pps"]
    assert packets.endswith("k"), packets  # hundreds of thousands of packets per second: k, not digits


def test_a_long_device_name_is_cut_to_its_column():
    long_name = "efa_" + "x" * 40 + "\n"
    row = DeviceRow(name=long_name, up=True, rx=5e9, tx=5e9, rx_pps=1e6, tx_pps=1e6, retrans_pps=0.0,
                    drops_pps=0.0, errors_pps=0.0, link=25e9, errors=0, errors_rising=False)
    text, _ = device_line(row)
    assert len(text) <= WIDTH and "\n" not in text
    assert text.split()[0].endswith("~")


def test_run_count_prints_every_interval_within_80_columns():
    """``otel-efa run --count 2`` with the console: two tables, the first one with dashes."""
    profile = "p5en.48xlarge"
    result = subprocess.run(
        [sys.executable, "-m", "otel_efa", "run", "--simulate", profile, "--exporters", "console", "--count", "2",
         "--interval", "0.5"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, AWS_EC2_METADATA_DISABLED="true"))
    assert result.returncode == 0, result.stderr
    tables = [block.splitlines() for block in result.stdout.split("\n\n") if block.strip()]
    assert len(tables) == 2, result.stdout
    devices = INSTANCE_TYPES[profile].efa_devices
    assert all(len(line) <= WIDTH for table in tables for line in table)
    first, second = rows(tables[0]), rows(tables[1])
    assert len(first) == len(second) == devices
    assert all(row["rx_gbps"] == "-" for row in first.values())
    assert all(row["rx_gbps"] != "-" for row in second.values())
