"""A network namespace of the test's own: only a loopback interface, nothing routed anywhere else.

``isolated_network()`` moves the calling thread into a fresh network namespace (``unshare(CLONE_NEWNET)``
through libc, as ``unshare --net`` does), brings ``lo`` up, and moves the thread back afterwards. Every
process the test starts meanwhile (collector, Prometheus, node exporter, the agent) and every thread it
starts (moto's server, the IMDS stand-in) is created inside that namespace, so:

- nothing can reach 169.254.169.254, AWS or any address but loopback: there is no other interface;
- the fixed ports the shipped configs use (4317, 9400, 9100, 13133) are the namespace's own, so they
  never collide with another test, a developer's collector or CI's neighbours.

Sockets opened inside stay in that namespace; the caller closes them (stops its peers) before leaving.
Linux only; needs CAP_SYS_ADMIN (root, as CI and `make test` run).
"""
import contextlib
import ctypes
import os
import subprocess
from typing import Iterator

import pytest

CLONE_NEWNET = 0x40000000


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _current() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@contextlib.contextmanager
def isolated_network() -> Iterator[str]:
    """Run the body in a new network namespace with only ``lo`` (up); yields the namespace's id."""
    libc = _libc()
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            pytest.fail(f"unshare(CLONE_NEWNET) failed: {os.strerror(errno)}; the collector tests need root "
                        "(CAP_SYS_ADMIN), as `make test` runs in CI")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True)
            names = [line.split(":")[1].strip() for line in links.stdout.splitlines()]
            assert names == ["lo"], f"the namespace should hold only lo, it holds {names}"
            yield _current()
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original network namespace failed")
    finally:
        os.close(original)
