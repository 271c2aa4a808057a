"""``otel-efa alarms KIND``: alerting built from the metric catalog.

``prometheus`` prints alerting rules for Prometheus / Amazon Managed Prometheus; ``cloudwatch`` creates
(or, with ``--dry-run``, prints) CloudWatch alarms on the quick-start's ParallelCluster/Network metrics.
"""
from otel_efa.artifacts.alarms import cloudwatch_alarms, prometheus_rules
from otel_efa.cli.command_group import add_group

KINDS = (prometheus_rules.add_parser, cloudwatch_alarms.add_parser)


def add_parser(subparsers) -> None:
    add_group(subparsers, "alarms", "alerting rules / alarms built from the metric catalog", KINDS)
