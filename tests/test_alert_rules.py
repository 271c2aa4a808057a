"""The Prometheus alerting rules: generated from the catalog, accepted by promtool, and each alert shown
firing and staying quiet by ``promtool test rules`` (Debian's prometheus package).

The input series below are hand-made scenarios (per-minute samples); the expected alerts are what an
operator should be paged with, written from the scenario, not from the rules' text. Annotations other
than one summary are stripped from the copy promtool tests, so the cases check who fires, with which
labels, and when; ``promtool check rules`` checks every annotation template parses.
"""
import subprocess
from pathlib import Path
from typing import Dict, List

import yaml

from otel_efa.alarms import prometheus_rules
from otel_efa.instance_types import INSTANCE_TYPES
from otel_efa.promql import counter, name

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
        # n1's endpoint stops answering at minute 2; n2's keeps answering; a DCGM target down is not ours.
        _case([_series("up", "1 1 0x20", cluster="c1", instance="n1", **JOB),
               _series("up", "1x22", cluster="c1", instance="n2", **JOB),
               _series("up", "0x22", cluster="c1", instance="n1", job="dcgm")],
              "EfaAgentDown",
              [("5m", []), ("10m", [_alert("warning", cluster="c1", instance="n1", **JOB)])]),
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


def _imbalance_series(node: str, busy: float, slow: float) -> List[Dict[str, str]]:
    series = []
    for index, rate in enumerate((busy, busy, busy, slow)):
        labels = _port(node, f"rdmap{index}s6")
        series += [_series(counter("rx_bytes"), _per_minute(rate), **labels),
                   _series(counter("tx_bytes"), _per_minute(rate), **labels),
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
