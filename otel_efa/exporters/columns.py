"""An Interval's points as columns, for the encoders that patch values into a template (prometheus_text.py,
otlp_encoder.py): what each metric has, every point's attributes and every value, metric after metric.

Both encoders need the same columns of the same Interval, one on a scrape and one on the OTLP worker: the
last Interval's are kept (one entry, replaced whole, so a reader on another thread sees the old entry or the
new one), so an Interval is taken apart once.
"""
from operator import itemgetter
from typing import Any, List, NamedTuple, Tuple

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
