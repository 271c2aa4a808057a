"""A small evaluator of the CloudWatch metric math and alarm evaluation that otel-efa's alarms and dashboard use.

moto stores alarms and dashboards but evaluates no metric math and no alarm, so the tests evaluate them
here, from the documented semantics only:

* Metric math: Amazon CloudWatch User Guide, "Using metric math"
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-metric-math.html; read in the
  awsdocs/amazon-cloudwatch-user-guide copy, ``doc_source/using-metric-math.md``):
  - arithmetic ``+ - * / ^`` and unary ``-``: "Missing values in a time series are treated as 0. If the
    value of a data point causes a function to attempt to divide by zero, the data point is dropped."
  - comparisons ``== != <= >= < >`` and ``AND && OR ||``: each point is 1 (true) or 0 (false); between two
    time series a point missing in one of them counts as 0.
  - ``DIFF``: "the difference between each value in the time series and the preceding value" (the first
    point has no preceding value, so it has no difference).
  - ``RATE``: that difference divided by the seconds between the two points.
  - ``IF(condition, trueValue[, falseValue])``, single time series only (the documented syntaxes): a
    point where the condition is not 0 takes trueValue (0 where trueValue is a time series without that
    point); a false point takes falseValue, and is dropped where falseValue is omitted or has no point;
    a point the condition lacks is dropped.
  - ``FILL(TS | TS[], S)``: missing points of the queried range take the scalar.
  - ``MAX`` / ``SUM`` of an array: one time series, point by point (of a single series: a scalar).
  - ``TIME_SERIES(S)``: "a non-sparse time series where every value is set to a scalar argument".
  - ``[a, b]``: an array of time series (arrays inside are flattened, as in ``SUM([METRICS("4xx"), ...])``).
* Alarm evaluation: Amazon CloudWatch User Guide, "Using Amazon CloudWatch alarms", sections "Evaluating
  an alarm" and "How alarm state is evaluated when data is missing"
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html;
  ``doc_source/AlarmThatSendsEmail.md``). CloudWatch retrieves more periods than EvaluationPeriods (the
  *evaluation range*; the guide's examples take 2 more, which is what this evaluator does); with at least
  EvaluationPeriods real points it evaluates the newest of them; with fewer it fills the gap with
  TreatMissingData (``breaching`` / ``notBreaching``) as few times as possible; ALARM when at least
  DatapointsToAlarm of the evaluated points breach, else OK. ``missing`` and ``ignore`` are modelled only
  when the range holds no point at all (INSUFFICIENT_DATA, or the state is kept): the guide's own table is
  not consistent for the partial case (rows "- - - - X" and "X - - - -"), so that case raises.
  A metric math alarm evaluates its expression over the retrieved range only, as CloudWatch does.

What the documentation leaves open is refused (``Unsupported``), not guessed. Entry points:

``evaluate_alarm(alarm, samples, end=None) -> list of (period start, state)``
    ``alarm`` is the PutMetricAlarm request (a dict, as ``otel-efa alarms cloudwatch`` builds it);
    ``samples`` maps each MetricStat query's ``Id`` (metric math alarms) or the ``MetricName`` (single
    metric alarms) to its datapoints ``[(epoch seconds, value), ...]`` as CloudWatch holds them; the
    evaluator groups them into the alarm's period and applies its statistic. Points already at the alarm's
    period (GetMetricData with the alarm's own MetricStat) may be passed as they are for Maximum, Minimum
    and Sum (grouping them again changes nothing). One state per period, from the first period with data
    to ``end`` (epoch seconds; default: the last period with data).
``state_at(alarm, samples, at, previous) -> state``
    One evaluation: the state set at the end of the period starting at ``at``.
``alarm_values(alarm, samples, end=None) -> list of (period start, value)``
    The values the alarm compared with its threshold, newest evaluation per period.
``evaluate(expression, values, grid)``
    One expression over named values (floats, ``{timestamp: value}`` series, or lists of series).

On the ADOT path, the same alarms over the EMF documents awsemf wrote (one per node and export)::

    alarm = next(a for a in cloudwatch_alarms.alarms("c", [instance_id]) if "rx-errors" in a["AlarmName"])
    samples = {"total": [(doc["_aws"]["Timestamp"] / 1000, doc["rx_errors"]) for doc in documents]}
    states = evaluate_alarm(alarm, samples)      # e.g. ["OK", "ALARM", "OK"]
    values = alarm_values(alarm, samples)        # [(period start, increase)], never negative
"""
import math
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

