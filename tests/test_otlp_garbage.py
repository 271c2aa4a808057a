"""The collector answers garbage (OTLP over http/protobuf), then turns good: every failure a transport can
raise is an outage like any other.

``otel-efa run`` is a real process against tests/otlp_receiver.py's MisbehavingReceiver: non-HTTP bytes,
a body that never ends, 200 with a body that is no protobuf, a reply cut in the middle. For each: one
warning when the outage starts, no traceback, RSS bounded while the garbage flows (an unbounded read of an
endless body grew it by hundreds of MB), and once the server turns good, the export carries the node's
exact totals.
"""
import os

import pytest
from agent_process import AgentProcess, rss_kb
from otlp_receiver import MisbehavingReceiver, points

from otel_efa import catalog

PROFILE = "p4d.24xlarge"
KERNEL_NAME = {spec.name: spec.kernel_name for spec in catalog.PORT_COUNTERS}
GARBAGE_REPLIES = 6  # exports answered with garbage before the server turns good
RSS_GROWTH_LIMIT_KB = 20 * 1024


def _port_totals(request):
    return {(dict(p.attributes)["aws.efa.device"], KERNEL_NAME[p.name]): p.value
            for p in points(request) if p.kind == "sum" and p.name in KERNEL_NAME}


@pytest.mark.parametrize("mode", ["raw", "endless", "not_protobuf", "mid_reply"])
def test_garbage_from_the_collector_is_one_outage_with_bounded_memory_and_whole_totals(mode, make_simulator,
                                                                                      tmp_path):
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    server = MisbehavingReceiver(mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EFA_", "OTEL_EXPORTER_"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1", OTEL_EFA_OTLP_ENDPOINT=server.endpoint,
               OTEL_EFA_OTLP_PROTOCOL="http/protobuf", OTEL_EFA_OTLP_TIMEOUT="2")
    agent = AgentProcess(["--sysfs", simulator.root, "--instance-type", PROFILE, "--interval", "0.2",
                          "--exporters", "otlp"], env, tmp_path / "agent.stderr")
    try:
        agent.expect(lambda: server.garbage_replies >= 1, "the first export")
        agent.expect(lambda: agent.lines("is failing"), "the outage warning")
        rss_early = rss_kb(agent.process.pid)
        agent.expect(lambda: server.garbage_replies >= GARBAGE_REPLIES, f"{GARBAGE_REPLIES} garbage replies", 30)
        rss_late = rss_kb(agent.process.pid)
        assert agent.alive(), agent.log()
        running.stop()
        truth = simulator.values()
        server.mode = "good"
        agent.expect(lambda: len(server.requests) >= 2 and agent.lines("works again"), "exports once it is good")
        exported = _port_totals(server.requests[-1][1])
        code, _ = agent.stop()
    finally:
        running.stop()
        server.close()
        if agent.alive():
            agent.process.kill()
            agent.process.wait(10)
    log = agent.log()
    growth = rss_late - rss_early
    print(f"{mode}: RSS {rss_early} kB -> {rss_late} kB ({growth:+d} kB) over {GARBAGE_REPLIES} garbage replies")
    assert growth < RSS_GROWTH_LIMIT_KB, f"RSS grew by {growth} kB"
    assert code == 0, log
    assert "Traceback" not in log, log
    assert not agent.lines("ERROR"), log
    assert len(agent.lines("WARNING", "is failing")) == 1, log
    assert len(agent.lines("WARNING", "works again")) == 1, log
    assert all(len(line) < 600 for line in log.splitlines()), log  # garbage is not echoed whole
    assert exported and all(exported[key] == value for key, value in truth.items() if key in exported)
    assert len(exported) == len([k for k in truth if k in exported]) >= 4 * 10
