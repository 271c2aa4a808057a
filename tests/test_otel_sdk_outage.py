"""The otel-sdk path through a collector outage: one warning when its OTLP exports start failing, one when
they work again, and none of the SDK exporter's own per-attempt lines (an ERROR per export and a WARNING per
retry, thousands an hour at a short interval); data arrives again after the outage.

Peers are real: the agent as a process (``otel-efa run --exporters otel-sdk,log``), the OTLP receivers of
tests/otlp_receiver.py (gRPC and http/protobuf) stopped and started again on the same port; the node is the
simulator (the stand-in for EFA hardware).
"""
import re

import pytest
from agent_process import AgentProcess, agent_environment
from otlp_receiver import GrpcReceiver, HttpReceiver

INTERVAL_S = "0.25"


def _collections(log_file) -> int:
    """Collections the log exporter has written (one timestamp per interval, a line per device)."""
    try:
        return len({line.split(" ", 1)[0] for line in log_file.read_text().splitlines()})
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("protocol, receiver_type", [("grpc", GrpcReceiver), ("http/protobuf", HttpReceiver)])
def test_an_outage_is_two_warnings_and_none_of_the_sdk_s_lines(protocol, receiver_type, make_simulator, tmp_path):
    simulator = make_simulator("p4d.24xlarge")
    receiver = receiver_type()
    port = receiver.port
    endpoint = f"http://127.0.0.1:{port}" + ("/v1/metrics" if protocol != "grpc" else "")
    env = dict(agent_environment(), OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=endpoint,
               OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_TIMEOUT="500",
               OTEL_METRICS_EXPORTER="otlp", OTEL_METRIC_EXPORT_INTERVAL=str(int(float(INTERVAL_S) * 1000)))
    log_file = tmp_path / "collections.log"
    agent = AgentProcess(["--sysfs", simulator.root, "--instance-type", "p4d.24xlarge", "--interval", INTERVAL_S,
                          "--exporters", "otel-sdk,log", "--log-file", str(log_file)], env, tmp_path / "agent.stderr")
    back = None
    try:
        assert receiver.wait_for(2, timeout=30), agent.log()
        receiver.stop()
        agent.expect(lambda: agent.lines("is failing"), "the outage warning")
        seen = _collections(log_file)
        agent.expect(lambda: _collections(log_file) >= seen + 8, "eight more collections during the outage")
        back = receiver_type(port)
        assert back.wait_for(1, timeout=30), agent.log()
        agent.expect(lambda: agent.lines("works again"), "the recovery warning")
        code, _ = agent.stop()
    finally:
        if agent.alive():
            agent.stop()
        if back is not None:
            back.stop()
    log = agent.log()
    assert code == 0, log
    assert len(agent.lines("is failing")) == 1, log
    assert len(agent.lines("works again")) == 1, log
    assert "the totals will be whole" in agent.lines("is failing")[0]
    attempts = int(re.search(r"\((\d+) failed attempts\)", agent.lines("works again")[0]).group(1))
    assert attempts >= 3, log  # the SDK failed that often, and said nothing of it
    assert not [line for line in log.splitlines() if "opentelemetry.exporter" in line], log
    assert "Traceback" not in log
