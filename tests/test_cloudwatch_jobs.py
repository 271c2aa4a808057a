"""The opt-in `job` CloudWatch dimension: node totals per running Slurm job, and nothing while none runs.

moto in server mode behind the recording proxy (aws_peers); the jobs come from the agent's attribution
in the last test, from a stand-in squeue (Slurm cannot run here).
"""
from aws_peers import NAMESPACE, cloudwatch, moto, node, proxy, statistics  # noqa: F401
from opentelemetry.sdk.resources import Resource
from test_slurm import NODE, squeue  # noqa: F401
from waiting import wait_until

from otel_efa.config import CloudWatchConfig, Config, SlurmConfig

INSTANCE = "i-0000000000000j0b5"


def _config() -> Config:
    config = Config(cloudwatch=CloudWatchConfig(dimension_sets=["instance", "job"]), slurm=SlurmConfig(enabled=True))
    config.validate()
    return config


def test_job_series_follow_the_running_jobs(moto, proxy, node):
    jobs = [("1234",)]
    n = node(_config(), INSTANCE, jobs=lambda: jobs[0])
    n.step(60)
    n.step(60)  # minute 2: job 1234
    jobs[0] = ()
    n.step(60)  # minute 3: no job, no job series
    jobs[0] = ("1234", "1240")
    n.step(60)  # minute 4: two jobs share the node
    assert n.exporter.flush(10)
    client = cloudwatch(moto)
    listed = client.list_metrics(Namespace=NAMESPACE, MetricName="rx_bytes_rate")["Metrics"]
    job_values = sorted(d["Value"] for m in listed for d in m["Dimensions"] if d["Name"] == "SlurmJobId")
    assert job_values == ["1234", "1234,1240"]
    for job, minutes in (("1234", 1), ("1234,1240", 1)):
        points = statistics(client, INSTANCE, "rx_bytes_rate", ["Average"], dimensions=[
            {"Name": "InstanceId", "Value": INSTANCE}, {"Name": "SlurmJobId", "Value": job}])
        assert len(points) == minutes
        assert abs(points[0]["Average"] - n.node_rate("rx_bytes")) <= 0.01 * n.node_rate("rx_bytes")
    node_points = statistics(client, INSTANCE, "rx_bytes_rate", ["Average"])
    assert len(node_points) == 3  # the node totals carry on whether or not a job runs


def test_the_agent_hands_its_running_jobs_to_every_exporter(make_simulator, run_agent, squeue):
    simulator = make_simulator("p4d.24xlarge")
    squeue.jobs.write_text("77\n")
    config = Config(sysfs=simulator.root, interval=0.1, exporters=["log"], log_file=str(squeue.dir / "log"),
                    slurm=SlurmConfig(enabled=True, node_name=NODE, cache_seconds=0.1))
    agent = run_agent(config, resource=Resource.create({"service.name": "otel-efa"})).agent
    wait_until(lambda: agent.exporters[0].job_ids() == ("77",), 10, "job 77 handed to the exporter")
    squeue.jobs.write_text("")
    wait_until(lambda: agent.exporters[0].job_ids() == (), 10, "no job handed to the exporter")
