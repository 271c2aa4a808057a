"""Driving ``otel-efa top``: collect on a monotonic schedule, draw with curses, or print plain blocks.

curses comes with Python and works over SSH in any terminal tmux or screen can host; nothing more is
needed for one refreshing table.
"""
import curses
import sys
import time
from typing import Callable, Optional

from otel_efa.pipeline.collector import Collector
from otel_efa.tools.top.model import SORT_KEYS, TopModel
from otel_efa.tools.top.view import FAULT, HEADER, plain_lines, screen_lines

QUIT_KEYS = (ord("q"), ord("Q"))


class TopLoop:
    def __init__(self, collector: Collector, model: TopModel, interval: float, count: Optional[int] = None,
                 before_collect: Optional[Callable[[], None]] = None):
        self.collector = collector
        self.before_collect = before_collect  # a simulated node advances exactly to the moment of reading
        self.model = model
        self.interval = interval
        self.count = count
        self.offset = 0

    def _collect(self) -> int:
        if self.before_collect is not None:
            self.before_collect()
        self.model.update(self.collector.collect())
        return self.collector.latest.collections if self.collector.latest else 0

    def run_plain(self, out=sys.stdout) -> int:
        """A block per interval; the first reading only primes the rates, so every block has figures."""
        self._collect()
        deadline = time.monotonic()
        printed = 0
        while self.count is None or printed < self.count:
            deadline += self.interval
            time.sleep(max(0.0, deadline - time.monotonic()))
            self._collect()
            out.write("\n".join(plain_lines(self.model, self.interval)) + "\n")
            out.flush()
            printed += 1
        return 0

    def run_curses(self) -> int:
        return curses.wrapper(self._curses_main)

    def _curses_main(self, screen) -> int:
        styles = _styles()
        curses.curs_set(0)
        deadline = time.monotonic()
        while True:
            if time.monotonic() >= deadline:
                done = self._collect()
                if self.count is not None and done >= self.count:
                    self._draw(screen, styles)
                    return 0
                deadline += self.interval
                if deadline < time.monotonic():  # suspended or slow: skip ahead, never burst
                    deadline = time.monotonic() + self.interval
            self._draw(screen, styles)
            screen.timeout(max(1, int((deadline - time.monotonic()) * 1000)))
            key = screen.getch()
            if key in QUIT_KEYS:
                return 0
            self._handle(key, screen.getmaxyx()[0])

    def _handle(self, key: int, height: int) -> None:
        page = max(1, height - 4)
        if key in (curses.KEY_DOWN, ord("j")):
            self.offset += 1
        elif key in (curses.KEY_UP, ord("k")):
            self.offset -= 1
        elif key in (curses.KEY_NPAGE, ord(" ")):
            self.offset += page
        elif key == curses.KEY_PPAGE:
            self.offset -= page
        elif key == curses.KEY_HOME:
            self.offset = 0
        elif 0 <= key < 256 and chr(key) in SORT_KEYS:
            self.model.sort_by(SORT_KEYS[chr(key)])
            self.offset = 0

    def _draw(self, screen, styles) -> None:
        height, width = screen.getmaxyx()
        lines, self.offset = screen_lines(self.model, self.interval, height, width, self.offset)
        screen.erase()
        for y, (text, style) in enumerate(lines):
            try:
                screen.addstr(y, 0, text, styles.get(style, curses.A_NORMAL))
            except curses.error:  # the bottom-right cell cannot be written; the rest is drawn
                pass
        screen.refresh()


def _styles():
    fault = curses.A_BOLD | curses.A_REVERSE
    if curses.has_colors():
        curses.start_color()
        try:
            curses.use_default_colors()
            background = -1
        except curses.error:
            background = curses.COLOR_BLACK
        curses.init_pair(1, curses.COLOR_RED, background)
        fault = curses.color_pair(1) | curses.A_BOLD
    return {HEADER: curses.A_REVERSE, FAULT: fault}
