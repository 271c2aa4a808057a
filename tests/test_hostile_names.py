"""Hostile counter and device names, end to end: the agent as a process on a node whose counter files and
device directories have names with spaces, quotes, braces, ``-`` and ``.``, non-ASCII and non-UTF-8 bytes,
and names that collide after mapping. Every exporter carries every series: the Prometheus page passes
``promtool check metrics`` and a real Prometheus scrapes it (target up), the real gRPC receiver gets every
series under the mapped names (otel_efa/names.py), the log line names each device, the agent logs no
traceback and exits 0 on SIGTERM.
"""
import os
import re
import subprocess
import urllib.request
from typing import Dict

import pytest
from agent_process import AgentProcess
from conftest import free_port
from hostile_names import DEVICE_COUNTERS, PORT_COUNTERS, hostile_node
from otlp_receiver import GrpcReceiver, points
from prometheus_server import PrometheusServer

from otel_efa import catalog
from otel_efa.names import escape, unescape

HEX8 = "[0-9a-f]{8}"
# kernel name -> the OTel name it must arrive under (a regex: a mapped name ends in 8 hex digits)
EXPECTED_PORT_NAMES: Dict[bytes, str] = {
    b"new-counter.x": "efa_new-counter.x",  # a valid instrument name: kept as it is
    b"rx-dropped": "efa_rx-dropped",
    b"a.b": "efa_a.b",
    b"a_b": "efa_a_b",
    b"9lives": "efa_9lives",
    b"foo{bar}": f"efa_foo_bar_{HEX8}",
    b"sp ace": f"efa_sp_ace_{HEX8}",
    b'qu"ote': f"efa_qu_ote_{HEX8}",
    "ünï".encode(): f"efa_n_{HEX8}",
    b"bad\xffbyte": f"efa_bad_byte_{HEX8}",
    b"new\nline": f"efa_new_line_{HEX8}",
    b"back\\slash": f"efa_back_slash_{HEX8}",
    b"port_up": f"efa_port_up_{HEX8}",  # the catalog's gauge efa_port_up has the name
    b"RX_bytes": f"efa_RX_bytes_{HEX8}",  # instrument names are case-insensitive: efa_rx_bytes has it
    b"x" * 255: f"efa_x{{242}}_{HEX8}",  # 255 characters at most
}
EXPECTED_DEVICE_NAMES: Dict[bytes, str] = {
    b"weird name": f"efa_device_weird_name_{HEX8}",
    b"x\xfe": f"efa_device_x_{HEX8}",
    b"cmds-err": "efa_device_cmds-err",
}


