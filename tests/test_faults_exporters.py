"""The fault matrix, exporter and process side: what the agent does when its peers, its disk, its clock
or its service manager misbehave, and that nothing measured is lost.

Every test runs ``otel-efa run`` as a real process against a simulated node this test owns (so the
simulator's ground truth is at hand), with real peers on loopback: moto in server mode behind the fault
proxy of ``aws_peers`` for CloudWatch, the gRPC OTLP receiver of ``otlp_receiver`` for OTLP. For each
fault a test checks what the agent said (one line when the fault starts, one when it ends, never one
per retry or per interval), that it kept collecting, and compares what arrived with the ground truth.

The input-side faults (devices, resets, wraps, garbage, permissions) are in ``test_bad_input.py``; the
OTLP collector going away (connection refused) and coming back is ``test_otlp_outage.py``; here it hangs.
"""
import glob
import os
import re
import signal
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from agent_process import AgentProcess
from aws_peers import QUICK_START_NAMES, FaultProxy, cloudwatch, moto, proxy, statistics  # noqa: F401
from otlp_receiver import GrpcReceiver, MisbehavingReceiver, points
from waiting import wait_until

from otel_efa import catalog
from otel_efa.pipeline.agent import SHUTDOWN_BUDGET_S

REPO = Path(__file__).resolve().parent.parent
PROFILE = "p4d.24xlarge"  # four devices: one log line each per interval
INTERVAL = "0.5"
STAMP = re.compile(r"^(\S+) (\S+): RX=(\d+\.\d\d|-) Mbps, TX=(\d+\.\d\d|-) Mbps")
KERNEL_NAME = {spec.name: spec.kernel_name for spec in catalog.PORT_COUNTERS}
RATE_METRICS = [s.name for s in catalog.CLOUDWATCH_METRICS if s.statistic == "rate"]
TOTAL_METRICS = [s.name for s in catalog.CLOUDWATCH_METRICS if s.statistic == "total"]


def _timeout_stop_s() -> float:
    """The service's TimeoutStopSec: after it, systemd kills the agent and whatever it held is gone."""
    unit = (REPO / "systemd" / "efa-monitor.service").read_text()
    return float(re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M).group(1))


@pytest.fixture
def start_agent(tmp_path):
    """start_agent(root, exporters, *flags, env={...}) -> AgentProcess, killed at the end whatever happens."""
    started: List[AgentProcess] = []

    def start(root: str, exporters: str, *flags: str, env: Optional[Dict[str, str]] = None) -> AgentProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
        environment.update(AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1",
                           OTEL_RESOURCE_ATTRIBUTES="host.id=i-0faults0000000001")
        environment.update(env or {})
        agent = AgentProcess(["--sysfs", root, "--instance-type", PROFILE, "--interval", INTERVAL,
                              "--exporters", exporters, *flags], environment,
                             tmp_path / f"agent{len(started)}.stderr")
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.alive():
            agent.process.kill()
            agent.process.wait(10)


@pytest.fixture
def receiver():
    r = GrpcReceiver()
    yield r
    r.stop()


# --- what arrived ------------------------------------------------------------------------------
def intervals(log_file: Path) -> List[Tuple[str, List[str]]]:
    """The log file's intervals with a rate, in order: (timestamp, lines). One collection stamps its lines
    alike; the first collection's lines (``RX=- Mbps``: no rate yet) are left out."""
    found: List[Tuple[str, List[str]]] = []
    if not log_file.exists():
        return found
    for line in log_file.read_text().splitlines():
        match = STAMP.match(line)
        assert match, f"unexpected log line {line!r}"
        if match.group(3) == "-":
            continue
        if not found or found[-1][0] != match.group(1):
            found.append((match.group(1), []))
        found[-1][1].append(line)
    return found


def port_totals(request) -> Dict[Tuple[str, str], int]:
    """(kernel counter, device) -> the cumulative total an OTLP export carried."""
    return {(KERNEL_NAME[p.name], dict(p.attributes)["aws.efa.device"]): p.value
            for p in points(request) if p.kind == "sum" and p.name in KERNEL_NAME}


def collections(request) -> int:
    return next(p.value for p in points(request) if p.name == "otel_efa_collections")


def sum_points(request, name: str):
    """The OTLP data points of the sum ``name`` (the raw protobuf, timestamps included)."""
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    return list(metric.sum.data_points)
    return []


