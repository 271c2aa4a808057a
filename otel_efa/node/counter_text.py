"""What sysfs files say, parsed: a counter's value, a port's rate and state, a name's natural order.

Pure functions over bytes and text, tested and fuzzed alone (tests/test_sysfs.py, tests/test_fuzz.py).
"""
import math
import re
from typing import Optional, Tuple, Union

from otel_efa.node.read_errors import NOT_AVAILABLE, PARSE, CounterValueError

U64_MAX = (1 << 64) - 1
READ_SIZE = 64  # a u64 in decimal is at most 20 digits and a newline

# All a counter file may hold: ASCII digits and the whitespace around them. int() alone also takes a sign
# ("+5", "-0") and digit separators ("1_000"), which no kernel writes.
DECIMAL = b"0123456789 \t\n\r\x0b\x0c"


def parse_counter(data: bytes) -> int:
    """One counter file's content as an int in 0..2**64-1, or CounterValueError saying why not.

    ``data`` is one read of READ_SIZE bytes: a full buffer means the file is longer than any u64 line,
    and is refused rather than judged by its beginning.
    """
    text = data.strip()
    if text.startswith(b"N/A"):
        raise CounterValueError(NOT_AVAILABLE, f"counter not available ({text[:32]!r})")
    if len(data) >= READ_SIZE:
        raise CounterValueError(PARSE, f"longer than {READ_SIZE - 1} bytes: {text[:32]!r}...")
    try:
        if data.translate(None, DECIMAL):
            raise ValueError
        value = int(text)
    except ValueError:
        raise CounterValueError(PARSE, f"not a decimal number: {text[:32]!r}") from None
    if value > U64_MAX:
        raise CounterValueError(PARSE, f"not a u64: {text[:32]!r}")
    return value


def parse_rate_gbps(text: str) -> Optional[float]:
    """``100 Gb/sec (4X EDR)`` -> 100.0; None for anything else, a speed not positive and finite too."""
    parts = text.split()
    if len(parts) >= 2 and parts[1].startswith("Gb/s"):
        try:
            gbps = float(parts[0])
        except ValueError:
            return None
        return gbps if 0 < gbps < math.inf else None  # float() also takes "nan", "inf", "-100"
    return None


def parse_state(text: str) -> Tuple[Optional[int], str]:
    """``4: ACTIVE`` -> (4, "ACTIVE")."""
    number, _, name = text.partition(":")
    try:
        return int(number), name.strip()
    except ValueError:
        return None, text.strip()


def natural_key(name: str) -> Tuple[Union[int, str], ...]:
    """``rdmap16s0`` before ``rdmap128s0``, ``efa_2`` before ``efa_10``. The digit runs are the odd parts
    (str.isdigit() also holds for "¹", which int() refuses: a file of that name stopped every read)."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))
