"""``otel-efa alarms KIND``: alerting built from the metric catalog.

``prometheus`` prints alerting rules for Prometheus / Amazon Managed Prometheus; ``cloudwatch`` creates
(or, with ``--dry-run``, prints) CloudWatch alarms on the seed's ParallelCluster/Network metrics.
"""
from . import cloudwatch_alarms, prometheus_rules

KINDS = (prometheus_rules.add_parser, cloudwatch_alarms.add_parser)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("alarms", help="alerting rules / alarms built from the metric catalog")
    kinds = p.add_subparsers(dest="alarms", metavar="KIND", parser_class=type(p))
    kinds.required = True
    for add in KINDS:
        add(kinds)
