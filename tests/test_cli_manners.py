"""CLI manners: every user error is one line on standard error and a non-zero exit status (2 for usage and
configuration), never a traceback and never a hang; a closed standard output ends the command quietly.

Each case runs ``python -m otel_efa ...`` as a process. AWS cases never leave loopback: the endpoint is a
closed loopback port, IMDS is disabled (and its endpoint a closed loopback port, conftest.py), and the shared config and credentials files are absent.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

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
    ("collector-config-write-bad-path", ["collector-config", "adot", "--write", "{file}/sub"], 2, ["--write"]),
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
def test_a_user_error_is_one_line_and_its_exit_status(argv, code, words, tmp_path, a_file):
    directory = tmp_path / "dir"
    directory.mkdir()
    args = [a.replace("{file}", a_file).replace("{tmp}", str(directory)) for a in argv]
    _assert_one_line(_cli(args, _environment(tmp_path)), code, *words)


AWS_COMMANDS = {
    "dashboard": ["dashboard", "cloudwatch", "--cluster-name", "c", "--region", "us-east-1"],
    "alarms": ["alarms", "cloudwatch", "--cluster-name", "c", "--region", "us-east-1"],
    "deploy": ["deploy", "upload", "--bucket", "b", "--region", "us-east-1", "--source", str(REPO)],
}


@pytest.mark.parametrize("command", sorted(AWS_COMMANDS))
def test_a_missing_aws_profile_is_one_line(command, tmp_path):
    result = _cli(AWS_COMMANDS[command], _environment(tmp_path, AWS_PROFILE="nope"))
    _assert_one_line(result, 2, "nope")


@pytest.mark.parametrize("command", ["dashboard", "deploy"])
def test_no_aws_credentials_is_one_line(command, tmp_path):
    result = _cli(AWS_COMMANDS[command], _environment(tmp_path))
    _assert_one_line(result, 2, "credentials")


def test_an_unreachable_aws_endpoint_is_one_line(tmp_path):
    env = _environment(tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    result = _cli(AWS_COMMANDS["dashboard"], env)
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
