"""ENI attribution: gids/0 -> MAC -> IMDSv2 interface-id, against a fake IMDSv2 server on loopback."""
import urllib.request

from conftest import free_port
from fake_imds import FakeImds, imds  # noqa: F401 (imds: a fixture)
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from otel_efa.config import Config, PrometheusConfig
from otel_efa.node.attribution import Attribution
from otel_efa.node.eni import EniResolver, mac_from_link_local
from otel_efa.node.imds import ImdsClient
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.tools.simulator.tree import link_local_from_mac


def _eni(index: int) -> str:
    return f"eni-0a1b2c3d4e5f{index:05x}"


def test_mac_round_trips_through_the_kernels_link_local_address():
    for mac in ("0e:00:5a:00:c1:00", "02:ff:10:20:30:40", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"):
        assert mac_from_link_local(link_local_from_mac(mac)) == mac
    assert mac_from_link_local("fe80::1") is None  # not EUI-64
    assert mac_from_link_local("2001:db8::c:5aff:fe00:c100") is None  # not link-local
    assert mac_from_link_local("garbage") is None
    assert mac_from_link_local("") is None


def _attribution(simulator, **kwargs):
    config = Config(sysfs=simulator.root, interval=0.1)
    attribution = Attribution(config, simulator.root, **kwargs)
    attribution.place(_snapshot(simulator))  # as the agent loop does
    return attribution


def _snapshot(simulator):
    reader = SysfsReader(simulator.root)
    try:
        return Collector(reader).collect()
    finally:
        reader.close()


def test_every_device_gets_its_eni_and_the_answer_is_cached(make_simulator, imds):
    simulator = make_simulator("p4d.24xlarge")
    imds.enis = {d.mac: _eni(d.index) for d in simulator.devices}
    attribution = _attribution(simulator)
    assert attribution.refresh(_snapshot(simulator)) is True
    for device in simulator.devices:
        assert attribution.device_attributes(device.name)["aws.efa.eni.id"] == _eni(device.index)
    lookups = attribution.eni.lookups
    assert attribution.refresh(_snapshot(simulator)) is False
    assert attribution.eni.lookups == lookups  # resolved once, never asked again
    assert imds.tokens_issued == 1


def test_imds_down_at_start_then_up(make_simulator, monkeypatch):
    """Nothing listens at first (connection refused); the server comes up on that port later."""
    simulator = make_simulator("p4d.24xlarge")
    port = free_port()
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{port}")
    clock = [100.0]
    attribution = _attribution(simulator, eni_first_retry=5.0, clock=lambda: clock[0])
    snapshot = _snapshot(simulator)
    assert attribution.refresh(snapshot) is False
    assert attribution.eni.lookups == 1  # one refused connection ends the round: no timeout per device
    assert "aws.efa.eni.id" not in attribution.device_attributes(simulator.devices[0].name)
    server = FakeImds(port=port)
    try:
        server.enis = {d.mac: _eni(d.index) for d in simulator.devices}
        clock[0] += 1.0
        assert attribution.refresh(snapshot) is False  # still backing off: IMDS not asked
        assert server.requests == []
        clock[0] += 4.0
        assert attribution.refresh(snapshot) is True
        for device in simulator.devices:
            assert attribution.device_attributes(device.name)["aws.efa.eni.id"] == _eni(device.index)
    finally:
        server.close()


def test_back_off_doubles_while_unresolved_and_stops_once_resolved(make_simulator, imds):
    simulator = make_simulator("p4d.24xlarge")
    clock = [0.0]
    resolver = EniResolver(ImdsClient(unreachable_holdoff=0), first_retry=1.0, max_retry=4.0,
                           clock=lambda: clock[0])
    macs = [d.mac for d in simulator.devices]
    attempts = []
    for _ in range(40):  # 10 s in 0.25 s steps; IMDS knows none of the MACs (404)
        before = resolver.lookups
        resolver.resolve(macs)
        if resolver.lookups > before:
            attempts.append(clock[0])
        clock[0] += 0.25
    assert attempts == [0.0, 1.0, 3.0, 7.0]  # waits of 1, 2, 4, then capped at 4
    imds.enis = {mac: _eni(i) for i, mac in enumerate(macs)}
    clock[0] = 11.0
    assert resolver.resolve(macs) is True
    before = resolver.lookups
    clock[0] = 100.0
    assert resolver.resolve(macs) is False and resolver.lookups == before


def test_expired_token_is_replaced(make_simulator, imds):
    """IMDS answers 401 to a stale token: the client takes a new token and the lookup still succeeds."""
    simulator = make_simulator("p4d.24xlarge")
    first, rest = simulator.devices[:2], simulator.devices[2:]
    imds.enis = {d.mac: _eni(d.index) for d in first}  # the other ENIs are not attached yet
    clock = [0.0]
    attribution = _attribution(simulator, eni_first_retry=1.0, clock=lambda: clock[0])
    snapshot = _snapshot(simulator)
    assert attribution.refresh(snapshot) is True
    assert imds.tokens_issued == 1 and imds.unauthorized == 0
    imds.expire_tokens()
    imds.enis.update({d.mac: _eni(d.index) for d in rest})
    clock[0] += 1.0
    assert attribution.refresh(snapshot) is True
    assert imds.unauthorized == 1 and imds.tokens_issued == 2
    for device in simulator.devices:
        assert attribution.device_attributes(device.name)["aws.efa.eni.id"] == _eni(device.index)


def _scrape(port: int):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_agent_exports_eni_ids_once_imds_answers(make_simulator, imds, run_agent):
    """Through the whole agent: IMDS knows no MAC at first, then all; Prometheus shows each device's ENI."""
    simulator = make_simulator("p4d.24xlarge")
    config = Config(sysfs=simulator.root, interval=0.1, exporters=["prometheus"],
                    prometheus=PrometheusConfig(address="127.0.0.1:0"))
    running = run_agent(config, resource=Resource.create({"service.name": "otel-efa"}))
    port = running.agent.exporters[0].port

    def labels_of(sample_name):
        return [s.labels for s in _scrape(port) if s.name == sample_name]

    wait_until(lambda: len(labels_of("efa_rx_bytes_total")) == 4, 10, "the four devices' series")
    assert all("aws_efa_eni_id" not in labels for labels in labels_of("efa_rx_bytes_total"))
    imds.enis = {d.mac: _eni(d.index) for d in simulator.devices}
    expected = {d.name: _eni(d.index) for d in simulator.devices}

    def resolved():
        found = {s["aws_efa_device"]: s.get("aws_efa_eni_id") for s in labels_of("efa_rx_bytes_total")}
        return found == expected

    wait_until(resolved, 10, "every device's ENI id")
    devices = {s["aws_efa_device"]: s.get("aws_efa_eni_id") for s in labels_of("efa_device_cmds_err_total")}
    assert devices == expected


def test_topology_command_shows_eni_ids(make_simulator, imds, capsys):
    import json

    from otel_efa.cli import main

    simulator = make_simulator("p4d.24xlarge")
    imds.enis = {d.mac: _eni(d.index) for d in simulator.devices[1:]}  # the first one IMDS does not know
    assert main(["topology", "--sysfs", simulator.root, "--eni", "--json"]) == 0
    enis = {d["device"]: d["eni"] for d in json.loads(capsys.readouterr().out)["devices"]}
    first = simulator.devices[0].name
    assert enis == {first: None, **{d.name: _eni(d.index) for d in simulator.devices[1:]}}
    assert main(["topology", "--sysfs", simulator.root, "--eni"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert _eni(3) in rows[simulator.devices[3].name] and "unknown" in rows[first]
