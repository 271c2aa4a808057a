"""An Interval's points as columns, for the encoders that patch values into a template (prometheus_text.py,
otlp_encoder.py): what each metric has, every point's attributes and every value, metric after metric.

Both encoders need the same columns of the same Interval, one on a scrape and one on the OTLP worker: the
last Interval's are kept (one entry, replaced whole, so a reader on another thread sees the old entry or the
new one), so an Interval is taken apart once.
"""
from operator import itemgetter
from typing import Any, Callable, Generic, List, NamedTuple, Tuple, TypeVar

_first, _second = itemgetter(0), itemgetter(1)  # of a point: its attributes, its value


class Columns(NamedTuple):
    shape: List[Tuple[Any, int]]  # (spec, number of points) of each metric
    attributes: tuple  # every point's attribute mapping
    values: tuple  # every point's value


class _Last:
    entry: Tuple[Any, Columns] = (None, Columns([], (), ()))


def columns(metrics) -> Columns:
    """The columns of ``metrics`` (an Interval's ``metrics``: per metric, its (attributes, value) points)."""
    seen, found = _Last.entry
    if seen is metrics:
        return found
    points = [point for _, series in metrics for point in series]
    found = Columns([(spec, len(series)) for spec, series in metrics],
                    tuple(map(_first, points)), tuple(map(_second, points)))
    _Last.entry = (metrics, found)
    return found


Layout = TypeVar("Layout")


class RecentLayouts(Generic[Layout]):
    """The encodings an encoder built for the last few sets of series, the most recently used first, found
    by the columns' shape and attributes: a gauge that comes and goes (the rail imbalance of a node turning
    idle) switches between two layouts without building either again."""

    def __init__(self, build: Callable[[Any, list, tuple], Layout], size: int = 4):
        self._build = build  # (metrics, shape, attributes) -> a new layout
        self._size = size
        self._recent: List[Tuple[list, tuple, Layout]] = []  # attributes held, so an identity stays the same

    def get(self, metrics, shape: list, attributes: tuple) -> Layout:
        recent = self._recent
        for i, (seen_shape, seen_attributes, layout) in enumerate(recent):
            if seen_shape == shape and seen_attributes == attributes:
                if i:
                    recent.insert(0, recent.pop(i))
                return layout
        layout = self._build(metrics, shape, attributes)
        recent.insert(0, (shape, attributes, layout))
        del recent[self._size:]
        return layout
