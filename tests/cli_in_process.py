"""``otel-efa ARGS`` run in the test's own process (``otel_efa.cli.main``), for the tests of what a command
answers (its exit status and the lines it writes) rather than of the process: a Python start costs more
than most of these commands. Tests of the process itself (signals, a closed pipe at exit, the agent's
loop, a hang) start ``python -m otel_efa`` instead.
"""
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from otel_efa import cli


@dataclass(frozen=True)
class Outcome:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have given."""
    returncode: int
    stdout: str
    stderr: str


def run_cli(argv: Sequence[str], capsys, monkeypatch, env: Optional[Mapping[str, str]] = None,
            drop: Sequence[str] = ("OTEL_EFA_",)) -> Outcome:
    """``otel-efa argv`` with the variables starting with ``drop`` unset and ``env`` set (restored after
    the test): its status (``main``'s return or the SystemExit argparse raises) and its output. An
    exception out of ``main`` is a traceback the process would have printed: it fails the test."""
    for name in list(os.environ):
        if name.startswith(tuple(drop)):
            monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()  # what the test wrote before is not the command's
    try:
        status = cli.main(list(argv))
    except SystemExit as exit_:
        status = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return Outcome(status, out, err)
