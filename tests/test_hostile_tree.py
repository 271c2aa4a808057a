"""A counter tree that is not the kernel's: odd file kinds, other RDMA devices, an untrusted owner.

The simulator (otel_efa/tools/simulator) is the hardware; the odd files are made for real (mkfifo, a bound
Unix socket, directories, symlink loops) and the agent runs as a real process where it matters.
"""
import logging
import os
import subprocess
import sys
import urllib.request

import pytest
from agent_process import AgentProcess
from conftest import free_port, port_key
from odd_files import ODD_KINDS, replace_with_odd_file
from prometheus_client.parser import text_string_to_metric_families

from otel_efa import catalog
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector

PROFILE = "p4d.24xlarge"  # 4 devices


def _device_dir(sim, index: int) -> str:
    return sim.devices[index].path


# Every place the agent opens a file, relative to the device directory ("device/" is the PCI function).
PLACES = ("ports/1/hw_counters/rx_bytes", "hw_counters/cmds_err", "ports/1/state", "ports/1/phys_state",
          "ports/1/rate", "ports/1/gids/0", "node_guid", "device/numa_node", "device/vendor",
          "device/local_cpulist")


def _make_fifo(path: str) -> None:
    os.unlink(path)
    os.mkfifo(path)


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope_"))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize("place", PLACES)
def test_fifo_anywhere_neither_hangs_the_agent_nor_stops_sigterm(make_simulator, tmp_path, place):
    """A FIFO where a file belongs (opening one for reading blocks until a writer comes): the agent
    exports the other devices meanwhile, logs the FIFO once, and SIGTERM ends it within 5 s."""
    sim = make_simulator(PROFILE)
    fifo = os.path.join(_device_dir(sim, 0), place)
    _make_fifo(os.path.realpath(fifo) if place.startswith("device/") else fifo)
    port = free_port()
    agent = AgentProcess(["--sysfs", sim.root, "--allow-untrusted-sysfs", "--instance-type", PROFILE,
                          "--interval", "0.2", "--exporters", "prometheus",
                          "--prometheus-address", f"127.0.0.1:{port}"], dict(os.environ), tmp_path / "agent.log")
    name = catalog.port_counter_spec("rx_bytes").prometheus_name
    collections = next(m.prometheus_name for m in catalog.METRICS if m.name == "otel_efa_collections")
    others = [d.name for d in sim.devices[1:]]

    def exported() -> bool:
        try:
            found = _scrape(port)
        except OSError:
            return False
        return found.get((collections, frozenset()), 0) >= 3 and all(
            found.get((name, frozenset({("aws_efa_device", d), ("aws_efa_port", "1")}))) == sim.value(d, "rx_bytes")
            for d in others)

    try:
        agent.expect(exported, "the other devices' counters on the Prometheus endpoint", timeout=30)
    finally:
        code, seconds = agent.stop(timeout=30)
    assert code == 0 and seconds < 5, (code, seconds, agent.log())
    if not place.startswith("device/"):  # the PCI function's files are the topology's too: at least once
        assert len(agent.lines(place.split("/")[-1], "a FIFO")) == 1, agent.log()


KINDS = ODD_KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_odd_counter_file_is_skipped_once_and_the_rest_read(make_simulator, caplog, kind):
    sim = make_simulator(PROFILE)
    device = sim.devices[1].name
    path = sim.path_of(device, "tx_pkts")
    scratch = []
    replace_with_odd_file(path, kind, scratch)
    caplog.set_level(logging.INFO, logger="otel_efa")
    with SysfsReader(sim.root) as reader:
        collector = Collector(reader)
        for _ in range(3):
            snapshot = collector.collect()
    ports = {d.name: d.ports[0].counters for d in snapshot.devices}
    assert "tx_pkts" not in ports[device]
    assert ports[device]["rx_bytes"] == sim.value(device, "rx_bytes")
    assert all(ports[d.name]["tx_pkts"] == sim.value(d.name, "tx_pkts") for d in sim.devices if d.name != device)
    assert snapshot.read_errors["not_available"] == 1  # once, not per interval
    assert len([r for r in caplog.records if path in r.getMessage()]) == 1
    for s in scratch:
        s.close()


