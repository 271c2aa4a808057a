"""`otel-efa run` as a process: --count, SIGTERM/SIGINT flush and exit 0 in time, SIGHUP survives."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port
from waiting import wait_until

from otel_efa.tools.simulator import Simulator


def _start(*args, stderr=subprocess.PIPE):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return subprocess.Popen([sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge", *args],
                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)


def _wait_for_metrics(port, timeout=30):
    def served():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            body = response.read().decode()
        return body if "efa_rx_bytes_total" in body else None

    return wait_until(served, timeout, "metrics served", every=0.1, ignoring=(OSError,))


def test_count_exits_zero_after_n_collections(tmp_path):
    log = tmp_path / "log"
    process = _start("--interval", "0.2", "--count", "5", "--exporters", "log", "--log-file", str(log))
    assert process.wait(30) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 5 * 4  # every collection writes a line per device (4 devices)
    assert all(line.endswith(": RX=- Mbps, TX=- Mbps") for line in lines[:4])  # no rate yet
    assert not any("RX=-" in line for line in lines[4:])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_and_exits_zero_within_5_seconds(tmp_path, signum):
    port = free_port()
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "w") as stderr_file:
        process = _start("--interval", "30", "--exporters", "prometheus,log", "--log-file", str(tmp_path / "log"),
                         "--prometheus-address", f"127.0.0.1:{port}", stderr=stderr_file)
    _wait_for_metrics(port)
    process.send_signal(signal.SIGHUP)  # noted, not fatal
    wait_until(lambda: "SIGHUP" in stderr_path.read_text(), 10, "the SIGHUP noted")
    assert process.poll() is None
    sent = time.monotonic()
    process.send_signal(signum)
    assert process.wait(10) == 0
    assert time.monotonic() - sent < 5
    stderr = stderr_path.read_text()
    assert "SIGHUP" in stderr and signal.Signals(signum).name in stderr and "Traceback" not in stderr


def test_snapshot_json(tmp_path):
    root = tmp_path / "sys"
    subprocess.run([sys.executable, "-m", "otel_efa", "simulate", "p5en.48xlarge", "--root", str(root), "--once"],
                   check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-m", "otel_efa", "snapshot", "--sysfs", str(root), "--json"],
                            check=True, capture_output=True, text=True)
    data = json.loads(result.stdout)
    assert len(data["devices"]) == 16 and data["errors"] == []
    first = data["devices"][0]
    # `simulate --once` writes the starting values, which depend on the profile only: the same as here.
    (tmp_path / "truth").mkdir()
    with Simulator("p5en.48xlarge", str(tmp_path / "truth")) as truth:
        assert first["name"] == truth.devices[0].name
        assert first["ports"][0]["counters"]["rx_bytes"] == truth.value(first["name"], "rx_bytes")
    assert first["ports"][0]["rate"] == "200 Gb/sec (4X HDR)"
    empty = subprocess.run([sys.executable, "-m", "otel_efa", "snapshot", "--sysfs", str(tmp_path)],
                           capture_output=True, text=True)
    assert empty.returncode == 1 and "no EFA devices" in empty.stdout