def start_times(requests) -> Dict[str, set]:
    """device -> the start times its efa_rx_bytes series carried over ``requests`` (one: never restarted)."""
    found: Dict[str, set] = {}
    for _, request in requests:
        for point in sum_points(request, "efa_rx_bytes"):
            device = next(kv.value.string_value for kv in point.attributes if kv.key == "aws.efa.device")
            found.setdefault(device, set()).add(point.start_time_unix_nano)
    return found


def assert_totals_match(simulator, receiver: GrpcReceiver) -> int:
    """Stop the node's counters, wait for two collections after that, and compare the export with the
    simulator's ground truth, every port counter of every device. Returns how many values were checked."""
    truth = simulator.values()
    seen = len(receiver.requests)
    wait_until(lambda: len(receiver.requests) >= seen + 2, what="two exports after the counters stopped")
    totals = port_totals(receiver.requests[-1][1])
    assert totals, "no port counters exported"
    for key, value in totals.items():
        assert value == truth[(key[1], key[0])], key
    return len(totals)


def cloudwatch_counts(moto, instance_id: str, name: str) -> Dict[float, float]:
    """minute start (epoch seconds) -> SampleCount that moto holds for the quick-start's metric ``name``."""
    return {p["Timestamp"].timestamp(): p["SampleCount"]
            for p in statistics(cloudwatch(moto), instance_id, name, ["SampleCount"])}


def stamps_per_minute(stamps: List[float]) -> Dict[float, int]:
    return dict(Counter(s - s % 60 for s in stamps))


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# --- 1. the OTLP collector hangs, then answers again -------------------------------------------------
def test_otlp_collector_hung_then_back_keeps_collecting_and_recovers_whole_totals(make_simulator, start_agent,
                                                                                  tmp_path):
    """The collector down and back (connection refused) is ``test_otlp_outage.py``. Here it hangs
    instead: it accepts connections and never answers, so every export waits for the OTLP timeout.
    Exports run on their own thread, so collection keeps its schedule (the log line of every interval
    is there and no interval is skipped); one warning when exports start failing, one when a collector
    answers again on the same port, and the first exports after that carry the node's exact totals.
    """
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    hole = MisbehavingReceiver("hang")  # a collector that accepts connections and never answers
    log_file = tmp_path / "efa_monitor.log"
    back: Optional[GrpcReceiver] = None
    agent = start_agent(simulator.root, "otlp,log", "--log-file", str(log_file), env={
        "OTEL_EFA_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.port}", "OTEL_EFA_OTLP_TIMEOUT": "2"})
    try:
        agent.expect(lambda: agent.lines("is failing"), "the outage warning", 60)
        collected = len(intervals(log_file))
        agent.expect(lambda: len(intervals(log_file)) >= collected + 6, "collection while exports hang")
        hole.close()
        back = GrpcReceiver(hole.port)
        agent.expect(lambda: agent.lines("works again") and back.requests, "exports once it answers", 30)
        running.stop()
        checked = assert_totals_match(simulator, back)
        code, _ = agent.stop()
    finally:
        running.stop()
        hole.close()
        if back is not None:
            back.stop()
    assert code == 0, agent.log()
    assert checked >= 4 * 10
    assert len(agent.lines("WARNING", "is failing")) == 1, agent.log()
    assert len(agent.lines("WARNING", "works again")) == 1, agent.log()
    assert not agent.lines("behind"), agent.log()  # the hanging exports never held collection up
    assert "Traceback" not in agent.log()
    assert len(intervals(log_file)) == collections(back.requests[-1][1]) - 1


