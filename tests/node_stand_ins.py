"""Stand-ins for what cannot run in a test container: systemctl (no systemd as PID 1 here) and the EC2
instance metadata service (no EC2 here). Everything else the node tests use is the real program."""
import http.server
import os
import stat
import threading
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parent.parent

_SYSTEMCTL = """#!/bin/sh
# systemctl stand-in: records each call; enable/start/restart/is-* work on marker files in $STATE.
STATE="{state}"
echo "$*" >> "$STATE/calls"
unit=""
for arg in "$@"; do case "$arg" in -*) ;; *) unit="$arg";; esac; done
case "$1" in
  daemon-reload) exit 0 ;;
  enable) touch "$STATE/enabled.$unit" ;;
  start|restart) touch "$STATE/active.$unit" ;;
  is-enabled) test -f "$STATE/enabled.$unit" ;;
  is-active)
    if test -f "$STATE/active.$unit"; then echo active; exit 0; fi
    echo inactive; exit 3 ;;
  show) cat "$STATE/mainpid" 2>/dev/null || echo 0 ;;
  *) exit 0 ;;
esac
"""


def install_systemctl(bin_dir: Path, state_dir: Path, active_units=(), main_pid: Optional[int] = None) -> Path:
    """Write the stand-in as ``bin_dir/systemctl``; its call log is ``state_dir/calls``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "systemctl"
    path.write_text(_SYSTEMCTL.format(state=state_dir))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    for unit in active_units:
        (state_dir / f"active.{unit}").touch()
    if main_pid is not None:
        (state_dir / "mainpid").write_text(f"{main_pid}\n")
    return path


def systemctl_calls(state_dir: Path):
    calls = state_dir / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


class FakeImds:
    """IMDSv2 on a loopback port: PUT a token, then GET meta-data with it (wrong token: 401)."""

    TOKEN = "stand-in-token"

    def __init__(self, metadata: Dict[str, str]):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._send(200, fake.TOKEN)
                else:
                    self._send(400)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != fake.TOKEN:
                    self._send(401)
                elif self.path.startswith("/latest/") and self.path[len("/latest/"):] in fake.metadata:
                    self._send(200, fake.metadata[self.path[len("/latest/"):]])
                else:
                    self._send(404)

        self.metadata = metadata
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeImds":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def tree_state(root: Path, skip=("sys",)) -> Dict[str, tuple]:
    """Every path under root (but ``skip``) with its type, mode, owner, size, mtime and content."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.samefile(dirpath, root):
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = f.read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            state[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                                   st.st_mtime_ns, content)
    return state


NOBODY = 65534
CLONE_NEWNS = 0x00020000


def run_as_nobody(function, *args, read_only_bind=None):
    """``function(*args)`` in a forked child running as nobody; returns what it returned (pickled).

    A fork, not ``setpriv python``: the child keeps this interpreter, which nobody may be unable to load
    (pyenv's Python 3.9 links libpython from root's home). ``read_only_bind=(source, target)`` first
    bind-mounts source read-only at target in a private mount namespace, as systemd's
    ProtectKernelTunables= does to /sys.
    """
    import ctypes
    import pickle
    import subprocess

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_fd)
            if read_only_bind:
                source, target = read_only_bind
                if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS) != 0:
                    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
                for command in (["mount", "--make-rprivate", "/"], ["mount", "--bind", source, target],
                                ["mount", "-o", "remount,bind,ro", target]):
                    subprocess.run(command, check=True, capture_output=True)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = ("ok", function(*args))
        except BaseException as e:  # report it to the parent
            outcome = ("error", repr(e))
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                pickle.dump(outcome, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", f"child as nobody failed: {value}"
    return value