Series = Dict[int, float]  # period start (epoch seconds) -> value
Value = Union[float, Series, List[Series]]

EXTRA_PERIODS = 2  # evaluation range = EvaluationPeriods + 2, as in the guide's examples
OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"


class Unsupported(ValueError):
    """Something the documentation does not define, or this evaluator does not model."""


# --- expressions -------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|([A-Z][A-Z_0-9]*)(?=\s*\()|([a-z][A-Za-z0-9_]*)"
                    r"|(==|!=|<=|>=|&&|\|\||AND\b|OR\b|[-+*/^<>(),\[\]]))")


def _tokens(expression: str) -> List[Tuple[str, str]]:
    tokens, at = [], 0
    expression = expression.strip()
    while at < len(expression):
        match = _TOKEN.match(expression, at)
        if not match:
            raise Unsupported(f"cannot read {expression[at:]!r}")
        number, function, name, operator = match.groups()
        kind = "num" if number else "fn" if function and function not in ("AND", "OR") else \
            "id" if name else "op"
        tokens.append((kind, match.group(match.lastindex)))
        at = match.end()
    return tokens


class _Parser:
    """Precedence, loosest first: OR, AND, comparisons, + -, * /, ^, unary -."""

    LEVELS = (("OR", "||"), ("AND", "&&"), ("==", "!=", "<=", ">=", "<", ">"), ("+", "-"), ("*", "/"))

    def __init__(self, expression: str, context: "_Context"):
        self.tokens = _tokens(expression)
        self.at = 0
        self.context = context

    def parse(self) -> Value:
        value = self.binary(0)
        if self.at != len(self.tokens):
            raise Unsupported(f"unexpected {self.tokens[self.at][1]!r}")
        return value

    def peek(self) -> Optional[str]:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: Optional[str] = None) -> Tuple[str, str]:
        if self.at >= len(self.tokens):
            raise Unsupported("the expression ends too early")
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise Unsupported(f"expected {expected!r}, got {token[1]!r}")
        self.at += 1
        return token

    def binary(self, level: int) -> Value:
        if level == len(self.LEVELS):
            return self.power()
        left = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            operator = self.take()[1]
            left = _apply(operator, left, self.binary(level + 1))
        return left

    def power(self) -> Value:
        base = self.unary()
        if self.peek() == "^":
            self.take()
            return _apply("^", base, self.unary())
        return base

    def unary(self) -> Value:
        if self.peek() == "-":
            self.take()
            return _apply("*", -1.0, self.unary())
        return self.primary()

    def primary(self) -> Value:
        kind, text = self.take()
        if kind == "num":
            return float(text)
        if kind == "id":
            return self.context.value_of(text)
        if kind == "fn":
            self.take("(")
            args = self.arguments(")")
            return self.context.call(text, args)
        if text == "(":
            value = self.binary(0)
            self.take(")")
            return value
        if text == "[":
            return _flatten(self.arguments("]"))
        raise Unsupported(f"unexpected {text!r}")

    def arguments(self, closing: str) -> List[Value]:
        args: List[Value] = []
        while self.peek() != closing:
            args.append(self.binary(0))
            if self.peek() == ",":
                self.take()
        self.take(closing)
        return args


def _flatten(items: Sequence[Value]) -> List[Series]:
    array: List[Series] = []
    for item in items:
        if isinstance(item, list):
            array.extend(item)
        elif isinstance(item, dict):
            array.append(item)
        else:
            raise Unsupported("an array holds time series, not scalars")
    return array


_COMPARE: Dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
    "AND": lambda a, b: bool(a) and bool(b), "&&": lambda a, b: bool(a) and bool(b),
    "OR": lambda a, b: bool(a) or bool(b), "||": lambda a, b: bool(a) or bool(b),
}