# --- 2. CloudWatch throttled, then down, then back ------------------------------------------------
def test_cloudwatch_throttled_then_down_delivers_every_interval_once(proxy, moto, make_simulator,  # noqa: F811
                                                                     start_agent, tmp_path):
    """Two outages in one run: CloudWatch answers every PutMetricData with 400 Throttling, then it is
    unreachable (connection refused: the endpoint's port is closed), and each time it comes back.

    The agent warns once when each outage starts and once when it ends, whatever the number of failed
    calls and retries; collection goes on (the log line of every interval is there); and moto ends up
    holding every interval's datapoints exactly once, the error total set during the first outage
    included.
    """
    instance_id = "i-0cwfaults0000001"
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    log_file = tmp_path / "efa_monitor.log"
    port = int(proxy.url.rsplit(":", 1)[1])
    agent = start_agent(simulator.root, "cloudwatch,log", "--log-file", str(log_file), env={
        "OTEL_RESOURCE_ATTRIBUTES": f"host.id={instance_id}", "OTEL_EFA_CLOUDWATCH_BATCH_SIZE": "2",
        "OTEL_EFA_CLOUDWATCH_MAX_ATTEMPTS": "2"})
    back: Optional[FaultProxy] = None
    try:
        agent.expect(lambda: proxy.puts(200), "a first delivery", 60)

        proxy.outage = "throttle"
        noisy = simulator.device_names[1]
        simulator.set_value(noisy, "rx_drops", simulator.value(noisy, "rx_drops") + 4242)
        agent.expect(lambda: len(proxy.puts(400)) >= 4, "two flushes throttled to the last retry")
        proxy.outage = False
        delivered = len(proxy.puts(200))
        agent.expect(lambda: len(proxy.puts(200)) > delivered and agent.lines("works again"),
                 "delivery after the throttling")

        proxy.stop()  # the endpoint is gone: connection refused
        collected = len(intervals(log_file))
        agent.expect(lambda: len(intervals(log_file)) >= collected + 6 and len(agent.lines("failed (")) == 2,
                 "collections and a failed flush while CloudWatch is unreachable")
        back = FaultProxy(moto.url, port).start()
        agent.expect(lambda: back.puts(200) and len(agent.lines("works again")) == 2, "delivery after the outage")
        running.stop()
        code, _ = agent.stop()
    finally:
        running.stop()
        if back is not None:
            back.stop()
    assert code == 0, agent.log()

    failed = agent.lines("WARNING", "PutMetricData failed")
    assert len(failed) == 2, agent.log()
    assert "Throttling" in failed[0] and "Could not connect" in failed[1], failed
    assert len(agent.lines("WARNING", "works again")) == 2, agent.log()
    assert "Traceback" not in agent.log()

    stamps = [epoch(stamp) for stamp, _ in intervals(log_file)]
    assert len(stamps) >= collected + 6
    # Every interval with a rate gives each rate metric one sample, and every collection (the first,
    # which has no rate yet, too) each total: per minute, exactly as many as the log has intervals.
    for name in RATE_METRICS:
        assert cloudwatch_counts(moto, instance_id, name) == stamps_per_minute(stamps), name
    for name in TOTAL_METRICS:
        assert sum(cloudwatch_counts(moto, instance_id, name).values()) == len(stamps) + 1, name
    newest = statistics(cloudwatch(moto), instance_id, "rx_errors", ["Maximum"])[-1]["Maximum"]
    assert newest == sum(simulator.value(d, "rx_drops") for d in simulator.device_names) >= 4242
    node_rate = sum(simulator.expected_rate(d, "rx_bytes") for d in simulator.device_names)
    minutes = statistics(cloudwatch(moto), instance_id, "rx_bytes_rate", ["Average", "SampleCount"])
    mean = sum(p["Average"] * p["SampleCount"] for p in minutes) / sum(p["SampleCount"] for p in minutes)
    assert mean == pytest.approx(node_rate, rel=0.15)  # the simulator ticks on a thread of this busy process


# --- 3. the log's disk is full -------------------------------------------------------------------
def repoint(link: Path, target: str) -> None:
    """Make ``link`` point at ``target`` in one step (what the agent sees is one or the other)."""
    new = link.with_name(link.name + ".new")
    os.symlink(target, new)
    os.replace(new, link)


