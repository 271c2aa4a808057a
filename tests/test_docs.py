"""The README's metric table is generated from the catalog; this keeps the two from drifting."""
from pathlib import Path

from otel_efa.artifacts.docs import README_END, README_START, readme_block

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_metric_table_matches_catalog():
    text = README.read_text()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    assert text[start:end] == readme_block(), "run: otel-efa metrics --markdown, and paste it into README.md"
