"""The whole agent's CPU, memory and start-up on a simulated p5.48xlarge, against the number of EFA devices.

    .venv/bin/python benchmarks/agent_footprint.py [--devices 4,16,32] [--intervals 1,60] [--seconds 300]
                                                   [--exporters otlp,prometheus,log [--exporters ...]]
                                                   [--otlp-protocol grpc|http/protobuf]

Every configuration (devices x interval x exporter set) is ``otel-efa run --exporters <set>`` (by default
``otlp,prometheus,log``) in its own process, on its own tree kept moving by its own ``otel-efa simulate
--devices N`` process, so each agent has its own /proc accounting and the simulators' writing is not in it.
The OTLP receiver (the tests' gRPC ``MetricsServiceServicer``) runs in one more process, and this script
scrapes each agent's /metrics every 15 s as a Prometheus server would; neither's CPU is counted. When a set
has ``cloudwatch``, the receiver process also runs moto's CloudWatch (``moto.server``, the stand-in the
tests use at the AWS boundary) and those agents publish to it with test credentials.

What CloudWatch adds to the memory, for instance (issue 14: RSS at most 40 MiB at 32 devices):

    .venv/bin/python benchmarks/agent_footprint.py --devices 32 --intervals 1 --seconds 120 \
        --exporters prometheus,otlp --exporters prometheus,otlp,cloudwatch

The agents start one after another (start-up is timed on a machine that is not starting five other
Pythons), then run concurrently. Start-up is process start to the first OTLP request the receiver gets,
and to the first /metrics scrape that carries EFA series. The steady state is measured over whole
intervals, from half an interval after a collection once ``--warmup`` has passed, so start-up CPU is not
in it: 300 s by default, i.e. 300 collections at 1 s and 5 at 60 s, 20 scrapes each. CPU per
collection is the window's CPU over its collections, scrapes and idle threads included. With the
defaults the whole run takes about 6 minutes.
"""
import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from otel_efa.catalog import PORT_COUNTERS  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EXPORTERS = "otlp,prometheus,log"
# What an agent publishing to the receiver process's moto needs (no real account, no IMDS).
CLOUDWATCH_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                          "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1",
                          "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
