"""The Prometheus endpoint under hostile and heavy clients, the agent as the unit runs it (32 EFA devices).

    .venv/bin/python benchmarks/endpoint_hostile.py [--baseline-tree DIR] [--rounds 5]

``otel-efa run --exporters prometheus,otlp`` on a simulated p5.48xlarge (32 devices, ``otel-efa simulate``
in its own process), exporting OTLP to the tests' gRPC receiver in another process (as
benchmarks/agent_footprint.py does). Three phases, each against a fresh agent:

1. 150 idle connections held open (half of them mid-request): scrape latency (max of 20 scrapes) and the
   agent's thread count (/proc/PID/status Threads; the unit's TasksMax=64).
2. 30 concurrent header floods (100 headers of 60 KiB each): the agent's RSS growth (VmRSS after minus
   before; MemoryMax=256M) and the statuses the flooders got.
3. 200 concurrent scrapers, ``--rounds`` times, asking gzip as Prometheus does, then plain text: scrape
   latency p50/p99/max (the clients are Python threads on the same cores: their own time is in it).

With ``--baseline-tree DIR`` (a checkout of an older otel_efa, e.g. ``git worktree add /tmp/old ddf3c6e``)
the same phases run against that tree's agent in the same run, side by side, with ratios.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{name}:\s+(\d+)", f.read(), re.M).group(1))


def scrape(port: int, timeout: float = 30.0, gzipped: bool = False) -> float:
    """Seconds for one whole scrape (connect, request, body); ``gzipped`` asks as Prometheus does."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept-Encoding": "gzip"} if gzipped else {})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
    return time.perf_counter() - started


class Agent:
    """The agent of one tree (``cwd`` decides which otel_efa ``-m`` finds) on a moving simulated p5."""

    def __init__(self, tree: str, root: str, otlp_port: int, work: str):
        self.port = free_port()
        env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}")
        env.pop("PYTHONPATH", None)
        self.stderr = open(os.path.join(work, f"agent-{self.port}.stderr"), "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_efa", "run", "--sysfs", root, "--instance-type", "p5.48xlarge",
             "--interval", "1", "--exporters", "prometheus,otlp", "--prometheus-address", f"127.0.0.1:{self.port}"],
            cwd=tree, env=env, stderr=self.stderr)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                    if b"efa_rx_bytes" in r.read():
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the agent did not serve EFA series within 120 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def idle_connections(agent: Agent) -> Dict[str, float]:
    idle = [socket.create_connection(("127.0.0.1", agent.port), timeout=30) for _ in range(150)]
    try:
        for sock in idle[::2]:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        latencies = [scrape(agent.port) for _ in range(20)]
        return {"scrape max ms": 1000 * max(latencies), "threads": status_field(agent.process.pid, "Threads")}
    finally:
        for sock in idle:
            sock.close()


def flood(port: int) -> str:
    header = b"X-Flood: " + b"f" * (60 * 1024) + b"\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            for _ in range(100):
                sock.sendall(header)
            sock.sendall(b"\r\n")
            return sock.recv(64).split(b" ")[1].decode()
    except (OSError, IndexError) as e:
        return type(e).__name__


def header_floods(agent: Agent) -> Dict[str, float]:
    before = status_field(agent.process.pid, "VmRSS")
    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(lambda _: flood(agent.port), range(30)))
    after = status_field(agent.process.pid, "VmRSS")
    counts: Dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return {"RSS growth MiB": (after - before) / 1024, "statuses": counts}


def concurrent_scrapers(agent: Agent, rounds: int, gzipped: bool) -> Dict[str, float]:
    latencies: List[float] = []
    failures = 0
    with ThreadPoolExecutor(200) as pool:
        for _ in range(rounds):
            barrier = threading.Barrier(200)

            def one(_, barrier=barrier):
                barrier.wait()
                try:
                    return scrape(agent.port, gzipped=gzipped)
                except OSError:
                    return None

            for result in pool.map(one, range(200)):
                if result is None:
                    failures += 1
                else:
                    latencies.append(result)
    latencies.sort()
    return {"p50 ms": 1000 * statistics.median(latencies), "p99 ms": 1000 * latencies[int(0.99 * len(latencies)) - 1],
            "max ms": 1000 * latencies[-1], "failed": failures}


def phases(rounds: int) -> List[Tuple[str, Callable[[Agent], Dict]]]:
    return [("150 idle connections", idle_connections), ("30 header floods", header_floods),
            ("200 concurrent scrapers, gzip", lambda a: concurrent_scrapers(a, rounds, True)),
            ("200 concurrent scrapers, plain", lambda a: concurrent_scrapers(a, rounds, False))]


def run_tree(name: str, tree: str, root: str, otlp_port: int, work: str, rounds: int,
             phase_done: Callable[[str], None]) -> Dict[str, Dict]:
    results = {}
    for phase, measure in phases(rounds):
        agent = Agent(tree, root, otlp_port, work)
        try:
            results[phase] = measure(agent)
        finally:
            agent.stop()
        phase_done(f"{name}: {phase}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-tree", help="a checkout of an older otel_efa to run side by side")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 200 concurrent scrapes")
    args = parser.parse_args()
    from progress import Progress  # benchmarks/, this script's directory

    progress = Progress("endpoint_hostile", unit="phases")
    trees = [("this tree", REPO)] + ([("baseline", args.baseline_tree)] if args.baseline_tree else [])
    total, done = len(trees) * len(phases(args.rounds)), []

    def phase_done(what: str) -> None:
        done.append(what)
        progress.update(len(done), total, note=f"{what} done")

    progress.update(0, total, note="starting the simulator and the OTLP sink")
    with tempfile.TemporaryDirectory(prefix="endpoint-hostile-") as work:
        root = os.path.join(work, "sys")
        simulator = subprocess.Popen([sys.executable, "-m", "otel_efa", "simulate", "p5.48xlarge", "--root", root,
                                      "--devices", "32", "--interval", "0.25"], cwd=REPO, stdout=subprocess.PIPE)
        sink = subprocess.Popen([sys.executable, os.path.join(REPO, "benchmarks", "agent_footprint.py"),
                                 "--otlp-sink", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            simulator.stdout.readline()
            otlp_port = json.loads(sink.stdout.readline())[0]
            results = {name: run_tree(name, tree, root, otlp_port, work, args.rounds, phase_done)
                       for name, tree in trees}
        finally:
            simulator.terminate()
            sink.stdin.close()
            simulator.wait(15)
            sink.wait(15)
    progress.finish()
    print(f"\notel-efa run --exporters prometheus,otlp, simulated p5.48xlarge (32 devices), {os.cpu_count()} cores")
    for phase in results["this tree"]:
        print(f"{phase}:")
        for name, tree_results in results.items():
            print(f"  {name:>10}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in tree_results[phase].items()))
    if "baseline" in results:
        ours, base = results["this tree"], results["baseline"]
        print(f"threads with 150 idle connections: baseline / ours x"
              f"{base['150 idle connections']['threads'] / ours['150 idle connections']['threads']:.1f}")
        for kind in ("gzip", "plain"):
            phase = f"200 concurrent scrapers, {kind}"
            print(f"p99 of {phase}: baseline / ours x{base[phase]['p99 ms'] / ours[phase]['p99 ms']:.1f}")


if __name__ == "__main__":
    main()
