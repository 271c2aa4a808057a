"""CLI manners: every user error is one line on standard error and a non-zero exit status (2 for usage and
configuration), never a traceback and never a hang; a closed standard output ends the command quietly. Every
command's parser, walked: each option says what it is and its default, an extra argument is refused;
``--version`` comes from the package metadata; ``run --count N`` prints the lines of its N collections.

A user error or an AWS error runs ``otel_efa.cli.main`` in this process (tests/cli_in_process.py): its
status and lines are what is tested. A closed standard output and ``run --count`` run ``python -m otel_efa
...`` as a process: the interpreter's exit and the agent's loop are what those test.
AWS cases never leave loopback: the endpoint is a closed loopback port, IMDS is disabled (and its endpoint a
closed loopback port, conftest.py), and the shared config and credentials files are absent.
"""
import argparse
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_in_process import run_cli
from conftest import free_port

import otel_efa
from otel_efa import cli
from otel_efa.node.instance_types import INSTANCE_TYPES

REPO = Path(__file__).resolve().parent.parent
NOWHERE = "/nonexistent/otel-efa-root"


def _environment(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EFA_", "AWS_"))}
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]  # conftest's
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
               AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"))
    env.update(extra)
    return env


def _in_process(args, extra, tmp_path, capsys, monkeypatch):
    """``otel-efa args`` in this process, with the environment ``_environment`` would give a process."""
    env = _environment(tmp_path, **extra)
    return run_cli(args, capsys, monkeypatch, env={k: v for k, v in env.items() if k.startswith(("OTEL_", "AWS_"))},
                   drop=("OTEL_EFA_", "AWS_"))


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "otel_efa", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def _assert_one_line(result, code: int, *words: str) -> None:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a directory\n")
    return str(path)


# (case id, argv with {file} for a regular file and {tmp} for a fresh directory, exit status, words of the line)
CASES = [
    ("run-interval-too-long", ["run", "--interval", "99999999", "--count", "1"], 2, ["interval", "86400"]),
    ("run-exporters-empty", ["run", "--exporters", "", "--count", "1"], 2, ["exporters", "at least one"]),
    ("run-exporters-commas", ["run", "--exporters", " , ", "--count", "1"], 2, ["exporters"]),
    ("run-simulate-and-sysfs", ["run", "--simulate", "p4d.24xlarge", "--sysfs", "{tmp}", "--count", "1"], 2,
     ["--sysfs", "--simulate"]),
    ("run-sysfs-missing", ["run", "--sysfs", NOWHERE, "--count", "1", "--exporters", "log"], 2,
     ["sysfs", NOWHERE, "does not exist"]),
    ("run-sysfs-a-file", ["run", "--sysfs", "{file}", "--count", "1", "--exporters", "log"], 2,
     ["sysfs", "not a directory"]),
    ("simulate-root-a-file", ["simulate", "p4d.24xlarge", "--root", "{file}", "--once"], 2, ["--root"]),
    ("simulate-gbps-nan", ["simulate", "p4d.24xlarge", "--root", "{tmp}", "--gbps", "nan", "--once"], 2,
     ["--gbps", "finite"]),
    ("simulate-gbps-negative", ["simulate", "p4d.24xlarge", "--root", "{tmp}", "--gbps", "-5", "--once"], 2,
     ["--gbps"]),
    ("simulate-gbps-inf", ["simulate", "p4d.24xlarge", "--root", "{tmp}", "--gbps", "inf", "--once"], 2,
     ["--gbps"]),
    ("simulate-interval-nan", ["simulate", "p4d.24xlarge", "--root", "{tmp}", "--interval", "nan", "--once"], 2,
     ["--interval"]),
    ("simulate-interval-too-long", ["simulate", "p4d.24xlarge", "--root", "{tmp}", "--interval", "1e9", "--once"],
     2, ["--interval"]),
    ("collector-config-write-bad-path", ["collector-config", "--write", "{file}/sub"], 2, ["--write", "cannot write"]),
    ("doctor-timeout-zero", ["doctor", "--timeout", "0"], 2, ["--timeout"]),
    ("doctor-timeout-nan", ["doctor", "--timeout", "nan"], 2, ["--timeout"]),
    ("doctor-pid-negative", ["doctor", "--pid", "-1"], 2, ["--pid"]),
    ("snapshot-sysfs-missing", ["snapshot", "--sysfs", NOWHERE], 2, ["--sysfs", "does not exist"]),
    ("topology-sysfs-missing", ["topology", "--sysfs", NOWHERE], 2, ["--sysfs", "does not exist"]),
    ("top-sysfs-missing", ["top", "--sysfs", NOWHERE, "--count", "1", "--plain"], 2, ["--sysfs"]),
    ("top-interval-too-long", ["top", "--simulate", "p4d.24xlarge", "--interval", "99999999", "--count", "1",
                               "--plain"], 2, ["--interval"]),
    ("cost-jobs-per-node-nan", ["cost", "--nodes", "2", "--instance-type", "p5.48xlarge", "--jobs-per-node", "nan"],
     2, ["--jobs-per-node"]),
    ("cost-job-hours-inf", ["cost", "--nodes", "2", "--instance-type", "p5.48xlarge", "--job-hours", "inf"], 2,
     ["--job-hours"]),
]


