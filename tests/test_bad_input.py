"""Bad input never crashes the agent: the broken counter is unavailable, logged once, counted; the rest flows."""
import json
import logging
import os
import shutil
import tempfile

import pytest
from conftest import port_key

from otel_efa.node.sysfs import SysfsReader
from otel_efa.tools.simulator import Simulator

REASON_KEY = "otel_efa_read_errors"


def _errors(points, reason):
    return points[(REASON_KEY, frozenset({("reason", reason)}))]


def _assert_rest_is_served(points, sim, broken_device, broken_counter):
    for device in sim.devices:
        for counter in device.port_counters:
            if device.name == broken_device and counter == broken_counter:
                continue
            name = "efa_rx_dropped" if counter == "rx_drops" else f"efa_{counter}"
            assert points[port_key(name, device.name)] == sim.value(device.name, counter), (device.name, counter)


@pytest.mark.parametrize("content,reason", [
    (b"", "parse"), (b"garbage\n", "parse"), (b"-5\n", "parse"), (b"18446744073709551616\n", "parse"),
    (b"N/A (no PMA)\n", "not_available"),
])
def test_bad_content(make_simulator, make_pipeline, caplog, content, reason):
    sim = make_simulator("p4d.24xlarge")
    device = sim.devices[1].name
    pipeline = make_pipeline(sim.root)
    pipeline.collect()
    sim.corrupt(device, "rx_bytes", content)
    caplog.set_level(logging.INFO, logger="otel_efa")
    counts = []
    for _ in range(3):
        sim.advance_by(1.0)
        points = pipeline.collect()
        assert port_key("efa_rx_bytes", device) not in points
        assert port_key("efa_rx_throughput", device) not in points
        _assert_rest_is_served(points, sim, device, "rx_bytes")
        counts.append(_errors(points, reason))
    path = sim.path_of(device, "rx_bytes")
    lines = [r for r in caplog.records if path in r.getMessage()]
    if reason == "not_available":  # awsefareceiver's "not available": counted and logged once, at info
        assert counts == [1, 1, 1]
        assert len(lines) == 1 and lines[0].levelno == logging.INFO and "not available" in lines[0].getMessage()
    else:  # a fault: every failed read counts, one warning
        assert counts == [1, 2, 3]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING and reason in lines[0].getMessage()
    sim.heal(device, "rx_bytes")
    points = pipeline.collect()
    assert points[port_key("efa_rx_bytes", device)] == sim.value(device, "rx_bytes")
    assert any("no longer failing" in r.getMessage() and path in r.getMessage() for r in caplog.records)


def test_counter_file_vanishes_and_returns(make_simulator, make_pipeline):
    sim = make_simulator("p4d.24xlarge")
    device = sim.devices[0].name
    pipeline = make_pipeline(sim.root)
    pipeline.collect()
    sim.remove_counter(device, "tx_pkts")
    sim.advance_by(1.0)
    points = pipeline.collect()
    assert port_key("efa_tx_pkts", device) not in points
    assert _errors(points, "missing") == 1
    _assert_rest_is_served(points, sim, device, "tx_pkts")
    sim.restore_counter(device, "tx_pkts")
    sim.advance_by(1.0)
    points = pipeline.collect()
    assert points[port_key("efa_tx_pkts", device)] == sim.value(device, "tx_pkts")


def test_device_removed_and_readded_gives_no_bogus_rate(make_simulator, make_pipeline):
    sim = make_simulator("p4d.24xlarge", gbps=200)
    gone = sim.devices[2].name
    clock = [0.0]
    pipeline = make_pipeline(sim.root, clock=lambda: clock[0])

    def step(seconds=1.0):
        sim.advance_by(seconds)
        clock[0] += seconds
        return pipeline.collect()

    step()
    step()
    sim.remove_device(gone)
    points = step()
    assert not any(dict(attrs).get("aws.efa.device") == gone for _, attrs in points)
    for device in sim.device_names:
        assert points[port_key("efa_rx_bytes", device)] == sim.value(device, "rx_bytes")
    sim.restore_device(gone)  # re-probed: counters restart at 0
    points = step()
    assert points[port_key("efa_rx_bytes", gone)] == sim.value(gone, "rx_bytes")
    assert port_key("efa_rx_throughput", gone) not in points  # first sample of the new device
    points = step()
    assert points[port_key("efa_rx_throughput", gone)] == pytest.approx(sim.expected_rate(gone, "rx_bytes"))
    assert _errors(points, "missing") == 0 and _errors(points, "parse") == 0


def test_reset_counter_gives_no_negative_rate(make_simulator, make_pipeline):
    sim = make_simulator("p4d.24xlarge")
    clock = [0.0]
    pipeline = make_pipeline(sim.root, clock=lambda: clock[0])  # a second of traffic takes a second
    pipeline.collect()
    sim.advance_by(1.0)
    clock[0] += 1.0
    sim.reset([sim.devices[0].name])
    points = pipeline.collect()
    rates = [v for (name, _), v in points.items() if name.endswith("_rate")]
    assert rates and all(v >= 0 for v in rates)
    assert port_key("efa_rx_throughput", sim.devices[0].name) not in points
    assert port_key("efa_rx_throughput", sim.devices[1].name) in points


def _read_as_nobody(root: str) -> dict:
    """Read the tree in a child process that dropped to uid/gid 65534: root bypasses file modes."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            with SysfsReader(root) as reader:
                first, second = reader.read(), reader.read()
            result = {
                "counters": {d.name: d.ports[0].counters for d in second.devices},
                "errors": [[e.path, e.reason] for e in first.errors + second.errors],
                "unavailable": [[e.path, e.reason] for e in first.unavailable + second.unavailable],
            }
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_permission_denied(make_simulator):
    root = tempfile.mkdtemp(prefix="otel-efa-perm-")  # pytest's tmp_path is not reachable for nobody
    os.chmod(root, 0o755)
    with Simulator("p4d.24xlarge", root) as sim:
        device = sim.devices[3].name
        sim.deny(device, "rx_pkts")
        result = _read_as_nobody(root)
        # EACCES at discovery is "not available" (as awsefareceiver has it): skipped, not a failing read
        assert result["errors"] == []
        assert result["unavailable"] == [[sim.path_of(device, "rx_pkts"), "not_available"]] * 2
        assert "rx_pkts" not in result["counters"][device]
        assert result["counters"][device]["rx_bytes"] == sim.value(device, "rx_bytes")
        assert all("rx_pkts" in c for name, c in result["counters"].items() if name != device)
    shutil.rmtree(root)
