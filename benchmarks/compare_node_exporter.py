"""CPU per pass, side by side on one tree: node_exporter's infiniband scrape against the agent's cycle.

    .venv/bin/python benchmarks/compare_node_exporter.py [--profile p5.48xlarge] [--cycles 25]
                                                         [--interval 0.2] [--rounds 4]

One simulated node (``otel-efa simulate --infiniband-counters``, its own process, CPU not counted) carries
both the EFA ``hw_counters/`` the agent reads and, per port, as many classic InfiniBand ``counters/``
files (22 on a p5.48xlarge) as node_exporter's infiniband collector reads. In one run, with CPU from
``/proc/<pid>/stat`` (utime + stime, all threads, 10 ms ticks):

- node_exporter: Debian's ``prometheus-node-exporter --collector.disable-defaults --collector.infiniband
  --web.disable-exporter-metrics``, scraped ``--scrapes`` times, one scrape every ``--interval``. Its idle
  CPU is measured in the same round (it sits unscraped while the agents' windows run) and subtracted pro
  rata for its window; the output says how much that was.
- "cycle": ``otel-efa run --exporters prometheus``, never scraped: read + collect each interval.
- "cycle + Prometheus scrape": the same, scraped once per interval (as many scrapes as cycles).
- "full": ``otel-efa run --exporters prometheus,otlp``, scraped once per interval and exporting OTLP/gRPC
  every cycle to a sink in another process (``tests/otlp_receiver.py``'s ``GrpcReceiver`` run as this
  script's ``--otlp-sink``, counting only), so the receiver's CPU is not counted.
- the pread floor: this script itself ``os.pread``-ing every file the agent reads (the descriptors of a
  reader of the same tree: counters, port states), once per interval, CPU from ``time.thread_time``: what
  a pass costs with nothing but the syscalls the agent cannot avoid (and a Python loop around them).

The issue's target: the full cycle at most 0.5x node_exporter's scrape CPU; the ratios printed at the end
are the full cycle's to node_exporter and to the pread floor, both from the same rounds.

Each agent is paused (SIGSTOP) outside its own window, so a window has the machine to itself apart from the
simulator. An agent's CPU over its window is divided by the cycles it counted there (its
``otel_efa_collections`` before and after): everything the process does, idle threads included, is
charged to its cycles. A round is one window of each; the figures are medians over ``--rounds`` rounds, so
a noisy neighbour spoils a round, not the result.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from typing import Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE, os.path.join(REPO, "tests")]

from agent_footprint import cpu_seconds, free_port  # noqa: E402
from node_exporter_server import NodeExporter  # noqa: E402

COLLECTIONS = re.compile(r"^otel_efa_collections_total(?:\{[^}]*\})? (\S+)$", re.M)


def node_exporter_files(root: str) -> int:
    """Files procfs 0.8 (node_exporter 1.5) reads per scrape: per device board_id, fw_ver, hca_type; per
    port state, phys_state, rate and every file in counters/ (and counters_ext/). Checked with strace: 896
    files on a p5.48xlarge, plus 97 directory opens."""
    class_dir = os.path.join(root, "class", "infiniband")
    files = 0
    for device in os.listdir(class_dir):
        files += sum(os.path.exists(os.path.join(class_dir, device, f)) for f in ("board_id", "fw_ver", "hca_type"))
        ports = os.path.join(class_dir, device, "ports")
        for port in os.listdir(ports):
            files += 3
            for group in ("counters", "counters_ext"):
                if os.path.isdir(os.path.join(ports, port, group)):
                    files += len(os.listdir(os.path.join(ports, port, group)))
    return files


def agent_files(root: str) -> int:
    """Files the agent reads per cycle (its open descriptors after two reads)."""
    from otel_efa.node.sysfs import SysfsReader

    reader = SysfsReader(root)
    try:
        reader.read()
        reader.read()
        return len(reader.descriptors())
    finally:
        reader.close()


class PreadFloor:
    """The files the agent reads, kept open as the agent keeps them; a pass preads each once."""

    def __init__(self, root: str):
        from otel_efa.node.sysfs import READ_SIZE, SysfsReader

        self.reader = SysfsReader(root)
        self.reader.read()
        self.reader.read()
        self.fds = self.reader.descriptors()
        self.size = READ_SIZE

    def measure(self, passes: int, interval: float) -> float:
        """CPU ms per pass over ``passes`` passes, one every ``interval`` seconds."""
        fds, size, pread, used = self.fds, self.size, os.pread, [0.0]

        def one_pass() -> None:
            started = time.thread_time()
            for fd in fds:
                pread(fd, size, 0)
            used[0] += time.thread_time() - started

        paced(passes, interval, one_pass)
        return 1000 * used[0] / passes

    def close(self) -> None:
        self.reader.close()


def series(text: str, prefix: str = "") -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#") and line.startswith(prefix))


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def paced(count: int, interval: float, action: Callable[[], None]) -> float:
    """Call ``action`` ``count`` times, one every ``interval`` seconds; return the wall time taken."""
    started = time.monotonic()
    for i in range(count):
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        action()
    end = started + count * interval
    while time.monotonic() < end:  # the window is whole intervals, as for the agents
        time.sleep(end - time.monotonic())
    return time.monotonic() - started


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a paused agent could not act on SIGTERM
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_otlp_sink() -> None:
    """A gRPC OTLP receiver that only counts (``tests/otlp_receiver.py``'s servicer, nothing kept)."""
    from otlp_receiver import GrpcReceiver, points

    class CountingReceiver(GrpcReceiver):
        requests_seen = 0
        points_per_request = 0

        def add(self, request, headers) -> None:
            if self.requests_seen < 5:  # the first cycles carry no rates yet: the fullest of the first five
                self.points_per_request = max(self.points_per_request, len(points(request)))
            self.requests_seen += 1

    receiver = CountingReceiver()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(receiver.port, flush=True)
    done.wait()
    receiver.stop()
    print(json.dumps({"requests": receiver.requests_seen, "points": receiver.points_per_request}), flush=True)


# The agent runs measured: (key, row label, --exporters, scraped once per interval in its window).
AGENT_RUNS = (
    ("cycle", "otel-efa cycle (read + collect)", "prometheus", False),
    ("scraped", "otel-efa cycle + Prometheus scrape", "prometheus", True),
    ("full", "otel-efa cycle + Prometheus scrape + OTLP", "prometheus,otlp", True),
)


class AgentProcess:
    """``otel-efa run`` on the shared tree, paused (SIGSTOP) except during its own window, so that each
    window has the machine to itself apart from the simulator."""

    def __init__(self, root: str, profile: str, interval: float, exporters: str, sink_port: int, log: str):
        self.url = f"http://127.0.0.1:{free_port()}/metrics"
        self.log = log
        env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true",
                   OTEL_EFA_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_efa", "run", "--sysfs", root, "--instance-type", profile,
             "--interval", str(interval), "--exporters", exporters, "--log-level", "error",
             "--prometheus-address", self.url.split("/")[2]], env=env, stderr=open(log, "w"))

    def collections(self) -> float:
        return float(COLLECTIONS.search(get(self.url)).group(1))

    def wait_ready(self, timeout: float = 60) -> None:
        """Serving, and past the first cycles (the first gives no rate)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.collections() >= 3:
                    return
            except (OSError, AttributeError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the agent did not start")
            time.sleep(0.1)

    def measure(self, cycles: int, interval: float, scraped: bool) -> Tuple[float, float]:
        """(CPU ms per cycle, cycles counted) over ``cycles`` intervals (scraped once each if ``scraped``)."""
        self.process.send_signal(signal.SIGCONT)
        time.sleep(3 * interval)  # the catch-up cycle after the pause falls outside the window
        first = self.collections()
        time.sleep(0.02)  # that scrape's last bytes are out before the window opens
        before = cpu_seconds(self.process.pid)
        paced(cycles, interval, (lambda: get(self.url)) if scraped else (lambda: None))
        used = cpu_seconds(self.process.pid) - before
        counted = self.collections() - first
        self.process.send_signal(signal.SIGSTOP)
        return 1000 * used / counted, counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--cycles", type=int, default=25, help="agent cycles per window (default 25)")
    parser.add_argument("--scrapes", type=int, help="node_exporter scrapes per window (default: --cycles)")
    parser.add_argument("--interval", type=float, default=0.2, help="agent interval = scrape pacing (s)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of windows; medians are reported")
    parser.add_argument("--otlp-sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.otlp_sink:
        return serve_otlp_sink()
    from progress import Progress  # benchmarks/, this script's directory

    progress = Progress("compare_node_exporter", unit="windows")
    windows = args.rounds * (2 + len(AGENT_RUNS))  # node_exporter, each agent run, the pread floor
    progress.update(0, windows, note="starting the simulator, node_exporter and the agents")
    scrapes = args.scrapes or args.cycles
    results: Dict[str, List[float]] = {key: [] for key in ["node_exporter", "floor"] + [run[0] for run in AGENT_RUNS]}
    idle_shares: List[float] = []
    fewest_cycles = float(args.cycles)
    with tempfile.TemporaryDirectory() as work, ExitStack() as running:
        root = os.path.join(work, "sys")
        simulator = subprocess.Popen([sys.executable, "-m", "otel_efa", "simulate", args.profile, "--root", root,
                                      "--infiniband-counters", "--interval", "0.2"],
                                     stdout=subprocess.PIPE, text=True)
        running.callback(stop, simulator)
        simulator.stdout.readline()  # the tree is written
        sink = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--otlp-sink"],
                                stdout=subprocess.PIPE, text=True)
        running.callback(stop, sink)
        sink_port = int(sink.stdout.readline())
        exporter = NodeExporter(root, free_port())
        running.callback(exporter.stop)
        agents = {}
        for key, _, exporters, _ in AGENT_RUNS:
            agents[key] = AgentProcess(root, args.profile, args.interval, exporters, sink_port,
                                       os.path.join(work, f"{key}.log"))
            running.callback(stop, agents[key].process)
        for agent in agents.values():
            agent.wait_ready()
            agent.process.send_signal(signal.SIGSTOP)
        floor = PreadFloor(root)
        running.callback(floor.close)
        ne_text = exporter.scrape()
        agents["full"].process.send_signal(signal.SIGCONT)
        our_text = get(agents["full"].url)
        agents["full"].process.send_signal(signal.SIGSTOP)

        measured = 0
        progress.update(0, windows, note="measuring")
        for round_number in range(1, args.rounds + 1):
            before = cpu_seconds(exporter.pid)
            ne_wall = paced(scrapes, args.interval, exporter.scrape)
            ne_busy = cpu_seconds(exporter.pid) - before
            measured += 1
            progress.update(measured, windows, note=f"round {round_number} of {args.rounds}: node_exporter")
            idle_before, idle_started = cpu_seconds(exporter.pid), time.monotonic()
            for key, _, _, scraped in AGENT_RUNS:  # node_exporter sits idle meanwhile: its idle CPU
                per_cycle, counted = agents[key].measure(args.cycles, args.interval, scraped)
                results[key].append(per_cycle)
                fewest_cycles = min(fewest_cycles, counted)
                measured += 1
                progress.update(measured, windows, note=f"round {round_number} of {args.rounds}: {key}")
            results["floor"].append(floor.measure(args.cycles, args.interval))
            measured += 1
            progress.update(measured, windows, note=f"round {round_number} of {args.rounds}: pread floor")
            idle_rate = (cpu_seconds(exporter.pid) - idle_before) / (time.monotonic() - idle_started)
            results["node_exporter"].append(1000 * (ne_busy - idle_rate * ne_wall) / scrapes)
            idle_shares.append(idle_rate * ne_wall / ne_busy if ne_busy else 0.0)
        errors = {key: sum(" ERROR " in line for line in open(agent.log)) for key, agent in agents.items()}
        agent_file_count = agent_files(root)
        ne_file_count = node_exporter_files(root)
    sink_summary = json.loads(sink.stdout.readline() or "{}")
    progress.finish()

    medians = {key: statistics.median(values) for key, values in results.items()}
    ne = medians["node_exporter"]
    print(f"{args.profile}: one simulated tree; {args.rounds} rounds of {scrapes} node_exporter scrapes and "
          f"{args.cycles} cycles of each agent run, one every {args.interval:g} s; CPU from /proc/<pid>/stat")
    floor_ms = medians["floor"]
    print(f"{'':44}{'files/pass':>11}{'CPU ms/pass':>12}{'min..max':>15}{'series':>8}{'ours/ne':>9}"
          f"{'/floor':>8}")
    rows = [("node_exporter", "node_exporter 1.5, infiniband collector", ne_file_count,
             series(ne_text, "node_infiniband_")),
            ("floor", "pread floor (the agent's files, bare)", agent_file_count, "")]
    rows += [(key, label, agent_file_count, series(our_text) if key == "full" else "")
             for key, label, _, _ in AGENT_RUNS]
    for key, label, files, count in rows:
        spread = f"{min(results[key]):.2f}..{max(results[key]):.2f}"
        ratio = f"{medians[key] / ne:.2f}x"
        print(f"{label:44}{files:>11}{medians[key]:>12.2f}{spread:>15}{count:>8}{ratio:>9}"
              f"{medians[key] / floor_ms:>7.2f}x")
    full = medians["full"]
    verdict = "met" if full <= 0.5 * ne else "NOT met"
    print(f"full cycle / node_exporter: {full / ne:.2f}x (target at most 0.50x: {verdict}); "
          f"full cycle / pread floor: {full / floor_ms:.2f}x")
    print(f"per file read: node_exporter {1000 * ne / ne_file_count:.1f} us, full cycle "
          f"{1000 * full / agent_file_count:.1f} us, pread floor {1000 * floor_ms / agent_file_count:.1f} us")
    print(f"median of rounds; node_exporter idle CPU subtracted: {100 * statistics.median(idle_shares):.1f} % "
          f"of its window's CPU. OTLP sink: {sink_summary.get('requests', '?')} exports, "
          f"{sink_summary.get('points', '?')} points each. Series: Prometheus lines of one scrape.")
    if any(errors.values()):
        print(f"agent errors logged: {errors}")
    if fewest_cycles < 0.9 * args.cycles:
        print(f"warning: an agent window counted only {fewest_cycles:.0f} of {args.cycles} cycles (it fell "
              f"behind: the machine is busy); a longer --interval keeps a cycle within its interval")


if __name__ == "__main__":
    main()