@pytest.mark.parametrize("argv,code,words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_user_error_is_one_line_and_its_exit_status(argv, code, words, tmp_path, a_file, capsys, monkeypatch):
    directory = tmp_path / "dir"
    directory.mkdir()
    args = [a.replace("{file}", a_file).replace("{tmp}", str(directory)) for a in argv]
    _assert_one_line(_in_process(args, {}, tmp_path, capsys, monkeypatch), code, *words)


AWS_COMMANDS = {
    "dashboard": ["dashboard", "cloudwatch", "--cluster-name", "c", "--region", "us-east-1"],
    "alarms": ["alarms", "cloudwatch", "--cluster-name", "c", "--region", "us-east-1"],
    "deploy": ["deploy", "upload", "--bucket", "b", "--region", "us-east-1", "--source", str(REPO)],
}


@pytest.mark.parametrize("command", sorted(AWS_COMMANDS))
def test_a_missing_aws_profile_is_one_line(command, tmp_path, capsys, monkeypatch):
    result = _in_process(AWS_COMMANDS[command], {"AWS_PROFILE": "nope"}, tmp_path, capsys, monkeypatch)
    _assert_one_line(result, 2, "nope")


@pytest.mark.parametrize("command", ["dashboard", "deploy"])
def test_no_aws_credentials_is_one_line(command, tmp_path, capsys, monkeypatch):
    result = _in_process(AWS_COMMANDS[command], {}, tmp_path, capsys, monkeypatch)
    _assert_one_line(result, 2, "credentials")


def test_an_unreachable_aws_endpoint_is_one_line(tmp_path, capsys, monkeypatch):
    result = _in_process(AWS_COMMANDS["dashboard"], {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
                         tmp_path, capsys, monkeypatch)
    _assert_one_line(result, 1, "Could not connect", "127.0.0.1")


@pytest.mark.parametrize("argv", [["metrics"], ["dashboard", "grafana"], ["alarms", "prometheus"],
                                  ["collector-config", "adot"]], ids=lambda argv: "-".join(argv))
def test_a_closed_stdout_pipe_ends_quietly(argv, tmp_path):
    """``otel-efa metrics | head -1``: the reader is gone before the command writes (its end of the pipe is
    closed at once), so every write fails with EPIPE: no traceback, nothing on standard error."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "otel_efa", *argv], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60, env=_environment(tmp_path),
                                cwd=REPO)
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == 1


def test_run_with_its_stdout_reader_gone_says_so_once_and_keeps_collecting(tmp_path):
    """``otel-efa run | head -1`` with the log line on standard output: one warning, the agent finishes its
    collections and exits 0 (it was one traceback, then the log exporter marked failing)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "otel_efa", "run", "--simulate", "p4d.24xlarge",
                                 "--exporters", "log", "--count", "4", "--interval", "0.05"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60, env=_environment(tmp_path),
                                cwd=REPO)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "standard output is closed" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], result.stderr


# --- every command's parser, walked ------------------------------------------------------------------------

