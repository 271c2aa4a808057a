"""The lines of ``otel-efa top``: text plus a style per line, for curses or for plain output alike.

Fits 80 columns: one device per line, 4 lines of header and footer, the rest scrolls (a p5's 32
devices need two pages on 24 lines). A faulty device is marked with ``!`` in the first column as well
as highlighted, so it stands out in a terminal without colour and in a log.
"""
import time
from typing import List, Optional, Tuple

from otel_efa.tools.top.model import SORT_KEYS, DeviceRow, TopModel

NORMAL, HEADER, FAULT = "normal", "header", "fault"
Line = Tuple[str, str]  # (text, style)
BAR_CELLS = 8
CHROME_LINES = 4  # title, node totals, column header, footer
COLUMNS = (f" {'DEVICE':<11} {'ST':<4} {'RX Gb/s':>7} {'TX Gb/s':>7} {'UTIL':<{BAR_CELLS + 2}} {'':>4} "
           f"{'RX kpps':>7} {'TX kpps':>7} {'RETR/s':>6} {'ERR':>6}")


def _gbps(bytes_per_second: Optional[float], width: int = 7) -> str:
    return f"{bytes_per_second * 8 / 1e9:>{width}.2f}" if bytes_per_second is not None else f"{'-':>{width}}"


def _number(value: Optional[float], width: int, scale: float = 1.0) -> str:
    return f"{value / scale:>{width}.1f}" if value is not None else f"{'-':>{width}}"


def bar(fraction: Optional[float], cells: int = BAR_CELLS) -> str:
    if fraction is None:
        return "[" + " " * cells + "]"
    filled = min(cells, max(0, round(fraction * cells)))
    return "[" + "#" * filled + "." * (cells - filled) + "]"


def _percent(fraction: Optional[float]) -> str:
    return f"{fraction * 100:>3.0f}%" if fraction is not None else "   -"


def device_line(row: DeviceRow) -> Line:
    state = {True: "up", False: "DOWN", None: "?"}[row.up]
    mark = "!" if row.fault else " "
    errors = f"{row.errors}{'+' if row.errors_rising else ''}"
    text = (f"{mark}{row.name:<11.11} {state:<4} {_gbps(row.rx)} {_gbps(row.tx)} {bar(row.utilization)} "
            f"{_percent(row.utilization)} {_number(row.rx_pps, 7, 1e3)} {_number(row.tx_pps, 7, 1e3)} "
            f"{_number(row.retrans_pps, 6)} {errors:>6}")
    return text, FAULT if row.fault else NORMAL


def header_lines(model: TopModel, interval: float, now: Optional[float] = None) -> List[Line]:
    totals = model.totals
    kind = model.instance_type.name if model.instance_type else "unknown instance type"
    expected = f"/{totals.expected_devices}" if totals.expected_devices is not None else ""
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    title = f"otel-efa top  {kind}  {totals.devices}{expected} EFA devices  every {interval:g}s  {clock}"
    line_rate = f"{totals.line_rate * 8 / 1e9:.0f}" if totals.line_rate else "?"
    node = (f"NODE RX {_gbps(totals.rx, 0).strip()} TX {_gbps(totals.tx, 0).strip()} Gb/s of {line_rate} "
            f"{bar(totals.utilization, 16)} {_percent(totals.utilization).strip()}")
    missing = totals.expected_devices is not None and totals.devices < totals.expected_devices
    return [(title, NORMAL), (node, FAULT if missing else NORMAL)]


def screen_lines(model: TopModel, interval: float, height: int, width: int, offset: int) -> Tuple[List[Line], int]:
    """Everything to draw on a ``height`` x ``width`` screen; ``offset`` is clamped and returned."""
    rows = model.sorted_rows()
    visible = max(1, height - CHROME_LINES)
    offset = max(0, min(offset, len(rows) - visible))
    shown = rows[offset:offset + visible]
    lines = header_lines(model, interval) + [(COLUMNS, HEADER)] + [device_line(r) for r in shown]
    last = offset + len(shown)
    keys = "/".join(SORT_KEYS)
    footer = (f"q quit  {keys} sort ({model.sort_key})  arrows/PgUp/PgDn scroll  "
              f"devices {offset + 1 if shown else 0}-{last} of {len(rows)}")
    lines += [("", NORMAL)] * (height - 1 - len(lines)) + [(footer, HEADER)]
    return [(text[:width - 1], style) for text, style in lines[:height]], offset


def plain_lines(model: TopModel, interval: float) -> List[str]:
    """One block per refresh when the output is not a terminal: header, columns, every device."""
    return ([text for text, _ in header_lines(model, interval)] + [COLUMNS]
            + [device_line(row)[0] for row in model.sorted_rows()] + [""])
