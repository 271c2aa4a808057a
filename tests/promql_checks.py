"""What the dashboard and the alert rules ask of Prometheus, in a form any Prometheus can run.

Shared by the head-node test (tests/test_head_node_path.py) and the AMP end-to-end test: both take every
query the Grafana dashboard and the rule file contain, run it against the data they collected, and check
that the metric names exist and the queries return series. Pure functions except :func:`query`.

- :func:`dashboard_queries`: (panel title, PromQL) for every panel target and template variable, with
  Grafana's variables replaced so the text runs on a plain Prometheus (``$cluster`` -> ``.*``,
  ``$__rate_interval`` -> ``1m``, ``label_values(m, l)`` -> ``count by (l) (m{l!=""})``).
- :func:`metric_names`: every metric name an expression selects (a small PromQL lexer, not a parser:
  enough for what dashboards and rules write, and unit-tested on both).
- :func:`alert_rules`: (alert, expr) from a rule file (Prometheus ``rule_files`` or an AMP rule groups
  namespace: the same YAML).
- :func:`query`: an instant query over the HTTP API.
"""
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, Set, Tuple

# What Grafana's interval variables become: with 1 s scrapes a minute holds plenty of samples for rate(),
# and a test's run of a few seconds already gives every range a result.
WINDOW = "1m"
WINDOW_SECONDS = 60
ALL = ".*"  # the dashboard's allValue: what "All" selects

_BUILTINS = {  # longest first, so $__interval_ms is not read as $__interval + "_ms"
    "__rate_interval_ms": str(WINDOW_SECONDS * 1000),
    "__interval_ms": str(WINDOW_SECONDS * 1000),
    "__range_ms": str(WINDOW_SECONDS * 1000),
    "__range_s": str(WINDOW_SECONDS),
    "__rate_interval": WINDOW,
    "__interval": WINDOW,
    "__range": WINDOW,
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*?)\s*,\s*)?([A-Za-z_]\w*)\s*\)\s*$", re.S)

# PromQL words that are not metric names when they stand where a name could.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "atan2", "inf", "nan"}
_AGGREGATIONS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
                 "count_values", "group"}
# Keywords followed by a parenthesised list of label names, not expressions.
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w.])
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<punct>[{}()\[\],])
  | (?P<other>\S)
""", re.X)


def _substitute(expr: str, values: Dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        variable = match.group(1) or match.group(2) or match.group(3)
        if variable in _BUILTINS:
            return _BUILTINS[variable]
        for builtin, value in _BUILTINS.items():  # $__interval_ms and friends written without braces
            if variable.startswith(builtin):
                return value + variable[len(builtin):]
        return values.get(variable, ALL)

    return _VARIABLE.sub(replace, expr)


def _label_values_query(definition: str) -> str:
    """``label_values(m{...}, l)`` as a query returning one series per value (a label that is present)."""
    match = _LABEL_VALUES.match(definition)
    if not match:
        raise ValueError(f"not a label_values() query: {definition!r}")
    selector, label = match.group(1), match.group(2)
    present = f'{label}!=""'
    if not selector:
        selector = f"{{{present}}}"
    elif selector.endswith("}"):
        inside = selector[selector.index("{") + 1:-1].strip()
        selector = selector[:selector.index("{")] + "{" + (f"{inside}, {present}" if inside else present) + "}"
    else:
        selector = f"{selector}{{{present}}}"
    return f"count by ({label}) ({selector})"


def dashboard_queries(dashboard: dict) -> List[Tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel (rows' nested panels too) and, titled
    ``variable <name>``, every query variable; Grafana variables substituted (see module docstring)."""
    values = {v["name"]: ALL for v in dashboard.get("templating", {}).get("list", [])}
    found: List[Tuple[str, str]] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        definition = variable.get("query")
        if isinstance(definition, dict):
            definition = definition.get("query")
        definition = definition or variable.get("definition", "")
        found.append((f"variable {variable['name']}", _label_values_query(_substitute(definition, values))))

    def walk(panels: List[dict]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr") and not target.get("hide"):
                    found.append((panel.get("title", ""), _substitute(target["expr"], values)))

    walk(dashboard.get("panels", []))
    return found


def metric_names(expr: str) -> Set[str]:
    """Every metric name ``expr`` selects: bare names, ``{__name__="..."}``, and the regular expression of a
    ``{__name__=~"..."}`` matcher (look it up with ``=~``, which a plain name also matches)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    names: Set[str] = set()
    braces = brackets = 0
    skip_list = False  # inside by (...), on (...) and the like
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if kind == "punct":
            if text == "{":
                braces += 1
            elif text == "}":
                braces -= 1
            elif text == "[":
                brackets += 1
            elif text == "]":
                brackets -= 1
            elif text == ")" and skip_list:
                skip_list = False
            continue
        if braces:
            # {__name__="m"} and {__name__=~"re"}: the lexer splits =~ into two characters; a regular
            # expression is kept as it is (a name is a regular expression matching itself).
            if text == "__name__" and following == "=":
                rest = tokens[index + 2:index + 4]
                if rest and rest[0][0] == "string":
                    names.add(rest[0][1][1:-1])
                elif len(rest) == 2 and rest[0][1] == "~" and rest[1][0] == "string":
                    names.add(rest[1][1][1:-1])
            continue
        if brackets or skip_list or kind != "ident":
            continue
        lowered = text.lower()
        if lowered in _LABEL_LISTS:
            skip_list = following == "("
            continue
        if lowered in _KEYWORDS:
            continue
        if following == "(":
            continue  # a function or an aggregation
        if lowered in _AGGREGATIONS and following.lower() in ("by", "without"):
            continue
        names.add(text)
    return names


def alert_rules(rules: dict) -> List[Tuple[str, str]]:
    """(alert name, expr) of every alerting rule in a rule file (recording rules are skipped)."""
    return [(rule["alert"], rule["expr"]) for group in rules.get("groups", []) for rule in group.get("rules", [])
            if "alert" in rule]


def query(prometheus_url: str, expr: str) -> list:
    """The result of an instant query (``/api/v1/query``): a list of {"metric": {...}, "value": [t, v]}."""
    url = prometheus_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:  # 400/422: a query Prometheus rejects; say which and why
        body = json.load(error)
        raise AssertionError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}") from None
    if body.get("status") != "success":
        raise AssertionError(f"{expr!r}: {body}")
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        return [{"metric": {}, "value": result}]
    return result
