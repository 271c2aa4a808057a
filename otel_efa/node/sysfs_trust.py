"""Refuse a counter tree that someone other than root could have written.

The agent exports what the tree says as the node's network health, and alarms page people on it: a tree
owned by a user, or writable by everyone, lets that user make the node look healthy or broken at will.
The kernel's sysfs is root's and never world-writable, so like the OpenTelemetry Collector's
``awsefareceiver`` the agent refuses such a tree at start-up, unless told otherwise (``--simulate``, or
``--allow-untrusted-sysfs`` for a test or copied tree).

Only ``lstat``/``stat`` and directory listings: nothing is opened, so nothing here can block.
"""
import os
import stat
from typing import Iterator, List, Optional

HOW_TO_ALLOW = "--allow-untrusted-sysfs (config key allow_untrusted_sysfs: true)"


def _paths(root: str) -> Iterator[str]:
    """The class directory, each device's directories that hold counters, and the counter files."""
    class_dir = os.path.join(root, "class", "infiniband")
    yield class_dir
    for device in _list(class_dir):
        device_dir = os.path.join(class_dir, device)
        yield device_dir
        counter_dirs = [os.path.join(device_dir, "hw_counters")]
        ports = os.path.join(device_dir, "ports")
        if os.path.isdir(ports):
            yield ports
            for port in _list(ports):
                yield os.path.join(ports, port)
                counter_dirs.append(os.path.join(ports, port, "hw_counters"))
        for directory in counter_dirs:
            if os.path.isdir(directory):
                yield directory
                yield from (os.path.join(directory, name) for name in _list(directory))


def _list(directory: str) -> List[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def untrusted(root: str) -> Optional[str]:
    """None when the tree under ``root`` is root's and not world-writable, else one line naming the first
    path that is not, and the fix."""
    for path in _paths(root):
        try:
            st = os.stat(path) if os.path.isdir(path) else os.lstat(path)  # device entries are links
        except OSError:
            continue  # gone or unreadable: the reader reports it
        if st.st_uid != 0:
            return (f"{path} is owned by uid {st.st_uid}, not root: counters another user can write cannot be "
                    f"trusted; fix with 'chown -R root {root}', or pass {HOW_TO_ALLOW} for a test tree")
        if st.st_mode & stat.S_IWOTH and not stat.S_ISLNK(st.st_mode):
            return (f"{path} is world-writable (mode {stat.S_IMODE(st.st_mode):04o}): counters anyone can write "
                    f"cannot be trusted; fix with 'chmod o-w {path}', or pass {HOW_TO_ALLOW} for a test tree")
    return None
