"""What the CloudWatch exporter costs the collection loop, and how many calls a flush takes.

A simulated p5.48xlarge (32 EFA devices), node totals + per-device series + health events (9 metrics x 33
series), batch of 10 one-minute collections. No network: the sender thread is not started; this measures
export() (the collection loop's share) and the folding and packing the sender thread does.

    .venv/bin/python benchmarks/cloudwatch_export.py
"""
import tempfile
import time

from opentelemetry.sdk.resources import Resource

from otel_efa.cloudwatch import packing
from otel_efa.config import Config
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.cloudwatch import CloudWatchExporter
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor
from otel_efa.tools.simulator import Simulator


def main() -> None:
    config = Config()
    config.cloudwatch.dimension_sets = ["instance", "device"]
    config.cloudwatch.health_events = True
    config.cloudwatch.batch_size = 10
    config.cloudwatch.region = "us-east-1"
    config.cloudwatch.buffer_minutes = 24 * 60
    clock = [1000.0]
    with tempfile.TemporaryDirectory() as root:
        simulator = Simulator("p5.48xlarge", root, clock=lambda: clock[0])
        collector = Collector(SysfsReader(root), "p5.48xlarge", clock=lambda: clock[0],
                              wall_clock=lambda: 1.7e9 + clock[0])
        exporter = CloudWatchExporter(ExporterContext(config, Resource.create({"host.id": "i-0bench"})))
        instrumentor = EfaInstrumentor()
        export_cpu = []
        for _ in range(101):
            clock[0] += 60
            simulator.advance(clock[0])
            interval = instrumentor.interval(collector.collect())
            started = time.process_time()
            exporter.export(interval)
            export_cpu.append(time.process_time() - started)
        # The benchmark does the sender thread's work itself (no thread, nothing sent).
        started = time.process_time()
        exporter._fold_closed()
        datums = list(exporter._buffer)
        requests = packing.split_requests(datums, "json")
        packing_cpu = time.process_time() - started
        simulator.close()
    steady = sorted(export_cpu[1:])
    print(f"export() CPU per collection: median {steady[len(steady) // 2] * 1e3:.2f} ms, "
          f"max {steady[-1] * 1e3:.2f} ms (batch close included)")
    print(f"buffered after 101 collections: {len(datums)} datums -> {len(requests)} PutMetricData calls "
          f"({', '.join(str(len(r)) for r in requests)} datums), folded and packed in "
          f"{packing_cpu * 1e3:.0f} ms CPU on the sender thread")


if __name__ == "__main__":
    main()
