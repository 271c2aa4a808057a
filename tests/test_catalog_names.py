"""No module but the catalog spells a metric, kernel counter or CloudWatch metric name.

Every string constant of otel_efa/ (otel_efa/catalog.py aside; tests are not scanned) is read with ``ast``:
one equal to a name fails, and so does one holding a name as a whole word (an f-string's text, a legend, an
alert's description), docstrings aside. Code refers to the catalog's entries and constants instead
(``catalog.RX_BYTES``, ``catalog.PORT_UP.name``, ``catalog.SRD_HEALTH_EVENTS``). Nothing is exempt: the
simulator, which writes the kernel's files, takes their names from the catalog too.
"""
import ast
import re
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import otel_efa
from otel_efa import catalog

PACKAGE = Path(otel_efa.__file__).parent
CATALOG = PACKAGE / "catalog.py"


def catalog_names() -> Set[str]:
    metrics = {m.name for m in catalog.METRICS} | {m.prometheus_name for m in catalog.METRICS}
    kernel = {m.kernel_name for m in catalog.PORT_COUNTERS + catalog.DEVICE_COUNTERS if m.kernel_name}
    cloudwatch = {c.name for c in catalog.CLOUDWATCH_METRICS + catalog.CLOUDWATCH_HEALTH_METRICS}
    return metrics | kernel | cloudwatch


def _docstrings(tree: ast.AST) -> Set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def spelled_names(source: str, names: Set[str]) -> Iterator[Tuple[int, str]]:
    """(line, name) of every string constant in ``source`` that is a name or, outside docstrings, holds one."""
    word = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                      + r")(?![A-Za-z0-9_])")
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in names:
                yield node.lineno, node.value
            elif id(node) not in docstrings:
                for match in word.finditer(node.value):
                    yield node.lineno, match.group(1)


def test_the_scan_finds_names_spelled_out():
    """The check itself can fail: a name as a string, in an f-string's text, but not in a docstring."""
    names = catalog_names()
    source = ('def f(legend):\n    """Reads efa_rx_bytes."""\n    return ["efa_port_up", f"{legend} rx_drops",'
              ' "rx_bytes_rate", "efa_rx_bytes_total", "rx_bytes_x"]\n')
    assert sorted(spelled_names(source, names)) == [
        (3, "efa_port_up"), (3, "efa_rx_bytes_total"), (3, "rx_bytes_rate"), (3, "rx_drops")]


def test_no_module_spells_a_catalog_name():
    names = catalog_names()
    found: List[str] = []
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p != CATALOG)
    assert len(modules) > 50  # the whole package is scanned
    for path in modules:
        for line, name in spelled_names(path.read_text(encoding="utf-8"), names):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name!r}")
    assert not found, "use the catalog's constants instead of:\n" + "\n".join(found)
