"""Topology read from the sysfs PCI tree matches the layout the simulator declared."""
import json
import os
import shutil

import pytest
from waiting import wait_until

from otel_efa.cli import main
from otel_efa.node import topology


def _check_against_declared(simulator):
    found = topology.read_topology(simulator.root)
    declared = simulator.declared_topology()
    assert set(found) == set(declared) == set(simulator.device_names)
    for name, truth in declared.items():
        device = found[name]
        assert device.pci_address == truth.pci_address, name
        assert device.numa_node == truth.numa_node, name
        assert device.local_cpus == truth.local_cpulist, name
        assert device.affinity == truth.affinity, name
        assert device.switch == truth.switch, name
        assert tuple(g.pci_address for g in device.gpus) == truth.gpus, name
        assert tuple(n.pci_address for n in device.neuron_devices) == truth.neuron_devices, name
    return found, declared


def test_p5_every_device_finds_its_gpu_and_numa_node(make_simulator):
    simulator = make_simulator("p5.48xlarge")
    found, declared = _check_against_declared(simulator)
    # The layout itself: 8 GPUs, each behind one switch with 4 of the 32 EFA devices, 2 NUMA nodes;
    # NVSwitches (NVIDIA vendor, bridge class) are not GPUs.
    gpus = [a for a in topology.find_accelerators(simulator.root) if a.kind == topology.GPU]
    assert [g.index for g in gpus] == list(range(8))
    per_gpu = {}
    for device in found.values():
        assert len(device.gpus) == 1
        per_gpu.setdefault(device.gpus[0].pci_address, []).append(device.device)
    assert sorted(len(v) for v in per_gpu.values()) == [4] * 8
    assert {d.numa_node for d in declared.values()} == {0, 1}


def test_p4d_devices_share_no_switch_with_their_gpus(make_simulator):
    """On p4d each EFA device sits on one bus with two GPUs, straight under a host bridge (aws-ofi-nccl's
    capture): no PCIe switch is shared, so the GPUs near a device are those of its NUMA node."""
    simulator = make_simulator("p4d.24xlarge")
    found, declared = _check_against_declared(simulator)
    assert all(d.affinity == topology.NUMA_NODE and d.switch is None for d in found.values())
    for device in found.values():
        assert len(device.gpus) == 4 and {g.numa_node for g in device.gpus} == {device.numa_node}
    assert sorted({g.index for d in found.values() for g in d.gpus}) == list(range(8))


# (profile, EFA devices, GPUs or Neuron devices behind each device's switch, switches)
LAYOUTS = [("p5en.48xlarge", 16, 2, 4), ("p6-b200.48xlarge", 8, 2, 4), ("trn1.32xlarge", 8, 2, 8),
           ("trn1n.32xlarge", 16, 2, 8), ("trn2.48xlarge", 16, 2, 8)]


