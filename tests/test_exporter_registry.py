"""The exporter registry: the entry-point group ``otel_efa.exporters``, the built-ins' and a plugin's.

The plugin is a real distribution: a package and its ``.dist-info`` (METADATA, entry_points.txt) written to a
directory that goes on the agent's PYTHONPATH, as pip would install it; the agent runs as a process on a
simulated node and chooses it by name like any exporter.
"""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otel_efa import config
from otel_efa.exporters import registry

REPO = Path(__file__).resolve().parent.parent


def _declared_in_pyproject():
    """name -> "module:attribute" of the built-ins, as pyproject.toml declares them."""
    table = re.search(r'\[project\.entry-points\."otel_efa\.exporters"\]\n((?:[^\[\n].*\n)+)',
                      (REPO / "pyproject.toml").read_text()).group(1)
    return dict(re.findall(r'^([\w-]+) = "([^"]+)"$', table, re.MULTILINE))


BUILT_INS = sorted(_declared_in_pyproject())

PLUGIN = '''
import json
import os

from otel_efa.exporters import Exporter


class SinkExporter(Exporter):
    """Writes what each Interval holds, and what its context gave it, one JSON line per export."""

    name = "testsink"

    def __init__(self, context):
        super().__init__(context)
        self.path = os.environ["TESTSINK_FILE"]
        context.log.info("testsink made")

    def export(self, interval):
        record = {
            "collections": interval.snapshot.collections,
            "series_version": interval.series_version,
            "points": {spec.name: [[dict(a), v] for a, v in points] for spec, points in interval.metrics},
            "logger": self.context.log.name,
            "service": self.context.resource.attributes.get("service.name"),
            "jobs": list(self.context.jobs()),
            "dropped": self.context.stats.dropped_datapoints,
            "interval": self.context.config.interval,
        }
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\\n")


class BrokenExporter(Exporter):
    def __init__(self, context):
        raise RuntimeError("no sink configured here")
'''


def _install_plugin(site: Path, entry_points: str) -> None:
    """A distribution as pip leaves it in site-packages: the package, and its metadata beside it."""
    (site / "otel_efa_testsink").mkdir(parents=True)
    (site / "otel_efa_testsink" / "__init__.py").write_text(PLUGIN)
    (site / "otel_efa_badsink").mkdir()
    (site / "otel_efa_badsink" / "__init__.py").write_text('raise ImportError("libsink.so.1 is not installed")\n')
    info = site / "otel_efa_testsink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: otel-efa-testsink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


ENTRY_POINTS = """\
    [otel_efa.exporters]
    testsink = otel_efa_testsink:SinkExporter
    brokensink = otel_efa_testsink:BrokenExporter
    badsink = otel_efa_badsink:Nothing
    prometheus = otel_efa_testsink:SinkExporter
"""


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    site = tmp_path / "site"
    _install_plugin(site, ENTRY_POINTS)
    return site


def _agent(site: Path, simulator, exporters: str, tmp_path: Path, count: int = 3):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EFA_", "OTEL_EXPORTER"))}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), TESTSINK_FILE=str(tmp_path / "sink.jsonl"),
               AWS_EC2_METADATA_DISABLED="true", OTEL_RESOURCE_ATTRIBUTES="service.name=sink-test")
    return subprocess.run([sys.executable, "-m", "otel_efa", "run", "--sysfs", simulator.root,
                           "--allow-untrusted-sysfs", "--instance-type", "p4d.24xlarge", "--exporters", exporters,
                           "--count", str(count), "--interval", "0.1", "--log-file", str(tmp_path / "lines.log")],
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_agent_loads_a_plugin_by_name_and_pushes_it_every_interval(plugin_site, make_simulator, tmp_path):
    simulator = make_simulator("p4d.24xlarge")  # not advancing: every interval carries these values
    done = _agent(plugin_site, simulator, "testsink,log", tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "sink.jsonl").read_text().splitlines()]
    assert [r["collections"] for r in records] == [1, 2, 3]
    for record in records:
        rx = {a["aws.efa.device"]: v for a, v in record["points"]["efa_rx_bytes"]}
        assert rx == {d: simulator.value(d, "rx_bytes") for d in simulator.device_names}
        assert record["points"]["otel_efa_collections"] == [[{}, record["collections"]]]
        assert (record["logger"], record["service"], record["jobs"], record["dropped"], record["interval"]) == \
            ("otel_efa_testsink", "sink-test", [], 0, 0.1)
    assert records[1]["series_version"] != records[0]["series_version"]  # rates appeared with the second
    assert records[2]["series_version"] == records[1]["series_version"]
    assert "testsink made" in done.stderr  # its context's logger is the agent's logging
    assert "exporter 'prometheus' of otel-efa-testsink 1.0 is ignored" in done.stderr  # a built-in's name
    # the log exporter beside it writes every collection, the first one dashed (no rate yet)
    assert len((tmp_path / "lines.log").read_text().splitlines()) == 3 * len(simulator.device_names)


@pytest.mark.parametrize("exporter, words", [
    ("badsink", "the badsink exporter (otel_efa_badsink:Nothing from otel-efa-testsink 1.0) cannot be imported: "
                "ImportError: libsink.so.1 is not installed"),
    ("brokensink", "the brokensink exporter (otel_efa_testsink:BrokenExporter from otel-efa-testsink 1.0) failed "
                   "to start: RuntimeError: no sink configured here"),
    ("nosuch", "exporters: unknown exporter 'nosuch'; choose from " + ", ".join(BUILT_INS) +
               ", badsink, brokensink, testsink"),
])
def test_a_plugin_that_cannot_be_imported_or_made_is_one_line_and_exit_2(plugin_site, make_simulator, tmp_path,
                                                                         exporter, words):
    done = _agent(plugin_site, make_simulator("p4d.24xlarge"), f"log,{exporter}", tmp_path, count=1)
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if "is ignored:" not in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("otel-efa: config error: exporters: ") and words in lines[0], lines[0]


def test_built_ins_are_the_entry_points_pyproject_declares():
    in_pyproject = _declared_in_pyproject()
    found = {name: entry.target for name, entry in registry.registered().items() if entry.builtin}
    assert found == in_pyproject  # (an install older than the table: pip install -e . again)
    assert set(in_pyproject) >= {"otlp", "prometheus", "cloudwatch", "log", "console"}
    assert config.EXPORTERS == registry.names()


def test_plugins_come_after_the_built_ins_and_cannot_take_their_names(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    registry.registered.cache_clear()
    try:
        entries = registry.registered()
        names = list(entries)
        assert names == BUILT_INS + ["badsink", "brokensink", "testsink"]
        assert entries["prometheus"].builtin and entries["prometheus"].target.startswith("otel_efa.")
        assert entries["testsink"].distribution == "otel-efa-testsink 1.0"
        loaded = config.load(None, environ={"OTEL_EFA_EXPORTERS": "testsink"})  # validation knows plugins
        assert loaded.exporters == ["testsink"]
    finally:
        registry.registered.cache_clear()