def _scalar_op(operator: str, a: float, b: float) -> Optional[float]:
    if operator in _COMPARE:
        return 1.0 if _COMPARE[operator](a, b) else 0.0
    if operator == "/" and b == 0:
        return None  # "the data point is dropped"
    result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}.get(operator)
    if operator == "^":
        result = a ** b
    if result is None or isinstance(result, complex) or not math.isfinite(result):
        raise Unsupported(f"{a} {operator} {b}")
    return result


def _series_op(operator: str, a: Series, b: Series) -> Series:
    out: Series = {}
    for t in sorted(set(a) | set(b)):  # a point missing in one series counts as 0
        value = _scalar_op(operator, a.get(t, 0.0), b.get(t, 0.0))
        if value is not None:
            out[t] = value
    return out


def _with_scalar(operator: str, series: Series, scalar: float, scalar_left: bool) -> Series:
    out: Series = {}
    for t, v in series.items():
        value = _scalar_op(operator, scalar, v) if scalar_left else _scalar_op(operator, v, scalar)
        if value is not None:
            out[t] = value
    return out


def _apply(operator: str, a: Value, b: Value) -> Value:
    if isinstance(a, list) and isinstance(b, list):
        raise Unsupported("an operator between two arrays of time series is not documented")
    if isinstance(a, list):
        return [_apply(operator, s, b) for s in a]  # type: ignore[misc]
    if isinstance(b, list):
        return [_apply(operator, a, s) for s in b]  # type: ignore[misc]
    if isinstance(a, dict) and isinstance(b, dict):
        return _series_op(operator, a, b)
    if isinstance(a, dict):
        return _with_scalar(operator, a, float(b), scalar_left=False)  # type: ignore[arg-type]
    if isinstance(b, dict):
        return _with_scalar(operator, b, float(a), scalar_left=True)
    value = _scalar_op(operator, float(a), float(b))
    if value is None:
        raise Unsupported("a scalar divided by zero")
    return value


def _diff(series: Series, per_second: bool) -> Series:
    out: Series = {}
    stamps = sorted(series)
    for before, t in zip(stamps, stamps[1:]):
        change = series[t] - series[before]
        out[t] = change / (t - before) if per_second else change
    return out


def _single(value: Value, what: str) -> Series:
    if not isinstance(value, dict):
        raise Unsupported(f"{what} takes a single time series here (the documented IF syntaxes)")
    return value


def _if(args: List[Value]) -> Value:
    """IF(condition, trueValue[, falseValue]) with the documented rules for missing points."""
    if len(args) not in (2, 3):
        raise Unsupported("IF takes 2 or 3 arguments")
    condition, true_value = args[0], args[1]
    false_value = args[2] if len(args) == 3 else None
    for arg in args:
        if isinstance(arg, list):
            raise Unsupported("IF on an array of time series is not a documented syntax")
    if not isinstance(condition, dict):  # IF(S, TS, TS)
        chosen = true_value if condition else false_value
        return {} if chosen is None else chosen
    out: Series = {}
    for t, c in condition.items():
        if c:
            out[t] = true_value.get(t, 0.0) if isinstance(true_value, dict) else float(true_value)
        elif isinstance(false_value, dict):
            if t in false_value:
                out[t] = false_value[t]
        elif false_value is not None:
            out[t] = float(false_value)
    return out


