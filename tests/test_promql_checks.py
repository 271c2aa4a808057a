"""tests/promql_checks.py, the helpers the head-node and AMP end-to-end tests check the dashboard and the
rules with: pure functions on hand-written PromQL and Grafana JSON, then on what we ship. ``query()`` is
tested against a real Prometheus in tests/test_head_node_path.py."""
import re

import promql_checks
import pytest

from otel_efa import catalog
from otel_efa.artifacts.alarms import prometheus_rules
from otel_efa.artifacts.dashboards import grafana


@pytest.mark.parametrize("expr, names", [
    ("efa_port_up", {"efa_port_up"}),
    ('sum by (cluster, instance) (rate(efa_rx_bytes_total{cluster=~".*", aws_efa_device!="x"}[1m])) * 8',
     {"efa_rx_bytes_total"}),
    ("a / on (cluster) group_left (instance) b > bool 0.5 and c unless d or e offset 5m",
     {"a", "b", "c", "d", "e"}),
    ("max(x) without (y) - min by (z) (w) + count(v) by (u) + topk(3, t) + vector(0) * time()",
     {"x", "w", "v", "t"}),
    ('{__name__="named", job="j"} + {__name__=~"regex.*"} + absent(gone)', {"named", "regex.*", "gone"}),
    ('label_replace(m, "dst", "$1", "src", "(.*)") + count_values("value", n)', {"m", "n"}),
    ("max_over_time(m[1h30m]) unless m offset 1h + 1e3 + 0x1f + 2.5", {"m"}),
    ('up{job=~"dcgm-exporter|node-exporter"} == 1', {"up"}),
])
def test_metric_names(expr, names):
    assert promql_checks.metric_names(expr) == names


def test_metric_names_find_every_name_in_what_we_ship():
    """Cross-check with a plain word search: every catalog or DCGM name written in a query is found, and
    nothing else (no label, function or keyword)."""
    known = {m.prometheus_name for m in catalog.METRICS} | {"up"} | set(grafana.promql.DCGM_NAMES)
    expressions = [e for _, e in promql_checks.dashboard_queries(grafana.dashboard())]
    expressions += [e for _, e in promql_checks.alert_rules(prometheus_rules.rule_file())]
    for expr in expressions:
        words = {w for w in re.findall(r"[A-Za-z_:][\w:]*", re.sub(r'"[^"]*"', "", expr)) if w in known}
        # dcgm_counter()'s selector: the name as a regular expression that also takes AMP's _total
        words |= {f"{n}(_total)?" for n in known if f'"{n}(_total)?"' in expr}
        assert promql_checks.metric_names(expr) == words, expr


DASHBOARD = {
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "cluster", "type": "query", "query": {"query": "label_values(efa_port_up, cluster)"}},
        {"name": "instance", "type": "query", "definition": 'label_values(efa_port_up{cluster=~"$cluster"}, instance)',
         "query": 'label_values(efa_port_up{cluster=~"$cluster"}, instance)'},
        {"name": "job", "type": "query", "query": "label_values(job)"},
        {"name": "fixed", "type": "custom", "query": "a,b"},
    ]},
    "panels": [
        {"type": "row", "title": "Row", "panels": [
            {"title": "Nested", "targets": [{"expr": 'rate(x{instance=~"${instance}"}[$__rate_interval])'}]}]},
        {"title": "Top", "targets": [
            {"expr": 'increase(y{cluster=~"$cluster", d=~"[[fixed]]"}[$__range]) / $__interval_ms'},
            {"expr": "hidden", "hide": True}]},
        {"title": "Text panel"},
    ],
}


def test_dashboard_queries_substitute_grafana_variables():
    assert promql_checks.dashboard_queries(DASHBOARD) == [
        ("variable cluster", 'count by (cluster) (efa_port_up{cluster!=""})'),
        ("variable instance", 'count by (instance) (efa_port_up{cluster=~".*", instance!=""})'),
        ("variable job", 'count by (job) ({job!=""})'),
        ("Nested", 'rate(x{instance=~".*"}[1m])'),
        ("Top", 'increase(y{cluster=~".*", d=~".*"}[1m]) / 60000'),
    ]


def test_dashboard_queries_cover_every_target_we_ship():
    board = grafana.dashboard()
    queries = promql_checks.dashboard_queries(board)
    targets = sum(len(p.get("targets", [])) for p in board["panels"])
    variables = sum(v["type"] == "query" for v in board["templating"]["list"])
    assert len(queries) == targets + variables
    assert not [e for _, e in queries if "$" in e or "[[" in e], "a Grafana variable is left"


def test_label_values_that_is_not_one_is_refused():
    with pytest.raises(ValueError):
        promql_checks.dashboard_queries({"templating": {"list": [{"name": "v", "type": "query",
                                                                   "query": "query_result(up)"}]}})


def test_alert_rules_skip_recording_rules():
    rules = {"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum(x)"},
                                                {"alert": "A", "expr": "x > 1", "for": "1m"}]},
                        {"name": "h", "rules": [{"alert": "B", "expr": "absent(y)"}]}]}
    assert promql_checks.alert_rules(rules) == [("A", "x > 1"), ("B", "absent(y)")]
    shipped = promql_checks.alert_rules(prometheus_rules.rule_file())
    assert [a for a, _ in shipped] == [r["alert"] for r in prometheus_rules.rules()]
