"""The whole agent's CPU and memory on a simulated p5.48xlarge (32 EFA devices).

    .venv/bin/python benchmarks/agent_footprint.py [--seconds 60] [--interval 1] [--scrape-every 15]

Runs ``otel-efa run --interval 1 --exporters prometheus,log`` as its own process against a tree that a
separate ``otel-efa simulate`` process keeps advancing (its CPU is not counted), scrapes /metrics every
15 s as a Prometheus server would, and reads the agent's CPU time and RSS from /proc.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--scrape-every", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "otel_efa"]
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    with tempfile.TemporaryDirectory() as work:
        root, log = os.path.join(work, "sys"), os.path.join(work, "efa_monitor.log")
        simulator = subprocess.Popen(cli + ["simulate", args.profile, "--root", root, "--interval", "0.2"],
                                     stdout=subprocess.PIPE, text=True)
        simulator.stdout.readline()  # the tree is written
        port = free_port()
        started = time.monotonic()
        agent = subprocess.Popen(cli + ["run", "--sysfs", root, "--instance-type", args.profile,
                                        "--interval", str(args.interval), "--exporters", "prometheus,log",
                                        "--log-file", log, "--prometheus-address", f"127.0.0.1:{port}"],
                                 env=env, stderr=subprocess.DEVNULL)
        while not (os.path.exists(log) and os.path.getsize(log) > 0):
            time.sleep(0.01)
        first_export = time.monotonic() - started
        time.sleep(args.warmup)
        cpu_start, t_start = cpu_seconds(agent.pid), time.monotonic()
        next_scrape, peak_rss, scrapes = t_start, 0.0, 0
        while time.monotonic() - t_start < args.seconds:
            if time.monotonic() >= next_scrape:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                    response.read()
                scrapes += 1
                next_scrape += args.scrape_every
            peak_rss = max(peak_rss, rss_mib(agent.pid))
            time.sleep(0.25)
        elapsed = time.monotonic() - t_start
        cpu = cpu_seconds(agent.pid) - cpu_start
        rss = rss_mib(agent.pid)
        agent.terminate()
        agent.wait(10)
        simulator.terminate()
        simulator.wait(10)
    print(f"agent: otel-efa run --interval {args.interval:g} --exporters prometheus,log on a simulated "
          f"{args.profile}, {elapsed:.0f} s measured after {args.warmup:g} s warm-up, {scrapes} scrapes")
    print(f"CPU                      {100 * cpu / elapsed:6.2f} % of one core")
    print(f"RSS                      {rss:6.1f} MiB (peak {peak_rss:.1f} MiB)")
    print(f"start-up to first line   {first_export:6.2f} s (two collections: the first gives no rate)")


if __name__ == "__main__":
    main()
