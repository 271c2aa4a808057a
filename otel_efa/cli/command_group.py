"""A command with kinds below it (``otel-efa dashboard grafana``, ``otel-efa alarms prometheus``)."""
from typing import Callable, Iterable


def add_group(subparsers, name: str, help: str, kinds: Iterable[Callable]) -> None:
    """Add ``name`` with one sub-command per kind; each ``kinds`` entry is a module's ``add_parser(kinds)``.

    Sub-parsers share the top parser's class, so a bad flag anywhere exits 2 with one line.
    """
    parser = subparsers.add_parser(name, help=help)
    group = parser.add_subparsers(dest=name, metavar="KIND", parser_class=type(parser))
    group.required = True
    for add in kinds:
        add(group)