@pytest.mark.parametrize("profile,devices,near,switches", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_other_profiles_match_their_declared_layout(make_simulator, profile, devices, near, switches):
    simulator = make_simulator(profile)
    found, declared = _check_against_declared(simulator)
    assert len(found) == devices
    for device in found.values():
        accelerators = device.neuron_devices if profile.startswith("trn") else device.gpus
        assert len(accelerators) == near and not (device.gpus and device.neuron_devices)
    assert len({d.switch for d in found.values()}) == switches


def test_falls_back_to_the_numa_node_when_the_switch_has_no_gpu(make_simulator):
    simulator = make_simulator("p5.48xlarge")
    declared = simulator.declared_topology()
    first = simulator.device_names[0]
    lost_gpu = declared[first].gpus[0]
    # The GPU behind the first switch is gone from the bus (e.g. fallen off after an Xid error).
    link = os.path.join(simulator.root, "bus", "pci", "devices", lost_gpu)
    shutil.rmtree(os.path.realpath(link))
    os.unlink(link)
    found = topology.read_topology(simulator.root)
    same_numa = sorted({g for d in declared.values() if d.numa_node == declared[first].numa_node
                        for g in d.gpus} - {lost_gpu})
    assert found[first].affinity == topology.NUMA_NODE
    assert [g.pci_address for g in found[first].gpus] == same_numa
    untouched = simulator.device_names[-1]
    assert found[untouched].affinity == topology.PCIE_SWITCH


def test_tree_without_pci_links_degrades_to_unknown(make_simulator, capsys):
    simulator = make_simulator("p5.48xlarge", pci_links=False)
    found = topology.read_topology(simulator.root)
    assert set(found) == set(simulator.device_names)
    for device in found.values():
        assert device.affinity == topology.UNKNOWN
        assert device.pci_address is None and device.numa_node is None and not device.gpus
        attributes = topology.info_attributes(device)
        assert attributes["aws.efa.pci_address"] == "unknown"
        assert attributes["aws.efa.numa_node"] == "unknown"
    assert main(["topology", "--sysfs", simulator.root]) == 0
    out = capsys.readouterr().out
    assert out.count("unknown") >= len(found)


def test_topology_command_table_and_json(make_simulator, capsys):
    simulator = make_simulator("p4d.24xlarge")
    declared = simulator.declared_topology()
    assert main(["topology", "--sysfs", simulator.root, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    by_name = {d["device"]: d for d in document["devices"]}
    for name, truth in declared.items():
        assert by_name[name]["pci_address"] == truth.pci_address
        assert by_name[name]["numa_node"] == truth.numa_node
        assert [g["pci_address"] for g in by_name[name]["gpus"]] == list(truth.gpus)
    assert main(["topology", "--sysfs", simulator.root]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, truth in declared.items():
        row = next(line for line in lines if line.split()[0] == name)
        assert truth.pci_address in row and truth.gpus[0] in row


def test_topology_command_on_a_root_without_devices(tmp_path, capsys):
    assert main(["topology", "--sysfs", str(tmp_path)]) == 1
    assert "no EFA devices" in capsys.readouterr().err


def _info_series(port):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "efa_device_info"]


@pytest.mark.parametrize("pci_links", [True, False])
def test_agent_exports_efa_device_info(make_simulator, run_agent, pci_links):
    from opentelemetry.sdk.resources import Resource

    from otel_efa.config import Config, PrometheusConfig

    simulator = make_simulator("p4d.24xlarge", pci_links=pci_links)
    config = Config(sysfs=simulator.root, interval=0.1, exporters=["prometheus"],
                    prometheus=PrometheusConfig(address="127.0.0.1:0"))
    running = run_agent(config, resource=Resource.create({"service.name": "otel-efa"}))
    def four_devices():
        found = _info_series(running.agent.exporters[0].port)
        return found if len(found) >= 4 else None

    series = wait_until(four_devices, 10, "efa_device_info of the four devices")
    by_device = {s.labels["aws_efa_device"]: s for s in series}
    assert set(by_device) == set(simulator.device_names)
    for name, truth in simulator.declared_topology().items():
        labels = by_device[name].labels
        assert by_device[name].value == 1
        if pci_links:
            assert labels["aws_efa_pci_address"] == truth.pci_address
            assert labels["aws_efa_numa_node"] == str(truth.numa_node)
            assert labels["aws_efa_local_cpus"] == truth.local_cpulist
            assert labels["aws_efa_gpu_pci_addresses"] == ",".join(truth.gpus)
            assert labels["aws_efa_affinity"] == truth.affinity
        else:
            assert labels["aws_efa_pci_address"] == labels["aws_efa_numa_node"] == "unknown"
            assert labels["aws_efa_affinity"] == "unknown"


def test_a_device_s_pci_identity_is_read_once_per_discovery_and_placed_from_it(make_simulator):
    """The sysfs reader reads a device's PCI function when it discovers the device; later reads hand on the
    same identity, the attribution places devices from it, and only a new discovery reads it again."""
    from otel_efa.config import Config
    from otel_efa.node.attribution import Attribution
    from otel_efa.node.sysfs import SysfsReader
    from otel_efa.pipeline.collector import Collector

    simulator = make_simulator("p5.48xlarge")
    first_device = simulator.devices[0].name
    with SysfsReader(simulator.root) as reader:
        collector = Collector(reader, "p5.48xlarge")
        snapshot = collector.collect()
        functions = {d.name: d.info.pci for d in snapshot.devices}
        assert None not in functions.values()
        assert topology.topologies(simulator.root, functions) == topology.read_topology(simulator.root)
        attribution = Attribution(Config(sysfs=simulator.root), simulator.root)
        assert attribution.place(snapshot) is True  # placed from the reader's identities
        assert attribution.device_info(first_device) == topology.info_attributes(
            topology.read_topology(simulator.root)[first_device])
        assert attribution.place(collector.collect()) is False  # nothing new to place

        numa_file = os.path.join(functions[first_device].path, "numa_node")
        moved = 1 - functions[first_device].numa_node

        def move_numa_node() -> None:
            os.chmod(numa_file, 0o644)
            with open(numa_file, "w") as f:
                f.write(f"{moved}\n")

        move_numa_node()
        again = collector.collect().device(first_device)
        assert again.info.pci is functions[first_device]  # not read again while the device exists

        simulator.remove_device(first_device)
        assert collector.collect().device(first_device) is None
        simulator.restore_device(first_device)  # (writes the function's files anew)
        move_numa_node()
        rediscovered = collector.collect()
        assert rediscovered.device(first_device).info.numa_node == moved  # read again at its discovery
        assert attribution.place(rediscovered) is True  # a device not placed: placed anew, from it
        assert attribution.device_info(first_device)["aws.efa.numa_node"] == str(moved)
