"""Job attribution with a stand-in ``squeue`` on PATH (Slurm itself cannot run here).

The stand-in is a real executable the agent runs as a subprocess; it answers from files the test
writes, records its arguments, or hangs the way squeue does when slurmctld does not answer.
"""
import os
import stat
import urllib.request

import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from otel_efa.config import Config, ConfigError, PrometheusConfig, SlurmConfig, load
from otel_efa.node.slurm import SlurmJobs, parse_job_ids

NODE = "queue-st-p5-1"


class StandInSqueue:
    def __init__(self, directory):
        self.dir = directory
        directory.mkdir()
        self.jobs = directory / "jobs"
        self.mode = directory / "mode"
        self.args = directory / "args"
        self.child = directory / "child.pid"
        self.jobs.write_text("")
        self.mode.write_text("answer")
        script = directory / "bin" / "squeue"
        script.parent.mkdir()
        script.write_text(f"""#!/bin/sh
echo "$@" >> '{self.args}'
case "$(cat '{self.mode}')" in
  hang) sleep 60 & echo $! > '{self.child}'; wait ;;
  fail) echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1 ;;
  *) cat '{self.jobs}' ;;
esac
""")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.bin = str(script.parent)


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    stand_in = StandInSqueue(tmp_path / "squeue")
    monkeypatch.setenv("PATH", stand_in.bin + os.pathsep + os.environ["PATH"])
    return stand_in


def _agent(make_simulator, run_agent, **slurm):
    simulator = make_simulator("p4d.24xlarge")
    config = Config(sysfs=simulator.root, interval=0.1, exporters=["prometheus"],
                    prometheus=PrometheusConfig(address="127.0.0.1:0"),
                    slurm=SlurmConfig(enabled=True, node_name=NODE, **slurm))
    return run_agent(config, resource=Resource.create({"service.name": "otel-efa"}))


def _job_labels(port):
    """slurm_job_id per series of a port metric, a device metric and a node metric."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("efa_rx_bytes_total", "efa_device_cmds_err_total", "efa_node_idle_rails"):
                found.setdefault(sample.name, set()).add(sample.labels.get("slurm_job_id"))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_job_ids_appear_and_change_with_the_job(make_simulator, run_agent, squeue):
    squeue.jobs.write_text("1234\n")
    running = _agent(make_simulator, run_agent, cache_seconds=0.2)
    port = running.agent.exporters[0].port
    every = {"efa_rx_bytes_total", "efa_device_cmds_err_total", "efa_node_idle_rails"}

    def labelled(value):
        return lambda: (lambda f: set(f) == every and all(v == {value} for v in f.values()))(_job_labels(port))

    wait_until(labelled("1234"), 15, "job 1234 on every series")
    squeue.jobs.write_text("1240\n1234\n1240\n")  # a second job arrives (and squeue repeats a line)
    wait_until(labelled("1234,1240"), 15, "jobs 1234,1240 on every series")
    squeue.jobs.write_text("")  # both end
    wait_until(labelled(None), 15, "no job on any series")
    assert f"--noheader --format=%A --states=running -w {NODE}" in squeue.args.read_text()
    assert running.agent.attribution.job_ids == ()


def test_hanging_squeue_does_not_hold_up_collection(make_simulator, run_agent, squeue):
    squeue.mode.write_text("hang")
    running = _agent(make_simulator, run_agent, timeout=1.0, cache_seconds=0.2)
    agent = running.agent
    wait_until(squeue.child.exists, 15, "squeue's child")  # squeue is hanging now
    child = int(wait_until(lambda: squeue.child.read_text().strip(), 15, "the child's pid"))
    started = agent.collector.latest.collections if agent.collector.latest else 0
    wait_until(lambda: agent.attribution.slurm.failures >= 1, 15, "a failed query")  # its timeout ran out
    during = agent.collector.latest.collections - started
    # Collection went on at its 0.1 s interval through the hang; blocked, it could have made one.
    assert during >= 3, during
    assert not _alive(child), "the hanging squeue's child was not killed with it"
    assert agent.attribution.job_ids == ()
    squeue.jobs.write_text("77\n")
    squeue.mode.write_text("answer")  # slurmctld is back
    wait_until(lambda: agent.attribution.job_ids == ("77",), 15, "job 77")


def test_missing_or_failing_squeue_leaves_the_attribute_out(make_simulator, run_agent, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no squeue anywhere
    running = _agent(make_simulator, run_agent, timeout=1.0, cache_seconds=0.1)
    agent = running.agent
    wait_until(lambda: agent.attribution.slurm.failures >= 3, 15, "three failed queries")
    first = agent.collector.latest.collections
    wait_until(lambda: agent.collector.latest.collections >= first + 3, 15, "three more collections")
    assert agent.attribution.job_ids == ()
    labels = _job_labels(agent.exporters[0].port)
    assert labels["efa_rx_bytes_total"] == {None}


def test_failing_squeue_is_no_answer(tmp_path, monkeypatch, squeue):
    squeue.mode.write_text("fail")
    jobs = SlurmJobs(NODE, timeout=5)
    assert jobs.query() is None and jobs.failures == 1
    squeue.mode.write_text("answer")
    squeue.jobs.write_text("12\n9\n12\n")
    assert jobs.query() == ("9", "12")


def test_parse_job_ids_ignores_noise():
    assert parse_job_ids("  5\n100\n\n20\nsqueue: error: something\n5\n") == ("5", "20", "100")


def test_slurm_is_off_by_default_and_validated():
    assert Config().slurm.enabled is False and "job" not in Config().cloudwatch.dimension_sets
    config = load(environ={"OTEL_EFA_SLURM_ENABLED": "true", "OTEL_EFA_SLURM_TIMEOUT": "0.5"})
    assert config.slurm.enabled and config.slurm.timeout == 0.5
    with pytest.raises(ConfigError) as error:
        load(environ={"OTEL_EFA_SLURM_CACHE_SECONDS": "0"})
    assert error.value.key == "slurm.cache_seconds"


def test_stopping_the_agent_kills_a_hanging_squeue(make_simulator, run_agent, squeue):
    squeue.mode.write_text("hang")
    running = _agent(make_simulator, run_agent, timeout=30.0)
    wait_until(squeue.child.exists, 15, "squeue's child")
    child = int(wait_until(lambda: squeue.child.read_text().strip(), 15, "the child's pid"))
    running.stop()  # SIGTERM's path: must not wait for squeue's 30 s timeout, nor leave it behind
    wait_until(lambda: not _alive(child), 5, "the hanging squeue's child killed")
