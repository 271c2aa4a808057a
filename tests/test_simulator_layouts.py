"""The simulator names and places EFA devices as real nodes do, and starts counters where days of use leave them.

Stand-in: the simulator is the EC2 hardware boundary. The expected names and PCI addresses below are the
public listings cited in otel_efa/simulator/layouts.py, written out here as the specification.
"""
import os

import pytest

from otel_efa.node import efa_devices, pci, topology
from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.node.sysfs import SysfsReader
from otel_efa.tools.simulator import layouts
from otel_efa.tools.simulator.traffic import DEFAULT_UPTIME_S, PACKET_BYTES, PER_SECOND


def _p5_listing():
    """rdmap79s0 (0000:4f:00.0) ... in 8 groups of four consecutive buses, 0x11 buses apart."""
    starts = [0x4f, 0x60, 0x71, 0x82, 0x93, 0xa4, 0xb5, 0xc6]
    return [(f"rdmap{bus}s0", f"0000:{bus:02x}:00.0") for start in starts for bus in range(start, start + 4)]


# Published names of the other profiles (layouts.py names the sources).
LISTED_NAMES = {
    "p4d.24xlarge": ["rdmap16s27", "rdmap32s27", "rdmap144s27", "rdmap160s27"],
    "p5en.48xlarge": [f"rdmap{b}s0" for start in (85, 110, 135, 160) for b in range(start, start + 4)],
    "p6-b200.48xlarge": ["rdmap79s0", "rdmap80s0", "rdmap96s0", "rdmap97s0", "rdmap113s0", "rdmap114s0",
                         "rdmap132s0", "rdmap133s0"],
    "trn2.48xlarge": [f"rdmap{int(b, 16)}s0" for b in ("56", "57", "6c", "6d", "82", "83", "98", "99", "b3", "b4",
                                                      "c9", "ca", "df", "e0", "f5", "f6")],
}


def _linked_address(simulator, name):
    return os.path.basename(os.path.realpath(os.path.join(simulator.root, "class", "infiniband", name, "device")))


@pytest.mark.parametrize("profile", ["p5.48xlarge", "p5e.48xlarge"])
def test_p5_names_and_pci_addresses_are_the_real_ones(make_simulator, profile):
    simulator = make_simulator(profile)
    listing = _p5_listing()
    assert [(d.name, d.pci_address) for d in simulator.devices] == listing
    assert listing[0] == ("rdmap79s0", "0000:4f:00.0") and listing[4] == ("rdmap96s0", "0000:60:00.0")
    for name, address in listing:  # what the agent and topology read agrees with the name
        assert _linked_address(simulator, name) == address
        assert os.path.realpath(os.path.join(simulator.root, "bus", "pci", "devices", address)) == \
            os.path.realpath(os.path.join(simulator.root, "class", "infiniband", name, "device"))
    with SysfsReader(simulator.root) as reader:
        assert [d.name for d in reader.read().devices] == [name for name, _ in listing]
    found = topology.read_topology(simulator.root)
    assert [found[name].pci_address for name, _ in listing] == [address for _, address in listing]
    gpus = [a.pci_address for a in topology.find_accelerators(simulator.root) if a.kind == topology.GPU]
    assert [found[name].gpus[0].pci_address for name, _ in listing[::4]] == gpus  # GPU g behind group g


@pytest.mark.parametrize("profile", sorted(INSTANCE_TYPES))
def test_every_device_is_named_after_its_pci_address(make_simulator, profile):
    simulator = make_simulator(profile)
    assert len(simulator.devices) == INSTANCE_TYPES[profile].efa_devices
    for device in simulator.devices:
        domain, bus, slot_function = _linked_address(simulator, device.name).split(":")
        slot, function = slot_function.split(".")
        assert (domain, function) == ("0000", "0")
        assert device.name == f"rdmap{int(bus, 16)}s{int(slot, 16)}"
        function = pci.function_of(device.path)
        assert function is not None and function.device_id == layouts.LAYOUTS[profile].efa_device_id
        assert efa_devices.classify(device.path, function)[0]
    if profile in LISTED_NAMES:
        assert [d.name for d in simulator.devices] == LISTED_NAMES[profile]
    layout = layouts.LAYOUTS[profile]
    assert layout.sources
    if profile.startswith("trn1"):  # no public listing: said so
        assert "no public listing" in layout.approximate


def test_the_kernels_own_names_sit_at_the_same_addresses(make_simulator):
    named = make_simulator("p5en.48xlarge")
    numbered = make_simulator("p5en.48xlarge", name_style="efa")
    assert [d.name for d in numbered.devices] == [f"efa_{i}" for i in range(16)]
    assert [_linked_address(numbered, d.name) for d in numbered.devices] == \
        [_linked_address(named, d.name) for d in named.devices]


@pytest.mark.parametrize("profile", sorted(INSTANCE_TYPES))
def test_counters_start_at_a_plausible_lifetime(make_simulator, profile):
    simulator = make_simulator(profile)
    line_rate = INSTANCE_TYPES[profile].device_bytes_per_second
    starts = set()
    for device in simulator.devices:
        value = {name: simulator.value(device.name, name) for name in device.port_counters + device.device_counters}
        for direction in ("tx", "rx"):
            carried = value[f"{direction}_bytes"]
            # days of traffic at a share of line rate: far more than a fresh node, less than full speed
            assert 0.05 * line_rate * DEFAULT_UPTIME_S < carried < line_rate * DEFAULT_UPTIME_S
            assert carried / value[f"{direction}_pkts"] == pytest.approx(PACKET_BYTES, rel=1e-6)
        assert value["rdma_read_bytes"] < value["rx_bytes"] and value["send_bytes"] < value["tx_bytes"]
        assert value["send_bytes"] / value["send_wrs"] == pytest.approx(4096, rel=1e-6)
        if "rdma_write_bytes" in value:
            assert value["rdma_write_bytes"] < value["tx_bytes"]
        assert value["retrans_pkts"] / value["tx_pkts"] < 0.001  # healthy: far below 0.1 %
        assert value["retrans_pkts"] > 0 and value["retrans_bytes"] / value["retrans_pkts"] == \
            pytest.approx(PACKET_BYTES, rel=1e-3)
        for name, rate in PER_SECOND.items():
            assert value[name] == int(rate * DEFAULT_UPTIME_S)
        errors = [n for n in value if n.endswith(("_err", "_drops", "_events")) or n.startswith("no_completion")]
        assert errors and all(value[n] == 0 for n in errors), {n: value[n] for n in errors}
        starts.add(value["tx_bytes"])
        with open(simulator.path_of(device.name, "tx_bytes")) as f:
            assert int(f.read()) == value["tx_bytes"]
    assert len(starts) > 1 or len(simulator.devices) == 1  # devices differ, as on a real node


def test_uptime_zero_starts_a_fresh_node(make_simulator):
    simulator = make_simulator("p4d.24xlarge", uptime=0)
    assert not any(simulator.values().values())


def test_healthy_retransmits_stay_far_below_a_tenth_of_a_percent(make_simulator):
    clock = [0.0]
    simulator = make_simulator("p5.48xlarge", clock=lambda: clock[0])
    device = simulator.devices[0].name
    before = {name: simulator.value(device, name) for name in ("tx_pkts", "retrans_pkts")}
    clock[0] = 600.0
    simulator.advance()
    sent = simulator.value(device, "tx_pkts") - before["tx_pkts"]
    retransmitted = simulator.value(device, "retrans_pkts") - before["retrans_pkts"]
    assert sent > 0 and 0 < retransmitted / sent < 0.001
