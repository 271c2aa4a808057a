"""The collector goes away for 6 s (60 intervals) and comes back: the agent keeps collecting, memory stays
flat, two warnings in all, and the first export after recovery carries the simulator's exact totals.

The agent runs as a subprocess (``otel-efa run``) so that its RSS can be read from /proc; the simulated
node is this test's, so its ground truth is at hand.
"""
import os
import signal
import subprocess
import sys
import time

from agent_process import rss_kb
from otlp_receiver import GrpcReceiver, points
from waiting import wait_until

from otel_efa import catalog

PROFILE = "p5.48xlarge"  # 32 devices: the biggest export, so a queue would show in RSS
INTERVAL_S = 0.1
OUTAGE_S = 6.0  # 60 intervals, about 45 of them between the two RSS readings
ADVANCE_S = 2.5  # counters move during the first part of the outage, then hold still
OTLP_TIMEOUT_S = 1.0  # an export holding pre-stop values has given up long before the receiver returns
RSS_GROWTH_LIMIT_KB = 8 * 1024


def _totals(request):
    return {(p.name, p.attributes): p.value for p in points(request) if p.kind == "sum"}


def test_outage_keeps_collecting_warns_twice_and_recovers_whole_totals(make_simulator, tmp_path):
    simulator = make_simulator(PROFILE)
    receiver = GrpcReceiver()
    port = receiver.port
    stderr_path = tmp_path / "agent.stderr"
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true", OTEL_RESOURCE_ATTRIBUTES="host.id=i-outage",
               OTEL_EFA_OTLP_ENDPOINT=receiver.endpoint, OTEL_EFA_OTLP_TIMEOUT=str(OTLP_TIMEOUT_S))
    with open(stderr_path, "w") as stderr:
        agent = subprocess.Popen(
            [sys.executable, "-m", "otel_efa", "run", "--sysfs", simulator.root, "--instance-type", PROFILE,
             "--exporters", "otlp", "--interval", str(INTERVAL_S)], env=env, stderr=stderr, stdout=subprocess.DEVNULL)
    second = None
    try:
        before = receiver.wait_for(3, timeout=30)
        assert len(before) >= 3, "the agent never exported"
        receiver.stop()
        outage_started = time.monotonic()

        running = simulator.start(tick=0.02)
        # The first failed export is behind us once the agent says so (its one warning).
        wait_until(lambda: "is failing" in stderr_path.read_text(), 10 * OTLP_TIMEOUT_S, "the outage warning")
        rss_early = rss_kb(agent.pid)
        wait_until(lambda: time.monotonic() - outage_started >= ADVANCE_S, ADVANCE_S, "the counters' advance")
        running.stop()
        truth = simulator.values()
        wait_until(lambda: time.monotonic() - outage_started >= OUTAGE_S, OUTAGE_S, "the outage's end")
        rss_late = rss_kb(agent.pid)
        assert agent.poll() is None, "the agent died during the outage"

        second = GrpcReceiver(port)  # the collector comes back on the same port
        after = second.wait_for(1, timeout=20)
        assert after, "no export after the collector came back"
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(10)
        finally:
            if agent.poll() is None:
                agent.kill()
            if second is not None:
                second.stop()

    first_after = _totals(after[0])
    last_before = _totals(before[-1])
    port_totals = {key: value for key, value in first_after.items() if key[0].startswith("efa_")
                   and not key[0].startswith("efa_device_")}
    assert port_totals, "no port counters in the first export after recovery"
    for (name, attributes), value in port_totals.items():
        device = dict(attributes)["aws.efa.device"]
        kernel = next(s.kernel_name for s in catalog.PORT_COUNTERS
                      if s.name == name)
        assert value == truth[(device, kernel)], (name, device)
    moved = [key for key in port_totals if key[0] == "efa_rx_bytes"]
    assert moved and all(port_totals[key] > last_before[key] for key in moved), \
        "the counters did not move during the outage, so the check above proves nothing"
    assert first_after[("otel_efa_collections", frozenset())] > \
        last_before[("otel_efa_collections", frozenset())] + OUTAGE_S / INTERVAL_S / 2  # it kept collecting

    growth = rss_late - rss_early
    print(f"RSS during the outage: {rss_early} kB -> {rss_late} kB ({growth:+d} kB)")
    assert growth < RSS_GROWTH_LIMIT_KB, f"RSS grew by {growth} kB during a {OUTAGE_S:.0f} s outage"

    log = stderr_path.read_text()
    failing = [line for line in log.splitlines() if "is failing" in line]
    recovered = [line for line in log.splitlines() if "works again" in line]
    assert len(failing) == 1 and "WARNING" in failing[0], log
    assert len(recovered) == 1 and "WARNING" in recovered[0], log
    assert "Transient error" not in log, log  # the SDK's per-retry line
    assert not [line for line in log.splitlines() if " opentelemetry.exporter" in line], log
