"""Files of the kinds that have no business in sysfs, put where a sysfs file belongs (hostile-tree tests)."""
import os
import socket
from typing import List

ODD_KINDS = ("fifo", "socket", "directory", "loop", "dangling")


def replace_with_odd_file(path: str, kind: str, scratch: List[socket.socket]) -> None:
    """Replace ``path`` by a FIFO, a bound Unix socket (kept open in ``scratch``; close them after), a
    directory, a symlink to itself or a dangling symlink."""
    if os.path.lexists(path):
        os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        scratch.append(s)
        here = os.getcwd()
        os.chdir(os.path.dirname(path))  # a socket's path is limited to 107 bytes: bind it relative
        try:
            s.bind(os.path.basename(path))
        finally:
            os.chdir(here)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "loop":
        os.symlink(os.path.basename(path), path)
    elif kind == "dangling":
        os.symlink("nowhere", path)
    else:
        raise ValueError(f"unknown kind {kind!r}")
