"""The command table of ``otel-efa``, each command's parser built when that command is chosen.

``otel-efa --help`` lists the commands from their names and help lines alone; ``otel-efa run ...`` builds the
parser of ``run`` only, so it imports what ``run`` needs and nothing of ``doctor``, ``deploy`` or the
dashboards. The parsers come out the same as when every command is built up front (``build_all``, what the
documentation pages and the parser walks of the tests use).
"""
import argparse
import importlib
from typing import Any, Callable, Dict, Tuple

# name -> (its line in ``otel-efa --help``, "module:function" that adds its parser to the table)
Command = Tuple[str, str]


class LazyCommands(argparse._SubParsersAction):
    """A ``_SubParsersAction`` whose parsers are added on first use. Until then a command is a name in
    ``choices`` (mapped to None) and a line of the help, so that argparse checks the choice and lists it as
    it always did."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._adders: Dict[str, str] = {}

    def add_lazy(self, name: str, command: Command) -> None:
        help_line, adder = command
        self._adders[name] = adder
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help_line))
        self._name_parser_map[name] = None  # a choice, its parser not built yet

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name not in self._adders:
            return super().add_parser(name, **kwargs)
        order = list(self._name_parser_map)
        line = next(i for i, a in enumerate(self._choices_actions) if a.dest == name)
        del self._name_parser_map[name]
        lines = len(self._choices_actions)
        parser = super().add_parser(name, **kwargs)
        if len(self._choices_actions) > lines:  # the command's own help line replaces the table's, in place
            self._choices_actions[line] = self._choices_actions.pop()
        built = dict(self._name_parser_map)  # the choices keep the table's order (argparse lists them)
        self._name_parser_map.clear()
        self._name_parser_map.update((n, built[n]) for n in order)
        return parser

    def build(self, name: str) -> None:
        """Add the parser of ``name`` if it is a command not built yet."""
        if self._name_parser_map.get(name) is None and name in self._adders:
            module, _, function = self._adders[name].partition(":")
            adder: Callable[[Any], None] = getattr(importlib.import_module(module), function)
            adder(self)
            del self._adders[name]

    def build_all(self) -> None:
        for name in list(self._adders):
            self.build(name)

    def __call__(self, parser, namespace, values, option_string=None):
        if values:
            self.build(values[0])
        super().__call__(parser, namespace, values, option_string)
