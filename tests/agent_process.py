"""``otel-efa run`` as a real process, its stderr (the journal, under systemd) kept in a file."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

from waiting import wait_until


class AgentProcess:
    """``otel-efa run`` with its stderr (the journal, under systemd) kept in a file."""

    def __init__(self, args: List[str], env: Dict[str, str], stderr_path: Path):
        self.stderr_path = stderr_path
        with open(stderr_path, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "otel_efa", "run", *args], env=env,
                                            stdout=subprocess.DEVNULL, stderr=stderr)

    def log(self) -> str:
        return self.stderr_path.read_text()

    def lines(self, *words: str) -> List[str]:
        return [line for line in self.log().splitlines() if all(w in line for w in words)]

    def expect(self, predicate, what: str, timeout: float = 20.0) -> None:
        """wait_for(), with the agent's own log in the failure message."""
        try:
            wait_until(predicate, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; exit status {self.process.poll()}; its log:\n{self.log()}") from None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> Tuple[int, float]:
        """Signal it; (exit status, seconds until it exited)."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout)
        return code, time.monotonic() - sent


def rss_kb(pid: int) -> int:
    """A process's resident set (VmRSS), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def agent_environment() -> Dict[str, str]:
    """This process's environment without OTEL_EFA_* settings, and IMDS off: an agent that reads only
    its flags and never asks 169.254.169.254."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env