def _parsers(parser, prefix=()):
    """(argv prefix, parser) of the top parser and every command and kind below it."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, prefix + (name,))


PARSERS = list(_parsers(cli.build_parser()))
LEAVES = [(prefix, parser) for prefix, parser in PARSERS if parser._subparsers is None]
GENERIC_NAMES = {"what", "arg", "args", "value", "thing", "x"}


def _stated(default, text: str) -> bool:
    if isinstance(default, float) and f"{default:g}" in text:
        return True
    return str(default) in text


def test_every_option_has_a_help_that_states_its_default():
    """Every option and positional of every command says what it is; an optional one says what happens
    without it (its default), and a default value is the one the parser really uses."""
    problems = []
    for prefix, parser in PARSERS:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            where = " ".join(("otel-efa",) + prefix + ("/".join(action.option_strings) or action.dest,))
            if isinstance(action, argparse._SubParsersAction):
                problems += [f"{where} {choice.dest}: no help" for choice in action._choices_actions
                             if not (choice.help or "").strip()]
                continue
            text = formatter._expand_help(action) if action.help else ""
            if not text.strip():
                problems.append(f"{where}: no help")
                continue
            if not action.option_strings:  # a positional: named for what it is, its choices listed
                if action.dest in GENERIC_NAMES or str(action.metavar).lower() in GENERIC_NAMES:
                    problems.append(f"{where}: a positional named {action.metavar or action.dest!r}")
                problems += [f"{where}: choice {c!r} not in the help"
                             for c in action.choices or () if str(c) not in text]
            if action.required or action.nargs == 0 and action.option_strings:
                continue  # a required option has no default; a flag's is off
            if not action.option_strings and action.default is None:
                continue  # an optional positional without a default: its help says when it is needed
            if "default" not in text:
                problems.append(f"{where}: no default stated in {text!r}")
            elif action.default not in (None, [], argparse.SUPPRESS) and not _stated(action.default, text):
                problems.append(f"{where}: default {action.default!r} is not the one stated in {text!r}")
    assert problems == []


def _minimal_argv(parser) -> list:
    """Arguments the parser accepts: every required option and every positional given a valid value."""
    argv = []
    for action in parser._actions:
        if action.option_strings and not action.required:
            continue
        value = str(sorted(action.choices)[0]) if action.choices else "1"
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


@pytest.mark.parametrize("prefix,parser", LEAVES, ids=[" ".join(prefix) for prefix, _ in LEAVES])
def test_an_extra_argument_is_refused_with_one_line(prefix, parser, capsys):
    argv = list(prefix) + _minimal_argv(parser)
    cli.build_parser().parse_args(argv)  # accepted as it is...
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv + ["unexpected-extra"])  # ...and refused with one more
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2
    assert len(lines) == 1 and "unexpected-extra" in lines[0], lines
    assert lines[0].startswith(f"otel-efa {' '.join(prefix)}: error: "), "names the command it was given to"


@pytest.mark.parametrize("argv,words", [
    (["collector-config"], ["adot", "head-node", "--write"]),
    (["collector-config", "head-node", "amp"], ["DESTINATION", "adot only"]),
    (["collector-config", "adot", "--cluster-name", "c"], ["--cluster-name", "head-node only"]),
    (["collector-config", "adot", "--write", "out"], ["--write", "adot"]),
    (["collector-config", "adot", "cloudwatch", "--write", "out"], ["--write"]),
], ids=["no-collector", "destination-for-head-node", "cluster-name-for-adot", "write-with-collector",
        "write-with-destination"])
def test_collector_config_refuses_what_it_would_ignore(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("otel-efa collector-config: error: ") and all(w in lines[0] for w in words), lines


def test_version_comes_from_the_package_metadata(tmp_path, monkeypatch, capsys):
    result = run_cli(["--version"], capsys, monkeypatch)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"otel-efa {importlib.metadata.version('otel-efa')}\n"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"otel-efa {otel_efa.__version__}\n"


def test_run_count_1_prints_the_line_of_its_one_collection(tmp_path):
    """The log line is the default exporter's output: one collection, one line per device, with no rate yet."""
    result = _cli(["run", "--simulate", "p4d.24xlarge", "--count", "1", "--exporters", "log"], _environment(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == INSTANCE_TYPES["p4d.24xlarge"].efa_devices, result.stdout
    assert all(line.endswith(": RX=- Mbps, TX=- Mbps") for line in lines), lines
