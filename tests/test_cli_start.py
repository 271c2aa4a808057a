"""What ``otel-efa`` imports when it starts: a command's parser and module only when that command is chosen,
and the heavy libraries (boto3, gRPC, the OTel SDK, asyncio, YAML) only where they are used, so that
``otel-efa --help`` and every command start quickly. The lazily built parser is the same as the one built
up front, help lines and usage errors included.

The import checks run ``python -m otel_efa ...`` as a process: only a fresh interpreter shows what a start
imports (this one has imported everything the other tests use). ``sys.modules`` at exit is the list: ``-X
importtime`` leaves out what ``importlib.import_module`` imports.
"""
import argparse
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import pytest
from conftest import free_port

from otel_efa import cli

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("boto3", "botocore", "grpc", "opentelemetry.sdk", "opentelemetry.exporter", "asyncio", "yaml", "h11")


# ``python -m otel_efa`` that writes the names in sys.modules to the file argv[1] when it exits
LISTING_MAIN = ("import atexit, runpy, sys\n"
                "listing = sys.argv.pop(1)\n"
                "atexit.register(lambda: open(listing, 'w').write('\\n'.join(sorted(sys.modules))))\n"
                "runpy.run_module('otel_efa', run_name='__main__', alter_sys=True)\n")


def _imported_by(tmp_path, args: List[str], **env: str) -> Set[str]:
    """The modules ``python -m otel_efa ARGS`` has imported when it exits, after checking it exits 0."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment.update(env)
    listing = tmp_path / "modules"
    result = subprocess.run([sys.executable, "-c", LISTING_MAIN, str(listing), *args], capture_output=True,
                            text=True, timeout=60, env=environment, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set(listing.read_text().split())
    assert "otel_efa.cli" in modules
    return modules


def _under(modules: Set[str], packages) -> List[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_imports_no_command_and_no_heavy_library(tmp_path):
    modules = _imported_by(tmp_path, ["--help"])
    assert _under(modules, HEAVY) == []
    commands = ("otel_efa.tools", "otel_efa.artifacts", "otel_efa.exporters", "otel_efa.pipeline", "otel_efa.node",
                "otel_efa.config", "otel_efa.catalog")
    assert _under(modules, commands) == []


def test_a_fast_path_run_imports_neither_boto3_nor_the_sdk_it_does_not_use(tmp_path):
    """``run --exporters prometheus,otlp``: gRPC for OTLP over h2 (no grpcio), no boto3 (CloudWatch), no OTel
    SDK metrics or SDK exporters (otel-sdk), no YAML (no config file). The OTLP endpoint is a closed loopback
    port."""
    modules = _imported_by(
        tmp_path, ["run", "--simulate", "p4d.24xlarge", "--exporters", "prometheus,otlp", "--prometheus-address",
         f"127.0.0.1:{free_port()}", "--count", "1", "--interval", "0.05", "--log-level", "error"],
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert "h2" in modules and "otel_efa.exporters.prometheus" in modules  # what it does use
    assert _under(modules, ("grpc", "boto3", "botocore", "opentelemetry.sdk.metrics", "opentelemetry.exporter", "yaml",
                            "otel_efa.tools.doctor", "otel_efa.tools.deploy", "otel_efa.artifacts")) == []


# --- the lazy parser is the eager one ----------------------------------------------------------------------

def _outcome(parser: argparse.ArgumentParser, argv: List[str]):
    """(exit status or None, standard output, standard error) of parsing ``argv``."""
    out, err = io.StringIO(), io.StringIO()
    status = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def test_the_help_lines_of_the_table_are_the_commands_own():
    built = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert [(c.dest, c.help) for c in built._choices_actions] == [(n, c[0]) for n, c in cli.COMMANDS.items()]
    assert list(built.choices) == list(cli.COMMANDS)
    assert all(parser is not None for parser in built.choices.values())


@pytest.mark.parametrize("argv", [["--help"], [], ["bogus"], ["--bogus"]] + [[name, "--help"] for name in cli.COMMANDS]
                         + [[name, "--no-such-flag"] for name in cli.COMMANDS], ids=lambda argv: " ".join(argv) or "nothing")
def test_a_lazy_parser_answers_as_the_eager_one(argv):
    lazy = _outcome(cli.build_parser(lazy=True), argv)
    assert lazy == _outcome(cli.build_parser(), argv)
    assert lazy[0] in (0, 2)
    if lazy[0] == 2:
        assert len(lazy[2].splitlines()) == 1, lazy[2]
