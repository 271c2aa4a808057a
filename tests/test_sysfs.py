"""The sysfs reader on simulated trees: both kernel layouts, both naming schemes, every counter file."""
import os

import pytest

from otel_efa import catalog
from otel_efa.node.sysfs import U64_MAX, CounterValueError, SysfsReader, parse_counter, parse_rate_gbps, parse_state
from otel_efa.tools.simulator import OLD_KERNEL
from otel_efa.tools.simulator.tree import RDMA_WRITE_COUNTERS, RETRANS_COUNTERS


@pytest.mark.parametrize("data,value", [(b"0\n", 0), (b"42\n", 42), (b"18446744073709551615\n", U64_MAX),
                                        (b"7", 7), (b" 12\n", 12)])
def test_parse_counter_accepts_u64(data, value):
    assert parse_counter(data) == value


@pytest.mark.parametrize("data,reason", [
    (b"", "parse"), (b"\n", "parse"), (b"abc\n", "parse"), (b"-1\n", "parse"), (b"12x\n", "parse"),
    (b"18446744073709551616\n", "parse"), (b"1.5\n", "parse"), (b"0x10\n", "parse"),
    (b"N/A (no PMA)\n", "not_available"),
])
def test_parse_counter_rejects_with_reason(data, reason):
    with pytest.raises(CounterValueError) as error:
        parse_counter(data)
    assert error.value.reason == reason


def test_parse_rate_and_state():
    assert parse_rate_gbps("100 Gb/sec (4X EDR)") == 100.0
    assert parse_rate_gbps("400 Gb/sec (8X HDR)") == 400.0
    assert parse_rate_gbps("garbage") is None
    assert parse_state("4: ACTIVE") == (4, "ACTIVE")
    assert parse_state("1: DOWN") == (1, "DOWN")


def _by_name(reading):
    return {d.name: d for d in reading.devices}


def test_reads_every_counter_the_simulator_wrote(make_simulator):
    sim = make_simulator("p5en.48xlarge")
    sim.advance_by(3.0)
    with SysfsReader(sim.root) as reader:
        reading = reader.read()
    assert not reading.errors
    devices = _by_name(reading)
    assert list(devices) == list(sim.device_names)  # natural order: rdmap85s0 before rdmap110s0
    for device in sim.devices:
        got = devices[device.name]
        port = got.ports[0]
        assert port.port == "1" and port.state == "ACTIVE" and port.rate_text.startswith("200 Gb/sec")
        assert set(port.counters) == set(device.port_counters)
        assert set(got.counters) == set(device.device_counters)
        for name, value in {**port.counters, **got.counters}.items():
            assert value == sim.value(device.name, name), name
        assert "lifespan" not in port.counters and "lifespan" not in got.counters
        assert got.info.pci_vendor == "0x1d0f" and got.info.pci_address == device.pci_address
        assert got.info.numa_node == device.numa_node


def test_old_kernel_layout_and_efa_names(make_simulator):
    """Older kernels: device counters under the port, no retrans group, constant 100 Gb/sec rate."""
    sim = make_simulator("p4d.24xlarge", flavour=OLD_KERNEL, name_style="efa")
    with SysfsReader(sim.root) as reader:
        reading = reader.read()
    devices = _by_name(reading)
    assert list(devices) == ["efa_0", "efa_1", "efa_2", "efa_3"]
    for device in devices.values():
        port_counters = set(device.ports[0].counters)
        assert set(device.counters) == set(catalog.DEVICE_COUNTER_BY_KERNEL)  # moved to device level
        assert not port_counters & set(catalog.DEVICE_COUNTER_BY_KERNEL)
        assert not port_counters & set(RETRANS_COUNTERS + RDMA_WRITE_COUNTERS)  # p4d: EFA v1
        assert "rx_bytes" in port_counters


def test_new_counters_and_other_port_numbers_are_read(make_simulator):
    sim = make_simulator("p4d.24xlarge")
    device = sim.devices[0]
    os.rename(os.path.join(device.path, "ports", "1"), os.path.join(device.path, "ports", "2"))
    new_counter = os.path.join(device.path, "ports", "2", "hw_counters", "future_bytes")
    with open(new_counter, "w") as f:
        f.write("77\n")
    with SysfsReader(sim.root) as reader:
        port = _by_name(reader.read())[device.name].ports[0]
    assert port.port == "2"
    assert port.counters["future_bytes"] == 77


def test_devices_appearing_and_vanishing_are_noticed(make_simulator):
    sim = make_simulator("p4d.24xlarge")
    gone = sim.devices[1].name
    with SysfsReader(sim.root) as reader:
        first = reader.read()
        sim.remove_device(gone)
        second = reader.read()
        sim.restore_device(gone)
        third = reader.read()
    assert gone in _by_name(first) and gone not in _by_name(second) and gone in _by_name(third)
    assert _by_name(third)[gone].generation != _by_name(first)[gone].generation
    assert _by_name(third)[gone].ports[0].counters["rx_bytes"] == 0  # a re-probed device starts at 0
    assert not second.errors and not third.errors


def test_no_infiniband_class_means_no_devices(tmp_path):
    with SysfsReader(str(tmp_path)) as reader:
        reading = reader.read()
    assert reading.devices == () and reading.errors == ()
