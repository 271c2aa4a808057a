"""Reading back the rate table of the console exporter and ``otel-efa top`` (otel_efa/tools/top/view.py):
each figure with the rounding its printed digits allow, so a test compares it with ground truth."""
import re
from typing import Dict, List, Optional, Tuple

# A device row: fault mark, name, state, then the eight rate columns in the header's order.
COLUMNS = ("rx_gbps", "tx_gbps", "util", "rx_pps", "tx_pps", "retrans_pps", "drops_pps", "errors_pps")
ROW = re.compile(r"^(?P<mark>[ !])(?P<name>\S+)\s+(?P<state>up|DOWN|\?)" + "".join(
    rf"\s+(?P<{c}>-|\d+(?:\.\d+)?[kMG]?)" for c in COLUMNS) + r"\s*$")
SCALE = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


def figure(text: str) -> Optional[Tuple[float, float]]:
    """``763k`` -> (763000.0, 500.0): the value and half a unit of its last printed digit; ``-`` -> None."""
    if text == "-":
        return None
    number, suffix = re.fullmatch(r"(\d+(?:\.(\d+))?)([kMG]?)", text).group(1, 3)
    decimals = len(number.partition(".")[2])
    return float(number) * SCALE[suffix], 0.5 * 10 ** -decimals * SCALE[suffix]


def rows(lines: List[str]) -> Dict[str, dict]:
    """The displayed device name -> its row (the columns as printed, plus ``raw``)."""
    found = {}
    for line in lines:
        match = ROW.match(line)
        if match:
            found[match["name"]] = dict(match.groupdict(), raw=line)
    return found


def assert_shows(text: str, truth: float, what: str) -> None:
    """``text`` is ``truth`` to the digits printed (plus a hair for float arithmetic)."""
    shown = figure(text)
    assert shown is not None, f"{what}: no figure where {truth} was expected"
    value, half_unit = shown
    assert abs(value - truth) <= half_unit + 1e-9 * max(1.0, abs(truth)), f"{what}: shows {text}, truth {truth}"
