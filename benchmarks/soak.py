"""Soak: the whole agent for 10 minutes at a 1 s interval on a simulated p5.48xlarge (32 EFA devices).

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--warmup 60] [--interval 1]    (or: make soak)

Four processes: ``otel-efa simulate`` advances the tree; a peers process (this script, ``peers``) runs
the tests' gRPC OTLP receiver and a moto server for CloudWatch; ``otel-efa run --exporters
otlp,prometheus,log,cloudwatch`` is the agent under test; this process scrapes the agent's /metrics
every 15 s as Prometheus would and samples its RSS, open fds and threads from /proc every 2 s.

After the warm-up it judges, and exits 1 when one fails:
- RSS growth < 1 MiB and no fd growth, each the level of the last samples minus the level of the
  first samples after the warm-up. The RSS level is the median of a few consecutive samples: a buffer
  that lives only while a request is in flight, or file-backed pages the kernel reclaims for a
  moment, move one sample, not the median. The fd level is their minimum: the agent's own fds (about
  1,200 counter files on a p5) stay open, and a socket of a request in flight only adds one for a
  moment. A leak raises both.
- No missed interval, read from outside: the agent's ``otel_efa_missed_intervals`` counter, and its
  ``otel_efa_collections`` against elapsed monotonic time (collections + missed intervals must
  account for every interval, so the counter cannot hide a gap).
  A missed interval is the agent's fault only if the agent had the CPU: when the machine runs other
  work, the kernel may keep the agent waiting on its run queue (``/proc/<pid>/task/*/schedstat``,
  second field) for longer than an interval, and the agent then rightly skips one. A window's missed
  intervals count against the agent unless its threads waited at least half an interval on the run
  queue per missed interval in that window. On a quiet machine the wait is ~0, so any miss fails.
Also shown: thread growth, CPU (% of a core and per interval), the agent's own warnings about
falling behind, and what the OTLP receiver and CloudWatch (moto) received.

While it runs, progress and the time left go to standard error (benchmarks/progress.py); the table of
scrapes and the verdict are printed to standard output at the end.

tests/test_soak.py runs the same code for ~45 s at a 0.25 s interval in ``make test``.
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from prometheus_client.parser import text_string_to_metric_families

from otel_efa.catalog import BY_NAME

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COLLECTIONS_NAME = "otel_efa_collections"
COLLECTIONS = BY_NAME[COLLECTIONS_NAME].prometheus_name
MISSED = BY_NAME["otel_efa_missed_intervals"].prometheus_name
INSTANCE_ID = "i-0500a1c0ffee50a4c"  # the CloudWatch InstanceId dimension (no IMDS here)
MIB = 1024 * 1024


@dataclass
class Settings:
    profile: str = "p5.48xlarge"
    interval: float = 1.0  # the agent's collection interval
    duration: float = 600.0  # seconds from the agent's start to the end
    warmup: float = 60.0  # seconds after the agent's start before the judged window opens
    scrape_every: float = 15.0
    sample_every: float = 2.0
    level_samples: int = 5  # a level is taken over this many consecutive samples
    exporters: str = "otlp,prometheus,log,cloudwatch"
    # Missed intervals forgiven when the run-queue wait does not explain them: 0 for the real soak. A late
    # wake-up the guest cannot see (the hypervisor's steal time, a stalled disk) is one interval at
    # 0.25 s, so the shortened form in make test forgives one; a regression misses many.
    tolerated_misses: int = 0


@dataclass
class Sample:
    """The agent process from /proc at one moment (monotonic seconds since the agent started)."""
    at: float
    rss_bytes: int
    fds: int
    threads: int
    cpu_seconds: float
    run_queue_wait: float  # seconds its threads spent runnable but not running, summed


@dataclass
class Scrape:
    at: float  # midway between sending the request and reading the answer
    collections: int
    missed: int
    sample: Sample


@dataclass
class Report:
    settings: Settings
    samples: List[Sample]
    scrapes: List[Scrape]
    peers: Dict[str, int] = field(default_factory=dict)
    logged_missed: int = 0  # sum of the agent's "fell N interval(s) behind" warnings
    agent_problems: List[str] = field(default_factory=list)  # its other WARNING/ERROR lines

    @property
    def judged_samples(self) -> List[Sample]:
        return [s for s in self.samples if s.at >= self.settings.warmup]

    @property
    def judged_scrapes(self) -> List[Scrape]:
        return [s for s in self.scrapes if s.at >= self.settings.warmup]

    def growth(self, measure: Callable[[Sample], float],
               level: Callable[[Sequence[float]], float] = statistics.median) -> float:
        """Level of the last samples minus level of the first samples after the warm-up."""
        values = [measure(s) for s in self.judged_samples]
        k = self.settings.level_samples
        return level(values[-k:]) - level(values[:k])

    @property
    def rss_growth_mib(self) -> float:
        return self.growth(lambda s: s.rss_bytes) / MIB

    @property
    def fd_growth(self) -> int:
        return int(self.growth(lambda s: s.fds, level=min))

    @property
    def thread_growth(self) -> int:
        return int(self.growth(lambda s: s.threads, level=min))

    @property
    def window_seconds(self) -> float:
        first, last = self.judged_scrapes[0], self.judged_scrapes[-1]
        return last.at - first.at

    @property
    def missed_intervals(self) -> int:
        first, last = self.judged_scrapes[0], self.judged_scrapes[-1]
        return last.missed - first.missed

    @property
    def collections(self) -> int:
        first, last = self.judged_scrapes[0], self.judged_scrapes[-1]
        return last.collections - first.collections

    @property
    def unaccounted_intervals(self) -> float:
        """Intervals of elapsed time neither collected nor counted missed (0 within scrape timing)."""
        return self.window_seconds / self.settings.interval - (self.collections + self.missed_intervals)

    def starved_windows(self) -> List[bool]:
        """Per pair of consecutive judged scrapes: did the run queue explain that window's misses?"""
        scrapes = self.judged_scrapes
        verdicts = []
        for before, after in zip(scrapes, scrapes[1:]):
            missed = after.missed - before.missed
            waited = after.sample.run_queue_wait - before.sample.run_queue_wait
            verdicts.append(missed > 0 and waited >= missed * self.settings.interval / 2)
        return verdicts

    @property
    def missed_by_agent(self) -> int:
        """Missed intervals in windows where the agent was not kept off the CPU."""
        scrapes = self.judged_scrapes
        return sum(after.missed - before.missed
                   for (before, after), starved in zip(zip(scrapes, scrapes[1:]), self.starved_windows())
                   if not starved)

    @property
    def cpu_percent(self) -> float:
        first, last = self.judged_samples[0], self.judged_samples[-1]
        return 100 * (last.cpu_seconds - first.cpu_seconds) / (last.at - first.at)

    @property
    def cpu_per_interval(self) -> float:
        """CPU seconds per interval, scrapes and exports included: how much of each interval the agent's
        own work takes (shown, not judged: speed is for benchmarks, not a pass/fail bound)."""
        return self.cpu_percent / 100 * self.settings.interval

    def failures(self) -> List[str]:
        """Why the soak failed; empty when it passed."""
        problems = []
        if len(self.judged_samples) < 2 * self.settings.level_samples or len(self.judged_scrapes) < 2:
            return ["too few samples after the warm-up to judge: lengthen the run"]
        if self.rss_growth_mib >= 1.0:
            problems.append(f"RSS grew {self.rss_growth_mib:.2f} MiB after the warm-up (bound: < 1 MiB)")
        if self.fd_growth > 0:
            problems.append(f"{self.fd_growth} more open file descriptor(s) than after the warm-up")
        if self.missed_by_agent > self.settings.tolerated_misses:
            problems.append(f"{self.missed_by_agent} interval(s) missed while the agent had the CPU")
        # The scrapes' own timing blurs the count by about one interval at each end.
        if abs(self.unaccounted_intervals) > 2:
            problems.append(f"{self.unaccounted_intervals:+.1f} interval(s) of elapsed time are neither "
                            f"collections nor counted in {MISSED}")
        return problems