class _Context:
    def __init__(self, values: Dict[str, Value], grid: Sequence[int]):
        self.values = values
        self.grid = list(grid)

    def value_of(self, name: str) -> Value:
        if name not in self.values:
            raise Unsupported(f"no value named {name!r}")
        return self.values[name]

    def call(self, name: str, args: List[Value]) -> Value:
        if name in ("DIFF", "RATE"):
            return self.each(args, lambda s: _diff(s, per_second=name == "RATE"), name)
        if name == "IF":
            return _if(args)
        if name == "FILL":
            if len(args) != 2 or isinstance(args[1], (dict, list)):
                raise Unsupported("FILL is modelled with a scalar filler only")
            filler = float(args[1])  # type: ignore[arg-type]
            return self.each(args[:1], lambda s: {t: s.get(t, filler) for t in sorted(set(self.grid) | set(s))}, name)
        if name == "TIME_SERIES":
            if len(args) != 1 or not isinstance(args[0], float):
                raise Unsupported("TIME_SERIES takes one scalar")
            return {t: args[0] for t in self.grid}
        if name in ("MAX", "SUM"):
            return self.reduce(name, args)
        raise Unsupported(f"function {name} is not modelled")

    @staticmethod
    def each(args: List[Value], function: Callable[[Series], Series], name: str) -> Value:
        if len(args) != 1:
            raise Unsupported(f"{name} takes one argument")
        if isinstance(args[0], list):
            return [function(s) for s in args[0]]
        return function(_single(args[0], name))

    @staticmethod
    def reduce(name: str, args: List[Value]) -> Value:
        if len(args) != 1:
            raise Unsupported(f"{name} takes one argument")
        pick = max if name == "MAX" else sum
        if isinstance(args[0], dict):  # of one series: a scalar
            if not args[0]:
                raise Unsupported(f"{name} of an empty series")
            return float(pick(args[0].values()))
        array = _flatten(args)
        stamps = sorted(set().union(*array)) if array else []
        return {t: float(pick(s[t] for s in array if t in s)) for t in stamps}


def evaluate(expression: str, values: Dict[str, Value], grid: Iterable[int] = ()) -> Value:
    """Evaluate one metric math expression; ``grid`` is the queried range's period starts (for
    TIME_SERIES and FILL)."""
    return _Parser(expression, _Context(values, list(grid))).parse()


