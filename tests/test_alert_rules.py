"""The Prometheus alerting rules: generated from the catalog, accepted by promtool, and each alert shown
firing and staying quiet by ``promtool test rules`` (Debian's prometheus package).

The input series below are hand-made scenarios (per-minute samples); the expected alerts are what an
operator should be paged with, written from the scenario, not from the rules' text. Annotations other
than one summary are stripped from the copy promtool tests, so the cases check who fires, with which
labels, and when; ``promtool check rules`` checks every annotation template parses.
"""
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from otel_efa.artifacts.alarms import prometheus_rules
from otel_efa.artifacts.promql import counter, name
from otel_efa.node.instance_types import INSTANCE_TYPES

COMMITTED = Path(__file__).resolve().parent.parent / "alerts" / "efa-alerts.rules.yml"
LINK_100G = INSTANCE_TYPES["p5.48xlarge"].device_bytes_per_second
JOB = {"job": "otel-efa"}


def _series(metric: str, values: str, **labels: str) -> Dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def _port(node: str, device: str) -> Dict[str, str]:
    return dict(cluster="c1", instance=node, aws_efa_device=device, aws_efa_port="1", **JOB)


def _case(input_series: List[Dict[str, str]], alertname: str, checks) -> Dict:
    return {
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [{"eval_time": at, "alertname": alertname, "exp_alerts": expected}
                            for at, expected in checks],
    }


def _alert(severity: str, summary: str = "", **labels: str) -> Dict:
    alert: Dict = {"exp_labels": dict(labels, severity=severity)}
    if summary:
        alert["exp_annotations"] = {"summary": summary}
    return alert


def _per_minute(bytes_per_second: float, minutes: int = 30) -> str:
    return f"0+{bytes_per_second * 60:.0f}x{minutes}"


