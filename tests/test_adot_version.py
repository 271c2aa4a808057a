"""``otel-efa doctor``'s ADOT version check and otel_efa.tools.adot_version, on a directory root laid out as ADOT's
package leaves it (bin/VERSION) or as the package manager records it. Stand-ins: the package itself (a
VERSION file, or the rpm stand-in of tests/adot_stand_ins.py; no ADOT is installable here)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from adot_stand_ins import install_package_managers, make_package

from otel_efa import config as config_module
from otel_efa.tools import adot_version, doctor


@pytest.mark.parametrize("text, expected", [
    ("v0.49.0\n", (0, 49, 0)), ("0.42.0-1", (0, 42, 0)), ("v0.41.1", (0, 41, 1)), ("latest", None), ("", None)])
def test_parse(text, expected):
    assert adot_version.parse(text) == expected


def _root_with(tmp_path: Path, version: str) -> Path:
    root = tmp_path / "root"
    (root / "opt/aws/aws-otel-collector/bin").mkdir(parents=True)
    (root / "opt/aws/aws-otel-collector/bin/VERSION").write_text(version + "\n")
    return root


def _doctor(tmp_path: Path, root: Path, exporters=("otlp",)) -> subprocess.CompletedProcess:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"exporters": list(exporters), "sysfs": str(tmp_path / "sys"),
                                      "otlp": {"endpoint": "http://127.0.0.1:9"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-m", "otel_efa", "doctor", "--config", str(config), "--root", str(root),
                           "--timeout", "0.5"], capture_output=True, text=True, timeout=120, env=env)


def _line(done: subprocess.CompletedProcess) -> str:
    return next(line for line in done.stdout.splitlines() if "ADOT version:" in line)


def test_doctor_fails_an_adot_below_the_minimum_and_names_the_minimum_and_the_fix(tmp_path):
    done = _doctor(tmp_path, _root_with(tmp_path, "v0.41.1"))
    line = _line(done)
    assert line.startswith("FAIL  ADOT version: ADOT v0.41.1") and "older than the minimum v0.42.0" in line, line
    assert "-> fix: " in line and "install-adot.sh --upgrade" in line and done.returncode == 1


def test_doctor_passes_the_minimum_and_skips_without_adot_or_otlp(tmp_path):
    assert _line(_doctor(tmp_path, _root_with(tmp_path, "v0.42.0"))).startswith("PASS  ADOT version: ADOT v0.42.0")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _line(_doctor(tmp_path, empty)).startswith("SKIP  ADOT version: no ADOT collector installed")
    context = doctor.Context(config=config_module.load(None, environ={}, flags={"exporters": "log"}),
                             root=str(_root_with(tmp_path / "x", "v0.41.1")))
    assert doctor.check_adot_version(context).status == doctor.SKIP  # no OTLP: the collector is not ours to judge


def test_installed_version_from_the_package_manager_when_there_is_no_version_file(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    install_package_managers(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    package = tmp_path / "aws-otel-collector.rpm"
    make_package(package, "v0.43.1")
    root = tmp_path / "root"
    root.mkdir()
    assert adot_version.installed(str(root)) is None
    subprocess.run([str(bin_dir / "rpm"), "-U", "--root", str(root), str(package)], check=True)
    (root / "opt/aws/aws-otel-collector/bin/VERSION").unlink()
    assert adot_version.installed(str(root)) == (0, 43, 1)