def test_log_disk_full_costs_only_the_log_lines_and_says_so_once(make_simulator, start_agent, receiver,
                                                                 tmp_path):
    """The log file's writes fail with ENOSPC: the log path is a symlink the test points at /dev/full
    (every write to it fails with "No space left on device", as on a full disk; no mount needed), then
    at a file on another directory, which is what freeing space looks like from the agent.

    One error when it starts, one warning when it ends with the number of intervals not written; the
    agent keeps running and exporting over OTLP through it, and its totals stay the node's.
    """
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    for name in ("disk1", "disk2"):
        (tmp_path / name).mkdir()
    link = tmp_path / "efa_monitor.log"
    os.symlink(tmp_path / "disk1" / "efa_monitor.log", link)
    agent = start_agent(simulator.root, "log,otlp", "--log-file", str(link),
                        env={"OTEL_EFA_OTLP_ENDPOINT": receiver.endpoint})
    try:
        agent.expect(lambda: len(intervals(tmp_path / "disk1" / "efa_monitor.log")) >= 2, "log lines", 60)
        repoint(link, "/dev/full")
        agent.expect(lambda: agent.lines("cannot write"), "the disk-full error")
        exported = len(receiver.requests)
        during = receiver.wait_for(exported + 4, timeout=20)
        assert len(during) >= exported + 4, "OTLP exports stopped while the log could not be written"
        assert agent.alive()
        before_full = port_totals(during[exported - 1])
        while_full = port_totals(during[-1])
        repoint(link, str(tmp_path / "disk2" / "efa_monitor.log"))
        agent.expect(lambda: len(intervals(tmp_path / "disk2" / "efa_monitor.log")) >= 2, "lines with space back")
        running.stop()
        checked = assert_totals_match(simulator, receiver)
        code, _ = agent.stop()
    finally:
        running.stop()
    assert code == 0, agent.log()
    assert checked >= 4 * 10

    errors = agent.lines("cannot write")
    assert len(errors) == 1 and "ERROR" in errors[0] and "No space left on device" in errors[0], agent.log()
    again = agent.lines("again")
    assert len(again) == 1 and "WARNING" in again[0], agent.log()
    unwritten = int(re.search(r"(\d+) interval", again[0]).group(1))
    assert unwritten >= 4
    assert "Traceback" not in agent.log() and "exporter failed" not in agent.log()
    # the other exporter went on: totals moved while the log could not be written
    first = ("rx_bytes", simulator.device_names[0])
    assert while_full[first] > before_full[first]
    # every interval is accounted for: written before, reported unwritten, or written after
    written = len(intervals(tmp_path / "disk1" / "efa_monitor.log")) + \
        len(intervals(tmp_path / "disk2" / "efa_monitor.log"))
    assert written + unwritten == collections(receiver.requests[-1][1]) - 1