# --- measuring --------------------------------------------------------------------------------------

def probe(pid: int, started: float) -> Sample:
    """RSS, fds, threads, CPU time and run-queue wait of a process, straight from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    tasks = os.listdir(f"/proc/{pid}/task")
    waited = 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                waited += int(f.read().split()[1])  # ns runnable but waiting for a CPU
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended between listdir and open
    return Sample(at=time.monotonic() - started, rss_bytes=rss, fds=len(os.listdir(f"/proc/{pid}/fd")),
                  threads=len(tasks), cpu_seconds=cpu, run_queue_wait=waited / 1e9)


def metric_values(body: str) -> Dict[str, float]:
    """Sample name -> value, for the unlabelled-by-us agent counters (summed over any scope labels)."""
    values: Dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in (COLLECTIONS, MISSED):
                values[sample.name] = values.get(sample.name, 0) + sample.value
    return values


def scrape_counters(port: int, timeout: float = 10) -> Optional[Dict[str, float]]:
    """The agent's collections and missed-interval counters from /metrics; None until both are there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            values = metric_values(response.read().decode())
    except OSError:
        return None
    return values if COLLECTIONS in values and MISSED in values else None


def logged_problems(stderr_text: str) -> List[str]:
    """The agent's WARNING and ERROR lines other than falling behind (those are counted apart)."""
    return [line for line in stderr_text.splitlines()
            if (" WARNING " in line or " ERROR " in line) and "interval(s) behind" not in line]


