"""CPU per collection of each of the agent's threads, at compare_node_exporter.py's pace.

    .venv/bin/python benchmarks/agent_threads.py [--profile p5.48xlarge] [--interval 0.2] [--seconds 30]
                                                 [--exporters prometheus,otlp] [--scrapes 1]

One simulated node (``otel-efa simulate``, its own process), one ``otel-efa run --exporters <set>`` on it,
exporting OTLP/gRPC to compare_node_exporter.py's counting sink (another process) and scraped ``--scrapes``
times per interval; CPU of each thread from ``/proc/<pid>/task/<tid>/stat`` (utime + stime, 10 ms ticks)
over ``--seconds``, divided by the collections counted in that window. The collection loop is the main
thread; the others are named by what their exporter set adds (run with ``--exporters prometheus`` to tell
the endpoint's thread from the OTLP worker), and ``--scrapes 2`` shows what serving a page already rendered
costs (the second scrape of an interval).
"""
import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from typing import Dict, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE, os.path.join(os.path.dirname(HERE), "tests")]

from compare_node_exporter import AgentProcess, get, paced, stop  # noqa: E402


def thread_ticks(pid: int) -> Dict[int, Tuple[int, int]]:
    """tid -> (utime, stime) in clock ticks, for every live thread of ``pid``."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks[int(tid)] = (int(fields[11]), int(fields[12]))
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--interval", type=float, default=0.2, help="agent interval (s), as compare_node_exporter")
    parser.add_argument("--seconds", type=float, default=30, help="measured window (default 30)")
    parser.add_argument("--exporters", default="prometheus,otlp")
    parser.add_argument("--scrapes", type=int, default=1, help="scrapes per interval (default 1)")
    args = parser.parse_args()
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryDirectory() as work, ExitStack() as running:
        root = os.path.join(work, "sys")
        simulator = subprocess.Popen([sys.executable, "-m", "otel_efa", "simulate", args.profile, "--root", root,
                                      "--interval", "0.2"], stdout=subprocess.PIPE, text=True)
        running.callback(stop, simulator)
        simulator.stdout.readline()  # the tree is written
        sink = subprocess.Popen([sys.executable, os.path.join(HERE, "compare_node_exporter.py"), "--otlp-sink"],
                                stdout=subprocess.PIPE, text=True)
        running.callback(stop, sink)
        agent = AgentProcess(root, args.profile, args.interval, args.exporters, int(sink.stdout.readline()),
                             os.path.join(work, "agent.log"))
        running.callback(stop, agent.process)
        agent.wait_ready()
        pid = agent.process.pid
        first, before = agent.collections(), thread_ticks(pid)
        paced(int(args.seconds / args.interval), args.interval, lambda: [get(agent.url) for _ in range(args.scrapes)])
        after, counted = thread_ticks(pid), agent.collections() - first
    print(f"{args.profile}, --exporters {args.exporters}, {counted:.0f} collections at {args.interval:g} s, "
          f"{args.scrapes} scrape(s) each; CPU ms per collection")
    print(f"{'thread':>16}{'user':>8}{'system':>8}{'total':>8}")
    total = 0.0
    for tid in sorted(after, key=lambda t: (t != pid, t)):
        user, system = (tick_ms * (now - before.get(tid, (0, 0))[i]) / counted for i, now in enumerate(after[tid]))
        total += user + system
        label = "collection loop" if tid == pid else f"thread {tid}"
        print(f"{label:>16}{user:>8.2f}{system:>8.2f}{user + system:>8.2f}")
    print(f"{'all':>16}{'':>16}{total:>8.2f}")


if __name__ == "__main__":
    main()