# --- 4. the wall clock is stepped back ---------------------------------------------------------------
def libfaketime() -> str:
    """Debian's libfaketime (package faketime, installed by ``make deps``)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))  # the thread-safe variant
    assert found, "libfaketime is not installed: run `make test`, which installs Debian's faketime"
    return found[0]


def test_wall_clock_stepped_back_keeps_rates_and_every_datapoint(proxy, moto, make_simulator,  # noqa: F811
                                                                 start_agent, receiver, tmp_path):
    """The agent's wall clock steps back five minutes mid-run, as when NTP corrects a clock that ran
    ahead. Done with Debian's libfaketime preloaded into the agent process: the offset comes from a
    timestamp file re-read on every call (FAKETIME_NO_CACHE), changed by the test mid-run, and the
    monotonic clock is left real (FAKETIME_DONT_FAKE_MONOTONIC), as a real step leaves it. The node's
    clock is untouched: other processes on the machine must not see the step.

    Rates come from monotonic time, so every interval has one and it is right. The timestamps of the log
    lines, of the OTLP points and of the CloudWatch datapoints follow the wall clock back. The CloudWatch
    buffer (one minute here) measures age on the monotonic clock, so the datapoints stamped after the
    step, five minutes "older" than those before it, are all delivered, each exactly once.
    """
    instance_id = "i-0clockstep000001"
    step_s = 300
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    log_file = tmp_path / "efa_monitor.log"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    agent = start_agent(simulator.root, "cloudwatch,log,otlp", "--log-file", str(log_file), env={
        "OTEL_RESOURCE_ATTRIBUTES": f"host.id={instance_id}", "OTEL_EFA_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EFA_CLOUDWATCH_BATCH_SIZE": "2", "OTEL_EFA_CLOUDWATCH_BUFFER_MINUTES": "1",
        "LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1"})

    def after_step() -> int:
        stamps = [epoch(stamp) for stamp, _ in intervals(log_file)]
        back = [i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1]]
        return len(stamps) - back[0] if back else 0

    try:
        agent.expect(lambda: len(intervals(log_file)) >= 4 and proxy.puts(200), "collections before the step", 60)
        new = offset.with_name("faketime.new")
        new.write_text(f"-{step_s}\n")
        os.replace(new, offset)
        agent.expect(lambda: after_step() >= 6, "collections after the step")
        code, _ = agent.stop()
    finally:
        running.stop()
    assert code == 0, agent.log()
    assert "Traceback" not in agent.log() and "dropped" not in agent.log(), agent.log()

    # The log lines: stamped by the wall clock, one step back, and a right rate at every interval.
    found = intervals(log_file)
    stamps = [epoch(stamp) for stamp, _ in found]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    backwards = [s for s in steps if s < 0]
    assert len(backwards) == 1 and backwards[0] == pytest.approx(-step_s, abs=5), steps
    assert all(0 < s < 5 for s in steps if s >= 0), steps
    assert len(found) == collections(receiver.requests[-1][1]) - 1  # no interval went without a rate
    # The simulator ticks on a thread of this busy test process (moto and the receiver run here too), so
    # one interval may catch a late tick and the next make up for it: the median is the steady rate. A
    # rate over wall-clock time would be missing at the step (negative time), which the count above sees.
    ratios = sorted(float(STAMP.match(line).group(3)) / (simulator.expected_rate(STAMP.match(line).group(2),
                                                                                  "rx_bytes") * 8 / 1e6)
                    for _, lines in found for line in lines)
    assert ratios[len(ratios) // 2] == pytest.approx(1.0, rel=0.1) and ratios[0] > 0, ratios

    # OTLP: the points' time follows the wall clock back; the cumulative series is not restarted.
    exported = [sum_points(request, "efa_rx_bytes")[0] for _, request in receiver.requests]
    times = [p.time_unix_nano / 1e9 for p in exported]
    jumps = [b - a for a, b in zip(times, times[1:]) if b < a]
    assert len(jumps) == 1 and jumps[0] == pytest.approx(-step_s, abs=5), times
    starts = start_times(receiver.requests)
    assert len(starts) == 4 and all(len(s) == 1 for s in starts.values()), starts

    # CloudWatch: every interval's datapoints, filed under the minute its wall clock said, exactly once.
    for name in RATE_METRICS:
        assert cloudwatch_counts(moto, instance_id, name) == stamps_per_minute(stamps), name
    for name in TOTAL_METRICS:
        assert sum(cloudwatch_counts(moto, instance_id, name).values()) == len(stamps) + 1, name


# --- 5. SIGHUP ----------------------------------------------------------------------------------------
def test_sighup_is_noted_once_and_resets_nothing(make_simulator, start_agent, receiver, tmp_path):
    """``systemctl reload`` or a stray ``kill -HUP``: one log line, and the agent goes on as if nothing
    happened: the same process, the collection count and the cumulative series carry on (no restart,
    no new start time), the log file keeps every interval, and the totals are the node's."""
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    log_file = tmp_path / "efa_monitor.log"
    agent = start_agent(simulator.root, "otlp,log", "--log-file", str(log_file),
                        env={"OTEL_EFA_OTLP_ENDPOINT": receiver.endpoint})
    try:
        before = receiver.wait_for(3, timeout=60)
        assert len(before) >= 3, "no exports"
        agent.process.send_signal(signal.SIGHUP)
        agent.expect(lambda: agent.lines("SIGHUP"), "the SIGHUP line")
        after = receiver.wait_for(len(before) + 4, timeout=20)
        running.stop()
        assert_totals_match(simulator, receiver)
        assert agent.alive()
        code, _ = agent.stop()
    finally:
        running.stop()
    assert code == 0, agent.log()
    assert len(agent.lines("SIGHUP")) == 1, agent.log()
    assert "Traceback" not in agent.log()
    counts = [collections(request) for _, request in receiver.requests]
    assert counts == sorted(counts) and counts[-1] > collections(before[-1]) + 3, counts
    starts = start_times(receiver.requests)
    assert len(starts) == 4 and all(len(s) == 1 for s in starts.values()), starts  # no series restarted
    assert len(after) >= len(before) + 4
    assert len(intervals(log_file)) == counts[-1] - 1  # one log interval per collection after the first


