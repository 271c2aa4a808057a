"""The simulator is the tests' ground truth: it must behave like the kernel's tree and its model."""
import os

import pytest

from otel_efa.cli import main
from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.node.sysfs import SysfsReader


@pytest.mark.parametrize("profile", sorted(INSTANCE_TYPES))
def test_every_profile_lays_out_its_devices(make_simulator, profile):
    sim = make_simulator(profile)
    expected = INSTANCE_TYPES[profile]
    assert len(sim.devices) == expected.efa_devices
    rate = open(os.path.join(sim.devices[0].path, "ports", "1", "rate")).read()
    assert rate.startswith(f"{expected.gbps_per_device} Gb/sec")


def test_counters_change_in_place(make_simulator):
    sim = make_simulator("p4d.24xlarge")
    path = sim.path_of(sim.devices[0].name, "rx_bytes")
    inode = os.stat(path).st_ino
    fd = os.open(path, os.O_RDONLY)
    try:
        before = int(os.pread(fd, 64, 0))
        sim.advance_by(1.0)
        after = int(os.pread(fd, 64, 0))  # the same descriptor sees the new value, as with sysfs
    finally:
        os.close(fd)
    assert os.stat(path).st_ino == inode
    assert after - before == round(sim.expected_rate(sim.devices[0].name, "rx_bytes"))


def test_patterns_keep_their_mean(make_simulator):
    steady = make_simulator("p4d.24xlarge", gbps=100)
    bursty = make_simulator("p4d.24xlarge", gbps=100, pattern="bursty", clock=lambda: 0.0)  # phase 0
    idle = make_simulator("p4d.24xlarge", pattern="idle")
    device = steady.devices[0].name
    start = {s: s.value(device, "tx_bytes") for s in (steady, bursty, idle)}
    for sim in (steady, bursty, idle):
        sim.advance_by(10.0)  # five whole burst periods
    per_device = 100e9 / 8 / 4
    assert steady.value(device, "tx_bytes") - start[steady] == pytest.approx(10 * per_device, abs=1)
    assert bursty.value(device, "tx_bytes") - start[bursty] == pytest.approx(10 * per_device, rel=1e-9)
    assert idle.value(device, "tx_bytes") == start[idle]
    bursty_mid = bursty.value(device, "tx_bytes")
    bursty.advance_by(1.5)  # 1.2 s on, 0.3 s off: the burst runs above the mean
    assert bursty.value(device, "tx_bytes") - bursty_mid == pytest.approx(1.2 / 0.6 * per_device, rel=1e-9)


def test_faults_and_their_repair(make_simulator):
    sim = make_simulator("p4d.24xlarge")
    device = sim.devices[0].name
    path = sim.path_of(device, "tx_pkts")
    sim.corrupt(device, "tx_pkts", b"N/A (no PMA)\n")
    sim.advance_by(1.0)
    assert open(path, "rb").read() == b"N/A (no PMA)\n"  # the true value moves on underneath
    sim.heal(device, "tx_pkts")
    assert int(open(path).read()) == sim.value(device, "tx_pkts")
    sim.set_value(device, "rx_bytes", (1 << 64) - 10)
    sim.advance_by(1.0)
    assert sim.value(device, "rx_bytes") < 1 << 64  # wraps like a u64
    sim.reset([device])
    assert int(open(sim.path_of(device, "rx_bytes")).read()) == 0


def test_devices_keeps_the_profiles_first_devices(make_simulator, tmp_path, capsys):
    full = make_simulator("p5.48xlarge")
    four = make_simulator("p5.48xlarge", devices=4)
    assert [d.name for d in four.devices] == [d.name for d in full.devices[:4]]
    assert sorted(os.listdir(os.path.join(four.root, "class", "infiniband"))) == sorted(four.device_names)
    assert four.declared_topology() == {name: full.declared_topology()[name] for name in four.device_names}
    device = four.devices[0].name  # each device carries what it carries on the whole node
    assert four.device_bytes_per_second(device) == full.device_bytes_per_second(device)
    with SysfsReader(four.root) as reader:
        assert sorted(d.name for d in reader.read().devices) == sorted(four.device_names)
    with pytest.raises(ValueError, match="32 EFA devices"):
        make_simulator("p5.48xlarge", devices=33)

    assert main(["simulate", "p5.48xlarge", "--root", str(tmp_path / "cli"), "--devices", "16", "--once"]) == 0
    assert len(os.listdir(tmp_path / "cli" / "class" / "infiniband")) == 16
    assert main(["simulate", "p5.48xlarge", "--root", str(tmp_path / "bad"), "--devices", "0", "--once"]) == 2
    assert "--devices" in capsys.readouterr().err
