"""``otel-efa dashboard KIND``: dashboards generated from the catalog, one module per kind.

Each kind's module exposes ``add_parser(kinds)``, which adds its sub-parser to ``kinds`` and sets
``handler``; add it to :data:`KINDS`. Modules import heavy things (boto3) inside their handlers only.
"""
from otel_efa.artifacts.dashboards import cloudwatch, grafana
from otel_efa.cli.command_group import add_group

KINDS = (grafana.add_parser, cloudwatch.add_parser)


def add_parser(subparsers) -> None:
    add_group(subparsers, "dashboard", "print or install a dashboard built from the metric catalog", KINDS)