# --- 6. SIGTERM during an export ------------------------------------------------------------------------
def test_sigterm_during_a_hung_otlp_export_exits_zero_within_the_budget(make_simulator, start_agent, receiver,
                                                                        tmp_path):
    """The collector accepts the connection and never answers; the OTLP timeout (30 s) is longer than
    the service's TimeoutStopSec, so an agent that waited for it would be killed by systemd. SIGTERM
    while an export hangs: the agent gives up on that export, says so in one line, and exits 0 within
    its shutdown budget.

    What was measured is not lost with the dropped export: the totals are cumulative in the kernel, and
    the next agent's first export carries them whole, as the second half of the test shows.
    """
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    hole = MisbehavingReceiver("hang")  # a collector that accepts connections and never answers
    log_file = tmp_path / "efa_monitor.log"
    try:
        agent = start_agent(simulator.root, "otlp,log", "--log-file", str(log_file), env={
            "OTEL_EFA_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.port}", "OTEL_EFA_OTLP_TIMEOUT": "30"})
        agent.expect(lambda: hole.accepted and len(intervals(log_file)) >= 3, "an export under way", 60)
        code, took = agent.stop()
    finally:
        running.stop()
        hole.close()
    print(f"SIGTERM to exit with the OTLP export hanging: {took:.2f} s")
    assert code == 0, agent.log()
    assert took < min(_timeout_stop_s(), SHUTDOWN_BUDGET_S + 2), took
    assert len(agent.lines("WARNING", "did not finish")) == 1, agent.log()
    assert "Traceback" not in agent.log()

    truth = simulator.values()
    after = start_agent(simulator.root, "otlp", "--count", "1", env={"OTEL_EFA_OTLP_ENDPOINT": receiver.endpoint})
    assert after.process.wait(60) == 0, after.log()
    totals = port_totals(receiver.requests[0][1])
    assert totals and all(value == truth[(device, kernel)] for (kernel, device), value in totals.items())


def test_sigterm_during_a_slow_put_metric_data_delivers_or_reports_every_datapoint(
        proxy, moto, make_simulator, start_agent, tmp_path):  # noqa: F811
    """CloudWatch takes 8 s to answer a PutMetricData (longer than the shutdown budget); SIGTERM arrives
    while such a call is under way and more data waits behind it. The agent exits 0 within its budget
    and says in one line how many datapoints it could not send and how many were in the unanswered call.

    Every datapoint collected is accounted for: what moto holds once the slow call has been processed
    plus the reported unsent equals what was collected (the log lines count the intervals).
    """
    instance_id = "i-0slowcloudwatch1"
    simulator = make_simulator(PROFILE)
    running = simulator.start(tick=0.05)
    log_file = tmp_path / "efa_monitor.log"
    agent = start_agent(simulator.root, "cloudwatch,log", "--log-file", str(log_file), env={
        "OTEL_RESOURCE_ATTRIBUTES": f"host.id={instance_id}", "OTEL_EFA_CLOUDWATCH_BATCH_SIZE": "2"})
    try:
        agent.expect(lambda: proxy.puts(200), "a first delivery", 60)
        proxy.delay_s = 8.0
        agent.expect(lambda: any(r.status == 0 for r in proxy.puts()), "a slow call under way")
        collected = len(intervals(log_file))
        agent.expect(lambda: len(intervals(log_file)) >= collected + 2, "more collections behind the slow call")
        code, took = agent.stop()
        running.stop()
        wait_until(lambda: all(r.status for r in proxy.puts()), 20, "the slow call processed")
    finally:
        running.stop()
    print(f"SIGTERM to exit with PutMetricData under way: {took:.2f} s")
    assert code == 0, agent.log()
    assert took < min(_timeout_stop_s(), SHUTDOWN_BUDGET_S + 2), took
    report = agent.lines("WARNING", "not sent at shutdown")
    assert len(report) == 1, agent.log()
    unsent, in_flight = map(int, re.search(r"(\d+) datapoints not sent at shutdown, (\d+) more",
                                           report[0]).groups())
    assert unsent > 0 and in_flight > 0, report

    intervals_with_rates = len(intervals(log_file))
    collected_points = len(RATE_METRICS) * intervals_with_rates + len(TOTAL_METRICS) * (intervals_with_rates + 1)
    delivered = sum(sum(cloudwatch_counts(moto, instance_id, name).values()) for name in QUICK_START_NAMES)
    assert delivered + unsent == collected_points, (delivered, unsent, in_flight, collected_points)
