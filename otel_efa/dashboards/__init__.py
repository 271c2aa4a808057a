"""``otel-efa dashboard KIND``: dashboards generated from the catalog, one module per kind.

Each kind's module exposes ``add_parser(kinds)``, which adds its sub-parser to ``kinds`` and sets
``handler``; add it to :data:`KINDS`. Modules import heavy things (boto3) inside their handlers only.
"""
from ..cloudwatch import dashboard as cloudwatch
from . import grafana

KINDS = (grafana.add_parser, cloudwatch.add_parser)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("dashboard", help="print or install a dashboard built from the metric catalog")
    kinds = p.add_subparsers(dest="dashboard", metavar="KIND", parser_class=type(p))
    kinds.required = True
    for add in KINDS:
        add(kinds)