def test_not_available_counter_counts_once_from_discovery(make_simulator, make_pipeline, caplog):
    """``N/A (no PMA)`` from the start: one info line, counted once under not_available, never a warning."""
    sim = make_simulator(PROFILE)
    device = sim.devices[2].name
    sim.corrupt(device, "rx_drops", b"N/A (no PMA)\n")
    caplog.set_level(logging.INFO, logger="otel_efa")
    pipeline = make_pipeline(sim.root)
    for _ in range(3):
        points = pipeline.collect()
    assert points[("otel_efa_read_errors", frozenset({("reason", "not_available")}))] == 1
    lines = [r for r in caplog.records if sim.path_of(device, "rx_drops") in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert port_key("efa_rx_dropped", device) not in points
    sim.heal(device, "rx_drops")  # retried quietly: it comes back
    points = pipeline.collect()
    assert points[port_key("efa_rx_dropped", device)] == sim.value(device, "rx_drops")


def test_phys_state_is_exported(make_simulator, make_pipeline):
    sim = make_simulator(PROFILE)
    with open(os.path.join(_device_dir(sim, 3), "ports/1/phys_state"), "w") as f:
        f.write("3: Disabled\n")
    points = make_pipeline(sim.root).collect()
    assert points[port_key("efa_port_phys_state", sim.devices[0].name)] == 5
    assert points[port_key("efa_port_phys_state", sim.devices[3].name)] == 3


@pytest.mark.parametrize("foreign", [dict(name="mlx5_0", vendor="0x15b3"), dict(name="irdma0", vendor="0x8086"),
                                     dict(name="rxe0", pci=False)])
def test_other_rdma_devices_are_not_efa(make_simulator, make_pipeline, caplog, foreign):
    """An mlx5 HCA (or an E810, a soft-RoCE device) beside the EFA devices is listed once as ignored and
    never exported: it must not make up for a missing EFA device."""
    sim = make_simulator(PROFILE)
    sim.add_foreign_device(**foreign)
    caplog.set_level(logging.INFO, logger="otel_efa")
    pipeline = make_pipeline(sim.root)
    for _ in range(2):
        snapshot = pipeline.collector.collect()
    assert [d.name for d in snapshot.devices] == [d.name for d in sim.devices]
    assert len([r for r in caplog.records if "ignored" in r.getMessage() and foreign["name"] in r.getMessage()]) == 1
    from otel_efa.node.topology import read_topology
    assert foreign["name"] not in read_topology(sim.root)


def test_efa_devices_without_pci_links_still_count(make_simulator):
    sim = make_simulator(PROFILE, pci_links=False, name_style="efa")
    with SysfsReader(sim.root) as reader:
        assert [d.name for d in reader.read().devices] == [d.name for d in sim.devices]


@pytest.mark.parametrize("fault", ["world-writable", "not-root"])
def test_untrusted_tree_is_refused(make_simulator, fault):
    """Like awsefareceiver: a tree another user could write is refused with one line naming the path and
    the fix (exit 2); --allow-untrusted-sysfs lifts it."""
    sim = make_simulator(PROFILE)
    target = sim.devices[1].port_dir
    if fault == "world-writable":
        os.chmod(target, 0o777)
    else:
        os.chown(target, 65534, 65534)
    run = [sys.executable, "-m", "otel_efa", "run", "--sysfs", sim.root, "--count", "1", "--interval", "0.1",
           "--exporters", "log", "--config", "/dev/null"]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and target in lines[0] and "--allow-untrusted-sysfs" in lines[0], refused.stderr
    assert ("chmod o-w" if fault == "world-writable" else "chown") in lines[0]
    allowed = subprocess.run(run + ["--allow-untrusted-sysfs"], capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
