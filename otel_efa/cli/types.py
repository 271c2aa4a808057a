"""Argument types for the command line: a number or path that cannot work is a usage error (argparse's one
line, exit status 2) before a command starts, not a traceback or a hang later.

``run`` takes its numbers through the configuration instead (otel_efa/config.py), so that the same limits
hold for the file and the environment and the error names where the value came from.
"""
import argparse
import math
import os
from typing import Optional

from otel_efa.config import quote

ONE_DAY_S = 24 * 3600.0


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {quote(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {quote(text)}")
    return value


def seconds(text: str) -> float:
    """A period or a timeout: above 0 and at most a day."""
    value = _number(text)
    if not 0 < value <= ONE_DAY_S:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {ONE_DAY_S:.0f} seconds, got {quote(text)}")
    return value


def positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {quote(text)}")
    return value


def non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {quote(text)}")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {quote(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {quote(text)}")
    return value


def sysfs_root_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a sysfs root, or None: a missing one would read as a node without EFA devices."""
    if os.path.isdir(path):
        return None
    return f"sysfs root {quote(path)} {'is not a directory' if os.path.exists(path) else 'does not exist'}"


def sysfs_root(text: str) -> str:
    problem = sysfs_root_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text
