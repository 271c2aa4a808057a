"""A sketch, not the agent's code: what the two exports would cost if built straight from the Snapshot.

    .venv/bin/python benchmarks/direct_export_sketch.py [--profile p5.48xlarge] [--passes 50]

compare_node_exporter.py shows the agent's sysfs read beating node_exporter's scrape while the full cycle
loses, because the OTel SDK collect (once per reader), opentelemetry-exporter-prometheus's exposition and
the OTLP encoding cost about ten times the read. This measures, on the same Snapshot, the SDK paths the
agent runs today beside two minimal renderings that skip the SDK: Prometheus text from the catalog's names,
and an OTLP ``ExportMetricsServiceRequest`` built with opentelemetry-proto (attribute KeyValues kept between
passes). The sketches cover the port and device counters and the rate gauges (not info, node or agent
metrics, not HELP/unit details beyond the catalog's): a lower bound to weigh the redesign against, not a
drop-in exporter.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from otel_efa import catalog  # noqa: E402
from otel_efa.collector import Collector  # noqa: E402
from otel_efa.config import Config  # noqa: E402
from otel_efa.exporters.prometheus import PrometheusExporter  # noqa: E402
from otel_efa.instruments import EfaInstrumentor  # noqa: E402
from otel_efa.simulator import Simulator  # noqa: E402
from otel_efa.snapshot import Snapshot  # noqa: E402
from otel_efa.sysfs import SysfsReader  # noqa: E402

RATE_BY_KERNEL = {kernel: spec for spec in catalog.PORT_GAUGES for name, kernel in catalog.RATE_SOURCES.items()
                  if spec.name == name}


def series(snapshot: Snapshot) -> Dict[catalog.MetricSpec, List[Tuple[Tuple[Tuple[str, str], ...], float]]]:
    """Catalog entry -> [(attributes, value)] for the sketched metrics."""
    out: Dict[catalog.MetricSpec, List[Tuple[Tuple[Tuple[str, str], ...], float]]] = {}
    for device in snapshot.devices:
        for name, value in device.counters.items():
            spec = catalog.DEVICE_COUNTER_BY_KERNEL.get(name)
            if spec is not None:
                out.setdefault(spec, []).append((((catalog.ATTR_DEVICE, device.name),), value))
        for port in device.ports:
            attributes = ((catalog.ATTR_DEVICE, device.name), (catalog.ATTR_PORT, port.port))
            for name, value in port.counters.items():
                out.setdefault(catalog.port_counter_spec(name), []).append((attributes, value))
            for name, spec in RATE_BY_KERNEL.items():
                if name in port.rates:
                    out.setdefault(spec, []).append((attributes, port.rates[name]))
    return out


def prometheus_text(snapshot: Snapshot, labels: Dict[tuple, str]) -> bytes:
    lines = []
    for spec, points in series(snapshot).items():
        name = spec.prometheus_name
        lines.append(f"# HELP {name} {spec.description}\n# TYPE {name} "
                     f"{'counter' if spec.kind is catalog.Kind.COUNTER else 'gauge'}\n")
        for attributes, value in points:
            label = labels.get(attributes)
            if label is None:
                label = labels[attributes] = "{" + ",".join(f'{k.replace(".", "_")}="{v}"' for k, v in attributes) + "}"
            lines.append(f"{name}{label} {value}\n")
    return "".join(lines).encode()


def otlp_request(snapshot: Snapshot, key_values: Dict[tuple, List[KeyValue]], started_ns: int) -> bytes:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    scope.scope.name = "otel_efa"
    now = int(snapshot.wall_time * 1e9)
    for spec, points in series(snapshot).items():
        metric = scope.metrics.add(name=spec.name, unit=spec.unit, description=spec.description)
        if spec.kind is catalog.Kind.COUNTER:
            metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
            metric.sum.is_monotonic = True
            data_points = metric.sum.data_points
        else:
            data_points = metric.gauge.data_points
        for attributes, value in points:
            kvs = key_values.get(attributes)
            if kvs is None:
                kvs = key_values[attributes] = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes]
            point = data_points.add(start_time_unix_nano=started_ns, time_unix_nano=now)
            if isinstance(value, int):
                point.as_int = value
            else:
                point.as_double = value
            point.attributes.extend(kvs)
    return request.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="p5.48xlarge")
    parser.add_argument("--passes", type=int, default=50)
    args = parser.parse_args()

    def cpu_ms(function: Callable[[], object]) -> float:
        samples = []
        for _ in range(args.passes):
            started = time.process_time()
            function()
            samples.append(time.process_time() - started)
        return 1000 * statistics.median(samples)

    with tempfile.TemporaryDirectory() as root, Simulator(args.profile, root) as simulator:
        collector = Collector(SysfsReader(root), args.profile)
        collector.collect()
        simulator.advance_by(1.0)
        snapshot = collector.collect()
        prometheus = PrometheusExporter(Config(), Resource.create())
        memory = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[prometheus.metric_reader(), memory], shutdown_on_exit=False)
        EfaInstrumentor(collector).instrument(provider)
        labels: Dict[tuple, str] = {}
        key_values: Dict[tuple, List[KeyValue]] = {}
        started_ns = time.time_ns()
        sketched = sum(len(points) for points in series(snapshot).values())
        rows = (
            ("Prometheus: opentelemetry-exporter-prometheus", lambda: generate_latest(prometheus.registry)),
            ("Prometheus: text from the Snapshot (sketch)", lambda: prometheus_text(snapshot, labels)),
            ("OTLP: SDK collect + encode", lambda: encode_metrics(memory.get_metrics_data()).SerializeToString()),
            ("OTLP: request from the Snapshot (sketch)", lambda: otlp_request(snapshot, key_values, started_ns)),
        )
        timings = [(label, cpu_ms(function)) for label, function in rows]
        collector.reader.close()
    print(f"{args.profile}: median CPU ms of {args.passes} passes; the sketches render {sketched} series "
          f"(the agent exports ~1390)")
    for label, ms in timings:
        print(f"  {label:50}{ms:8.2f}")


if __name__ == "__main__":
    main()
