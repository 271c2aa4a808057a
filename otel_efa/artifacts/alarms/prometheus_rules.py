"""Prometheus alerting rules for EFA, generated from the catalog (``otel-efa alarms prometheus``).

Load the output with ``rule_files:`` in Prometheus, or upload it to Amazon Managed Prometheus as a rule
groups namespace. Every alert is per node (``cluster``, ``instance``) or per device (plus
``aws_efa_device``), so a page names the rail to drain. Thresholds are constants below, each with its
reason; ``promtool test rules`` cases in the tests show each alert firing and staying quiet.
"""
import sys
from typing import Any, Dict, List

from otel_efa import catalog
from otel_efa.artifacts import promql
from otel_efa.artifacts.promql import DEVICE, NODE, PEER_JOBS, counter, name, sum_increase, sum_rate

GROUP = "otel-efa"
WINDOW = "5m"
# SRD retransmits a little under any load; sustained >1 % of sent packets means a sick path or remote.
RETRANSMIT_RATIO = 0.01
# A rail carrying under half its siblings' mean while NCCL spreads traffic evenly is slow or stuck ...
IMBALANCE_FRACTION = 0.5
# ... but only once the node is busy: its devices average above 10 % of line rate per direction.
BUSY_FRACTION = 0.1
# One alert per SRD health event (catalog.SRD_HEALTH_EVENTS): its name and what it means.
SRD_EVENT_ALERTS = {
    catalog.RETRANS_TIMEOUT_EVENTS: ("EfaRetransTimeouts", "SRD traffic timed out and changed network path"),
    catalog.UNRESPONSIVE_REMOTE_EVENTS: ("EfaUnresponsiveRemote", "an SRD remote connection stopped responding"),
    catalog.IMPAIRED_REMOTE_CONN_EVENTS: ("EfaImpairedRemoteConnections",
                                          "SRD connections became impaired and were rate limited"),
}
SRD_EVENTS = tuple((SRD_EVENT_ALERTS[k][0], k, SRD_EVENT_ALERTS[k][1]) for k in catalog.SRD_HEALTH_EVENTS)


def _alert(alert: str, expr: str, duration: str, severity: str, summary: str, description: str) -> Dict[str, Any]:
    rule: Dict[str, Any] = {"alert": alert, "expr": expr}
    if duration:
        rule["for"] = duration
    rule.update(labels={"severity": severity}, annotations={"summary": summary, "description": description})
    return rule


def _node() -> str:
    return promql.by(NODE)


def rules(window: str = WINDOW, remember: str = promql.REMEMBER) -> List[Dict[str, Any]]:
    """The alerts; ``window`` is the rate/increase range and ``remember`` how long a silent node is missed
    (tests shorten both to evaluate on seconds of data)."""
    node = _node()
    device_labels = NODE + (DEVICE,)
    port_up = name(catalog.PORT_UP.name)
    expected = name(catalog.EXPECTED_DEVICES.name)
    present = f"count by ({node}) ({port_up})"
    throughput = promql.device_throughput(window)
    link = name(catalog.LINK_SPEED.name)
    collections = name(catalog.COLLECTIONS.name)
    where = "{{ $labels.instance }} in cluster {{ $labels.cluster }}"
    alerts = [
        _alert("EfaPortDown", f"{port_up} == 0", "2m", "critical",
               f"EFA device {{{{ $labels.{DEVICE} }}}} is down on {where}",
               "The port state is not ACTIVE: the rail carries no traffic and collectives run slower."),
        _alert("EfaDevicesMissing",
               f"max by ({node}) ({expected}) - ({present} or max by ({node}) ({expected}) * 0) > 0",
               "5m", "critical", f"{{{{ $value }}}} EFA device(s) missing on {where}",
               f"Fewer devices report than the instance type documents ({catalog.EXPECTED_DEVICES.name}): a "
               "device failed to probe or was unbound."),
    ]
    for alert, kernel_name, what in SRD_EVENTS:
        alerts.append(_alert(
            alert, f"{sum_increase(counter(kernel_name), device_labels, window)} > 0", "", "warning",
            f"{{{{ $value | humanize }}}} {kernel_name} on {{{{ $labels.{DEVICE} }}}}, {where}",
            f"In the last {window} {what} ({counter(kernel_name)} increased)."))
    alerts += [
        _alert("EfaRetransmitRatioHigh",
               f"{sum_rate(counter(catalog.RETRANS_PKTS), device_labels, window)}"
               f" / {sum_rate(counter(catalog.TX_PKTS), device_labels, window)} > {RETRANSMIT_RATIO}",
               "10m", "warning",
               f"{{{{ $value | humanizePercentage }}}} of packets retransmitted on {{{{ $labels.{DEVICE} }}}}, "
               f"{where}", f"Retransmitted / sent packets above {RETRANSMIT_RATIO:.0%} for 10 minutes."),
        _alert("EfaDeviceImbalance",
               f"({throughput} < on ({node}) group_left() ({IMBALANCE_FRACTION} * avg by ({node}) ({throughput})))"
               f" and on ({node}) (avg by ({node}) ({throughput})"
               f" > {2 * BUSY_FRACTION} * avg by ({node}) ({link}))",
               "10m", "warning",
               f"EFA device {{{{ $labels.{DEVICE} }}}} carries far less than its siblings on {where}",
               f"The device moves under {IMBALANCE_FRACTION:.0%} of the node's mean per-device throughput "
               f"while the node is busy: a slow or stuck rail holds every collective back."),
        _alert("EfaAgentDown",
               f"({promql.node_stopped_reporting(collections, remember=remember)})"
               f" and on ({node}) {promql.node_alive()}", "5m", "warning",
               f"otel-efa on {where} stopped reporting",
               f"{collections} came from this node within the last {remember} but no longer does, while its "
               f"{' or '.join(PEER_JOBS)} still reports: no EFA data from a live node. Works on pushed data "
               "(no `up` series for the agent there); a node that left the cluster does not page."),
        _alert("EfaAgentAbsent", f"absent({collections})", "10m", "warning",
               "No otel-efa agent reports at all",
               f"No {collections} series exists: every agent is down, or none was ever set up "
               "(with OTLP to Amazon Managed Prometheus there is no `up` series; this still fires)."),
        _alert("EfaAgentStalled", f"{sum_rate(collections, NODE, window)} == 0", "5m", "warning",
               f"otel-efa on {where} answers but no longer collects",
               f"{collections} has not increased for {window}: the collection loop is stuck."),
    ]
    return alerts


def rule_file(window: str = WINDOW, remember: str = promql.REMEMBER) -> Dict[str, Any]:
    return {"groups": [{"name": GROUP, "rules": rules(window, remember)}]}


def render() -> str:
    """The rules as YAML, as committed in ``alerts/efa-alerts.rules.yml``."""
    import yaml  # only when rules are printed: every other command starts without it

    header = "# Generated by `otel-efa alarms prometheus` from the metric catalog; do not edit by hand.\n"
    return header + yaml.safe_dump(rule_file(), sort_keys=False, width=1000)


def add_parser(kinds) -> None:
    p = kinds.add_parser("prometheus", help="Prometheus / AMP alerting rules (YAML) on stdout")
    p.set_defaults(handler=_prometheus)


def _prometheus(_args) -> int:
    sys.stdout.write(render())
    return 0