# --- statistics and queries --------------------------------------------------------------------
def period_statistic(points: Iterable[Tuple[float, float]], period: int, stat: str) -> Series:
    """Datapoints grouped into periods (aligned to multiples of ``period``) with one statistic."""
    groups: Dict[int, List[float]] = {}
    for t, v in points:
        groups.setdefault(int(t) // period * period, []).append(float(v))
    reducers: Dict[str, Callable[[List[float]], float]] = {
        "Maximum": max, "Minimum": min, "Sum": sum, "SampleCount": lambda vs: float(len(vs)),
        "Average": lambda vs: sum(vs) / len(vs)}
    if stat not in reducers:
        raise Unsupported(f"statistic {stat} is not modelled")
    return {t: reducers[stat](vs) for t, vs in sorted(groups.items())}


def evaluate_queries(queries: Sequence[Dict[str, Any]], inputs: Dict[str, Series],
                     grid: Sequence[int]) -> Dict[str, Value]:
    """Every query of a MetricDataQueries-shaped list (MetricStat inputs given), expressions in order of
    their references."""
    values: Dict[str, Value] = {q["Id"]: inputs.get(q["Id"], {}) for q in queries if "MetricStat" in q}
    pending = [q for q in queries if "Expression" in q]
    while pending:
        ready = [q for q in pending if all(name in values for name in _names(q["Expression"]))]
        if not ready:
            raise Unsupported(f"expressions refer to unknown ids: {[q['Id'] for q in pending]}")
        for query in ready:
            values[query["Id"]] = evaluate(query["Expression"], values, grid)
            pending.remove(query)
    return values


def _names(expression: str) -> List[str]:
    return [text for kind, text in _tokens(expression) if kind == "id"]


# --- alarms -----------------------------------------------------------------------------------
_OPERATORS: Dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t, "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t, "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def _alarm_inputs(alarm: Dict[str, Any], samples: Dict[str, Iterable[Tuple[float, float]]]) -> Tuple[int, Dict[str, Series]]:
    if "MetricName" in alarm:
        period = int(alarm["Period"])
        return period, {"m": period_statistic(samples.get(alarm["MetricName"], ()), period, alarm["Statistic"])}
    stats = [q for q in alarm["Metrics"] if "MetricStat" in q]
    periods = {int(q["MetricStat"]["Period"]) for q in stats}
    if len(periods) != 1:
        raise Unsupported("every metric of a math alarm must use the same period")
    period = periods.pop()
    return period, {q["Id"]: period_statistic(samples.get(q["Id"], ()), period, q["MetricStat"]["Stat"])
                    for q in stats}


def _alarm_series(alarm: Dict[str, Any], inputs: Dict[str, Series], grid: List[int]) -> Series:
    """The alarm's time series over one evaluation range (only the points retrieved for it)."""
    window = {name: {t: v for t, v in series.items() if grid[0] <= t <= grid[-1]} for name, series in inputs.items()}
    if "MetricName" in alarm:
        return window["m"]
    returned = [q for q in alarm["Metrics"] if q.get("ReturnData", True)]
    if len(returned) != 1:
        raise Unsupported("a math alarm returns exactly one time series")
    value = evaluate_queries(alarm["Metrics"], window, grid)[returned[0]["Id"]]
    if not isinstance(value, dict):
        raise Unsupported("an alarm's expression must give a single time series")
    return value


def _decide(alarm: Dict[str, Any], points: List[float], range_size: int, previous: str) -> str:
    n = int(alarm["EvaluationPeriods"])
    m = int(alarm.get("DatapointsToAlarm", n))
    breaches = _OPERATORS[alarm["ComparisonOperator"]]
    threshold = float(alarm["Threshold"])
    treat = alarm.get("TreatMissingData", "missing")
    if len(points) >= n:
        breaching = sum(breaches(v, threshold) for v in points[-n:])
    elif treat in ("breaching", "notBreaching"):
        filled = n - len(points)  # missing points used as few times as possible
        breaching = sum(breaches(v, threshold) for v in points) + (filled if treat == "breaching" else 0)
    elif not points:
        return INSUFFICIENT if treat == "missing" else previous
    else:
        raise Unsupported(f"TreatMissingData {treat} with {len(points)} of {n} points in {range_size} periods")
    return ALARM if breaching >= m else OK


def _evaluations(alarm: Dict[str, Any], samples, end: Optional[float]):
    if alarm.get("ComparisonOperator") not in _OPERATORS:
        raise Unsupported(f"ComparisonOperator {alarm.get('ComparisonOperator')} is not modelled")
    period, inputs = _alarm_inputs(alarm, samples)
    stamps = sorted(set().union(*inputs.values()))
    if not stamps:
        return
    last = stamps[-1] if end is None else int(end) // period * period
    range_size = int(alarm["EvaluationPeriods"]) + EXTRA_PERIODS
    for now in range(stamps[0], last + period, period):
        grid = [now - i * period for i in reversed(range(range_size))]
        yield now, _alarm_series(alarm, inputs, grid), range_size


def evaluate_alarm(alarm: Dict[str, Any], samples: Dict[str, Iterable[Tuple[float, float]]],
                   end: Optional[float] = None) -> List[Tuple[int, str]]:
    """The alarm's state after each period: [(period start, "OK" | "ALARM" | "INSUFFICIENT_DATA"), ...]."""
    samples = {k: list(v) for k, v in samples.items()}
    states: List[Tuple[int, str]] = []
    state = INSUFFICIENT
    for now, series, range_size in _evaluations(alarm, samples, end):
        state = _decide(alarm, [series[t] for t in sorted(series)], range_size, state)
        states.append((now, state))
    return states


def state_at(alarm: Dict[str, Any], samples: Dict[str, Iterable[Tuple[float, float]]], at: float,
             previous: str = INSUFFICIENT) -> str:
    """The state one evaluation sets at the end of the period starting at ``at``, from ``previous``."""
    period, inputs = _alarm_inputs(alarm, {k: list(v) for k, v in samples.items()})
    now = int(at) // period * period
    range_size = int(alarm["EvaluationPeriods"]) + EXTRA_PERIODS
    grid = [now - i * period for i in reversed(range(range_size))]
    series = _alarm_series(alarm, inputs, grid)
    return _decide(alarm, [series[t] for t in sorted(series)], range_size, previous)


def alarm_values(alarm: Dict[str, Any], samples: Dict[str, Iterable[Tuple[float, float]]],
                 end: Optional[float] = None) -> List[Tuple[int, float]]:
    """The alarm's own time series as its evaluations computed it, one value per period (each period's
    value from the newest evaluation range that holds it)."""
    samples = {k: list(v) for k, v in samples.items()}
    values: Dict[int, float] = {}
    for _now, series, _size in _evaluations(alarm, samples, end):
        values.update(series)
    return sorted(values.items())
