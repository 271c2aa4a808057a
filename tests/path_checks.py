"""What must hold wherever a node's metrics land, on the head node's scrape path and on the AMP path alike:
the dashboard's and the alert rules' names exist, every dashboard query returns series, one node's EFA,
GPU and node exporter series share ``cluster`` and ``instance``, and each alert fires on its fault.

A ``node`` here is anything with ``query(expr) -> list`` (an instant query where the data landed),
``simulator`` (the node's EFA hardware) and ``stop_agent()``. One dashboard and one rule set serve both
paths, so both tests call these same checks.
"""
import os
from typing import Dict, List, Tuple

import promql_checks
from waiting import wait_until

from otel_efa.artifacts.alarms import prometheus_rules
from otel_efa.artifacts.dashboards import grafana
from otel_efa.artifacts.promql import DEVICE


def dashboard_queries() -> List[Tuple[str, str]]:
    return promql_checks.dashboard_queries(grafana.dashboard())


def rules(window: str) -> Dict[str, str]:
    return dict(promql_checks.alert_rules(prometheus_rules.rule_file(window=window)))


def assert_every_used_metric_exists(node, window: str) -> None:
    """Every name exists, except counters this node's devices do not have: the rdma_write_* group exists
    only on EFA v2 and later (p4d is v1), which the dashboard reads as optional (counted as 0)."""
    names = set()
    for _, expr in dashboard_queries() + list(rules(window).items()):
        names |= promql_checks.metric_names(expr)
    missing = sorted(n for n in names if not node.query(f'count({{__name__=~"{n}"}})'))
    device = node.simulator.device_names[0]
    absent_here = sorted(grafana.promql.counter(k) for k in ("rdma_write_wr_err",)
                         if not os.path.exists(node.simulator.path_of(device, k)))
    assert absent_here == ["efa_rdma_write_wr_err_total"], "p4d.24xlarge's devices should lack rdma_write_*"
    assert missing == absent_here, f"no series named {sorted(set(missing) - set(absent_here))}"


def assert_every_dashboard_query_returns_series(node) -> None:
    """Counters with known label values exist at 0 from the first collection, so even the error panels
    have a series on a healthy node."""
    empty = [f"{title}: {expr}" for title, expr in dashboard_queries() if not node.query(expr)]
    assert not empty, "no data:\n" + "\n".join(empty)


def assert_series_share_node_labels(node, cluster: str, instance: str) -> None:
    """The agent's, DCGM's and the node exporter's series of one node carry its cluster and instance id,
    and the dashboard's variables list them and the node's devices."""
    for selector in ('up{job=~"dcgm-exporter|node-exporter"}', grafana.promql.name("efa_port_up"),
                     grafana.promql.DCGM_GPU_UTIL):
        got = {(r["metric"].get("cluster"), r["metric"].get("instance"))
               for r in node.query(f"count by (cluster, instance) ({selector})")}
        assert got == {(cluster, instance)}, selector
    variables = dict(dashboard_queries())
    assert [r["metric"]["cluster"] for r in node.query(variables["variable cluster"])] == [cluster]
    assert [r["metric"]["instance"] for r in node.query(variables["variable instance"])] == [instance]
    devices = {r["metric"][DEVICE] for r in node.query(variables["variable device"])}
    assert devices == set(node.simulator.device_names)


def _firing(node, window: str, alert: str) -> List[Dict[str, str]]:
    return [r["metric"] for r in node.query(rules(window)[alert])]


def _expect(node, window: str, alert: str, cluster: str, instance: str, timeout: float = 30,
            **labels: str) -> None:
    """The alert's expression returns exactly one series, carrying ``labels`` and the node's."""
    want = dict(labels, cluster=cluster, instance=instance)

    def matches():
        series = _firing(node, window, alert)
        return series if len(series) == 1 and all(series[0].get(k) == v for k, v in want.items()) else None

    wait_until(matches, timeout, f"{alert} with {want}", every=0.2)


def assert_alerts_quiet_then_firing_on_each_fault(node, window: str, cluster: str, instance: str,
                                                  agent_down_timeout: float = 30) -> None:
    """Healthy: no alert expression returns anything. Then one fault at a time, each alert's expression
    returns its series; last, the agent stops (EfaAgentDown, EfaAgentAbsent).

    EfaAgentStalled (the agent answers but its collection loop is stuck) has no fault a real agent can be
    put in from outside; its firing is covered by the promtool cases only (tests/test_alert_rules.py)."""
    quiet = {alert: _firing(node, window, alert) for alert in rules(window)}
    assert not {a: s for a, s in quiet.items() if s}, "alerts on a healthy node"
    sim = node.simulator
    down, slow, events, gone = sim.device_names[:4]

    def expect(alert: str, timeout: float = 30, **labels: str) -> None:
        _expect(node, window, alert, cluster, instance, timeout, **labels)

    # The simulator's own faults (otel-efa run --simulate ... --fault KIND:DEVICE), one at a time.
    sim.inject(f"port-down:{down}")
    expect("EfaPortDown", **{DEVICE: down})
    sim.port_up(down)  # a down port carries nothing either: back up, so the next alert has one series

    sim.inject(f"idle-rail:{slow}")
    expect("EfaDeviceImbalance", **{DEVICE: slow})

    sim.inject(f"retransmit-storm:{events}")
    for alert, _, _ in prometheus_rules.SRD_EVENTS:
        expect(alert, **{DEVICE: events})
    expect("EfaRetransmitRatioHigh", **{DEVICE: events})

    sim.inject(f"device-missing:{gone}")
    expect("EfaDevicesMissing")

    assert not _firing(node, window, "EfaAgentDown") and not _firing(node, window, "EfaAgentAbsent")
    node.stop_agent()
    expect("EfaAgentDown", timeout=agent_down_timeout)
    wait_until(lambda: node.query(rules(window)["EfaAgentAbsent"]), agent_down_timeout, "EfaAgentAbsent", every=0.2)