def logged_missed(stderr_text: str) -> int:
    total = 0
    for line in stderr_text.splitlines():
        if "interval(s) behind" in line:
            total += int(line.split("collection fell ", 1)[1].split()[0])
    return total


# --- processes --------------------------------------------------------------------------------------

def _stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_soak(settings: Settings, progress=None) -> Report:
    """Start simulator, peers and agent; measure; stop everything (also on failure); return the data.

    ``progress``: a benchmarks/progress.py Progress, told how far the run is after every sample."""
    cli = [sys.executable, "-m", "otel_efa"]
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="otel-efa-soak-"))
        root, log_file = os.path.join(work, "sys"), os.path.join(work, "efa_monitor.log")
        simulator = subprocess.Popen(cli + ["simulate", settings.profile, "--root", root, "--interval", "0.2"],
                                     stdout=subprocess.PIPE, text=True)
        stack.callback(_stop, simulator)
        simulator.stdout.readline()  # the tree is written
        peers = subprocess.Popen([sys.executable, os.path.abspath(__file__), "peers"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(_stop, peers)
        endpoints = json.loads(peers.stdout.readline())
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AWS_"))}
        env.update(endpoints["aws_environment"], AWS_ENDPOINT_URL=endpoints["cloudwatch"],
                   OTEL_RESOURCE_ATTRIBUTES=f"host.id={INSTANCE_ID}",
                   OTEL_EFA_OTLP_ENDPOINT=endpoints["otlp"], OTEL_EFA_OTLP_PROTOCOL="grpc")
        stderr_path = os.path.join(work, "agent.stderr")
        with open(stderr_path, "w") as stderr:
            agent = subprocess.Popen(cli + ["run", "--sysfs", root, "--instance-type", settings.profile,
                                            "--interval", str(settings.interval), "--exporters", settings.exporters,
                                            "--log-file", log_file, "--prometheus-address", f"127.0.0.1:{port}"],
                                     env=env, stderr=stderr)
        started = time.monotonic()
        stack.callback(_stop, agent)

        def agent_failed(what: str) -> RuntimeError:
            with open(stderr_path) as f:
                return RuntimeError(f"{what}; the agent's stderr ends:\n{f.read()[-3000:]}")

        if progress is not None:
            progress.update(0, settings.duration, left=settings.duration, note="the agent is starting")
        deadline = started + 60
        while scrape_counters(port) is None:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise agent_failed("the agent never served its counters")
            time.sleep(0.1)

        report = Report(settings, [], [])
        next_sample = time.monotonic()
        # Scrapes fall on warmup + n * scrape_every, so the judged window starts on a count.
        next_scrape = started + settings.warmup % settings.scrape_every
        while next_scrape < next_sample:
            next_scrape += settings.scrape_every
        while True:
            now = time.monotonic()
            if agent.poll() is not None:
                raise agent_failed(f"the agent exited ({agent.returncode}) during the soak")
            if now - started >= settings.duration:
                break
            if now >= next_sample:
                report.samples.append(probe(agent.pid, started))
                next_sample += settings.sample_every
                if progress is not None:
                    progress.update(round(now - started), settings.duration, left=settings.duration - (now - started),
                                    note=_progress_note(report))
            if now >= next_scrape:
                report.scrapes.append(_scrape(port, agent.pid, started, agent_failed))
                next_scrape += settings.scrape_every
            time.sleep(max(0.0, min(next_sample, next_scrape, started + settings.duration) - time.monotonic()))
        report.samples.append(probe(agent.pid, started))
        report.scrapes.append(_scrape(port, agent.pid, started, agent_failed))

        _stop(agent)
        with open(stderr_path) as f:
            stderr_text = f.read()
        report.logged_missed = logged_missed(stderr_text)
        report.agent_problems = logged_problems(stderr_text)
        peers.stdin.close()  # asks the peers for their counts, after the agent's final flush
        report.peers = json.loads(peers.stdout.readline() or "{}")
        return report


def _scrape(port: int, pid: int, started: float, agent_failed) -> Scrape:
    sent = time.monotonic()
    values = scrape_counters(port)
    if values is None:
        raise agent_failed("a scrape of /metrics failed")
    at = (sent + time.monotonic()) / 2 - started
    return Scrape(at, int(values[COLLECTIONS]), int(values[MISSED]), probe(pid, started))


# --- the peers process ------------------------------------------------------------------------------

def serve_peers() -> None:
    """The tests' own gRPC OTLP receiver (counting instead of keeping every request) and moto.

    Prints one JSON line with the endpoints, waits for stdin to close, then prints what it received.
    """
    sys.path.insert(0, TESTS)
    import boto3
    from aws_peers import FAKE_CREDENTIALS, REGION, Moto
    from aws_peers import statistics as cloudwatch_statistics
    from otlp_receiver import GrpcReceiver

    class CountingReceiver(GrpcReceiver):
        """Keeps a count and the newest otel_efa_collections seen: 10 minutes of requests would be GBs."""

        def __init__(self):
            self.count, self.collections = 0, 0
            super().__init__()

        def add(self, request, headers) -> None:
            newest = [metric.sum.data_points[0].as_int
                      for resource_metrics in request.resource_metrics
                      for scope_metrics in resource_metrics.scope_metrics
                      for metric in scope_metrics.metrics if metric.name == COLLECTIONS_NAME]
            with self.arrived:
                self.count += 1
                self.collections = max([self.collections] + newest)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    receiver = CountingReceiver()
    moto = Moto(_free_port()).start()
    try:
        client = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto.url,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        # moto builds its CloudWatch backend on the first request: seconds of CPU that, on a busy
        # machine, held the agent's first PutMetricData for the whole of a short run. CloudWatch is warm.
        client.list_metrics()
        print(json.dumps({"otlp": receiver.endpoint, "cloudwatch": moto.url,
                          "aws_environment": dict(FAKE_CREDENTIALS, AWS_REGION=REGION)}), flush=True)
        sys.stdin.read()
        points = cloudwatch_statistics(client, INSTANCE_ID, "rx_bytes_rate", ["SampleCount"])
        print(json.dumps({"otlp_requests": receiver.count, "otlp_collections": receiver.collections,
                          "cloudwatch_rx_bytes_rate_samples": int(sum(p["SampleCount"] for p in points))}),
              flush=True)
    finally:
        receiver.stop()
        moto.stop()


# --- output -----------------------------------------------------------------------------------------

def _header(settings: Settings) -> str:
    return (f"soak: otel-efa run --interval {settings.interval:g} --exporters {settings.exporters} on a simulated "
            f"{settings.profile}, {settings.duration:g} s, judged after {settings.warmup:g} s\n"
            f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'CPU %':>6} {'collections':>11} "
            f"{'missed':>6} {'run-queue wait (s)':>18}")


def _progress_note(report: Report) -> str:
    sample = report.samples[-1]
    counted = f", {report.scrapes[-1].collections} collections, {report.scrapes[-1].missed} missed" \
        if report.scrapes else ""
    phase = " (warm-up)" if sample.at < report.settings.warmup else ""
    return f"RSS {sample.rss_bytes / MIB:.1f} MiB, {sample.fds} fds{counted}{phase}"


def table(report: Report) -> str:
    """The header and one row per scrape: what the agent looked like from outside over the run."""
    previous: List[Optional[Scrape]] = [None] + list(report.scrapes[:-1])
    return "\n".join([_header(report.settings)] + [_row(report, scrape, before)
                                                   for scrape, before in zip(report.scrapes, previous)])


def _row(report: Report, scrape: Scrape, before: Optional[Scrape]) -> str:
    previous = before.sample if before is not None else None
    s = scrape.sample
    cpu = (100 * (s.cpu_seconds - previous.cpu_seconds) / (s.at - previous.at)
           if previous is not None and s.at > previous.at else float("nan"))
    mark = " (warm-up)" if scrape.at < report.settings.warmup else ""
    return (f"{scrape.at:7.1f} {s.rss_bytes / MIB:8.2f} {s.fds:5d} {s.threads:7d} {cpu:6.2f} "
            f"{scrape.collections:11d} {scrape.missed:6d} {s.run_queue_wait:18.3f}{mark}")


def summary(report: Report) -> str:
    starved = sum(report.starved_windows())
    lines = [
        f"judged window      {report.window_seconds:.0f} s, {len(report.judged_samples)} samples",
        f"RSS growth         {report.rss_growth_mib:+.2f} MiB (bound < 1 MiB; levels = median of "
        f"{report.settings.level_samples} samples)",
        f"fd growth          {report.fd_growth:+d} (bound 0; levels = minimum of {report.settings.level_samples} "
        f"samples)",
        f"thread growth      {report.thread_growth:+d} (shown, not judged)",
        f"CPU                {report.cpu_percent:.2f} % of one core, "
        f"{report.cpu_per_interval * 1000:.1f} ms per interval",
        f"collections        {report.collections} in {report.window_seconds:.1f} s at {report.settings.interval:g} s",
        f"missed intervals   {report.missed_intervals} ({report.missed_by_agent} while the agent had the CPU, "
        f"{starved} window(s) explained by run-queue wait); unaccounted {report.unaccounted_intervals:+.1f}",
        f"agent log          {report.logged_missed} interval(s) reported behind over the whole run",
        f"peers              {json.dumps(report.peers)}",
        f"agent warnings     {len(report.agent_problems)} other than falling behind",
        *("  " + line for line in report.agent_problems[:5]),
    ]
    failures = report.failures()
    lines.append("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["peers"]:
        serve_peers()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    parser.add_argument("--profile", default=defaults.profile)
    parser.add_argument("--minutes", type=float, default=defaults.duration / 60)
    parser.add_argument("--warmup", type=float, default=defaults.warmup, metavar="SECONDS")
    parser.add_argument("--interval", type=float, default=defaults.interval, metavar="SECONDS")
    parser.add_argument("--scrape-every", type=float, default=defaults.scrape_every, metavar="SECONDS")
    parser.add_argument("--sample-every", type=float, default=defaults.sample_every, metavar="SECONDS")
    parser.add_argument("--exporters", default=defaults.exporters)
    args = parser.parse_args(argv)
    settings = Settings(profile=args.profile, interval=args.interval, duration=args.minutes * 60,
                        warmup=args.warmup, scrape_every=args.scrape_every, sample_every=args.sample_every,
                        exporters=args.exporters)
    from progress import Progress  # benchmarks/, this script's directory

    progress = Progress(f"soak ({settings.duration:g} s, judged after {settings.warmup:g} s)", unit="s")
    report = run_soak(settings, progress)
    progress.finish()
    print(table(report))
    print(summary(report))
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
