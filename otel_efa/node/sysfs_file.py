"""Opening one sysfs attribute without trusting what sits at its path.

On the kernel's sysfs every attribute is a regular file and reading one never blocks. A tree that is not
the kernel's (a container's bind mount, a copied or hand-made tree, a hostile one) can hold anything: a
FIFO's ``open(2)`` for reading blocks in the kernel until a writer comes, and Python retries the call
after each signal (PEP 475), so the agent would hang for good and SIGTERM could not end it; a socket, a
device node, a directory or a symlink loop where a file belongs is no counter either. So every attribute
the agent reads is opened here: ``O_NONBLOCK`` (a FIFO opens at once, a device node's driver sees a
non-blocking open), ``O_NOFOLLOW`` (an attribute is never a link; the directories above it may be),
``O_CLOEXEC``, and the descriptor is kept only when ``fstat`` says it is a regular file. ``O_NONBLOCK``
changes nothing for regular files, kernfs's included, so the kept descriptor reads as before.

Every function raises :class:`OSError` (its ``strerror`` says what was found) and never blocks.
"""
import errno
import os
import stat

FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_DIRECTORY | os.O_CLOEXEC

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"))


class NotAFile(OSError):
    """Something other than a regular file sits where an attribute belongs."""


def kind(mode: int) -> str:
    """``a FIFO``, ``a socket``... for an ``st_mode``; ``a regular file`` for one."""
    fallback = "a regular file" if stat.S_ISREG(mode) else "an odd file"
    return next((name for test, name in _KINDS if test(mode)), fallback)


def open_attribute(path: str) -> int:
    """A descriptor on the regular file at ``path``; :class:`NotAFile` for anything else.

    A symbolic link at ``path`` (a loop, a dangling one, one to a FIFO) fails with ELOOP: the kernel never
    makes an attribute a link.
    """
    try:
        fd = os.open(path, FILE_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotAFile(errno.ELOOP, "a symbolic link where a file belongs", path) from None
        if e.errno == errno.ENXIO and _is_socket(path):  # open(2) of a socket file fails with ENXIO
            raise NotAFile(errno.ENXIO, "a socket where a file belongs", path) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotAFile(errno.EINVAL, f"{kind(mode)} where a file belongs", path)
    return fd


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def read_attribute(path: str, size: int = 4096) -> bytes:
    """At most ``size`` bytes of the regular file at ``path`` (one ``pread`` at 0, as sysfs renders)."""
    fd = open_attribute(path)
    try:
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def read_text(path: str, size: int = 4096) -> str:
    """The attribute as stripped ASCII text (odd bytes replaced); OSError as :func:`read_attribute`."""
    return read_attribute(path, size).decode("ascii", "replace").strip()


def open_directory(path: str) -> int:
    """A descriptor on the directory at ``path`` (links followed: sysfs class entries are links)."""
    return os.open(path, DIRECTORY_FLAGS)
