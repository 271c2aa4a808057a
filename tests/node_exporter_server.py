"""A real node_exporter (Debian's ``prometheus-node-exporter``) with only its infiniband collector, on a
loopback port, reading a simulated sysfs tree. Used by the tests and by benchmarks/compare_node_exporter.py
(so it raises instead of calling pytest)."""
import shutil
import subprocess
import tempfile
import urllib.request
from typing import Dict, Tuple

from waiting import wait_until

BINARY = "prometheus-node-exporter"


class NodeExporter:
    def __init__(self, sysfs: str, port: int):
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} is not installed: run `make deps`, which installs Debian's package")
        self.url = f"http://127.0.0.1:{port}/metrics"
        self._log = tempfile.TemporaryFile()
        # Exporter self-metrics (go_*, process_*, promhttp_*) off: a scrape is the infiniband collector.
        self.process = subprocess.Popen(
            [binary, "--collector.disable-defaults", "--collector.infiniband", "--web.disable-exporter-metrics",
             f"--path.sysfs={sysfs}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=self._log)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_ready(self, timeout: float = 20) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"{BINARY} exited: {self._log.read().decode(errors='replace')}")
            self.scrape()
            return True

        wait_until(answers, timeout, f"{BINARY} on {self.url}", every=0.1, ignoring=(OSError,))

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return response.read().decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
