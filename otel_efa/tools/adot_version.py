"""The ADOT collector's version on a node, and whether it is new enough for otel-efa.

ADOT v0.41.x builds on contrib 0.109.0, whose metricstransform ``aggregate_labels`` with ``label_set: []``
aggregates nothing (opentelemetry-collector-contrib issues #34430 and #35120, fixed by PR #35006): the
collector never forms the node totals the CloudWatch metrics are. v0.42.0 (contrib 0.115.0) is fixed.
``adot/install-adot.sh`` refuses the same versions; its table ``adot/adot-releases.txt`` carries the same
minimum and default (tests/test_install_adot.py keeps them equal).
"""
import os
import re
import shutil
import subprocess
from typing import Optional, Tuple

Version = Tuple[int, int, int]

MINIMUM: Version = (0, 42, 0)
DEFAULT = "v0.49.0"  # the release install-adot.sh installs by default
ADOT_HOME = "/opt/aws/aws-otel-collector"
# The packages ship bin/VERSION (aws-otel-collector-ctl reads it for "-a status").
VERSION_FILES = (f"{ADOT_HOME}/bin/VERSION", f"{ADOT_HOME}/VERSION")
PACKAGE = "aws-otel-collector"

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse(text: str) -> Optional[Version]:
    """``"v0.49.0"`` or ``"0.49.0-1"`` -> (0, 49, 0); None when it is no version."""
    match = _VERSION.match(text.strip())
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def text(version: Version) -> str:
    return "v" + ".".join(map(str, version))


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _package_manager(root: str) -> Optional[str]:
    """The version the package manager records under ``root``, if it knows the package."""
    if shutil.which("rpm"):
        command = ["rpm", "-q", "--qf", "%{VERSION}", PACKAGE] + (["--root", root] if root != "/" else [])
    elif shutil.which("dpkg-query"):
        command = ["dpkg-query", "--admindir", _under(root, "/var/lib/dpkg"), "-W", "-f", "${Version}", PACKAGE]
    else:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def installed(root: str = "/") -> Optional[Version]:
    """The installed ADOT's version under ``root``, or None when ADOT is not installed there."""
    for path in VERSION_FILES:
        try:
            with open(_under(root, path), encoding="utf-8") as f:
                found = parse(f.readline())
        except OSError:
            continue
        if found:
            return found
    recorded = _package_manager(root)
    return parse(recorded) if recorded else None


def check(root: str = "/") -> Tuple[str, str, str]:
    """(status, detail, fix) for ``otel-efa doctor``: PASS, FAIL, or SKIP when no ADOT is installed."""
    found = installed(root)
    where = "" if root == "/" else f" under {root}"
    if found is None:
        return "SKIP", f"no ADOT collector installed{where}", ""
    if found < MINIMUM:
        return ("FAIL", f"ADOT {text(found)}{where} is older than the minimum {text(MINIMUM)}: its metricstransform "
                        "forms no node totals", f"sudo /opt/otel-efa/bundle/adot/install-adot.sh --upgrade ...  "
                        f"(installs {DEFAULT}; docs/telemetry-path.md)")
    return "PASS", f"ADOT {text(found)}{where} (minimum {text(MINIMUM)})", ""
