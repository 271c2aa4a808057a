"""An OTLP gRPC receiver in a process of its own, answering every export and counting nothing, so that a
benchmark's CPU figures hold the sender's work only (collection_cycle.py, grpc_send.py)."""
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

_SINK = """
import sys
from concurrent import futures
import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

class Sink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        return metrics_service_pb2.ExportMetricsServiceResponse()

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Sink(), server)
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
sys.stdin.read()  # until the benchmark closes our stdin
"""


@contextmanager
def grpc_sink() -> Iterator[int]:
    """The sink's loopback port while the block runs; the process ends with it."""
    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        yield int(sink.stdout.readline())
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        try:
            sink.wait(10)
        finally:
            if sink.poll() is None:
                sink.kill()
