"""The lines of ``otel-efa top`` and of the console exporter: text plus a style per line, for curses or for
plain output alike.

Every column is a per-second rate over the last interval, in one unit per column, named in a second
header line as ``nvidia-smi dmon`` does: bits per second in Gb/s, packets, drops and errors per second
with k/M/G for thousands, millions and billions. ``-`` means no rate yet (the first reading) or none
this interval (a counter reset). Totals since boot are ``otel-efa snapshot``'s.

Fits 80 columns: one device per line (a name longer than its column ends in ``~``), 5 lines of header
and footer, the rest scrolls (a p5's 32 devices need two pages on 24 lines). A faulty device is marked
with ``!`` in the first column as well as highlighted, so it stands out in a terminal without colour and
in a log.
"""
import time
from typing import List, Optional, Tuple

from otel_efa.names import escape
from otel_efa.tools.top.model import SORT_KEYS, DeviceRow, TopModel

NORMAL, HEADER, FAULT = "normal", "header", "fault"
Line = Tuple[str, str]  # (text, style)
NAME_WIDTH = 12
NUMBER_WIDTH = 6
NODE_BAR_CELLS = 16
MAX_WIDTH = 80
# (heading, unit) of the columns after DEVICE and ST; every value is right-aligned under them.
RATE_COLUMNS = (("RX", "Gb/s"), ("TX", "Gb/s"), ("UTIL", "%"), ("RX", "pkt/s"), ("TX", "pkt/s"),
                ("RETR", "pkt/s"), ("DROP", "pkt/s"), ("ERR", "err/s"))
COLUMN_HEADER = (
    f" {'DEVICE':<{NAME_WIDTH}} {'ST':<4}" + "".join(f" {name:>{NUMBER_WIDTH}}" for name, _ in RATE_COLUMNS),
    f" {'per second':<{NAME_WIDTH}} {'':<4}" + "".join(f" {unit:>{NUMBER_WIDTH}}" for _, unit in RATE_COLUMNS),
)
CHROME_LINES = 3 + len(COLUMN_HEADER)  # title, node totals, column header, footer
SCALES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def gbps(bytes_per_second: Optional[float]) -> str:
    """Bytes per second as Gb/s with three or four significant figures; ``-`` when there is no rate."""
    if bytes_per_second is None:
        return "-"
    value = bytes_per_second * 8 / 1e9
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def per_second(count: Optional[float]) -> str:
    """A count per second in at most 5 characters: ``0``, ``0.4``, ``12.5``, ``512``, ``763k``, ``1.2M``."""
    if count is None:
        return "-"
    if count == 0:
        return "0"
    for scale, suffix in SCALES:
        if count >= scale * 0.9995:  # what rounds to 1.00 of the next unit is written in it
            scaled = count / scale
            return f"{scaled:.1f}{suffix}" if scaled < 9.995 else f"{scaled:.0f}{suffix}"
    return f"{count:.1f}" if count < 99.95 else f"{count:.0f}"


def percent(fraction: Optional[float], sign: str = "") -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}{sign}"


def bar(fraction: Optional[float], cells: int = NODE_BAR_CELLS) -> str:
    if fraction is None:
        return "[" + " " * cells + "]"
    filled = min(cells, max(0, round(fraction * cells)))
    return "[" + "#" * filled + "." * (cells - filled) + "]"


def device_name(name: str) -> str:
    """The name as every exporter writes it (otel_efa/names.py), cut to its column with ``~``."""
    text = escape(name)
    return text if len(text) <= NAME_WIDTH else text[:NAME_WIDTH - 1] + "~"


def device_line(row: DeviceRow) -> Line:
    state = {True: "up", False: "DOWN", None: "?"}[row.up]
    mark = "!" if row.fault else " "
    figures = (gbps(row.rx), gbps(row.tx), percent(row.utilization), per_second(row.rx_pps),
               per_second(row.tx_pps), per_second(row.retrans_pps), per_second(row.drops_pps),
               per_second(row.errors_pps))
    text = f"{mark}{device_name(row.name):<{NAME_WIDTH}} {state:<4}" + "".join(
        f" {figure:>{NUMBER_WIDTH}}" for figure in figures)
    return text, FAULT if row.fault else NORMAL


def node_line(model: TopModel) -> Line:
    """The node's throughput against its line rate; a fault when devices the instance type has are missing."""
    totals = model.totals
    line_rate = f"{totals.line_rate * 8 / 1e9:.0f}" if totals.line_rate else "?"
    text = (f"NODE RX {gbps(totals.rx)} TX {gbps(totals.tx)} Gb/s of {line_rate} Gb/s "
            f"{bar(totals.utilization)} {percent(totals.utilization, '%')}")
    missing = totals.expected_devices is not None and totals.devices < totals.expected_devices
    return text, FAULT if missing else NORMAL


def device_count(model: TopModel) -> str:
    expected = model.totals.expected_devices
    return f"{model.totals.devices}{f'/{expected}' if expected is not None else ''} EFA devices"


def instance_type_name(model: TopModel, fallback: Optional[str] = None) -> str:
    if model.instance_type:
        return model.instance_type.name
    return escape(fallback)[:24] if fallback else "unknown instance type"


def header_lines(model: TopModel, interval: float, now: Optional[float] = None) -> List[Line]:
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    title = f"otel-efa top  {instance_type_name(model)}  {device_count(model)}  every {interval:g}s  {clock}"
    return [(title, NORMAL), node_line(model)]


def table_lines(rows: List[DeviceRow]) -> List[Line]:
    """The two header lines (names, units) and one line per device."""
    return [(text, HEADER) for text in COLUMN_HEADER] + [device_line(r) for r in rows]


def screen_lines(model: TopModel, interval: float, height: int, width: int, offset: int) -> Tuple[List[Line], int]:
    """Everything to draw on a ``height`` x ``width`` screen; ``offset`` is clamped and returned."""
    rows = model.sorted_rows()
    visible = max(1, height - CHROME_LINES)
    offset = max(0, min(offset, len(rows) - visible))
    shown = rows[offset:offset + visible]
    lines = header_lines(model, interval) + table_lines(shown)
    last = offset + len(shown)
    keys = "/".join(SORT_KEYS)
    footer = (f"q quit  {keys} sort ({model.sort_key})  arrows/PgUp/PgDn scroll  "
              f"devices {offset + 1 if shown else 0}-{last} of {len(rows)}")
    lines += [("", NORMAL)] * (height - 1 - len(lines)) + [(footer, HEADER)]
    return [(text[:width - 1], style) for text, style in lines[:height]], offset


def plain_lines(model: TopModel, interval: float) -> List[str]:
    """One block per refresh when the output is not a terminal: header, columns, every device."""
    lines = header_lines(model, interval) + table_lines(model.sorted_rows())
    return [text[:MAX_WIDTH] for text, _ in lines] + [""]