def _cases() -> List[Dict]:
    up = name("efa_port_up")
    expected = name("efa_expected_devices")
    collections = name("otel_efa_collections")
    dev0, dev1 = _port("n1", "rdmap0s6"), _port("n1", "rdmap1s6")
    node1 = dict(cluster="c1", instance="n1")
    cases = [
        # A port goes down at minute 2: not yet after 1 minute (for: 2m), paged after that; dev1 stays up.
        _case([_series(up, "1 1 0x12", **dev0), _series(up, "1x14", **dev1)], "EfaPortDown",
              [("3m", []), ("10m", [_alert("critical", **dev0)])]),
        # n1 is a 4-device node with 2 reporting, n2 reports all of its 2, n3 reports none of its 2.
        _case([_series(expected, "4x10", cluster="c1", instance="n1", **JOB),
               _series(up, "1x10", **dev0), _series(up, "1x10", **dev1),
               _series(expected, "2x10", cluster="c1", instance="n2", **JOB),
               _series(up, "1x10", **_port("n2", "rdmap0s6")), _series(up, "1x10", **_port("n2", "rdmap1s6")),
               _series(expected, "2x10", cluster="c1", instance="n3", **JOB)],
              "EfaDevicesMissing",
              [("2m", []),
               ("8m", [_alert("critical", "2 EFA device(s) missing on n1 in cluster c1", **node1),
                       _alert("critical", "2 EFA device(s) missing on n3 in cluster c1",
                              cluster="c1", instance="n3")])]),
    ]
    for alertname, kernel_name, _ in prometheus_rules.SRD_EVENTS:
        # One event at minute 11 on dev0; dev1 never has one. Quiet before, firing after, quiet 5m later.
        cases.append(_case(
            [_series(counter(kernel_name), "0x10 1x20", **dev0), _series(counter(kernel_name), "0x30", **dev1)],
            alertname,
            [("10m", []), ("13m", [_alert("warning", cluster="c1", instance="n1", aws_efa_device="rdmap0s6")]),
             ("20m", [])]))
    cases += [
        # dev0 retransmits 5 % of its packets, dev1 0.1 %: only dev0, and only after 10 minutes.
        _case([_series(counter("tx_pkts"), "0+1000x30", **dev0), _series(counter("retrans_pkts"), "0+50x30", **dev0),
               _series(counter("tx_pkts"), "0+1000x30", **dev1), _series(counter("retrans_pkts"), "0+1x30", **dev1)],
              "EfaRetransmitRatioHigh",
              [("8m", []), ("20m", [_alert("warning", cluster="c1", instance="n1", aws_efa_device="rdmap0s6")])]),
        # n1 is busy (three rails at 3 GB/s each way) and rail 3 carries 0.5 GB/s: page for rail 3.
        # n2 has the same shape at 1/30 of the load: idle, so no page.
        _case(_imbalance_series("n1", 3e9, 0.5e9) + _imbalance_series("n2", 1e8, 0.0), "EfaDeviceImbalance",
              [("8m", []),
               ("25m", [_alert("warning", cluster="c1", instance="n1", aws_efa_device="rdmap3s6")])]),
        # n1's agent stops at minute 2 (its series end with a staleness marker, as on the head node's scrape)
        # while n1's node exporter still answers; n2 goes on; n3 was scaled down (everything of it ends).
        _case([_series(collections, "0+1x2 stale", cluster="c1", instance="n1", **JOB),
               _series("up", "1x30", cluster="c1", instance="n1", job="node-exporter"),
               _series(collections, "0+1x30", cluster="c1", instance="n2", **JOB),
               _series("up", "1x30", cluster="c1", instance="n2", job="node-exporter"),
               _series(collections, "0+1x2 stale", cluster="c1", instance="n3", **JOB),
               _series("up", "1x2 stale", cluster="c1", instance="n3", job="dcgm-exporter")],
              "EfaAgentDown",
              [("5m", []), ("10m", [_alert("warning", **node1)]), ("30m", [_alert("warning", **node1)])]),
        # Nobody reports at all: fires after 10 minutes ...
        _case([_series("up", "1x20", cluster="c1", instance="n1", job="dcgm")], "EfaAgentAbsent",
              [("5m", []), ("15m", [_alert("warning")])]),
        # ... but one agent reporting is enough to keep it quiet.
        _case([_series(collections, "0+1x20", cluster="c1", instance="n1", **JOB)], "EfaAgentAbsent",
              [("15m", [])]),
        # n1 stops collecting at minute 5 while still scraped; n2 goes on.
        _case([_series(collections, "0+1x5 5x20", cluster="c1", instance="n1", **JOB),
               _series(collections, "0+1x25", cluster="c1", instance="n2", **JOB)],
              "EfaAgentStalled",
              [("8m", []), ("16m", [_alert("warning", **node1)])]),
    ]
    return cases


def _imbalance_series(node: str, busy: float, slow: float, slow_from: int = 0) -> List[Dict[str, str]]:
    """Four rails at ``busy`` bytes/s each way; the last one at ``slow`` from minute ``slow_from``."""
    series = []
    for index, rate in enumerate((busy, busy, busy, slow)):
        labels = _port(node, f"rdmap{index}s6")
        values = _per_minute(rate)
        if slow_from and rate != busy:
            values = f"{_per_minute(busy, slow_from)} {busy * 60 * slow_from + rate * 60:.0f}+{rate * 60:.0f}x{30 - slow_from}"
        series += [_series(counter("rx_bytes"), values, **labels),
                   _series(counter("tx_bytes"), values, **labels),
                   _series(name("efa_link_speed"), f"{LINK_100G:.0f}x30", **labels)]
    return series


def _rules_for_promtool(tmp_path: Path) -> Path:
    rules = prometheus_rules.rule_file()
    for rule in rules["groups"][0]["rules"]:
        kept = {"summary": rule["annotations"]["summary"]} if rule["alert"] == "EfaDevicesMissing" else {}
        rule["annotations"] = kept
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    return path


