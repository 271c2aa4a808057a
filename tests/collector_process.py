"""The test collector (``make collector``) as a process: a stand-in for ADOT built from the same upstream
components (adot/collector/), never shipped to nodes.

``CollectorProcess(config)`` writes the config, starts the binary and waits for its health_check
extension to answer (a readiness probe, not a sleep); ``stop()`` ends it. Its log is kept for the
failure messages. Run it inside ``netns.isolated_network()``: the shipped configs listen on fixed ports.
"""
import json
import os
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
BUILDS = REPO / "build" / "collector"


def versions() -> List[str]:
    """The contrib releases `make collector` builds, oldest first (adot/collector/versions)."""
    lines = (REPO / "adot" / "collector" / "versions").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def binary(version: str) -> Path:
    path = BUILDS / version / "otelcol-efa"
    if not path.exists():
        pytest.fail(f"no collector at {path}: run `make collector` (make test does)")
    return path


class CollectorProcess:
    def __init__(self, config: dict, version: str, env: Optional[Dict[str, str]] = None,
                 health: str = "127.0.0.1:13133"):
        self.dir = Path(tempfile.mkdtemp(prefix="otel-efa-collector-"))
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = self.dir / "collector.log"
        self.version = version
        self.health = health
        environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        environment.update(env or {})
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([str(binary(version)), "--config", str(self.config_path)],
                                            env=environment, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"collector {self.version} exited {self.process.returncode}:\n{self.log()}")
            with urllib.request.urlopen(f"http://{self.health}/", timeout=1) as response:
                return response.status == 200

        try:
            wait_until(healthy, timeout, f"collector {self.version}'s health check", every=0.1, ignoring=(OSError,))
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{self.log()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
