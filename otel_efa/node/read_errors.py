"""What can go wrong reading a sysfs file, by reason: the values of ``otel_efa_read_errors``'s ``reason``."""
import errno
from dataclasses import dataclass

MISSING = "missing"
PERMISSION = "permission"
NOT_AVAILABLE = "not_available"
PARSE = "parse"
IO = "io"
REASONS = (MISSING, PERMISSION, NOT_AVAILABLE, PARSE, IO)

_ERRNO_REASON = {
    errno.ENOENT: MISSING,
    errno.ENODEV: MISSING,
    errno.ENXIO: MISSING,
    errno.EACCES: PERMISSION,
    errno.EPERM: PERMISSION,
    errno.EOPNOTSUPP: NOT_AVAILABLE,
    errno.EINVAL: NOT_AVAILABLE,
}

# What awsefareceiver takes to mean "this counter is not available here" when it meets it at discovery:
# such a counter is logged once, counted once under NOT_AVAILABLE, and quietly retried each read.
NOT_AVAILABLE_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL})


class CounterValueError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ReadError:
    path: str
    reason: str
    detail: str
    quiet: bool = False  # an expected absence (N/A, EOPNOTSUPP...): logged at info, not as a warning


def reason_for_oserror(error: OSError) -> str:
    return _ERRNO_REASON.get(error.errno, IO) if error.errno is not None else IO
