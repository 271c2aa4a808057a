"""Children forked while the OTLP gRPC sender is busy (the agent runs squeue for Slurm job ids) reach exec.

With gRPC's fork handlers on, grpcio 1.80 (the newest for Python 3.9) aborts some such children before
exec. The sender speaks gRPC over h2 (otel_efa/exporters/grpc_client.py) and loads no grpcio: the check runs
in a fresh interpreter, asserts that, and only then starts the receiver (grpcio, its fork handlers off as
conftest sets them for this process's peers).
"""
import os
import subprocess
import sys

CHILD = r"""
import os, socket, subprocess, sys, threading
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from otel_efa.exporters.otlp_transport import GrpcSender

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
sender = GrpcSender(f"http://127.0.0.1:{port}", (), 5, False, True)
assert "grpc" not in sys.modules, "the sender loaded grpcio"
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"  # the receiver's grpcio, in this process for the test only
sys.path.insert(0, sys.argv[1])
from otlp_receiver import GrpcReceiver
receiver = GrpcReceiver(port)
done = threading.Event()

def exports():
    while not done.is_set():
        sender.send(ExportMetricsServiceRequest().SerializeToString())

threads = [threading.Thread(target=exports) for _ in range(2)]
for thread in threads:
    thread.start()
failed = sum(subprocess.run(["true"]).returncode != 0 for _ in range(200))
done.set()
for thread in threads:
    thread.join()
sender.close()
receiver.stop()
print(failed)
"""


def test_children_forked_during_exports_all_reach_exec():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    tests = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, "-c", CHILD, tests], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "0", result.stderr  # children that died before exec
