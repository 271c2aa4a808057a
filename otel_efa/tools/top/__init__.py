"""``otel-efa top``: a live view of the node's EFA devices, like ``nvidia-smi dmon`` for the network.

Reads sysfs through the agent's :class:`~otel_efa.pipeline.collector.Collector` (the same rates and totals the
exporters see), one row per device, node totals against the instance's line rate. Plain lines when the
output is not a terminal, so ``otel-efa top | tee`` and cron jobs work too.
"""
import os
import sys
import tempfile

from otel_efa.cli.types import at_least_one, seconds, sysfs_root_problem
from otel_efa.config import ConfigError


def add_parser(subparsers) -> None:
    from otel_efa.node.instance_types import INSTANCE_TYPES
    from otel_efa.tools.simulator.faults import FAULT_KINDS
    from otel_efa.tools.simulator.faults import argument as fault_argument

    p = subparsers.add_parser("top", help="live per-device EFA throughput, utilization and errors")
    p.add_argument("--sysfs", metavar="PATH", help="sysfs root (default /sys)")
    p.add_argument("--interval", type=seconds, default=1.0, metavar="SECONDS",
                   help="seconds between refreshes (default %(default)g)")
    p.add_argument("--simulate", metavar="PROFILE", choices=sorted(INSTANCE_TYPES),
                   help="show a simulated node of this type, e.g. p5.48xlarge (default: the real node)")
    p.add_argument("--fault", action="append", type=fault_argument, metavar="KIND[:DEVICE][@SECONDS]",
                   help=f"with --simulate: a fault on the simulated node ({', '.join(FAULT_KINDS)}), on DEVICE "
                        "(default the first) after SECONDS (default 0); repeatable (default: none)")
    p.add_argument("--instance-type", choices=sorted(INSTANCE_TYPES), metavar="TYPE",
                   help="line rate and expected devices of this type (default: from IMDS)")
    p.add_argument("--count", type=at_least_one, metavar="N",
                   help="exit after N refreshes (default: until q or Ctrl-C)")
    p.add_argument("--plain", action="store_true",
                   help="plain lines even on a terminal (default: plain only when not a terminal)")
    p.set_defaults(handler=_top)


def _instance_type_name(args):
    if args.instance_type or args.simulate:
        return args.instance_type or args.simulate
    from otel_efa.node.imds import ImdsClient

    return ImdsClient().identity().get("instanceType")


def _top(args) -> int:
    from otel_efa.node import instance_types
    from otel_efa.node.sysfs import SysfsReader
    from otel_efa.pipeline.collector import Collector
    from otel_efa.tools.top.model import TopModel
    from otel_efa.tools.top.screen import TopLoop

    if not args.interval > 0:
        raise ConfigError("--interval", "must be a positive number of seconds")
    if args.count is not None and args.count < 1:
        raise ConfigError("--count", "must be at least 1")
    if args.fault:
        from otel_efa.tools.simulator.faults import check_specs

        problem = check_specs(args.simulate, args.fault) if args.simulate else "needs --simulate PROFILE"
        if problem:
            raise ConfigError("--fault", problem)
    if not args.simulate:  # a simulated node needs no /sys (a laptop has none)
        args.sysfs = args.sysfs or "/sys"
        problem = sysfs_root_problem(args.sysfs)
        if problem:
            raise ConfigError("--sysfs", problem)
    type_name = _instance_type_name(args)
    with tempfile.TemporaryDirectory(prefix="otel-efa-top-") as scratch:
        root, simulator = args.sysfs, None
        if args.simulate:
            from otel_efa.tools.simulator import Simulator

            simulator = Simulator(args.simulate, scratch, faults=args.fault or ())
            root = scratch
        try:
            with SysfsReader(root) as reader:
                loop = TopLoop(Collector(reader, type_name), TopModel(instance_types.lookup(type_name)),
                               args.interval, args.count, before_collect=simulator.advance if simulator else None)
                if args.plain or not (sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb"):
                    return loop.run_plain()
                return loop.run_curses()
        except KeyboardInterrupt:
            return 0
        finally:
            if simulator is not None:
                simulator.close()
