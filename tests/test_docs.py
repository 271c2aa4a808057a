"""The reference pages are generated from the code (docs/metrics.md from the catalog, docs/configuration.md
from the config schema): these keep the committed files equal to the generator, and the README and docs/
readable: every link lands, the README stays short."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from otel_efa import catalog, config
from otel_efa.artifacts import configuration_page, docs, metrics_page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MOST_LINES = 400
MARKDOWN = [README] + sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", sorted(docs.PAGES))
def test_generated_page_is_committed_as_generated(page):
    committed = (DOCS / docs.file_name(page)).read_text()
    assert committed == docs.PAGES[page](), f"docs/{page}.md is stale: run make docs (otel-efa docs --write docs)"


def test_docs_command_prints_the_page_and_writes_them_all(tmp_path):
    printed = subprocess.run([sys.executable, "-m", "otel_efa", "docs", "metrics"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert printed == metrics_page.page()
    subprocess.run([sys.executable, "-m", "otel_efa", "docs", "--write", str(tmp_path)], capture_output=True,
                   timeout=60, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(docs.file_name(p) for p in docs.PAGES)


def test_metric_page_names_every_catalog_metric_once_with_its_prometheus_name():
    text = metrics_page.page()
    for m in catalog.METRICS:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{m.name}` |")]
        assert len(rows) == 1, m.name
        assert f"`{m.prometheus_name}`" in rows[0] and m.description.split(" (")[0] in rows[0]
    for c in catalog.CLOUDWATCH_METRICS + catalog.CLOUDWATCH_HEALTH_METRICS:
        assert f"| `{c.name}` | {c.unit} |" in text


def test_configuration_page_has_every_key_with_its_variable_and_a_description():
    assert configuration_page.undescribed_keys() == [], "comment these fields in otel_efa/config.py"
    text = configuration_page.page()
    for key in config.KEYS:
        assert f"| `{key}` |" in text and f"`{config.env_name(key)}`" in text, key


def test_configuration_page_maps_run_flags_to_their_keys():
    flags = configuration_page.run_flags()
    assert flags["interval"] == "--interval"
    assert flags["prometheus.address"] == "--prometheus-address"
    assert flags["prometheus.web_config_file"] == "--web-config-file"
    assert flags["simulate_faults"] == "--fault"
    assert set(flags) <= set(config.KEYS)
    assert "otlp.endpoint" not in flags  # no flag: the file, OTEL_EFA_OTLP_ENDPOINT or the OTLP variables


def test_the_default_file_on_the_configuration_page_loads_as_the_defaults(tmp_path):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("\n".join(configuration_page.default_file()) + "\n")
    assert config.load(str(defaults), environ={}) == config.load(None, environ={})


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= README_MOST_LINES, f"README.md has {lines} lines; move detail to docs/"


def _anchors(path: Path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    in_fence = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(path):
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, f"{path.name}: links that go nowhere: {broken}"
