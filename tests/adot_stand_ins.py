"""Stand-ins for the AWS side of the ADOT install, which cannot run here: ADOT's release package and the
package managers that install it (rpm, dpkg, dpkg-deb, dpkg-query; this Debian machine has no rpm, and a
test must never install a real package on the host).

A stand-in package is a gzip'd tar laid out like ADOT's RPM/DEB payload (``opt/aws/aws-otel-collector/bin/
VERSION``, the control script ``aws-otel-collector-ctl``, the systemd unit). The package manager stand-in
unpacks it under ``--root`` (it refuses to act without one, so the host's / is never touched), records
which files it placed and the version, answers version queries, and removes exactly those files again.
The control script stand-in records its arguments and, like the real one, restarts the service through
whatever ``systemctl`` is on PATH (the systemctl stand-in of node_stand_ins).
"""
import hashlib
import io
import stat
import sys
import tarfile
from pathlib import Path

CTL = "opt/aws/aws-otel-collector/bin/aws-otel-collector-ctl"
VERSION_FILE = "opt/aws/aws-otel-collector/bin/VERSION"

_CTL = """#!/bin/sh
# aws-otel-collector-ctl stand-in: records its arguments; "-a start" restarts the service like the real one.
echo "$*" >> "${ADOT_CTL_CALLS:-/dev/null}"
case "$*" in *"-a start"*) systemctl daemon-reload; systemctl restart aws-otel-collector.service ;; esac
"""

_UNIT = """[Unit]
Description=AWS OTel Collector (stand-in)
[Service]
ExecStart=/opt/aws/aws-otel-collector/bin/aws-otel-collector $config
[Install]
WantedBy=multi-user.target
"""

_PACKAGE_MANAGER = '''#!{python}
"""rpm / dpkg / dpkg-deb / dpkg-query stand-in (tests/adot_stand_ins.py): acts only under --root."""
import json, os, sys, tarfile

name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ.get("PM_CALLS", os.devnull), "a") as log:
    log.write(" ".join([name] + args) + "\\n")


def option(flag):
    return args[args.index(flag) + 1] if flag in args else None


def version_of(package):
    with tarfile.open(package) as tar:
        return tar.extractfile("{version_file}").read().decode().strip().lstrip("v")


root = option("--root")
if name == "dpkg-query":
    root = option("--admindir")[: -len("/var/lib/dpkg")]
if name in ("rpm", "dpkg", "dpkg-query") and not (args[:1] == ["-qp"]) and root in (None, "", "/"):
    sys.exit(name + " stand-in: refusing to act on the host's / (give --root)")
db = os.path.join(root or "/nonexistent", "var/lib/package-stand-in/aws-otel-collector.json")


def installed():
    try:
        with open(db) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def install(package):
    with tarfile.open(package) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tar.extractall(root, members=members)
    os.makedirs(os.path.dirname(db), exist_ok=True)
    with open(db, "w") as f:
        json.dump({{"version": version_of(package), "files": [m.name for m in members]}}, f)


def remove():
    record = installed()
    if record is None:
        sys.exit(name + ": package aws-otel-collector is not installed")
    for path in record["files"]:
        os.remove(os.path.join(root, path))
        parent = os.path.dirname(path)
        while parent.startswith("opt/") or parent == "opt":  # the package owns its /opt/aws directories
            if os.listdir(os.path.join(root, parent)):
                break
            os.rmdir(os.path.join(root, parent))
            parent = os.path.dirname(parent)
    os.remove(db)


if name == "rpm" and args[:1] == ["-qp"]:
    print(version_of(args[-1]), end="")
elif name == "dpkg-deb" and args[:1] == ["-f"]:
    print(version_of(args[1]))
elif (name == "rpm" and "-q" in args) or name == "dpkg-query":
    record = installed()
    if record is None:
        sys.exit(1)
    print(record["version"], end="")
elif (name == "rpm" and "-U" in args) or (name == "dpkg" and "-i" in args):
    install(args[-1])
elif (name == "rpm" and "-e" in args) or (name == "dpkg" and "--purge" in args):
    remove()
else:
    sys.exit(name + " stand-in: unexpected arguments " + " ".join(args))
'''


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install_package_managers(bin_dir: Path) -> None:
    """rpm, dpkg, dpkg-deb and dpkg-query stand-ins in ``bin_dir`` (put it first on PATH); their calls
    are logged to $PM_CALLS."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = _PACKAGE_MANAGER.format(python=sys.executable, version_file=VERSION_FILE)
    for name in ("rpm", "dpkg", "dpkg-deb", "dpkg-query"):
        _executable(bin_dir / name, script)


def make_package(path: Path, version: str) -> str:
    """Write a stand-in ADOT package for ``version`` (e.g. "v0.49.0") at ``path``; returns its SHA-256."""
    files = {VERSION_FILE: version + "\n", CTL: _CTL,
             "etc/systemd/system/aws-otel-collector.service": _UNIT,
             "opt/aws/aws-otel-collector/bin/aws-otel-collector": "#!/bin/sh\nexit 0\n"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if "/bin/" in name and not name.endswith("VERSION") else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def package_files():
    """The files a stand-in package places, relative to the root."""
    return {VERSION_FILE, CTL, "etc/systemd/system/aws-otel-collector.service",
            "opt/aws/aws-otel-collector/bin/aws-otel-collector"}
