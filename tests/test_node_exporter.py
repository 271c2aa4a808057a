"""The simulator's classic InfiniBand counters, read by the real node_exporter (Debian's package).

This is what lets benchmarks/compare_node_exporter.py measure node_exporter and the agent on one tree: the
test proves node_exporter 1.5's infiniband collector accepts the tree (every device, no collector error)
and that what it exports is the simulator's ground truth, before and after the counters move.
"""
import os

import pytest
from conftest import free_port
from node_exporter_server import NodeExporter, samples

from otel_efa.tools.simulator.tree import IB_PORT_COUNTERS, IB_WORD_BYTES

# node_exporter's metric for each mirrored IB file (the data counters it multiplies back to octets).
EXPORTED = {
    "port_rcv_data": ("node_infiniband_port_data_received_bytes_total", IB_WORD_BYTES),
    "port_xmit_data": ("node_infiniband_port_data_transmitted_bytes_total", IB_WORD_BYTES),
    "port_rcv_packets": ("node_infiniband_port_packets_received_total", 1),
    "port_xmit_packets": ("node_infiniband_port_packets_transmitted_total", 1),
    "unicast_rcv_packets": ("node_infiniband_unicast_packets_received_total", 1),
    "unicast_xmit_packets": ("node_infiniband_unicast_packets_transmitted_total", 1),
    "port_rcv_discards": ("node_infiniband_port_discards_received_total", 1),
}


@pytest.fixture
def node_exporter():
    started = []

    def start(sysfs: str) -> NodeExporter:
        started.append(NodeExporter(sysfs, free_port()))
        return started[-1]

    yield start
    for exporter in started:
        exporter.stop()


def test_infiniband_counters_follow_the_efa_counters(make_simulator):
    sim = make_simulator("p5.48xlarge", infiniband_counters=True)
    device = sim.devices[3]
    counters_dir = os.path.join(device.path, "ports", "1", "counters")
    # As many IB files per port as EFA port hw_counters on this profile (lifespan is not a counter).
    assert sorted(os.listdir(counters_dir)) == sorted(IB_PORT_COUNTERS)
    assert len(IB_PORT_COUNTERS) == len(device.port_counters) == 22

    def read(name: str) -> int:
        with open(os.path.join(counters_dir, name)) as f:
            return int(f.read())

    sim.advance_by(2.5)
    assert read("port_rcv_data") == sim.value(device.name, "rx_bytes") // 4
    assert read("port_xmit_packets") == sim.value(device.name, "tx_pkts")
    assert read("port_rcv_data") > 1_000_000 // 4  # it moved
    sim.set_value(device.name, "rx_drops", 7)
    assert read("port_rcv_discards") == 7
    assert read("symbol_error") == 0
    sim.remove_device(device.name)
    sim.restore_device(device.name)  # re-probed: counters from 0, files back
    sim.advance_by(1.0)
    assert read("port_xmit_data") == sim.value(device.name, "tx_bytes") // 4 > 0
    assert read("port_xmit_data") < sim.value(sim.devices[0].name, "tx_bytes") // 4


def test_without_the_option_there_are_no_infiniband_counters(make_simulator):
    sim = make_simulator("p5.48xlarge")
    assert not os.path.exists(os.path.join(sim.devices[0].path, "ports", "1", "counters"))
    assert not os.path.exists(os.path.join(sim.devices[0].path, "board_id"))


def test_node_exporter_exports_every_device_with_ground_truth(make_simulator, node_exporter):
    sim = make_simulator("p5.48xlarge", infiniband_counters=True)
    sim.advance_by(3.7)
    exporter = node_exporter(sim.root)
    for step in range(2):  # before and after the counters move
        if step:
            sim.advance_by(1.3)
        exported = samples(exporter.scrape())
        assert exported[("node_scrape_collector_success", (("collector", "infiniband"),))] == 1
        info = {dict(labels)["device"] for name, labels in exported if name == "node_infiniband_info"}
        assert info == set(sim.device_names) and len(info) == 32
        for device in sim.device_names:
            labels = (("device", device), ("port", "1"))
            for ib_name, (metric, factor) in EXPORTED.items():
                assert exported[(metric, labels)] == sim.ib_value(device, ib_name) * factor, (device, metric)
            assert exported[("node_infiniband_port_data_received_bytes_total", labels)] == \
                sim.value(device, "rx_bytes") // 4 * 4
            assert exported[("node_infiniband_port_packets_transmitted_total", labels)] == \
                sim.value(device, "tx_pkts")
            assert exported[("node_infiniband_link_downed_total", labels)] == 0
            assert exported[("node_infiniband_state_id", labels)] == 4
