"""The soak, shortened for `make test`, and the evidence it rests on.

benchmarks/soak.py is the 10-minute soak (`make soak`); these tests import its measuring and judging
code, so the shortened run applies exactly the checks of the long one: RSS growth < 1 MiB after the
warm-up, no fd growth, no missed interval (read from outside, through otel_efa_missed_intervals and
otel_efa_collections against elapsed time).
"""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from waiting import wait_until


def _load_soak():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


def _sample(at, rss_mib=80.0, fds=100, threads=10, run_queue_wait=0.0):
    return soak.Sample(at=at, rss_bytes=int(rss_mib * soak.MIB), fds=fds, threads=threads, cpu_seconds=at / 100,
                       run_queue_wait=run_queue_wait)


def _report(samples, scrapes, interval=1.0, warmup=10.0):
    settings = soak.Settings(interval=interval, duration=samples[-1].at, warmup=warmup, level_samples=3)
    return soak.Report(settings, samples, scrapes)


def _steady(seconds=40, **overrides):
    """A healthy run at 1 s: one sample and one scrape per second, counters in step with time."""
    samples = [_sample(t) for t in range(seconds + 1)]
    scrapes = [soak.Scrape(at=t, collections=t + 1, missed=0, sample=samples[t]) for t in range(0, seconds + 1, 5)]
    return samples, scrapes


def test_the_judge_passes_a_steady_run_and_names_each_kind_of_failure():
    samples, scrapes = _steady()
    assert _report(samples, scrapes).failures() == []

    # RSS: a leak of 1.5 MiB over the judged window fails; a one-sample spike (a request in flight) does not.
    leaking = [_sample(s.at, rss_mib=80 + 1.5 * max(0, s.at - 10) / 30) for s in samples]
    assert _report(leaking, scrapes).rss_growth_mib == pytest.approx(1.4)  # levels: median of 3 samples
    assert "RSS grew 1.40 MiB" in " ".join(_report(leaking, scrapes).failures())
    # One sample up (a buffer in flight) or down (file pages reclaimed for a moment) is not growth;
    # nor is an fd open only while a request is.
    spiky = [_sample(s.at, rss_mib={11: 78.5, 38: 90}.get(s.at, 80), fds=101 if s.at == 39 else 100)
             for s in samples]
    assert _report(spiky, scrapes).failures() == []

    # fds: one descriptor more for good, late in the run, fails.
    late_fd = [_sample(s.at, fds=101 if s.at >= 30 else 100) for s in samples]
    assert _report(late_fd, scrapes).failures() == ["1 more open file descriptor(s) than after the warm-up"]

    # Missed intervals while the agent had the CPU fail; the same misses while the run queue kept the
    # agent waiting (a busy machine) are the machine's doing.
    def missing(run_queue_wait):
        waited = [_sample(s.at, run_queue_wait=run_queue_wait if s.at >= 25 else 0.0) for s in samples]
        return [soak.Scrape(s.at, s.collections - (3 if s.at >= 25 else 0), 3 if s.at >= 25 else 0,
                            waited[int(s.at)]) for s in scrapes]
    assert _report(samples, missing(0.1)).failures() == ["3 interval(s) missed while the agent had the CPU"]
    assert _report(samples, missing(2.0)).failures() == []

    # Collections that fall behind elapsed time without the counter saying so: the counter lies.
    silent = [soak.Scrape(s.at, s.collections - (5 if s.at >= 25 else 0), 0, s.sample) for s in scrapes]
    assert "neither collections nor counted" in " ".join(_report(samples, silent).failures())


def test_missed_intervals_counts_the_intervals_a_suspended_agent_skipped(tmp_path):
    """SIGSTOP holds the agent for 1.5 s (8 intervals of 0.2 s); the counter and the log must say so."""
    port, interval, held = free_port(), 0.2, 1.5
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "w") as stderr:
        agent = subprocess.Popen([sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge",
                                  "--interval", str(interval), "--exporters", "prometheus",
                                  "--prometheus-address", f"127.0.0.1:{port}"], env=env, stderr=stderr)
    try:
        wait_until(lambda: soak.scrape_counters(port) is not None, 60, "the agent's counters")
        before_at, before = time.monotonic(), soak.scrape_counters(port)
        agent.send_signal(signal.SIGSTOP)
        time.sleep(held)
        agent.send_signal(signal.SIGCONT)

        def counted():  # the agent ran again and counted the intervals it slept through: (when, counters)
            counters = soak.scrape_counters(port)
            return (time.monotonic(), counters) if counters and counters[soak.MISSED] > before[soak.MISSED] else ()

        after_at, after = wait_until(counted, 30, "the suspended intervals counted", every=interval)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    missed = after[soak.MISSED] - before[soak.MISSED]
    collected = after[soak.COLLECTIONS] - before[soak.COLLECTIONS]
    assert missed >= int(held / interval) - 1
    # Every interval of elapsed time is either a collection or a counted miss (scrape timing: +-2).
    assert abs((after_at - before_at) / interval - (collected + missed)) <= 2
    # The counter and the agent's warnings agree (the log may have one more if it fell behind again).
    assert soak.logged_missed(stderr_path.read_text()) >= after[soak.MISSED] >= missed


def test_shortened_soak_holds_the_bounds_of_the_ten_minute_one(capsys):
    settings = soak.Settings(interval=0.25, duration=45, warmup=15, scrape_every=3, sample_every=1,
                             tolerated_misses=1)
    report = soak.run_soak(settings)
    summary = soak.summary(report)
    with capsys.disabled():
        print("\n" + soak.table(report) + "\n" + summary)
    assert report.failures() == [], summary
    # The exporters were busy throughout: OTLP carried the last collections and CloudWatch every rate.
    final = report.scrapes[-1].collections
    assert report.peers["otlp_collections"] >= final - 2, summary
    assert report.peers["cloudwatch_rx_bytes_rate_samples"] >= final - 3, summary
