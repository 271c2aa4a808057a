"""Where the data lands: one node's path through the real collector to AMP (Prometheus) and CloudWatch (EMF).

The whole path is started once per collector release, inside a network namespace of its own, and the
tests below read what arrived (see ``collector_path`` for the peers and what stands in for AWS). The
tests run in file order on one path: the healthy node first, then the faults (errors, a device reset).
"""
import statistics
from typing import Dict, Iterator, List, Tuple

import path_checks
import pytest
from cloudwatch_math import evaluate_alarm
from collector_path import CLUSTER, INSTANCE_ID, REGION, NodePath
from collector_process import versions
from netns import isolated_network
from waiting import wait_until

from otel_efa import catalog
from otel_efa.artifacts.alarms import cloudwatch_alarms

pytestmark = pytest.mark.collector

SIX = {c.name: c for c in catalog.CLOUDWATCH_METRICS}
WINDOW = "10s"  # the rules' rate window here: one-second exports fill it in seconds


@pytest.fixture(scope="module", params=versions())
def path(request, tmp_path_factory) -> Iterator[NodePath]:
    with isolated_network():
        node = NodePath(request.param, tmp_path_factory.mktemp(f"path-{request.param}"))
        try:
            yield node
        finally:
            node.stop()


def wait_for_documents(path: NodePath, what: str, predicate, timeout: float = 60) -> List[Dict]:
    """EMF documents once ``predicate(documents)`` holds; the agent's and collector's logs on failure."""
    def documents() -> Tuple[List[Dict], ...]:  # a tuple, so that an empty list that satisfies is truthy
        found = [d for d in path.emf_documents() if "rx_errors" in d]
        return (found,) if predicate(found) else ()

    try:
        return wait_until(documents, timeout, what, every=0.2)[0]
    except AssertionError as e:
        raise AssertionError(f"{e}{path.diagnostics()}") from None


def alarm_states(alarm: Dict, values: List[float]) -> List[str]:
    """The alarm's state after each value, each export standing for one alarm period.

    CloudWatch would hold these values at the exports' timestamps, seconds apart here; the alarm
    compares period maxima (``Maximum`` over ``Period``), so each export is placed in a period of its
    own: the same values, in the same order, as a node exporting once per period would leave.
    """
    [period] = {q["MetricStat"]["Period"] for q in alarm["Metrics"] if "MetricStat" in q}
    start = 1_700_000_000 // period * period
    states = evaluate_alarm(alarm, {"total": [(start + i * period, v) for i, v in enumerate(values)]})
    assert [t for t, _ in states] == [start + i * period for i in range(len(values))]
    return [state for _, state in states]


def node_rate(path: NodePath, kernel_name: str) -> float:
    simulator = path.simulator
    return sum(simulator.expected_rate(device, kernel_name) for device in simulator.device_names)


def test_cloudwatch_gets_the_quick_start_metrics_through_emf(path):
    documents = wait_for_documents(path, "5 EMF documents", lambda docs: len(docs) >= 5)
    for document in documents:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == catalog.CLOUDWATCH_NAMESPACE
        assert directive["Dimensions"] == [[catalog.CLOUDWATCH_DIMENSION]]
        units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
        assert units.items() <= {n: c.unit for n, c in SIX.items()}.items(), units
        assert document[catalog.CLOUDWATCH_DIMENSION] == INSTANCE_ID
    # The first export has no rates yet (a rate needs two samples); from then on all six, every time.
    assert all(set(SIX) <= set(d) for d in documents[2:]), [sorted(d) for d in documents]
    # Every export after the first interval carries a whole-node rate: within 2 % of the true rate.
    for name, spec in SIX.items():
        if spec.statistic == "rate":
            [kernel_name] = spec.kernel_names
            # The median export: on a loaded machine the simulator thread can fall behind and catch up in
            # one leap, which the agent refuses to read as traffic (no rate for that device, that once).
            seen = statistics.median(d[name] for d in documents[2:])
            truth = node_rate(path, kernel_name)
            assert abs(seen - truth) <= 0.02 * truth, (name, seen, truth, [d[name] for d in documents[2:]])


def _counts(documents: List[Dict]) -> List[Tuple[int, int]]:
    return [(d["rx_errors"], d["tx_discards"]) for d in documents]


