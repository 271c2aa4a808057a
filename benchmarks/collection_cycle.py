"""Microseconds per collection cycle on a simulated p5.48xlarge (32 EFA devices), beside the bare pread floor.

    .venv/bin/python benchmarks/collection_cycle.py [--profile p5.48xlarge] [--cycles 500]

The floor is a loop of ``os.pread`` over exactly the files a read touches (counters and port states),
measured in the same run; the ratio is what the agent adds on top of the syscalls it cannot avoid.
The OTel callback pass (what one reader's collect costs, no sysfs read) is shown for scale.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from otel_efa.collector import Collector  # noqa: E402
from otel_efa.instruments import EfaInstrumentor  # noqa: E402
from otel_efa.simulator import Simulator  # noqa: E402
from otel_efa.sysfs import SysfsReader  # noqa: E402


def _median_us(*functions, cycles: int):
    """Median microseconds of each function, timed in turn within every round so that both see the
    same machine (frequency, neighbours) rather than one of them a quieter minute."""
    samples = [[] for _ in functions]
    for _ in range(cycles):
        for function, into in zip(functions, samples):
            started = time.perf_counter_ns()
            function()
            into.append(time.perf_counter_ns() - started)
    return [statistics.median(s) / 1000 for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, Simulator(args.profile, root) as sim:
        collector = Collector(SysfsReader(root), args.profile)
        collector.collect()
        collector.collect()
        fds = collector.reader.descriptors()
        pread = os.pread

        def floor():
            for fd in fds:
                pread(fd, 64, 0)

        memory_reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[memory_reader])
        EfaInstrumentor(collector).instrument(provider)

        floor_us, cycle_us = _median_us(floor, collector.collect, cycles=args.cycles)
        otel_us, = _median_us(memory_reader.get_metrics_data, cycles=max(50, args.cycles // 5))
        provider.shutdown()
        collector.reader.close()
    print(f"profile                      {args.profile} ({len(sim.devices)} devices, {len(fds)} files)")
    print(f"collection cycle (median)    {cycle_us:8.1f} us   (median of {args.cycles})")
    print(f"bare os.pread floor          {floor_us:8.1f} us   (same files, same run)")
    print(f"ratio cycle / floor          {cycle_us / floor_us:8.2f} x")
    print(f"OTel collect of all metrics  {otel_us:8.1f} us   (one reader, no sysfs read; for scale)")


if __name__ == "__main__":
    main()
