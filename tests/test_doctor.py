"""``otel-efa doctor`` on a simulated node whose peers are real: the agent (``otel-efa run``) on a
ticking simulated sysfs tree, an OTLP gRPC receiver (tests/otlp_receiver.py; the pytest process runs it
with gRPC's fork support off, conftest.py, so the subprocesses forked meanwhile start cleanly), CloudWatch
as moto in server mode, and for the taken Prometheus port Debian's prometheus-node-exporter.
systemctl is a stand-in (no systemd as PID 1 here) reporting efa-monitor active with the agent's pid.

The doctor reads its own config file (interval 60 s, every exporter), while the agent it examines runs
at 0.5 s with the prometheus and log exporters so the test needs no minute of waiting: the checks look
at the log file, the port and the process, not at the agent's own configuration.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from aws_peers import Moto
from conftest import free_port
from node_stand_ins import install_systemctl, run_as_nobody
from otlp_receiver import GrpcReceiver
from waiting import wait_until

from otel_efa.tools import doctor
from otel_efa.tools.simulator import Simulator


def _serves_metrics(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return b"otel_efa_collections_total" in response.read()
    except OSError:
        return False


class HealthyNode:
    """Everything the doctor looks at, healthy. World-readable so the counters can be read as nobody."""

    def __init__(self, base: Path):
        self.base = base
        self.simulator = Simulator("p4d.24xlarge", str(base / "sys"))
        self.running = self.simulator.start(tick=0.05)
        self.log = base / "efa_monitor.log"
        self.prometheus_port = free_port()
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "otel_efa", "run", "--sysfs", str(base / "sys"), "--interval", "0.5",
             "--exporters", "prometheus,log", "--prometheus-address", f"127.0.0.1:{self.prometheus_port}",
             "--log-file", str(self.log), "--instance-type", "p4d.24xlarge"],
            env=dict(os.environ, AWS_EC2_METADATA_DISABLED="true"), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        self.otlp = GrpcReceiver()
        self.otlp_port = self.otlp.port
        self.moto = Moto(free_port()).start()
        install_systemctl(base / "bin", base / "systemctl", active_units=["efa-monitor"], main_pid=self.agent.pid)
        self.env = dict(os.environ, PATH=f"{base / 'bin'}:{os.environ['PATH']}",
                        AWS_ENDPOINT_URL=self.moto.url, AWS_ACCESS_KEY_ID="testing",
                        AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                        AWS_EC2_METADATA_DISABLED="true")
        for name in [n for n in self.env if n.startswith("OTEL_")]:
            del self.env[name]
        self.config = self.write_config("config.yaml")
        self.root = base / "root"  # an installed ADOT, as its package leaves it (doctor --root)
        (self.root / "opt/aws/aws-otel-collector/bin").mkdir(parents=True)
        (self.root / "opt/aws/aws-otel-collector/bin/VERSION").write_text("v0.49.0\n")
        wait_until(lambda: self.log.exists() and self.log.stat().st_size > 0, what="the agent's first log line")
        wait_until(lambda: _serves_metrics(f"http://127.0.0.1:{self.prometheus_port}/metrics"),
                   what="the agent's Prometheus endpoint")

    def write_config(self, name: str, **overrides) -> Path:
        settings = {
            "interval": 60, "sysfs": str(self.base / "sys"),
            "exporters": ["otlp", "prometheus", "cloudwatch", "log"], "log_file": str(self.log),
            "prometheus": {"address": f"127.0.0.1:{self.prometheus_port}"},
            "otlp": {"endpoint": f"http://127.0.0.1:{self.otlp_port}"},
            "cloudwatch": {"region": "us-east-1"},
        }
        for key, value in overrides.items():
            section, _, field = key.partition(".")
            if field:
                settings[section][field] = value
            else:
                settings[key] = value
        path = self.base / name
        path.write_text(yaml.safe_dump(settings))
        path.chmod(0o644)
        return path

    def doctor(self, *args: str, config: Path = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "otel_efa", "doctor",
                               "--config", str(config or self.config), "--root", str(self.root), *args],
                              env=self.env, capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        self.agent.terminate()
        self.agent.wait(10)
        self.otlp.stop()
        self.moto.stop()
        self.running.stop()
        self.simulator.close()


@pytest.fixture(scope="module")
def node():
    base = Path(tempfile.mkdtemp(prefix="otel-efa-doctor-"))
    base.chmod(0o755)  # pytest's tmp_path is root-only; the unreadable-counter case reads as nobody
    healthy = HealthyNode(base)
    try:
        yield healthy
    finally:
        healthy.close()
        shutil.rmtree(base)


def _lines(done: subprocess.CompletedProcess):
    """check name -> (status, the rest of its line)."""
    lines = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("  ")
        name, _, detail = rest.partition(": ")
        lines[name] = (status, detail)
    return lines


def test_healthy_node_passes_every_check(node):
    done = node.doctor()
    print(done.stdout)
    lines = _lines(done)
    assert list(lines) == [name for name, _ in doctor.CHECKS]
    assert {name: status for name, (status, _) in lines.items()} == {name: "PASS" for name in lines}, done.stdout
    assert done.returncode == 0
    assert f"{len(node.simulator.device_names)} device(s)" in lines["EFA devices"][1]
    assert f"127.0.0.1:{node.otlp_port}" in lines["OTLP collector"][1]
    assert f"(pid {node.agent.pid})" in lines["CPU"][1]


def test_no_devices_fails_with_its_fix(node, tmp_path):
    empty = Path(tempfile.mkdtemp(dir=node.base))
    done = node.doctor("--sysfs", str(empty))
    status, detail = _lines(done)["EFA devices"]
    assert status == "FAIL" and "no EFA device" in detail and "fix: " in detail and "modprobe efa" in detail
    assert _lines(done)["counters readable"][0] == "SKIP"
    assert done.returncode == 1


def _counters_check(config_path: str):
    from otel_efa import config as config_module

    context = doctor.Context(config=config_module.load(config_path, environ={}))
    result = doctor.check_counters(context)
    return doctor.format_result("counters readable", result), result.status, result.detail, result.fix


def test_unreadable_counter_fails_with_its_fix(node):
    """Root reads any file whatever its mode, so the doctor's counter check runs as nobody here (as the
    service's unprivileged user reads), after the simulator removed one counter file's read permission."""
    device = node.simulator.device_names[1]
    _, status, detail, _ = run_as_nobody(_counters_check, str(node.config))
    assert status == "PASS", detail
    node.simulator.deny(device, "rx_bytes")
    try:
        line, status, detail, fix = run_as_nobody(_counters_check, str(node.config))
    finally:
        node.simulator.heal(device, "rx_bytes")
    path = node.simulator.path_of(device, "rx_bytes")
    assert status == "FAIL" and path in detail and "permission" in detail, line
    assert fix.startswith(f"sudo chmod a+r {path}") and line.startswith("FAIL  counters readable: ")
    assert f"-> fix: {fix}" in line


def test_counter_hidden_from_the_service_user_fails_even_for_root(node):
    """Run with sudo, the doctor reads every file; it still flags one the unprivileged service cannot."""
    device = node.simulator.device_names[2]
    node.simulator.deny(device, "tx_pkts")
    try:
        done = node.doctor()
    finally:
        node.simulator.heal(device, "tx_pkts")
    status, detail = _lines(done)["counters readable"]
    path = node.simulator.path_of(device, "tx_pkts")
    assert os.geteuid() == 0
    assert status == "FAIL" and "cannot read" in detail and f"fix: sudo chmod a+r {path}" in detail, done.stdout
    assert done.returncode == 1


def test_collector_down_fails_with_its_fix(node):
    config = node.write_config("collector-down.yaml", **{"otlp.endpoint": f"http://127.0.0.1:{free_port()}"})
    done = node.doctor(config=config)
    status, detail = _lines(done)["OTLP collector"]
    assert status == "FAIL" and "cannot connect" in detail, done.stdout
    assert "fix: sudo systemctl start aws-otel-collector" in detail
    assert done.returncode == 1


def test_prometheus_port_taken_fails_with_its_fix(node):
    port = free_port()
    other = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/metrics"), what="node exporter")
        config = node.write_config("port-taken.yaml", **{"prometheus.address": f"0.0.0.0:{port}"})
        done = node.doctor(config=config)
    finally:
        other.terminate()
        other.wait(10)
    status, detail = _lines(done)["Prometheus endpoint"]
    assert status == "FAIL" and "another program holds it" in detail, done.stdout
    assert f"fix: sudo ss -ltnp 'sport = :{port}'" in detail
    assert done.returncode == 1


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


# Single checks, in process, for the outcomes the node above does not produce.

def _context(tmp_path, **settings):
    from otel_efa.config import Config

    config = Config(sysfs=str(tmp_path), **settings)
    env = {"PATH": str(tmp_path / "bin"), "AWS_EC2_METADATA_DISABLED": "true"}
    return doctor.Context(config=config, environ=env, timeout=1.0, cpu_sample_s=0.1)


def test_checks_skip_what_the_node_does_not_use(tmp_path):
    context = _context(tmp_path, exporters=["log"])  # log to stdout; no systemctl on PATH
    results = dict(doctor.run_checks(context))
    for name in ("service", "log file", "OTLP collector", "Prometheus endpoint", "CloudWatch", "CPU"):
        assert results[name].status == "SKIP", (name, results[name])
    assert "systemctl not installed" in results["service"].detail


def test_cloudwatch_without_credentials_fails_with_the_role_fix(tmp_path, monkeypatch):
    """boto3 reads os.environ: clear every AWS_* variable and keep it off IMDS (loopback only here)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in {"AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                        "AWS_CONFIG_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    context = _context(tmp_path, exporters=["cloudwatch"])
    context.environ.update(os.environ)
    result = doctor.check_cloudwatch(context)
    assert result.status == "FAIL" and "no AWS credentials" in result.detail
    assert "CloudWatchAgentServerPolicy" in result.fix


def test_cloudwatch_without_region_fails(tmp_path):
    result = doctor.check_cloudwatch(_context(tmp_path, exporters=["cloudwatch"]))
    assert result.status == "FAIL" and "region" in result.detail and "cloudwatch.region" in result.fix


@pytest.mark.parametrize("interval, exporters, status", [
    (60, ["log"], "PASS"), (1, ["log"], "PASS"), (5, ["cloudwatch"], "FAIL"), (0.5, ["log"], "FAIL"),
    (600, ["log"], "FAIL"),
])
def test_interval_bounds(tmp_path, interval, exporters, status):
    result = doctor.check_interval(_context(tmp_path, interval=interval, exporters=exporters))
    assert result.status == status
    if status == "FAIL":
        assert "interval: 60" in result.fix


def test_stale_log_and_missing_service(tmp_path):
    log = tmp_path / "efa_monitor.log"
    log.write_text("old line\n")
    old = time.time() - 3600
    os.utime(log, (old, old))
    context = _context(tmp_path, exporters=["log"], log_file=str(log), interval=60)
    result = doctor.check_log(context)
    assert result.status == "FAIL" and "last written 3600 s ago" in result.detail and "restart" in result.fix
    install_systemctl(tmp_path / "bin", tmp_path / "state")  # knows no active unit
    result = doctor.check_service(context)
    assert result.status == "FAIL" and "inactive" in result.detail and "journalctl" in result.fix


@pytest.mark.parametrize("endpoint, environ, expected", [
    (None, {}, ("127.0.0.1", 4317)),  # the exporter's default, not localhost (which may be ::1)
    (None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("127.0.0.1", 4318)),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:5555"}, ("collector", 5555)),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:5555"}, ("collector", 5555)),  # gRPC, no scheme
    (None, {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://collector/v1/metrics",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("collector", 443)),
    ("http://127.0.0.1:4000", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:5555"}, ("127.0.0.1", 4000)),
])
def test_otlp_endpoint(endpoint, environ, expected):
    from otel_efa.config import Config, OtlpConfig

    assert doctor.otlp_endpoint(Config(otlp=OtlpConfig(endpoint=endpoint)), environ) == expected


def test_bad_otlp_settings_fail_naming_the_variable(tmp_path):
    """The doctor resolves OTLP settings as the exporter does: a setting the agent would refuse at start-up
    is a FAIL naming it, not a connection attempt somewhere else (and not a crashed check)."""
    context = _context(tmp_path, exporters=["otlp"])
    context.environ["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(tmp_path / "missing-ca.pem")
    result = doctor.check_collector(context)
    assert result.status == "FAIL", result
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in result.detail and "missing-ca.pem" in result.detail
    assert "check crashed" not in result.detail
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in result.fix
