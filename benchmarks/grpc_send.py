"""The fast OTLP path's gRPC send, side by side: grpcio (the sender the agent had: a channel and a unary call
without serializer) against the agent's own client over h2 (otel_efa/exporters/grpc_client.py).

    .venv/bin/python benchmarks/grpc_send.py [--profile p5.48xlarge] [--rounds 300]

The body is a real export of the profile's simulated node (the agent's encoder). Both senders send it to one
receiver (grpcio's server) in another process, so its work is not counted; within every round each sender
sends a block of 10, in turn, so both see the same machine. CPU is this process's (all threads: grpcio's
core does its work on threads of its own), per send, the median over blocks; wall time likewise. Memory: a
fresh interpreter that imports one sender and sends once, its VmRSS before the import and after the send.
Paced: two fresh interpreters, one per sender, side by side, each sending once per interval as the agent
does; their whole CPU (grpcio's threads wake between exports too) per export.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from grpc_sink import grpc_sink  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402

from otel_efa import __version__  # noqa: E402
from otel_efa.exporters.otlp_encoder import OtlpEncoder  # noqa: E402
from otel_efa.exporters.otlp_transport import GRPC_EXPORT_METHOD, GrpcSender  # noqa: E402
from otel_efa.node.sysfs import SysfsReader  # noqa: E402
from otel_efa.pipeline.collector import Collector  # noqa: E402
from otel_efa.pipeline.instruments import EfaInstrumentor  # noqa: E402
from otel_efa.tools.simulator import Simulator  # noqa: E402

# The fresh interpreter of the memory figure: VmRSS (kB) before importing the sender and after one send.
RSS = """
import os, sys
def rss():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
import otel_efa.exporters.otlp  # what the agent has imported by then, whichever sender
before = rss()
port, which = int(sys.argv[1]), sys.argv[2]
sys.path.insert(0, sys.argv[3])
if which == "grpcio":
    from grpc_send import GrpcioSender as Sender
else:
    from otel_efa.exporters.otlp_transport import GrpcSender as Sender
Sender(f"http://127.0.0.1:{port}", (), 10.0, False, True).send(b"")
print(before, rss())
"""

# The agent's pace: one export per interval from a fresh interpreter holding only one sender, CPU counted over
# the whole run (grpcio's threads wake between exports too); prints CPU ms per export.
PACED = """
import sys, time
port, which, here, body_path, count, interval = sys.argv[1:]
sys.path.insert(0, here)
if which == "grpcio":
    from grpc_send import GrpcioSender as Sender
else:
    from otel_efa.exporters.otlp_transport import GrpcSender as Sender
body = open(body_path, "rb").read()
sender = Sender(f"http://127.0.0.1:{port}", (), 10.0, False, True)
sender.send(body)
started, next_send = time.process_time(), time.monotonic()
for _ in range(int(count)):
    next_send += float(interval)
    time.sleep(max(0.0, next_send - time.monotonic()))
    sender.send(body)
print((time.process_time() - started) * 1000 / int(count))
"""


class GrpcioSender:
    """What otlp_transport.GrpcSender was before the h2 client: grpcio's channel, a unary call of the bytes."""

    def __init__(self, endpoint: str, headers, timeout: float, gzip_compression: bool, insecure: bool):
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        import grpc

        compression = grpc.Compression.Gzip if gzip_compression else grpc.Compression.NoCompression
        self._channel = grpc.insecure_channel(endpoint.split("://", 1)[1], compression=compression,
                                              options=(("grpc.max_reconnect_backoff_ms", 5000),))
        self._export = self._channel.unary_unary(GRPC_EXPORT_METHOD)
        self._timeout = timeout
        self._metadata = tuple(headers)

    def send(self, body: bytes) -> bytes:
        return self._export(body, timeout=self._timeout, metadata=self._metadata)

    def close(self) -> None:
        self._channel.close()


def export_body(profile: str) -> bytes:
    with tempfile.TemporaryDirectory() as root, Simulator(profile, root):
        collector = Collector(SysfsReader(root), profile)
        collector.collect()
        instrumentor = EfaInstrumentor()
        interval = instrumentor.interval(collector.collect())
        body = OtlpEncoder(Resource.create({"service.name": "otel-efa"}), "otel_efa", __version__).encode(interval)
        collector.reader.close()
    return body


def side_by_side(senders, body: bytes, rounds: int, block: int = 10):
    """{name: (CPU ms, wall ms)} per send, the median over blocks of ``block`` sends: the senders take turns
    block by block, so both see the same machine, and work grpcio's threads finish after a call returns
    falls in its own block (but the last call's)."""
    cpu = {name: [] for name in senders}
    wall = {name: [] for name in senders}
    for sender in senders.values():  # connections made, threads started: not in the figures
        sender.send(body)
    for _ in range(max(1, rounds // block)):
        for name, sender in senders.items():
            started_cpu, started = time.process_time_ns(), time.perf_counter_ns()
            for _ in range(block):
                sender.send(body)
            cpu[name].append((time.process_time_ns() - started_cpu) / block)
            wall[name].append((time.perf_counter_ns() - started) / block)
    return {name: (statistics.median(cpu[name]) / 1e6, statistics.median(wall[name]) / 1e6) for name in senders}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--paced", type=int, default=30, help="exports at the agent's pace, one per --interval")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    body = export_body(args.profile)
    with grpc_sink() as port:
        endpoint = f"http://127.0.0.1:{port}"
        here = os.path.dirname(os.path.abspath(__file__))
        memory = {}
        for which in ("grpcio", "h2"):
            out = subprocess.run([sys.executable, "-c", RSS, str(port), which, here], capture_output=True,
                                 text=True, check=True).stdout.split()
            memory[which] = (int(out[0]), int(out[1]))
        with tempfile.NamedTemporaryFile() as body_file:
            body_file.write(body)
            body_file.flush()
            paced_runs = {which: subprocess.Popen(  # both at once: the same machine
                [sys.executable, "-c", PACED, str(port), which, here, body_file.name, str(args.paced),
                 str(args.interval)], stdout=subprocess.PIPE, text=True) for which in ("grpcio", "h2")}
            paced = {which: float(run.communicate()[0]) for which, run in paced_runs.items()}
        results = {}
        for gzip in (False, True):
            senders = {"grpcio": GrpcioSender(endpoint, (), 10.0, gzip, True),
                       "h2": GrpcSender(endpoint, (), 10.0, gzip, True)}
            results[gzip] = side_by_side(senders, body, args.rounds)
            for sender in senders.values():
                sender.close()
    print(f"body: a {args.profile} export, {len(body)} bytes; {args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
    for gzip, figures in results.items():
        for name, (cpu_ms, wall_ms) in figures.items():
            print(f"{name:7s} {'gzip' if gzip else 'none':5s} CPU {cpu_ms:6.3f} ms/send   wall {wall_ms:6.3f} ms/send")
        print(f"        h2/grpcio CPU ratio {figures['h2'][0] / figures['grpcio'][0]:.2f}")
    for name, cpu_ms in paced.items():
        print(f"{name:7s} paced CPU {cpu_ms:6.3f} ms per export, idle time between included ({args.paced} exports, "
              f"one per {args.interval:g} s, own process)")
    for name, (before, after) in memory.items():
        print(f"{name:7s} RSS {before / 1024:5.1f} MiB before the import -> {after / 1024:5.1f} MiB after one send "
              f"(+{(after - before) / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
