"""Configuration: file < environment < flags, and one clear exit-2 line for anything wrong."""
import subprocess
import sys

import pytest
from cli_in_process import run_cli

from otel_efa.config import ConfigError, env_name, load


def _write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_precedence_flags_over_environment_over_file(tmp_path):
    path = _write(tmp_path, "interval: 30\nexporters: [log]\nprometheus:\n  address: 127.0.0.1:1000\n"
                            "cloudwatch:\n  batch_size: 5\n")
    from_file = load(path, environ={})
    assert (from_file.interval, from_file.exporters, from_file.prometheus.address) == (30.0, ["log"], "127.0.0.1:1000")
    assert from_file.cloudwatch.batch_size == 5
    environ = {"OTEL_EFA_INTERVAL": "20", "OTEL_EFA_PROMETHEUS_ADDRESS": "127.0.0.1:2000"}
    from_env = load(path, environ=environ)
    assert (from_env.interval, from_env.prometheus.address, from_env.exporters) == (20.0, "127.0.0.1:2000", ["log"])
    from_flags = load(path, environ=environ, flags={"interval": 10, "exporters": "prometheus,console",
                                                    "prometheus.address": None})
    assert (from_flags.interval, from_flags.exporters) == (10.0, ["prometheus", "console"])
    assert from_flags.prometheus.address == "127.0.0.1:2000"  # a flag not given does not override


def test_defaults_match_the_quick_start():
    config = load(None, environ={})
    assert config.interval == 60 and config.cloudwatch.namespace == "ParallelCluster/Network"
    assert config.prometheus.address == "0.0.0.0:9464"
    assert env_name("cloudwatch.batch_size") == "OTEL_EFA_CLOUDWATCH_BATCH_SIZE"


@pytest.mark.parametrize("text,environ,key", [
    ("intervall: 5\n", {}, "intervall"),
    ("interval: -1\n", {}, "interval"),
    ("interval: soon\n", {}, "interval"),
    ("exporters: [log, carrier-pigeon]\n", {}, "exporters"),
    ("prometheus:\n  address: nowhere\n", {}, "prometheus.address"),
    ("prometheus:\n  port: 1\n", {}, "prometheus.port"),
    ("cloudwatch:\n  batch_size: 0\n", {}, "cloudwatch.batch_size"),
    ("cloudwatch:\n  dimension_sets: [instance, job]\n", {}, "cloudwatch.dimension_sets"),  # needs slurm
    ("simulate: p9.huge\n", {}, "simulate"),
    ("", {"OTEL_EFA_INTERVL": "5"}, "OTEL_EFA_INTERVL"),
    ("", {"OTEL_EFA_COUNT": "1.5"}, "count"),
    ("- a list\n", {}, "--config"),
    ("interval: [\n", {}, "--config"),
])
def test_errors_name_the_key(tmp_path, text, environ, key):
    with pytest.raises(ConfigError) as error:
        load(_write(tmp_path, text), environ=environ)
    assert error.value.key == key
    assert str(error.value).startswith(f"config error: {key}: ")


def _cli(*args, env=None):
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EFA_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "otel_efa", *args], capture_output=True, text=True,
                          timeout=60, env=environment)


def test_cli_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    """In this process (tests/cli_in_process.py): each is refused before the agent starts."""
    def cli(*args, env=None):
        return run_cli(args, capsys, monkeypatch, env=env)

    result = cli("run", "--config", _write(tmp_path, "interval: 0\n"), "--count", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"otel-efa: config error: interval: must be above 0 and at most 86400 seconds (a day) "
        f"(from {tmp_path}/config.yaml)"]
    result = cli("run", "--exporters", "log,nope", "--count", "1")
    assert result.returncode == 2 and "exporters: unknown exporter 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli("run", "--count", "1", env={"OTEL_EFA_PROMETHEUS_ADDRESS": "x"})
    assert result.returncode == 2 and "prometheus.address" in result.stderr and "OTEL_EFA_PROMETHEUS_ADDRESS" in result.stderr
    result = cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = cli("run", "--interval", "abc")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


# --- hostile input: alias bombs, huge values, files that are no files (issue 13 part 6) ---------------
def _laughs(levels: int, width: int = 10) -> str:
    """The billion laughs: each level repeats the previous one ``width`` times through YAML aliases."""
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + f"\ninterval: *l{levels}\n"


def test_a_yaml_alias_bomb_is_refused_quickly_and_briefly(tmp_path):
    """A million laughs (six levels): the error quoted the whole expanded value, megabytes of it."""
    with pytest.raises(ConfigError) as error:
        load(_write(tmp_path, _laughs(6)), environ={})
    assert error.value.key == "--config"
    assert "alias" in str(error.value) and len(str(error.value)) < 300


def test_the_billion_laughs_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    result = run_cli(["run", "--config", _write(tmp_path, _laughs(9)), "--count", "1"], capsys, monkeypatch)
    assert result.returncode == 2, result.stderr[:500]
    assert len(result.stderr.splitlines()) == 1 and "alias" in result.stderr and "Traceback" not in result.stderr


BIG = "x" * (10 * 1024 * 1024)


@pytest.mark.parametrize("key,name", [("interval", "OTEL_EFA_INTERVAL"), ("cloudwatch.namespace",
                                                                            "OTEL_EFA_CLOUDWATCH_NAMESPACE")])
def test_a_10_mb_value_is_refused_quoting_at_most_80_characters(key, name):
    """From the environment (a file that size is refused whole, below): a wrong value was echoed whole, and a
    namespace of 10 MB was accepted."""
    with pytest.raises(ConfigError) as error:
        load(None, environ={name: BIG})
    assert error.value.key == key and name in str(error.value)  # the key and its source
    assert "x" * 80 not in str(error.value) and len(str(error.value)) < 300


def test_a_long_wrong_value_is_quoted_up_to_80_characters():
    with pytest.raises(ConfigError) as error:
        load(None, environ={"OTEL_EFA_OTLP_PROTOCOL": "y" * 1000})
    assert error.value.key == "otlp.protocol" and "OTEL_EFA_OTLP_PROTOCOL" in str(error.value)
    assert 60 <= str(error.value).count("y") <= 80  # no other y in the message


def test_a_config_file_over_the_size_cap_is_refused(tmp_path):
    path = _write(tmp_path, f"cloudwatch:\n  namespace: {BIG}\n")
    with pytest.raises(ConfigError) as error:
        load(path, environ={})
    assert error.value.key == "--config" and "larger than" in str(error.value)
    assert len(str(error.value)) < 300


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_that_is_no_regular_file_exits_2_at_once(tmp_path, kind):
    """A FIFO nobody writes to hung the agent in open(); /dev/zero was read for ever."""
    import os

    if kind == "fifo":
        path = str(tmp_path / "config.fifo")
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    result = _cli("run", "--config", path, "--count", "1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"otel-efa: config error: --config: {path} is not a regular file"]
