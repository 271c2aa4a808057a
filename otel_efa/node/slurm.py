"""The Slurm jobs running on this node, from ``squeue``, for the ``slurm.job.id`` attribute.

``squeue --noheader --format=%A --states=running -w <node>`` lists the job ids allocated to the node
(``%A``: the job id, an array job's own id for its tasks). It asks slurmctld, which can be slow or
down, so each run has a short timeout after which the whole process group is killed (a wrapper
script's children too), and the agent only ever calls it from its attribution thread.
"""
import logging
import os
import re
import signal
import socket
import subprocess
from typing import Optional, Tuple

from otel_efa.node.sysfs import natural_key

log = logging.getLogger(__name__)
_JOB_ID = re.compile(r"^[0-9]+$")


def default_node_name() -> str:
    """Slurm's node name is the short hostname on ParallelCluster (and most clusters)."""
    return socket.gethostname().split(".")[0]


def parse_job_ids(output: str) -> Tuple[str, ...]:
    """squeue's lines -> unique job ids in numeric order; anything else on a line is ignored."""
    ids = {line.strip() for line in output.splitlines() if _JOB_ID.match(line.strip())}
    return tuple(sorted(ids, key=natural_key))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """The process runs in its own session: kill it and whatever it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass


class SlurmJobs:
    def __init__(self, node_name: Optional[str] = None, timeout: float = 2.0, command: str = "squeue"):
        self.node_name = node_name or default_node_name()
        self.timeout = timeout
        self.command = command
        self.failures = 0  # runs that gave no answer (missing, timed out, failed), for tests and logs
        self._failing = False
        self._running: Optional[subprocess.Popen[bytes]] = None

    @property
    def argv(self) -> Tuple[str, ...]:
        return (self.command, "--noheader", "--format=%A", "--states=running", "-w", self.node_name)

    def query(self) -> Optional[Tuple[str, ...]]:
        """The job ids running on the node now, or None when squeue cannot say (logged once)."""
        try:
            process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            return self._failed(f"cannot run {self.command}: {e.strerror or e}")
        self._running = process
        try:
            out, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return self._failed(f"{self.command} took longer than {self.timeout:g} s; killed it")
        finally:
            self._running = None
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return self._failed(f"{self.command} exited {process.returncode}: {detail[0]}")
        if self._failing:
            log.info("%s answers again", self.command)
        self._failing = False
        return parse_job_ids(out.decode(errors="replace"))

    def cancel(self) -> None:
        """Kill a run in progress (the agent is stopping); its :meth:`query` returns None."""
        process = self._running
        if process is not None:
            _kill_group(process)

    def _failed(self, message: str) -> Optional[Tuple[str, ...]]:
        """None (squeue cannot say), after counting the failure and saying it once."""
        self.failures += 1
        if not self._failing:
            log.warning("job attribution: %s; no slurm.job.id until it answers", message)
        self._failing = True
        return None
