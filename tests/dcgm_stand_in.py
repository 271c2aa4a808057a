"""A stand-in for NVIDIA's dcgm-exporter on a node without GPUs: its page at ``/metrics``, as 4.x serves
it with the default counters.

Stand-in at the hardware boundary (no GPU, no DCGM here): the field list is dcgm-exporter's
``etc/default-counters.csv`` (4.x), the label set is the one it puts on every GPU series (``gpu``,
``UUID``, ``pci_bus_id``, ``device``, ``modelName``, ``Hostname``, ``DCGM_FI_DRIVER_VERSION``).
``DCGM_FI_DEV_PCIE_{TX,RX}_THROUGHPUT`` are absent (dropped from the defaults in 3.3.7): PCIe traffic is
``DCGM_FI_PROF_PCIE_{TX,RX}_BYTES``, gauges in bytes per second. A real HTTP server scraped over a socket.
"""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

# field -> (Prometheus type, help), from default-counters.csv
DEFAULT_FIELDS: Dict[str, Tuple[str, str]] = {
    "DCGM_FI_DEV_SM_CLOCK": ("gauge", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEM_CLOCK": ("gauge", "Memory clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEMORY_TEMP": ("gauge", "Memory temperature (in C)."),
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W)."),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("counter", "Total energy consumption since boot (in mJ)."),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("counter", "Total number of PCIe retries."),
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %)."),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("gauge", "Memory utilization (in %)."),
    "DCGM_FI_DEV_ENC_UTIL": ("gauge", "Encoder utilization (in %)."),
    "DCGM_FI_DEV_DEC_UTIL": ("gauge", "Decoder utilization (in %)."),
    "DCGM_FI_DEV_XID_ERRORS": ("gauge", "Value of the last XID error encountered."),
    "DCGM_FI_DEV_FB_FREE": ("gauge", "Frame buffer memory free (in MB)."),
    "DCGM_FI_DEV_FB_USED": ("gauge", "Frame buffer memory used (in MB)."),
    "DCGM_FI_DEV_FB_RESERVED": ("gauge", "Frame buffer memory reserved (in MB)."),
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": ("counter", "Total number of NVLink bandwidth counters for all lanes."),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gauge", "Ratio of time the graphics engine is active."),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("gauge", "Ratio of cycles the device memory interface is active."),
    "DCGM_FI_PROF_PCIE_TX_BYTES": ("gauge", "The rate of data transmitted over the PCIe bus (bytes per second)."),
    "DCGM_FI_PROF_PCIE_RX_BYTES": ("gauge", "The rate of data received over the PCIe bus (bytes per second)."),
}
GPU_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION")
MODEL = "NVIDIA H100 80GB HBM3"


def page(gpu_pci_buses: List[str], hostname: str) -> str:
    """The exposition for GPUs at these PCI addresses (``0000:53:00.0``; DCGM writes 8 hex digits of
    domain). Values are plausible and fixed: the tests check names and labels, not GPU numbers."""
    lines = []
    for name, (kind, help_text) in DEFAULT_FIELDS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for index, bus in enumerate(gpu_pci_buses):
            labels = dict(zip(GPU_LABELS, (str(index), f"GPU-{index:08x}-0000-0000-0000-000000000000",
                                           "0000" + bus, f"nvidia{index}", MODEL, hostname, "570.133.20")))
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {1000 + index}")
    return "\n".join(lines) + "\n"


class DcgmExporterStandIn:
    """Serves :func:`page` on ``host:port`` (dcgm-exporter's :9400 inside a test's network namespace)."""

    def __init__(self, gpu_pci_buses: List[str], hostname: str = "ip-10-0-0-1", port: int = 9400):
        body = page(gpu_pci_buses, hostname).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
