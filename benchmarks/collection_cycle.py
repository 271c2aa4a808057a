"""Microseconds per collection cycle on a simulated p5.48xlarge (32 EFA devices), beside the bare pread floor,
and the CPU of each export path: the OTel SDK's against the agent's own (Interval + encoders).

    .venv/bin/python benchmarks/collection_cycle.py [--profile p5.48xlarge] [--cycles 500]

The floor is a loop of ``os.pread`` over exactly the files a read touches (counters and port states),
measured in the same run; the ratio is what the agent adds on top of the syscalls it cannot avoid.
The OTel callback pass (what one reader's collect costs, no sysfs read) is shown for scale.

Export paths, CPU per call (median of time.process_time_ns around each call, so neighbours on the machine
matter less than for wall time), every call on a fresh Interval as after a new collection:
  Prometheus (SDK): opentelemetry-exporter-prometheus's reader, a scrape through prometheus_client;
  Prometheus (fast): the Interval of the Snapshot + the agent's text render;
  OTLP (SDK): an SDK collect + the SDK's ``encode_metrics`` + serialization;
  OTLP (fast): the Interval + the agent's encoder (its bytes are the serialized request);
  full cycle (fast): sysfs read + Interval + Prometheus render + OTLP encode and send over gRPC to a receiver
  in another process (so its work is not counted), which is what one interval costs the agent.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from grpc_sink import grpc_sink  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from otel_efa import __version__  # noqa: E402
from otel_efa.exporters.otlp_encoder import OtlpEncoder  # noqa: E402
from otel_efa.exporters.otlp_transport import GrpcSender  # noqa: E402
from otel_efa.exporters.prometheus_text import PrometheusRenderer  # noqa: E402
from otel_efa.node.sysfs import SysfsReader  # noqa: E402
from otel_efa.pipeline.collector import Collector  # noqa: E402
from otel_efa.pipeline.instruments import EfaInstrumentor  # noqa: E402
from otel_efa.tools.simulator import Simulator  # noqa: E402


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


def _median_cpu_ms(*functions, cycles: int):
    """Median CPU milliseconds (this process, all threads) of each function, interleaved like _median_us."""
    samples = [[] for _ in functions]
    for _ in range(cycles):
        for function, into in zip(functions, samples):
            started = time.process_time_ns()
            function()
            into.append(time.process_time_ns() - started)
    return [statistics.median(s) / 1e6 for s in samples]


def _prometheus_sdk_reader():
    """opentelemetry-exporter-prometheus's reader and the registry to scrape (releases for Python 3.9 only
    register on prometheus_client's global one, which adds its process and GC collectors)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, CollectorRegistry

    registry = CollectorRegistry()
    try:
        return PrometheusMetricReader(registry=registry), registry
    except TypeError:
        return PrometheusMetricReader(), REGISTRY


def export_paths(collector: Collector, cycles: int):
    """CPU ms of each export path (see the module docstring), SDK and fast, in one run."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import generate_latest

    resource = Resource.create({"service.name": "otel-efa"})
    memory_reader = InMemoryMetricReader()
    prometheus_reader, registry = _prometheus_sdk_reader()
    provider = MeterProvider(resource=resource, metric_readers=[memory_reader, prometheus_reader])
    instrumentor = EfaInstrumentor()
    instrumentor.instrument(provider)
    instrumentor.interval(collector.latest)
    renderer = PrometheusRenderer(resource.attributes, "otel_efa", __version__)
    encoder = OtlpEncoder(resource, "otel_efa", __version__)
    try:
        with grpc_sink() as port:
            sender = GrpcSender(f"http://127.0.0.1:{port}", (), 10.0, gzip_compression=False, insecure=True)
            points = sum(len(p) for _, p in instrumentor.interval(collector.latest).metrics)

            def full_cycle():
                interval = instrumentor.interval(collector.collect())
                renderer.render(interval)
                sender.send(encoder.encode(interval))

            rounds = max(30, cycles // 10)
            prometheus_sdk, prometheus_fast, otlp_sdk, otlp_fast, full = _median_cpu_ms(
                lambda: generate_latest(registry),
                lambda: renderer.render(instrumentor.interval(collector.latest)),
                lambda: encode_metrics(memory_reader.get_metrics_data()).SerializeToString(),
                lambda: encoder.encode(instrumentor.interval(collector.latest)),  # the serialized request already
                full_cycle, cycles=rounds)
            sender.close()
    finally:
        provider.shutdown()
    return points, rounds, prometheus_sdk, prometheus_fast, otlp_sdk, otlp_fast, full


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    from progress import Progress  # benchmarks/, this script's directory

    progress = Progress("collection_cycle", unit="steps")
    progress.update(0, 3, note="collection cycles and the pread floor")
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
        instrumentor = EfaInstrumentor()
        instrumentor.instrument(provider)
        instrumentor.interval(collector.collect())

        floor_us, cycle_us = _median_us(floor, collector.collect, cycles=args.cycles)
        progress.update(1, 3, note="the OTel callback pass")
        otel_us, = _median_us(memory_reader.get_metrics_data, cycles=max(50, args.cycles // 5))
        provider.shutdown()
        progress.update(2, 3, note="the export paths, SDK and fast")
        points, rounds, prometheus_sdk, prometheus_fast, otlp_sdk, otlp_fast, full = export_paths(
            collector, args.cycles)
        collector.reader.close()
    progress.finish()
    print(f"profile                      {args.profile} ({len(sim.devices)} devices, {len(fds)} files)")
    print(f"collection cycle (median)    {cycle_us:8.1f} us   (median of {args.cycles})")
    print(f"bare os.pread floor          {floor_us:8.1f} us   (same files, same run)")
    print(f"ratio cycle / floor          {cycle_us / floor_us:8.2f} x")
    print(f"OTel collect of all metrics  {otel_us:8.1f} us   (one reader, no sysfs read; for scale)")
    print(f"export paths, CPU per call   {points} series, median of {rounds}, a fresh Interval every call")
    print(f"Prometheus scrape (SDK)      {prometheus_sdk:8.2f} ms   (SDK collect + prometheus_client text)")
    print(f"Prometheus render (fast)     {prometheus_fast:8.2f} ms   (Interval + cached text render)")
    print(f"ratio fast / SDK             {prometheus_fast / prometheus_sdk:8.3f} x")
    print(f"OTLP encode (SDK)            {otlp_sdk:8.2f} ms   (SDK collect + encode_metrics + serialize)")
    print(f"OTLP encode (fast)           {otlp_fast:8.2f} ms   (Interval + template encoder, serialized)")
    print(f"ratio fast / SDK             {otlp_fast / otlp_sdk:8.3f} x")
    print(f"full cycle (fast)            {full:8.2f} ms   (read + Interval + Prometheus render + OTLP encode and "
          f"gRPC send)")


if __name__ == "__main__":
    main()