def test_committed_rules_are_the_generated_ones():
    assert COMMITTED.read_text() == prometheus_rules.render(), "run: otel-efa alarms prometheus > " + str(COMMITTED)


def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(COMMITTED)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(prometheus_rules.rules())} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet(tmp_path):
    rules = _rules_for_promtool(tmp_path)
    cases = _cases()
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in prometheus_rules.rules()}, "every alert needs a case"
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for alertname in tested:  # every alert is shown both quiet and firing
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == alertname}
        assert outcomes == {True, False}, alertname
    test_file = tmp_path / "rules.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": cases},
                                        sort_keys=False, width=1000))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_expectation_fails(tmp_path):
    """The harness itself can fail: expecting the healthy device to be down must not pass."""
    rules = _rules_for_promtool(tmp_path)
    dev0, dev1 = _port("n1", "rdmap0s6"), _port("n1", "rdmap1s6")
    wrong = _case([_series(name("efa_port_up"), "1 1 0x12", **dev0), _series(name("efa_port_up"), "1x14", **dev1)],
                  "EfaPortDown", [("10m", [_alert("critical", **dev1)])])
    test_file = tmp_path / "wrong.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [wrong]}))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode != 0


# --- for: pending before it, firing after it ------------------------------------------------------

def _minutes(duration: str) -> int:
    number, unit = int(duration[:-1]), duration[-1]
    return {"m": number, "h": 60 * number}[unit]


def _timed_scenarios() -> List[Tuple[str, List[Dict[str, str]], int, Dict[str, str]]]:
    """(alert, input series, onset minute, labels of the one alert) per alert: the onset is the first
    minute the condition holds, worked out from the scenario (commented), not read off the rules."""
    up = name("efa_port_up")
    expected = name("efa_expected_devices")
    collections = name("otel_efa_collections")
    dev0, dev1 = _port("n1", "rdmap0s6"), _port("n1", "rdmap1s6")
    node1 = dict(cluster="c1", instance="n1")
    alive = _series("up", "1x40", job="node-exporter", **node1)
    scenarios = [
        # The port reads 0 from minute 2.
        ("EfaPortDown", [_series(up, "1 1 0x30", **dev0), _series(up, "1x32", **dev1)], 2, dev0),
        # Two of two devices report until dev1's series ends (staleness marker) at minute 4.
        ("EfaDevicesMissing", [_series(expected, "2x30", **node1, **JOB), _series(up, "1x30", **dev0),
                               _series(up, "1x3 stale", **dev1)], 4, node1),
    ]
    for alertname, kernel_name, _ in prometheus_rules.SRD_EVENTS:
        # The event counter goes 0 -> 1 at minute 11; no for: firing from that evaluation on.
        scenarios.append((alertname, [_series(counter(kernel_name), "0x10 1x20", **dev0)], 11,
                          dict(node1, aws_efa_device="rdmap0s6")))
    scenarios += [
        # 1000 packets/min sent; retransmits start at minute 6 at 100/min: the 5m window holds 100 of
        # 5000 (2 %) at minute 6, none at minute 5.
        ("EfaRetransmitRatioHigh", [_series(counter("tx_pkts"), "0+1000x40", **dev0),
                                    _series(counter("retrans_pkts"), "0x5 100+100x35", **dev0)], 6,
         dict(node1, aws_efa_device="rdmap0s6")),
        # Rail 3 stops at minute 5 while three rails move 3 GB/s each way. After k idle minutes its 5m rate
        # is (1 - k/5) of the others'; the rule wants < half the node's mean, i.e. < 3/7 of theirs: k = 3.
        ("EfaDeviceImbalance", _imbalance_series("n1", 3e9, 0.0, slow_from=5), 8,
         dict(node1, aws_efa_device="rdmap3s6")),
        # Scraped: the agent's last sample is at minute 3, a staleness marker at 4; the node exporter answers.
        ("EfaAgentDown", [_series(collections, "0+1x3 stale", **node1, **JOB), alive], 4, node1),
        # Pushed (AMP): no marker; the last sample (minute 3) is seen through the 5 minute lookback up to
        # minute 8 inclusive, so the node counts as silent from minute 9.
        ("EfaAgentDown", [_series(collections, "0+1x3 _x36", **node1, **JOB), alive], 9, node1),
        # The only agent's series ends at minute 4.
        ("EfaAgentAbsent", [_series(collections, "0+1x3 stale", **node1, **JOB)], 4, {}),
        # Collections stop growing after minute 5 (value 5): the 5m window is flat from minute 10.
        ("EfaAgentStalled", [_series(collections, "0+1x5 5x30", **node1, **JOB)], 10, node1),
    ]
    return scenarios


