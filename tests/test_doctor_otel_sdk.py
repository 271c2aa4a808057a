"""``otel-efa doctor`` when the agent runs ``--exporters otel-sdk``: the readers ``OTEL_METRICS_EXPORTER``
names are checked like the fast exporters they stand for (the OTLP reader's collector, the Prometheus
reader's page on ``prometheus.address``), and a bad ``OTEL_METRICS_EXPORTER`` is a FAIL naming it.

Peers are real: the OTLP gRPC receiver of tests/otlp_receiver.py, and ``otel-efa run --exporters otel-sdk``
serving the SDK's Prometheus reader on a simulated node (the simulator is the stand-in for EFA hardware).
"""
import os

import pytest
from agent_process import AgentProcess
from conftest import free_port
from otlp_receiver import GrpcReceiver

from otel_efa.config import Config, OtlpConfig, PrometheusConfig
from otel_efa.tools import doctor
from otel_efa.tools.simulator import Simulator


def _context(tmp_path, environ, **settings) -> doctor.Context:
    config = Config(sysfs=str(tmp_path / "sys"), exporters=["otel-sdk"], **settings)
    env = {"PATH": str(tmp_path / "bin"), "AWS_EC2_METADATA_DISABLED": "true", **environ}
    return doctor.Context(config=config, environ=env, timeout=2.0, cpu_sample_s=0.1)


def _results(context: doctor.Context):
    return dict(doctor.run_checks(context))


def test_the_sdk_s_otlp_reader_is_checked_against_its_collector_and_only_when_named(tmp_path):
    receiver = GrpcReceiver()
    try:
        up = _context(tmp_path, {}, otlp=OtlpConfig(endpoint=f"http://127.0.0.1:{receiver.port}"))
        result = _results(up)["OTLP collector"]
        assert result.status == "PASS" and f"127.0.0.1:{receiver.port}" in result.detail, result
        up.environ["OTEL_METRICS_EXPORTER"] = "console"  # no OTLP reader: the same collector is not the agent's
        results = _results(up)
        for name in ("OTLP collector", "ADOT version", "Prometheus endpoint"):
            assert results[name].status == "SKIP", (name, results[name])
    finally:
        receiver.stop()
    down = _context(tmp_path, {"OTEL_METRICS_EXPORTER": "otlp"},
                    otlp=OtlpConfig(endpoint=f"http://127.0.0.1:{free_port()}"))
    result = _results(down)["OTLP collector"]
    assert result.status == "FAIL" and "cannot connect" in result.detail, result


def test_a_bad_variable_fails_naming_it_in_every_check_that_asks(tmp_path):
    results = _results(_context(tmp_path, {"OTEL_METRICS_EXPORTER": "otlp,zipkin"}))
    for name in ("OTLP collector", "ADOT version", "Prometheus endpoint"):
        result = results[name]
        assert result.status == "FAIL", (name, result)
        assert "OTEL_METRICS_EXPORTER" in result.detail and "zipkin" in result.detail, result
        assert "check crashed" not in result.detail
        assert "OTEL_METRICS_EXPORTER" in result.fix


@pytest.fixture
def sdk_agent(tmp_path):
    """The agent with the SDK's Prometheus reader on a port of its own."""
    simulator = Simulator("p4d.24xlarge", str(tmp_path / "sys"))
    running = simulator.start(tick=0.05)
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true", OTEL_METRICS_EXPORTER="prometheus")
    agent = AgentProcess(["--sysfs", str(tmp_path / "sys"), "--interval", "0.5", "--exporters", "otel-sdk",
                          "--prometheus-address", address, "--instance-type", "p4d.24xlarge"],
                         env, tmp_path / "agent.stderr")
    try:
        yield agent, address
    finally:
        if agent.alive():
            agent.stop()
        running.stop()
        simulator.close()


def test_the_sdk_s_prometheus_page_is_recognised_as_the_agent_s(tmp_path, sdk_agent):
    agent, address = sdk_agent
    context = _context(tmp_path, {"OTEL_METRICS_EXPORTER": "prometheus"}, prometheus=PrometheusConfig(address))

    def passes() -> bool:
        assert agent.alive(), agent.log()
        return doctor.check_prometheus(context).status == "PASS"

    agent.expect(passes, "the doctor to recognise the SDK reader's page")
    assert doctor.check_collector(context).status == "SKIP"