def _served(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The agent on the hostile node with Prometheus, OTLP and log exporters, and what it served."""
    workdir = tmp_path_factory.mktemp("hostile")
    sim, devices = hostile_node(str(workdir / "sys"))
    receiver = GrpcReceiver()
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EFA_", "OTEL_"))}
    environment.update(AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1", OTEL_EFA_OTLP_ENDPOINT=receiver.endpoint,
                       OTEL_RESOURCE_ATTRIBUTES="host.id=i-0123456789abcdef0,host_id=other,__name__=x,1up=y,"
                                                "rack=" + os.fsdecode(b"r\xff1"))
    log_file = workdir / "efa_monitor.log"
    agent = AgentProcess(["--sysfs", str(workdir / "sys"), "--instance-type", "p4d.24xlarge", "--interval", "0.2",
                          "--exporters", "prometheus,otlp,log", "--log-file", str(log_file),
                          "--prometheus-address", f"127.0.0.1:{port}"], environment, workdir / "agent.stderr")
    prometheus = None
    try:
        # Prometheus starts once the page is served (so its every scrape finds the target up), while the
        # agent goes on exporting.
        agent.expect(lambda: _served(port), "the agent's /metrics")
        prometheus = PrometheusServer([{"job_name": "hostile", "scrape_interval": "200ms",
                                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}], free_port())
        agent.expect(lambda: len(receiver.requests) >= 3, "three OTLP exports")
        agent.expect(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 8, "two log intervals")
        prometheus.wait_for('up{job="hostile"} == 1', count=1)
        prometheus.wait_for('count_over_time(up{job="hostile"}[1m]) >= 3', count=1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            page = response.read()
        up = prometheus.query('min_over_time(up{job="hostile"}[1m])')
        stored = prometheus.query('{job="hostile", __name__=~"efa_.*"}')
        code, _ = agent.stop()
        yield {"sim": sim, "devices": devices, "request": receiver.requests[-1][1], "page": page, "up": up,
               "stored": stored, "code": code, "log": agent.log(), "lines": log_file.read_text(),
               "dir": workdir}
    finally:
        if prometheus is not None:
            prometheus.stop()
        if agent.alive():
            agent.process.kill()
            agent.process.wait(10)
        receiver.stop()
        sim.close()


def test_agent_runs_without_a_traceback_and_exits_0(run):
    assert run["code"] == 0, run["log"]
    assert "Traceback" not in run["log"], run["log"]


# promtool's style lints (exit status 3) on names the kernel's files chose: "new-counter" says counter,
# "a_b" looks like an abbreviated unit. A parse error (an invalid page) is exit status 1.
STYLE_LINT = re.compile(r"^(\S+) (metric names should not contain abbreviated units|"
                        r"metric name should not include type 'counter')$")


def test_promtool_accepts_the_page(run):
    path = run["dir"] / "page.txt"
    path.write_bytes(run["page"])
    with open(path, "rb") as page:
        result = subprocess.run(["promtool", "check", "metrics"], stdin=page, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode in (0, 3), output
    catalog_names = {spec.prometheus_name for spec in catalog.METRICS}
    for line in output.splitlines():
        match = STYLE_LINT.match(line)
        assert match and match.group(1) not in catalog_names, output


def test_prometheus_scrapes_every_device(run):
    assert [float(r["value"][1]) for r in run["up"]] == [1.0]
    stored = {(r["metric"]["__name__"], r["metric"].get("aws_efa_device")) for r in run["stored"]}
    for device in run["devices"]:
        assert (catalog.BY_NAME["efa_rx_bytes"].prometheus_name, escape(device)) in stored, device
        assert ("efa_new_counter_x_total", escape(device)) in stored, device


def _otlp_series(run):
    """{(metric name, device as the agent saw it): value} of the sums in the last OTLP export."""
    found = {}
    for p in points(run["request"]):
        attributes = dict(p.attributes)
        if p.kind == "sum" and "aws.efa.device" in attributes:
            found[(p.name, unescape(attributes["aws.efa.device"]))] = p.value
    return found


def _descriptions(run):
    return {m.name: m.description for rm in run["request"].resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


@pytest.mark.parametrize("scope,expected,values", [
    ("port", EXPECTED_PORT_NAMES, PORT_COUNTERS), ("device", EXPECTED_DEVICE_NAMES, DEVICE_COUNTERS)])
def test_otlp_carries_every_series_under_its_mapped_name(run, scope, expected, values):
    series = _otlp_series(run)
    descriptions = _descriptions(run)
    assert set(expected) == set(values)
    names = set()
    for kernel_name, pattern in expected.items():
        original = os.fsdecode(kernel_name)
        # the description names the counter file (escaped), so a mapped name can be traced back
        found = [n for n, d in descriptions.items() if f" counter {escape(original)} (reported by" in d]
        assert len(found) == 1, (kernel_name, found)
        name = found[0]
        assert re.fullmatch(pattern, name), (kernel_name, name)
        names.add(name.lower())
        for device in run["devices"]:
            assert series[(name, device)] == values[kernel_name], (kernel_name, device)
    assert len(names) == len(expected)  # no two counters share a name


def test_catalog_series_of_renamed_devices_are_intact(run):
    series = _otlp_series(run)
    sim = run["sim"]
    for device, sim_name in run["devices"].items():
        assert series[("efa_rx_bytes", device)] == sim.value(sim_name, "rx_bytes")
        assert series[("efa_rx_dropped", device)] == sim.value(sim_name, "rx_drops")


def test_resource_attributes_arrive_unchanged_on_otlp(run):
    resource = {kv.key: kv.value.string_value for kv in run["request"].resource_metrics[0].resource.attributes}
    assert resource["host.id"] == "i-0123456789abcdef0" and resource["host_id"] == "other"
    assert resource["__name__"] == "x" and resource["1up"] == "y"
    assert resource["rack"] == "r\\xff1"  # a byte that is not UTF-8, escaped as everywhere


def test_target_info_carries_colliding_resource_attributes_joined(run):
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(run["page"].decode("utf-8"))}
    labels = families["target_info"].samples[0].labels
    assert labels["host_id"] == "i-0123456789abcdef0;other"  # host.id, host_id: both, in key order
    assert labels["_name_"] == "x" and labels["_up"] == "y" and labels["rack"] == "r\\xff1"


def test_log_line_names_every_device_on_one_line(run):
    lines = run["lines"].splitlines()
    for device in run["devices"]:
        assert any(f" {escape(device)}: RX=" in line for line in lines), device
    number = r"(?:\d+\.\d\d|-)"  # the first collection has no rate yet
    assert all(re.match(rf"^\S+ .+: RX={number} Mbps, TX={number} Mbps", line) for line in lines), lines


def test_log_line_and_cloudwatch_dimensions_of_hostile_device_names(tmp_path):
    """Without the agent process: the log line names each device on one line, escaped as on OTLP, and the
    CloudWatch device dimension is printable ASCII (PutMetricData refuses anything else) that reads back
    to the device's name."""
    from otel_efa.cloudwatch.metrics import samples
    from otel_efa.exporters.logline import format_lines
    from otel_efa.names import cloudwatch_value
    from otel_efa.node.sysfs import SysfsReader
    from otel_efa.pipeline.collector import Collector

    sim, devices = hostile_node(str(tmp_path))
    collector = Collector(SysfsReader(sim.root), "p4d.24xlarge")
    try:
        collector.collect()
        snapshot = collector.collect()  # a rate (0: the renamed devices' files stay as they were)
        lines = format_lines(snapshot)
        assert len(lines) == len(devices) and all("\n" not in line for line in lines)
        assert {line.split(" ", 1)[1].rsplit(": RX=", 1)[0] for line in lines} == {escape(d) for d in devices}
        "\n".join(lines).encode("utf-8")  # what the log file takes
        published = samples(snapshot, catalog.CLOUDWATCH_METRICS, [("InstanceId", "EfaDevice")], "i-1")
        values = {dict(s.dimensions)["EfaDevice"] for s in published}
        assert values == {cloudwatch_value(d) for d in devices}
        assert all(v.isascii() and v.isprintable() and v.strip() for v in values)
        assert {unescape(v) for v in values} == set(devices)
    finally:
        collector.reader.close()
        sim.close()
