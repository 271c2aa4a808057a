"""The quick-start's log line: exact format, error fields, flushed at once."""
import subprocess
import sys
import time
from datetime import datetime, timezone

from opentelemetry.sdk.resources import Resource
from waiting import wait_until

from otel_efa.config import Config
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.logline import LogLineExporter
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor

WALL = datetime(2026, 11, 28, 12, 0, 0, 250000, tzinfo=timezone.utc).timestamp()


def _two_collections(sim, seconds):
    clock = [100.0]
    collector = Collector(SysfsReader(sim.root), clock=lambda: clock[0], wall_clock=lambda: WALL)
    before = sim.values()
    collector.collect()
    sim.advance_by(seconds)
    clock[0] += seconds
    return collector.collect(), before


def test_line_format_byte_for_byte(make_simulator, tmp_path):
    sim = make_simulator("p4d.24xlarge", gbps=10)
    snapshot, before = _two_collections(sim, 2.0)
    log_file = tmp_path / "efa_monitor.log"
    exporter = LogLineExporter(ExporterContext(Config(log_file=str(log_file)), Resource.get_empty()))
    exporter.export(EfaInstrumentor().interval(snapshot))
    expected = []
    for device in sim.device_names:
        rx = (sim.value(device, "rx_bytes") - before[(device, "rx_bytes")]) / 2.0 * 8 / 1e6
        tx = (sim.value(device, "tx_bytes") - before[(device, "tx_bytes")]) / 2.0 * 8 / 1e6
        expected.append(f"2026-11-28T12:00:00.250+00:00 {device}: RX={rx:.2f} Mbps, TX={tx:.2f} Mbps\n")
    assert log_file.read_text() == "".join(expected)
    assert "RX=2500.00 Mbps, TX=2500.00 Mbps" in expected[0]  # 10 Gbps over 4 devices


def test_error_fields_appear_when_non_zero(make_simulator, tmp_path):
    sim = make_simulator("p5en.48xlarge")
    noisy = sim.devices[0].name
    sim.set_value(noisy, "rx_drops", 3)
    sim.set_value(noisy, "rdma_write_wr_err", 2)
    sim.set_value(noisy, "rdma_read_wr_err", 1)
    snapshot, _ = _two_collections(sim, 1.0)
    log_file = tmp_path / "efa_monitor.log"
    LogLineExporter(ExporterContext(Config(log_file=str(log_file)), Resource.get_empty())).export(
        EfaInstrumentor().interval(snapshot))
    lines = log_file.read_text().splitlines()
    assert len(lines) == 16
    assert lines[0].endswith(" rx_errors=3 tx_discards=3")
    assert all("rx_errors" not in line for line in lines[1:])
    grep = subprocess.run(["grep", "-E", "rx_errors|tx_discards", str(log_file)], capture_output=True, text=True)
    assert grep.stdout.splitlines() == [lines[0]]


def test_lines_are_flushed_within_a_second_of_collection(tmp_path):
    log_file = tmp_path / "efa_monitor.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge", "--interval", "1",
         "--exporters", "log", "--log-file", str(log_file), "--count", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delays, seen = [], 0

    def exited_after_a_look() -> bool:
        nonlocal seen
        running = process.poll() is None  # one more look after it exits: its last lines count too
        if log_file.exists():
            lines = log_file.read_text().splitlines()
            now = time.time()
            for line in lines[seen:]:
                stamp = datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()
                delays.append(now - stamp)
            seen = len(lines)
        return not running

    try:
        wait_until(exited_after_a_look, 30, "the agent's four collections")
    finally:
        process.wait(30)
    assert process.returncode == 0
    assert seen == 4 * 4  # every collection writes its lines (the first one without a rate), four devices
    assert max(delays) < 1.0, delays
