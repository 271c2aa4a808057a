"""The ``otel-efa`` command. A command's parser is built, and its module imported, only when the command is
chosen: ``otel-efa --help`` reads the table below and nothing else of otel_efa, ``otel-efa run`` nothing of
doctor or deploy (tests/test_cli_imports.py holds it)."""
import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple, cast

from otel_efa import __version__

EXIT_CONFIG = 2


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message to one line (it quotes unrecognized
    arguments as they are, line breaks included).

    A command refuses what it would ignore: an argument left over names the command it was given to
    (``otel-efa metrics: error: unrecognized arguments: x``), and a command may set ``usage_check`` (a
    function of the parsed namespace returning a problem or None) for combinations of arguments that
    argparse cannot express, such as a positional that only one choice of another takes.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        from otel_efa.config import one_line

        self.exit(EXIT_CONFIG, f"{self.prog}: error: {one_line(message)}\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if self._subparsers is None:  # a command's own parser: nothing after it belongs to another
            if extras:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            check: Optional[Callable[[argparse.Namespace], Optional[str]]] = self._defaults.get("usage_check")
            problem = check(namespace) if check is not None else None
            if problem:
                self.error(problem)
        return namespace, extras


def package_version() -> str:
    """The installed distribution's version (what pip and the wheel say), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otel-efa")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return __version__


class _VersionAction(argparse.Action):
    """``--version``: the package metadata is read only when asked for (it costs every start otherwise)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(f"otel-efa {package_version()}\n")
        parser.exit(0)


def _add_run(subparsers) -> None:
    from otel_efa.config import DEFAULT_CONFIG_FILE, EXPORTERS, LOG_LEVELS, Config
    from otel_efa.tools.simulator.faults import FAULT_KINDS
    from otel_efa.tools.simulator.faults import argument as fault_argument

    default = Config()
    p = subparsers.add_parser(
        "run", help=COMMANDS["run"][0],
        description="Collect EFA counters and export them. A flag wins over its OTEL_EFA_* variable, which wins "
                    "over the config file; the defaults below apply when none of them sets a value.")
    p.add_argument("--config", metavar="PATH", help=f"YAML config file (default {DEFAULT_CONFIG_FILE} if present)")
    source = p.add_mutually_exclusive_group()  # a simulated node writes its own tree
    source.add_argument("--sysfs", metavar="PATH", help=f"sysfs root (default {default.sysfs})")
    source.add_argument("--simulate", metavar="PROFILE",
                        help="run on a simulated node of this instance type, e.g. p5en.48xlarge (default: the "
                             "real node)")
    p.add_argument("--fault", action="append", type=fault_argument, metavar="KIND[:DEVICE][@SECONDS]",
                   help=f"with --simulate: a fault on the simulated node ({', '.join(FAULT_KINDS)}), on DEVICE "
                        "(default the first) after SECONDS (default 0); repeatable (default: none)")
    p.add_argument("--allow-untrusted-sysfs", action="store_true", default=None,
                   help="read a sysfs tree not owned by root or world-writable (test and copied trees; default: "
                        "refuse it)")
    p.add_argument("--instance-type", metavar="TYPE",
                   help="instance type for line rate and expected devices (default: what IMDS reports)")
    p.add_argument("--interval", type=float, metavar="SECONDS",
                   help=f"seconds between collections (default {default.interval:g})")
    p.add_argument("--exporters", metavar="LIST",
                   help=f"comma list of {', '.join(EXPORTERS)} (default {','.join(default.exporters)})")
    p.add_argument("--prometheus-address", metavar="HOST:PORT",
                   help=f"where the Prometheus endpoint listens (default {default.prometheus.address})")
    p.add_argument("--web-config-file", metavar="PATH",
                   help="TLS and basic auth for the Prometheus endpoint, in exporter-toolkit's web config format "
                        "(default: plain HTTP, no authentication)")
    p.add_argument("--log-file", metavar="PATH", help="where the human log line goes (default: standard output)")
    p.add_argument("--log-level", choices=LOG_LEVELS, metavar="LEVEL",
                   help=f"the agent's own log on standard error: {', '.join(LOG_LEVELS)} "
                        f"(default {default.log_level})")
    p.add_argument("--count", type=int, metavar="N",
                   help="exit 0 after N collections and a final flush (default: run until stopped)")
    p.set_defaults(handler=_run)


# Config key -> the destination of the ``run`` flag that sets it (docs/configuration.md lists them).
RUN_FLAGS = {
    "sysfs": "sysfs", "simulate": "simulate", "simulate_faults": "fault",
    "allow_untrusted_sysfs": "allow_untrusted_sysfs", "instance_type": "instance_type",
    "interval": "interval", "exporters": "exporters", "log_file": "log_file", "log_level": "log_level",
    "count": "count", "prometheus.address": "prometheus_address", "prometheus.web_config_file": "web_config_file",
}


def _load_config(args):
    from otel_efa import config

    flags = {key: getattr(args, destination) for key, destination in RUN_FLAGS.items()}
    return config.load(args.config, flags=flags, check_paths=True)


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run(args) -> int:
    from otel_efa.pipeline.agent import Agent, install_signal_handlers

    if args.fault and args.simulate:  # name the flag; a profile from the config file is checked there
        _check_faults(args.simulate, args.fault)
    config = _load_config(args)
    _setup_logging(config.log_level)
    agent = Agent(config)
    install_signal_handlers(agent)
    return agent.run()


def _check_faults(profile: str, faults: List[str], **node) -> None:
    """ConfigError naming ``--fault`` when one of ``faults`` cannot go on a simulated ``profile`` node."""
    from otel_efa.config import ConfigError
    from otel_efa.node.instance_types import INSTANCE_TYPES
    from otel_efa.tools.simulator.faults import check_specs

    if profile in INSTANCE_TYPES:  # an unknown profile is reported as such, by its own flag
        problem = check_specs(profile, faults, **node)
        if problem:
            raise ConfigError("--fault", problem)


def _add_simulate(subparsers) -> None:
    from otel_efa.cli.types import non_negative, seconds
    from otel_efa.node.instance_types import INSTANCE_TYPES
    from otel_efa.tools.simulator import FAULT_KINDS, PATTERNS
    from otel_efa.tools.simulator.faults import argument as fault_argument

    p = subparsers.add_parser("simulate", help=COMMANDS["simulate"][0])
    p.add_argument("profile", choices=sorted(INSTANCE_TYPES), metavar="INSTANCE_TYPE",
                   help=f"the node to simulate: {', '.join(INSTANCE_TYPES)}")
    p.add_argument("--root", required=True, metavar="DIR", help="directory to write the tree under (use as --sysfs)")
    p.add_argument("--gbps", type=non_negative,
                   help="node throughput per direction in Gb/s (default: 40%% of the devices' line rate)")
    p.add_argument("--pattern", choices=PATTERNS, default="steady",
                   help=f"traffic over time: {', '.join(PATTERNS)} (default %(default)s)")
    p.add_argument("--interval", type=seconds, default=0.05, metavar="SECONDS",
                   help="how often the counters advance (default %(default)s)")
    p.add_argument("--kernel", choices=("new", "old"), default="new",
                   help="old: device counters under the port, no retrans group, constant rate file "
                        "(default %(default)s)")
    p.add_argument("--device-names", choices=("rdmap", "efa"), default="rdmap",
                   help="rdmap<bus>s<slot> as on current kernels, or efa_<n> (default %(default)s)")
    p.add_argument("--infiniband-counters", action="store_true",
                   help="also write classic InfiniBand ports/1/counters (what node_exporter reads)")
    p.add_argument("--devices", type=int, metavar="N",
                   help="only the profile's first N EFA devices (default: all of them)")
    p.add_argument("--fault", action="append", type=fault_argument, metavar="KIND[:DEVICE][@SECONDS]",
                   help=f"a fault on the node ({', '.join(FAULT_KINDS)}), on DEVICE (default the first) after "
                        "SECONDS (default 0); repeatable (default: none)")
    p.add_argument("--once", action="store_true", help="write the tree and exit (default: advance until stopped)")
    p.set_defaults(handler=_simulate)


def _simulate(args) -> int:
    import signal
    import threading

    from otel_efa.config import ConfigError
    from otel_efa.node.instance_types import INSTANCE_TYPES
    from otel_efa.tools.simulator import NEW_KERNEL, OLD_KERNEL, Simulator

    if not args.root.strip():  # the tree would go under / (root + "/class/infiniband")
        raise ConfigError("--root", "must not be empty")
    if os.path.exists(args.root) and not os.path.isdir(args.root):
        raise ConfigError("--root", f"{args.root} is not a directory")
    most = INSTANCE_TYPES[args.profile].efa_devices
    if args.devices is not None and not 1 <= args.devices <= most:
        raise ConfigError("--devices", f"{args.profile} has {most} EFA devices; choose 1 to {most}")
    flavour = OLD_KERNEL if args.kernel == "old" else NEW_KERNEL
    faults = args.fault or []
    _check_faults(args.profile, faults, retrans_counters=flavour.retrans_counters, name_style=args.device_names,
                  devices=args.devices)
    try:
        simulator = Simulator(args.profile, args.root, gbps=args.gbps, pattern=args.pattern, flavour=flavour,
                              name_style=args.device_names, infiniband_counters=args.infiniband_counters,
                              devices=args.devices, faults=faults)
    except OSError as e:  # a root we may not write, or a file where a directory of the tree goes
        raise ConfigError("--root", f"cannot write the tree under {args.root}: {e.strerror or e}") from None
    with simulator:
        print(f"{args.profile}: {len(simulator.devices)} EFA devices under {args.root}/class/infiniband"
              + (f"; faults: {', '.join(faults)}" if faults else ""), flush=True)
        if args.once:
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        simulator.run(args.interval, stop)
    return 0


def _add_snapshot(subparsers) -> None:
    from otel_efa.cli.types import sysfs_root

    p = subparsers.add_parser("snapshot", help=COMMANDS["snapshot"][0])
    p.add_argument("--sysfs", default="/sys", type=sysfs_root, metavar="PATH", help="sysfs root (default %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    p.set_defaults(handler=_snapshot)


def _snapshot(args) -> int:
    import json

    from otel_efa.node.sysfs import SysfsReader
    from otel_efa.tools.snapshot_report import as_dict, as_text

    with SysfsReader(args.sysfs) as reader:
        reading = reader.read()
    if args.json:
        json.dump(as_dict(reading), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_text(reading))
    return 0 if reading.devices else 1


def _add_metrics(subparsers) -> None:
    p = subparsers.add_parser("metrics", help=COMMANDS["metrics"][0])
    p.add_argument("--markdown", action="store_true",
                   help="as the markdown tables of docs/metrics.md (default: one plain line per metric)")
    p.set_defaults(handler=_metrics)


def _metrics(args) -> int:
    from otel_efa import catalog
    from otel_efa.artifacts.docs import metric_table

    if args.markdown:
        sys.stdout.write(metric_table())
    else:
        for m in catalog.METRICS:
            sys.stdout.write(f"{m.name:<36}{m.kind.value:<9}{m.unit:<6}{m.description}\n")
    return 0


# Every command: its line in ``otel-efa --help`` and the function that adds its parser (a module's own
# ``add_parser(subparsers)``), imported only when the command is chosen (otel_efa/cli/lazy_commands.py).
COMMANDS: Dict[str, Tuple[str, str]] = {
    "run": ("collect EFA counters and export them", "otel_efa.cli:_add_run"),
    "simulate": ("write a simulated EFA sysfs tree and advance its counters", "otel_efa.cli:_add_simulate"),
    "snapshot": ("read every device, port and counter once and print its totals", "otel_efa.cli:_add_snapshot"),
    "metrics": ("print the metric catalog", "otel_efa.cli:_add_metrics"),
    "top": ("live per-device EFA throughput, utilization and errors", "otel_efa.tools.top:add_parser"),
    "topology": ("map each EFA device to its PCI address, NUMA node and GPUs",
                 "otel_efa.tools.topology_report:add_parser"),
    "dashboard": ("print or install a dashboard built from the metric catalog",
                  "otel_efa.artifacts.dashboards:add_parser"),
    "alarms": ("alerting rules / alarms built from the metric catalog", "otel_efa.artifacts.alarms:add_parser"),
    "cost": ("monthly CloudWatch cost of the configured metrics", "otel_efa.tools.cost:add_parser"),
    "collector-config": ("print the ADOT collector config or the head node's Prometheus config",
                         "otel_efa.artifacts.collector_config:add_parser"),
    "deploy": ("ship the agent to a cluster", "otel_efa.tools.deploy:add_parser"),
    "doctor": ("check this node's EFA monitoring and say how to fix what fails", "otel_efa.tools.doctor:add_parser"),
    "docs": ("print a reference page generated from the code (docs/PAGE.md)", "otel_efa.artifacts.docs:add_parser"),
}


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The parser of ``otel-efa``: every command's built (the documentation pages and the tests walk them),
    or with ``lazy`` only the one chosen, when it is parsed (what :func:`main` uses)."""
    from otel_efa.cli.lazy_commands import LazyCommands

    parser = _Parser(prog="otel-efa", description="AWS EFA network counters as OpenTelemetry metrics")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    subparsers = cast(LazyCommands, parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                                          action=LazyCommands))
    subparsers.required = True
    for name, command in COMMANDS.items():
        subparsers.add_lazy(name, command)
    if not lazy:
        subparsers.build_all()
    return parser


def _aws_problem(error: Exception) -> Optional[int]:
    """The exit status for an AWS error botocore raised (2: no profile, credentials or region; 1: the rest),
    or None when ``error`` is no AWS error. botocore is looked up, never imported: commands without AWS
    start without it."""
    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is None or not isinstance(error, (exceptions.BotoCoreError, exceptions.ClientError)):
        return None
    setup = (exceptions.ProfileNotFound, exceptions.NoCredentialsError, exceptions.PartialCredentialsError,
             exceptions.NoRegionError)
    return EXIT_CONFIG if isinstance(error, setup) else 1


def _quiet_stdout() -> None:
    """Whoever read standard output is gone (``| head``): point it at /dev/null so that the interpreter's
    final flush does not fail again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser(lazy=True).parse_args(argv)
    from otel_efa.config import ConfigError, one_line  # a command runs: past --help and usage errors

    try:
        status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handling below
        return status
    except ConfigError as e:
        sys.stderr.write(f"otel-efa: {e}\n")
        return EXIT_CONFIG
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except Exception as e:
        status = _aws_problem(e)
        if status is None:
            raise  # a bug: its traceback is the report
        sys.stderr.write(f"otel-efa: AWS: {one_line(str(e))}\n")
        return status
