"""The reference pages generated from the code (``otel-efa docs PAGE``): docs/metrics.md from the catalog and
docs/configuration.md from the config schema. tests/test_docs.py keeps the committed files equal to them;
``make docs`` (``otel-efa docs --write docs``) rewrites them."""
import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

from otel_efa.artifacts.metrics_page import metric_table  # noqa: F401  (otel-efa metrics --markdown)
from otel_efa.config import ConfigError


def _metrics() -> str:
    from otel_efa.artifacts import metrics_page

    return metrics_page.page()


def _configuration() -> str:
    from otel_efa.artifacts import configuration_page

    return configuration_page.page()


# Page name -> (its file under docs/, what renders it).
PAGES: Dict[str, Callable[[], str]] = {"metrics": _metrics, "configuration": _configuration}


def file_name(page: str) -> str:
    return f"{page}.md"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("docs", help="print a reference page generated from the code (docs/PAGE.md)")
    p.add_argument("page", metavar="PAGE", nargs="?", choices=sorted(PAGES),
                   help=f"which page: {', '.join(sorted(PAGES))} (needed unless --write, and refused with it)")
    p.add_argument("--write", metavar="DIR",
                   help="write every page into DIR, as committed in docs/ (default: print the one chosen on "
                        "standard output)")
    p.set_defaults(handler=_handle, usage_check=_usage_problem)


def _usage_problem(args: argparse.Namespace) -> Optional[str]:
    if args.write is not None and args.page:
        return f"--write writes every page; drop {args.page!r}"
    if args.write is None and not args.page:
        return f"name the page ({' or '.join(sorted(PAGES))}) or give --write DIR"
    return None


def _handle(args: argparse.Namespace) -> int:
    if args.write is not None:
        directory = Path(args.write)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, render in PAGES.items():
                (directory / file_name(name)).write_text(render())
                print(directory / file_name(name))
        except OSError as e:
            raise ConfigError("--write", f"cannot write {e.filename or directory}: {e.strerror or e}") from None
        return 0
    sys.stdout.write(PAGES[args.page]())
    return 0