def test_error_counts_are_the_kernels_cumulative_counts_and_a_reset_makes_no_spike(path):
    """rx_errors / tx_discards keep the quick-start's meaning on the ADOT path: the node's count as the
    kernel reports it (awsemf would have sent per-export deltas of a cumulative sum, and the raw value
    after a reset). The alarms, evaluated as CloudWatch would over those values, fire on each real
    increase and not on the reset."""
    simulator = path.simulator
    first, second, third = simulator.device_names[:3]
    simulator.set_value(first, "rx_drops", 7)
    simulator.set_value(second, "rdma_read_wr_err", 2)
    simulator.set_value(third, "rdma_read_wr_err", 3)
    wait_for_documents(path, "the injected errors", lambda docs: (7, 5) in _counts(docs))
    simulator.reset([first, second])  # a driver reload: the node's counts fall to 0 and 3
    wait_for_documents(path, "the counts after the reset", lambda docs: _counts(docs)[-1] == (0, 3))
    simulator.set_value(first, "rx_drops", 4)  # errors again after the reset
    documents = wait_for_documents(path, "errors after the reset", lambda docs: _counts(docs)[-1] == (4, 3))

    counts = _counts(documents)
    assert max(counts) == (7, 5) and min(c[0] for c in counts) == 0, counts  # never above what the kernel had
    for name, spec in SIX.items():
        if spec.statistic == "rate":  # no negative rate and no spike at the reset (a reset device has none)
            [kernel_name] = spec.kernel_names
            # A reset read as traffic would be a device's whole count in one interval: hundreds of times
            # the line rate. Twice the true rate leaves room for the simulator thread catching up on a
            # busy machine, no more.
            limit = 2 * node_rate(path, kernel_name)
            assert all(0 <= d[name] <= limit for d in documents if name in d), (name, limit)

    requests = cloudwatch_alarms.alarms(CLUSTER, [INSTANCE_ID])
    for name in ("rx_errors", "tx_discards"):
        [alarm] = [a for a in requests if cloudwatch_alarms.metrics_named(a)[0]["MetricName"] == name]
        values = [d[name] for d in documents]
        states = alarm_states(alarm, values)
        increases = [i for i in range(1, len(values)) if values[i] > values[i - 1]]
        alarming = [i for i, state in enumerate(states) if state == "ALARM"]
        assert alarming == increases and increases, (name, values, states)


def amp_names(path: NodePath, job: str) -> set:
    return {r["metric"]["__name__"] for r in path.amp.query(f'count by (__name__) ({{job="{job}"}})')}


def expected_agent_names(path: NodePath) -> set:
    """Catalog names of every metric the agent exports on this node (its kernel's counters only)."""
    kernel = {name for device in path.simulator.devices for name in device.port_counters + device.device_counters}
    return {spec.prometheus_name for spec in catalog.METRICS if spec.kernel_name is None or spec.kernel_name in kernel
            or spec.name in catalog.RATE_SOURCES}


def test_amp_holds_every_agent_metric_under_the_name_the_head_node_scrape_gives_it(path):
    """prometheusremotewrite names a metric from its unit and type as the agent's own page does
    (catalog.prometheus_name), so one dashboard and one rule set serve both paths."""
    expected = expected_agent_names(path)
    path.amp.wait_for(f'count(count by (__name__) ({{job="otel-efa"}})) >= {len(expected)}', timeout=60)
    assert amp_names(path, "otel-efa") == expected | {"target_info"}


def test_efa_gpu_and_node_series_share_the_node_labels(path):
    path.amp.wait_for(f'up{{job="node-exporter", instance="{INSTANCE_ID}"}}')
    path_checks.assert_series_share_node_labels(path, CLUSTER, INSTANCE_ID)
    jobs = {r["metric"]["job"] for r in path.query("count by (job) ({job!=\"\"})")}
    assert jobs == {"otel-efa", "dcgm-exporter", "node-exporter"}


def test_every_write_to_amp_is_signed_for_aps_in_the_nodes_region(path):
    path.amp.wait_for("efa_port_up")
    assert path.gate.verified > 0 and not path.gate.refused, path.gate.refused[:3]
    assert path.gate.scopes == {f"{REGION}/aps/aws4_request"}


def test_every_metric_the_dashboard_and_rules_use_exists(path):
    path_checks.assert_every_used_metric_exists(path, WINDOW)


def test_every_dashboard_query_returns_series(path):
    path.amp.wait_for(f"count_over_time({catalog.BY_NAME['otel_efa_collections'].prometheus_name}[1m]) > 12")
    path_checks.assert_every_dashboard_query_returns_series(path)


def test_alerts_quiet_when_healthy_and_firing_on_each_fault(path):
    """The same faults as on the head node's path, the same rules, evaluated where AMP's data lands.
    Stops the agent (the module's last test): with nothing pushed, its series age out of the lookback
    while the node's DCGM and node exporter series, scraped by the collector, go on."""
    path_checks.assert_alerts_quiet_then_firing_on_each_fault(path, WINDOW, CLUSTER, INSTANCE_ID)
