"""A real Prometheus server (Debian's package) for tests: started on a free loopback port, queried over HTTP."""
import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from typing import Dict, List, Optional, Sequence

import pytest
from waiting import wait_until


class PrometheusServer:
    def __init__(self, scrape_configs: List[dict], port: int, scrape_interval: str = "1s",
                 extra_args: Sequence[str] = (), rule_files: Sequence[str] = ()):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run `make test`, which installs Debian's package")
        self.dir = tempfile.mkdtemp(prefix="otel-efa-prom-")
        config = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                  "scrape_configs": scrape_configs, "rule_files": list(rule_files)}
        with open(f"{self.dir}/prometheus.yml", "w") as f:
            json.dump(config, f)  # JSON is YAML
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.dir}/prometheus.yml", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *extra_args],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/prometheus.log", "w"))
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(open(f"{self.dir}/prometheus.log").read())
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200

        wait_until(ready, timeout, "prometheus's /-/ready", every=0.1, ignoring=(OSError,))

    def query(self, expression: str) -> List[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, expression: str, label: str) -> Dict[str, float]:
        """{label value: sample value} of an instant vector."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expression)}

    def wait_for(self, expression: str, timeout: float = 60, count: int = 1) -> List[dict]:
        """The instant query's result once it has at least ``count`` series."""
        def enough() -> Optional[List[dict]]:
            result = self.query(expression)
            return result if len(result) >= count else None

        return wait_until(enough, timeout, f"{count} series of {expression!r}", every=0.25)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
