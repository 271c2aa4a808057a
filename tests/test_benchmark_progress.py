"""benchmarks/progress.py: what a long benchmark tells on standard error while it runs (the time left), on a
terminal and in a log. A hand-driven clock stands in for time."""
import importlib.util
import io
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "progress", Path(__file__).resolve().parent.parent / "benchmarks" / "progress.py")
progress = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(progress)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_time_left_is_known_or_extrapolated():
    assert progress.line("soak", 150, 600, 150, left=450, unit="s") == "soak: 25% (150/600 s), about 7 min 30 s left"
    # 2 of 6 configurations in 100 s: 4 more at that pace.
    assert progress.line("bench", 2, 6, 100.0, note="x") == "bench: 33% (2/6), about 3 min 20 s left; x"
    assert "estimating" in progress.line("bench", 0, 6, 5.0)
    assert progress.duration(3 * 3600 + 5 * 60 + 9) == "3 h 05 min"


def test_a_log_gets_a_line_at_most_every_interval_a_terminal_one_line_redrawn():
    now = [0.0]
    log = io.StringIO()
    shown = progress.Progress("bench", stream=log, every=10, clock=lambda: now[0])
    for second in range(0, 31):
        now[0] = float(second)
        shown.update(second, 60)
    shown.finish()
    lines = log.getvalue().splitlines()
    assert [line.split("(")[1].split(")")[0] for line in lines[:-1]] == ["0/60", "10/60", "20/60", "30/60"]
    assert lines[1].endswith("about 50 s left") and lines[-1] == "bench: done in 30 s"

    terminal = Terminal()
    drawn = progress.Progress("bench", stream=terminal, clock=lambda: now[0])
    drawn.update(1, 2)
    drawn.update(2, 2)
    drawn.finish()
    assert terminal.getvalue().count("\n") == 1 and terminal.getvalue().count("\r\x1b[K") == 3


def test_start_up_before_the_work_is_not_its_pace():
    now = [0.0]
    log = io.StringIO()
    shown = progress.Progress("bench", stream=log, every=0, clock=lambda: now[0])
    shown.update(0, 4, note="starting")
    now[0] = 100.0  # start-up took 100 s
    shown.update(0, 4, note="measuring")
    now[0] = 110.0
    shown.update(1, 4)
    assert log.getvalue().splitlines()[-1] == "bench: 25% (1/4), about 30 s left"