def _pending(alertname: str, labels: Dict[str, str], severity: str) -> Dict:
    text = ",".join(f'{k}="{v}"' for k, v in sorted(dict(labels, alertname=alertname, alertstate="pending",
                                                          severity=severity).items()))
    return {"labels": f"ALERTS{{{text}}}", "value": 1}


def _timed_case(alertname: str, series: List[Dict[str, str]], onset: int, labels: Dict[str, str]) -> Dict:
    rule = next(r for r in prometheus_rules.rules() if r["alert"] == alertname)
    severity, wait = rule["labels"]["severity"], _minutes(rule.get("for", "0m"))
    firing = [_alert(severity, **labels)]
    pending_query = f'ALERTS{{alertname="{alertname}", alertstate="pending"}}'
    checks = [(f"{onset - 1}m", []), (f"{onset + wait}m", firing), (f"{onset + wait + 1}m", firing)]
    expr_tests = [{"expr": pending_query, "eval_time": f"{onset - 1}m", "exp_samples": []}]
    if wait:  # pending from the onset until for has passed, not firing yet
        checks.append((f"{onset + wait - 1}m", []))
        for minute in (onset, onset + wait - 1):
            expr_tests.append({"expr": pending_query, "eval_time": f"{minute}m",
                               "exp_samples": [_pending(alertname, labels, severity)]})
        expr_tests.append({"expr": pending_query, "eval_time": f"{onset + wait}m", "exp_samples": []})
    case = _case(series, alertname, checks)
    case["promql_expr_test"] = expr_tests
    return case


def _rules_without_annotations(tmp_path: Path, **fors: str) -> Path:
    """The generated rules with annotations dropped (the timed cases check who fires when) and, for the
    test that proves the cases can fail, some for: changed."""
    rules = prometheus_rules.rule_file()
    for rule in rules["groups"][0]["rules"]:
        rule["annotations"] = {}
        if rule["alert"] in fors:
            rule["for"] = fors[rule["alert"]]
    path = tmp_path / "timed-rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    return path


def test_every_alert_is_pending_before_its_for_and_firing_after(tmp_path):
    rules = _rules_without_annotations(tmp_path)
    scenarios = _timed_scenarios()
    assert {s[0] for s in scenarios} == {r["alert"] for r in prometheus_rules.rules()}, "every alert needs one"
    cases = [_timed_case(*scenario) for scenario in scenarios]
    test_file = tmp_path / "for.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": cases},
                                        sort_keys=False, width=1000))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_shorter_for_would_be_caught(tmp_path):
    """The timed cases pin each for: the same cases fail on rules whose EfaPortDown waits 1m instead of 2m."""
    path = _rules_without_annotations(tmp_path, EfaPortDown="1m")
    case = _timed_case(*next(s for s in _timed_scenarios() if s[0] == "EfaPortDown"))
    test_file = tmp_path / "short.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(path)], "evaluation_interval": "1m", "tests": [case]},
                                        sort_keys=False, width=1000))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode != 0, result.stdout
