"""CPU per interval of ``--exporters otel-sdk`` beside the fast exporters, on a simulated p5.48xlarge.

    .venv/bin/python benchmarks/otel_sdk_path.py [--profile p5.48xlarge] [--rounds 60]

Each round is a new collection (traffic flowing), its Interval built once (what every exporter shares), then,
CPU per call (median of time.process_time_ns, interleaved so both paths see the same machine):
  push (SDK):               SdkBridge.observe(interval.metrics), what OtelSdkExporter.export does each interval;
  OTLP request (SDK):       the SDK collect over the pushed values + encode_metrics + serialization (what
                            the otel-sdk path's periodic reader does before its exporter sends);
  Prometheus scrape (SDK):  generate_latest of the SDK's reader on its private registry (sdk_prometheus.py);
  OTLP request (fast):      the agent's encoder + serialization of the same Interval;
  Prometheus render (fast): the agent's text render of the same Interval.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from otel_efa import __version__  # noqa: E402
from otel_efa.exporters.otel_sdk import SdkBridge  # noqa: E402
from otel_efa.exporters.otlp_encoder import OtlpEncoder  # noqa: E402
from otel_efa.exporters.prometheus_text import PrometheusRenderer  # noqa: E402
from otel_efa.exporters.sdk_prometheus import private_reader  # noqa: E402
from otel_efa.node.sysfs import SysfsReader  # noqa: E402
from otel_efa.pipeline.collector import Collector  # noqa: E402
from otel_efa.pipeline.instruments import EfaInstrumentor  # noqa: E402
from otel_efa.tools.simulator import Simulator  # noqa: E402


def _cpu_ms(function) -> float:
    started = time.process_time_ns()
    function()
    return (time.process_time_ns() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    resource = Resource.create({"service.name": "otel-efa"})
    with tempfile.TemporaryDirectory() as root, Simulator(args.profile, root) as sim:
        collector = Collector(SysfsReader(root), args.profile)
        instrumentor = EfaInstrumentor()
        agent_provider = MeterProvider(resource=resource)  # the agent's own, no reader (as pipeline/agent.py)
        instrumentor.instrument(agent_provider)
        memory = InMemoryMetricReader()
        registry = CollectorRegistry()
        bridge = SdkBridge(resource, [memory, private_reader(registry)])
        renderer = PrometheusRenderer(resource.attributes, "otel_efa", __version__)
        encoder = OtlpEncoder(resource, "otel_efa", __version__)
        names = ("push (SDK)", "OTLP request (SDK)", "Prometheus scrape (SDK)", "OTLP request (fast)",
                 "Prometheus render (fast)")
        samples = {name: [] for name in names}
        points = 0
        for _ in range(args.rounds):
            sim.advance_by(1.0)
            interval = instrumentor.interval(collector.collect())
            points = sum(len(p) for _, p in interval.metrics)
            for name, work in zip(names, (
                    lambda i=interval: bridge.observe(i.metrics),
                    lambda: encode_metrics(memory.get_metrics_data()).SerializeToString(),
                    lambda: generate_latest(registry),
                    lambda i=interval: encoder.encode(i).SerializeToString(),
                    lambda i=interval: renderer.render(i))):
                samples[name].append(_cpu_ms(work))
        bridge.shutdown(1000)
        agent_provider.shutdown()
        collector.reader.close()
    print(f"profile {args.profile} ({len(sim.devices)} devices), {points} points, median CPU of {args.rounds} rounds")
    for name in names:
        print(f"{name:<26}{statistics.median(samples[name]):8.2f} ms")
    sdk = sum(statistics.median(samples[n]) for n in names[:3])
    fast = sum(statistics.median(samples[n]) for n in names[3:])
    print(f"{'per interval, SDK path':<26}{sdk:8.2f} ms   (push + one OTLP request + one scrape)")
    print(f"{'per interval, fast path':<26}{fast:8.2f} ms   (one OTLP request + one render; the Interval is shared)")


if __name__ == "__main__":
    main()