# A scrape "has EFA series" once a port counter is in it, i.e. after the agent's first collection.
EFA_SERIES = next(m.prometheus_name for m in PORT_COUNTERS if m.kernel_name == "rx_bytes").encode() + b"{"


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread the process has had, live or ended."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def otlp_sink(count: int, moto_port: int = 0, protocol: str = "grpc") -> None:
    """The receiver process: ``count`` OTLP receivers of ``protocol`` (and moto's server on ``moto_port``
    unless 0); their ports on the first line, then, once stdin closes, each one's first arrival (monotonic,
    the same clock in every process), request count and the number of points in its last request."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from otlp_receiver import GrpcReceiver, HttpReceiver, points

    moto = None
    if moto_port:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on our output
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()

    class CountingReceiver(GrpcReceiver if protocol == "grpc" else HttpReceiver):  # type: ignore[misc]
        """Keeps what the benchmark needs, not every request (hours of 1 s exports would pile up)."""

        first: Optional[float] = None
        count = 0
        last = None

        def add(self, request, headers) -> None:
            with self.arrived:
                self.first = self.first or time.monotonic()
                self.count += 1
                self.last = request

    receivers = [CountingReceiver() for _ in range(count)]
    print(json.dumps([r.port for r in receivers]), flush=True)
    sys.stdin.read()
    print(json.dumps([{"first": r.first, "requests": r.count, "points": len(points(r.last)) if r.last else 0}
                      for r in receivers]), flush=True)
    for receiver in receivers:
        receiver.stop()
    if moto is not None:
        moto.stop()


@dataclass
class Run:
    """One configuration: its processes, then what was measured."""

    devices: int
    interval: float
    work: str
    otlp_port: int
    exporters: str = EXPORTERS
    simulator: Optional[subprocess.Popen] = None
    agent: Optional[subprocess.Popen] = None
    prometheus_port: int = 0
    launched: float = 0.0
    first_scrape: float = 0.0
    startup_cpu: float = 0.0  # CPU seconds from launch to the first scrape with EFA series
    collections: int = 0
    scrapes: int = 0
    cpu: float = 0.0
    elapsed: float = 0.0
    rss: float = 0.0
    peak_rss: float = 0.0
    first_otlp: Optional[float] = None
    otlp_requests: int = 0
    otlp_points: int = 0
    skipped: int = 0  # intervals the agent logged as skipped (a machine too busy to keep the schedule)
    ends_at: Optional[float] = None  # monotonic time the measuring window closes, once it is known

    @property
    def name(self) -> str:
        return f"{self.devices} devices, {self.interval:g} s, {self.exporters}"

    @property
    def root(self) -> str:
        return os.path.join(self.work, "sys")

    @property
    def stderr_path(self) -> str:
        return os.path.join(self.work, "agent.stderr")

    def agent_failed(self) -> str:
        with open(self.stderr_path) as f:
            return f"{self.name}: the agent exited with {self.agent.returncode}:\n{f.read()[-2000:]}"

    def count_skipped_intervals(self) -> None:
        with open(self.stderr_path) as f:
            self.skipped = sum("fell" in line and "behind" in line for line in f)


def cli() -> List[str]:
    return [sys.executable, "-m", "otel_efa"]


def start_simulator(run: Run, profile: str) -> None:
    os.makedirs(run.work)
    tick = min(1.0, run.interval / 4)  # several ticks per interval: every collection sees counters move
    run.simulator = subprocess.Popen(cli() + ["simulate", profile, "--root", run.root, "--devices",
                                              str(run.devices), "--interval", str(tick)],
                                     stdout=subprocess.PIPE, text=True)


def scrape(run: Run) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{run.prometheus_port}/metrics", timeout=10) as response:
        return response.read()


def start_agent(run: Run, profile: str, timeout: float = 120, moto_port: int = 0, protocol: str = "grpc") -> None:
    """Launch the agent and wait for its first /metrics with EFA series in it."""
    run.prometheus_port = free_port()
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true", OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
               OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{run.otlp_port}")
    if "cloudwatch" in run.exporters.split(","):
        env.update(CLOUDWATCH_ENVIRONMENT, AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}",
                   OTEL_RESOURCE_ATTRIBUTES="host.id=i-0123456789abcdef0")  # the InstanceId dimension, no IMDS
    command = cli() + ["run", "--sysfs", run.root, "--instance-type", profile, "--interval", f"{run.interval:g}",
                       "--exporters", run.exporters, "--log-file", os.path.join(run.work, "efa_monitor.log"),
                       "--prometheus-address", f"127.0.0.1:{run.prometheus_port}"]
    with open(run.stderr_path, "w") as stderr:
        run.launched = time.monotonic()
        run.agent = subprocess.Popen(command, env=env, stderr=stderr)
    while time.monotonic() - run.launched < timeout:
        if run.agent.poll() is not None:
            raise RuntimeError(run.agent_failed())
        try:
            if EFA_SERIES in scrape(run):
                run.first_scrape = time.monotonic()
                run.startup_cpu = cpu_seconds(run.agent.pid)
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{run.name}: no EFA series on /metrics within {timeout:g} s")


def measure(run: Run, seconds: float, warmup: float, scrape_every: float) -> None:
    """Scrape every ``scrape_every`` s; read CPU over whole intervals, starting half an interval after a
    collection (collections fall on the first scrape's phase) once ``warmup`` s have passed; then stop it."""
    interval = run.interval
    start = run.first_scrape + (max(0, math.ceil(warmup / interval - 0.5)) + 0.5) * interval
    run.collections = max(1, round(seconds / interval))
    end = run.ends_at = start + run.collections * interval
    next_scrape = run.first_scrape + scrape_every
    cpu_start = started = None
    while True:
        now = time.monotonic()
        if run.agent.poll() is not None:
            raise RuntimeError(run.agent_failed())
        if cpu_start is None and now >= start:
            cpu_start, started = cpu_seconds(run.agent.pid), now
        if now >= end:
            run.cpu, run.elapsed = cpu_seconds(run.agent.pid) - cpu_start, now - started
            run.rss, run.peak_rss = memory_mib(run.agent.pid, "VmRSS"), memory_mib(run.agent.pid, "VmHWM")
            break
        if now >= next_scrape:
            scrape(run)
            if cpu_start is not None:
                run.scrapes += 1
            next_scrape += scrape_every
        wake = min(next_scrape, end, start if cpu_start is None else end)
        time.sleep(max(0.0, wake - time.monotonic()))
    run.agent.terminate()
    run.agent.wait(15)
    run.count_skipped_intervals()


def stop(processes) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.terminate()
    for process in processes:
        if process is not None:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def report(runs: List[Run], args) -> None:
    print(f"\notel-efa run --exporters {' | '.join(args.exporters)} (OTLP over {args.otlp_protocol}) on a simulated "
          f"{args.profile} (first N devices); "
          f"{args.seconds:g} s measured after start-up + {args.warmup:g} s warm-up; /metrics scraped every "
          f"{args.scrape_every:g} s; all configurations concurrently on {os.cpu_count()} cores")
    print(f"{'exporters':<28} {'devices':>7} {'interval':>8} {'CPU % core':>10} {'CPU ms/coll':>11} {'RSS MiB':>8} "
          f"{'peak MiB':>8} {'start OTLP s':>12} {'start /metrics s':>16} {'start CPU s':>11} "
          f"{'collections':>11} {'scrapes':>7} {'OTLP pts':>8}")
    for run in sorted(runs, key=lambda r: (r.exporters, r.interval, r.devices)):
        otlp = f"{run.first_otlp - run.launched:12.2f}" if run.first_otlp else f"{'none':>12}"
        print(f"{run.exporters:<28} {run.devices:>7} {run.interval:>7g}s {100 * run.cpu / run.elapsed:>10.2f} "
              f"{1000 * run.cpu / run.collections:>11.1f} {run.rss:>8.1f} {run.peak_rss:>8.1f} {otlp} "
              f"{run.first_scrape - run.launched:>16.2f} {run.startup_cpu:>11.2f} "
              f"{run.collections:>11} {run.scrapes:>7} {run.otlp_points:>8}")
    fewest, most = min(args.devices), max(args.devices)
    if fewest != most:
        for exporters in args.exporters:
            for interval in args.intervals:
                small, big = (next(r for r in runs if (r.devices, r.interval, r.exporters) == (n, interval, exporters))
                              for n in (fewest, most))
                per_collection = (big.cpu / big.collections) / max(small.cpu / small.collections, 1e-9)
                print(f"{exporters}: {most} vs {fewest} devices at {interval:g} s: CPU per collection "
                      f"x{per_collection:.2f}, RSS x{big.rss / small.rss:.2f} (+{big.rss - small.rss:.1f} MiB)")
    first = args.exporters[0]
    for exporters in args.exporters[1:]:
        for interval in args.intervals:
            for devices in args.devices:
                base, other = (next(r for r in runs if (r.devices, r.interval, r.exporters) == (devices, interval, e))
                               for e in (first, exporters))
                print(f"{exporters} vs {first} at {devices} devices, {interval:g} s: RSS {other.rss - base.rss:+.1f} "
                      f"MiB (peak {other.peak_rss - base.peak_rss:+.1f}), CPU per collection "
                      f"{1000 * (other.cpu / other.collections - base.cpu / base.collections):+.2f} ms")
    for run in runs:
        if run.skipped:
            print(f"note: {run.name}: the agent logged {run.skipped} skipped interval(s) (a busy machine)")
        if run.otlp_requests < run.collections:
            print(f"note: {run.name}: only {run.otlp_requests} OTLP requests for {run.collections} collections")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--devices", default="4,16,32", type=lambda s: [int(n) for n in s.split(",")],
                        help="comma list of device counts (the profile's first N devices)")
    parser.add_argument("--intervals", default="1,60", type=lambda s: [float(n) for n in s.split(",")],
                        help="comma list of collection intervals, seconds")
    parser.add_argument("--seconds", type=float, default=300, help="steady-state window per configuration")
    parser.add_argument("--warmup", type=float, default=10, help="seconds after start-up before measuring")
    parser.add_argument("--scrape-every", type=float, default=15)
    parser.add_argument("--exporters", action="append",
                        help=f"an --exporters set for the agents, repeatable: each set is run at every device count "
                             f"and interval (default {EXPORTERS})")
    parser.add_argument("--otlp-protocol", choices=("grpc", "http/protobuf"), default="grpc",
                        help="the agents' OTLP protocol, and the receiver's (default grpc)")
    parser.add_argument("--otlp-sink", type=int, help=argparse.SUPPRESS)  # the receiver process
    parser.add_argument("--moto-port", type=int, default=0, help=argparse.SUPPRESS)  # its moto server
    args = parser.parse_args()
    if args.otlp_sink is not None:
        otlp_sink(args.otlp_sink, args.moto_port, args.otlp_protocol)
        return
    from progress import Progress  # benchmarks/, this script's directory

    args.exporters = args.exporters or [EXPORTERS]
    moto_port = free_port() if any("cloudwatch" in e.split(",") for e in args.exporters) else 0

    configurations = sorted(((i, d, e) for i in args.intervals for d in args.devices for e in args.exporters),
                            reverse=True)
    runs: List[Run] = []
    with tempfile.TemporaryDirectory(prefix="agent-footprint-") as work, \
            ThreadPoolExecutor(max_workers=len(configurations)) as measuring:
        sink = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--otlp-sink", str(len(configurations)),
                                 "--moto-port", str(moto_port), "--otlp-protocol", args.otlp_protocol],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        try:
            ports = json.loads(sink.stdout.readline())
            # Longest intervals first: their windows take the longest to reach.
            for port, (interval, devices, exporters) in zip(ports, configurations):
                runs.append(Run(devices, interval, os.path.join(work, f"{devices}x{interval:g}x{len(runs)}"), port,
                                exporters))
                start_simulator(runs[-1], args.profile)
            for run in runs:
                if not run.simulator.stdout.readline():  # a line once the tree is written
                    raise RuntimeError(f"{run.name}: the simulator exited with {run.simulator.wait()}")
            measured = []
            progress = Progress("agent_footprint", unit="configurations")
            for run in runs:
                progress.update(len(measured), len(runs), note=f"starting {run.name}")
                start_agent(run, args.profile, moto_port=moto_port, protocol=args.otlp_protocol)
                measured.append(measuring.submit(measure, run, args.seconds, args.warmup,
                                                 args.scrape_every))
            while True:
                done, pending = wait(measured, timeout=progress.every, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # a failure at once: the finally below stops the rest
                if not pending:
                    break
                ends = [run.ends_at for run in runs if run.ends_at is not None]
                left = max(ends) - time.monotonic() if len(ends) == len(runs) else None
                progress.update(len(done), len(runs), left=left, note="measuring all configurations at once")
            progress.finish()
            sink.stdin.close()
            for run, received in zip(runs, json.loads(sink.stdout.readline())):
                run.first_otlp, run.otlp_requests, run.otlp_points = (received["first"], received["requests"],
                                                                      received["points"])
        finally:  # the measuring threads see their agent gone and end
            stop([run.agent for run in runs])
            stop([run.simulator for run in runs] + [sink])
    report(runs, args)


if __name__ == "__main__":
    main()
