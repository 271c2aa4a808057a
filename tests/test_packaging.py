"""``python -m build`` makes the wheel and the sdist, with PEP 639 license metadata and without a deprecation
warning from the build backend.

The build runs on a copy of the package's sources (setuptools writes build/ and the egg-info next to them)
with ``--no-isolation``: the backend is the test extra's setuptools, so the test downloads nothing.
"""
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "otel_efa")


def _copy_sources(to: Path) -> None:
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, to / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, to / name)


def test_build_makes_wheel_and_sdist_with_license_expression_and_no_deprecation(tmp_path):
    source, out = tmp_path / "src", tmp_path / "dist"
    source.mkdir()
    _copy_sources(source)
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir",
                           str(out), str(source)], capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "deprecat" not in output.lower(), [line for line in output.splitlines() if "eprecat" in line]

    [wheel] = out.glob("otel_efa-*-py3-none-any.whl")
    [sdist] = out.glob("otel_efa-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        license_text = archive.read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))).decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers
    assert not [h for h in headers if h.startswith("Classifier: License ::")], "PEP 639: no license classifier"
    assert "otel-efa = otel_efa.cli:main" in entry_points
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    with tarfile.open(sdist) as archive:
        members = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix() for m in archive.getmembers()
                   if len(Path(m.name).parts) > 1}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", "otel_efa/__init__.py"} <= members
