"""``otel-efa doctor``: the quick-start's troubleshooting page as one command.

Each check is a small function from a :class:`Context` to a :class:`Result` (PASS, FAIL or SKIP); a
FAIL always carries the command that fixes it. The checks run in order, one line each, and the exit
status is 1 when any check failed. A check that needs something the node does not use (the CloudWatch
exporter, systemd) says SKIP rather than guessing.
"""
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from otel_efa import catalog
from otel_efa.cli.types import at_least_one, seconds
from otel_efa.config import Config, ConfigError, parse_host_port

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
CPU_LIMIT = 0.05  # the quick-start: "normally below 5 % CPU"
MIN_INTERVAL_S = 1.0
MIN_CLOUDWATCH_INTERVAL_S = 10.0  # below this PutMetricData calls cost more than the metrics
MAX_INTERVAL_S = 300.0  # the quick-start's cost-saving maximum; longer makes rates and dashboards coarse
CONFIG_FILE = "/etc/otel-efa/config.yaml"
RESTART = "sudo systemctl restart efa-monitor"


@dataclass(frozen=True)
class Result:
    status: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks look at; tests build one around a simulated node."""

    config: Config
    service: str = "efa-monitor"
    pid: Optional[int] = None  # the agent's process (default: the service's MainPID)
    timeout: float = 3.0
    cpu_sample_s: float = 1.0
    root: str = "/"  # where installed software (ADOT) is looked for
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _cache: Dict[str, object] = field(default_factory=dict)

    def reading(self):
        """One sysfs pass, shared by the device and counter checks."""
        if "reading" not in self._cache:
            from otel_efa.node.sysfs import SysfsReader

            with SysfsReader(self.config.sysfs) as reader:
                self._cache["reading"] = reader.read()
        return self._cache["reading"]

    def systemctl(self, *args: str):
        """``systemctl ARGS`` (a CompletedProcess), or None when there is no systemctl on this host."""
        import subprocess

        if shutil.which("systemctl", path=self.environ.get("PATH")) is None:
            return None
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=self.timeout,
                              env=dict(self.environ))


SDK_EXPORTER = "otel-sdk"


def _uses(context: Context, exporter: str) -> bool:
    """Whether the agent sends with ``exporter``: named in ``exporters``, or a reader of the otel-sdk path
    that ``OTEL_METRICS_EXPORTER`` names (its OTLP reader sends to the same collector, its Prometheus reader
    is served on the same ``prometheus.address``). A bad ``OTEL_METRICS_EXPORTER`` is a ConfigError."""
    exporters = context.config.exporters
    if exporter in exporters:
        return True
    if SDK_EXPORTER not in exporters or exporter not in ("otlp", "prometheus"):
        return False
    from otel_efa.exporters.sdk_readers import chosen_exporters

    return exporter in chosen_exporters(context.environ)


def check_devices(context: Context) -> Result:
    devices = context.reading().devices
    class_dir = os.path.join(context.config.sysfs, "class", "infiniband")
    if not devices:
        return Result(FAIL, f"no EFA device under {class_dir}",
                      "enable EFA on the instance (ParallelCluster: 'Efa: Enabled: true'), then "
                      "sudo modprobe efa && ls -la /sys/class/infiniband/")
    names = ", ".join(d.name for d in devices[:4]) + (", ..." if len(devices) > 4 else "")
    return Result(PASS, f"{len(devices)} device(s) under {class_dir}: {names}")


def _not_world_readable(sysfs: str) -> List[str]:
    """Counter files the service's unprivileged user could not read (root reads them regardless)."""
    import glob
    import stat

    class_dir = os.path.join(sysfs, "class", "infiniband")
    paths = (glob.glob(os.path.join(class_dir, "*", "hw_counters", "*"))
             + glob.glob(os.path.join(class_dir, "*", "ports", "*", "hw_counters", "*")))
    hidden = []
    for path in sorted(paths):
        try:
            if not os.stat(path).st_mode & stat.S_IROTH:
                hidden.append(path)
        except OSError:
            pass  # gone meanwhile: the read already said so
    return hidden


def check_counters(context: Context) -> Result:
    reading = context.reading()
    if not reading.devices:
        return Result(SKIP, "no devices")
    read = sum(len(d.counters) + sum(len(p.counters) for p in d.ports) for d in reading.devices)
    hidden = _not_world_readable(context.config.sysfs) if os.geteuid() == 0 else []
    if hidden and not reading.errors:
        return Result(FAIL, f"{len(hidden)} counter file(s) the efa-monitor user cannot read, e.g. {hidden[0]}",
                      f"sudo chmod a+r {hidden[0]}  (the service reads as an unprivileged user)")
    # Permission denied since discovery is "not available" to the agent (it skips the file quietly, as
    # awsefareceiver does), but on a node it means the service's user was shut out: that is the doctor's.
    denied = [e for e in reading.unavailable if os.path.isfile(e.path) and not os.access(e.path, os.R_OK)]
    if not reading.errors and not denied:
        return Result(PASS, f"{read} counters read")
    first = (list(reading.errors) + denied)[0]
    count = len(reading.errors) + len(denied)
    reason = "permission" if first in denied else first.reason
    fix = (f"sudo chmod a+r {first.path}  (the service reads as an unprivileged user)"
           if reason == "permission" else
           "reload the EFA driver: sudo modprobe -r efa && sudo modprobe efa; "
           "if that does not help, update it with the EFA installer")
    return Result(FAIL, f"{count} counter file(s) unreadable, e.g. {first.path}: {reason} ({first.detail})", fix)


def check_service(context: Context) -> Result:
    if not context.service:  # --service '': an agent run by hand, or a simulated node
        return Result(SKIP, "no service to check (--service '')")
    done = context.systemctl("is-active", context.service)
    if done is None:
        return Result(SKIP, "systemctl not installed (not a systemd host)")
    state = done.stdout.strip()
    if done.returncode == 0 and state == "active":
        return Result(PASS, f"{context.service} is active")
    state = state or (done.stderr.strip().splitlines() or ["not active"])[-1]
    loaded = context.systemctl("show", "-p", "LoadState", "--value", context.service)
    if loaded is not None and loaded.stdout.strip() == "not-found":
        return Result(FAIL, f"{context.service}.service is not installed",
                      "run parallelcluster/compute-node-efa-monitor.sh CLUSTER REGION BUCKET (docs/operations.md)")
    return Result(FAIL, f"{context.service} is {state}",
                  f"sudo journalctl -u {context.service} -n 50; sudo systemctl restart {context.service}")


def check_log(context: Context) -> Result:
    path = context.config.log_file
    if not _uses(context, "log") or not path:
        return Result(SKIP, "no log file configured (log exporter writes to standard output)")
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError as e:
        return Result(FAIL, f"{path}: {e.strerror}",
                      f"sudo install -m 0640 -o efa-monitor -g efa-monitor /dev/null {path} && {RESTART}")
    limit = 2 * context.config.interval + 10
    if age > limit:
        return Result(FAIL, f"{path} last written {age:.0f} s ago (expected within {limit:.0f} s)",
                      f"sudo journalctl -u {context.service} -n 50; {RESTART}")
    return Result(PASS, f"{path} written {age:.0f} s ago")


def otlp_endpoint(config: Config, environ: Mapping[str, str]) -> Tuple[str, int]:
    """Host and port the OTLP exporter sends to, from the exporter's own resolver: the doctor probes the
    address the agent uses, whatever mix of keys and OTEL_EXPORTER_OTLP_* variables set it."""
    from otel_efa.otlp_settings import receiver_endpoint, resolve_settings

    return receiver_endpoint(resolve_settings(config.otlp, environ))


def check_collector(context: Context) -> Result:
    import socket

    try:
        if not _uses(context, "otlp"):
            return Result(SKIP, "otlp exporter not configured")
        host, port = otlp_endpoint(context.config, context.environ)
    except ConfigError as e:
        return Result(FAIL, f"the agent cannot start its OTLP exporter: {e}",
                      f"correct {e.key} (in {CONFIG_FILE} or the service's environment), then {RESTART}")
    try:
        with socket.create_connection((host, port), timeout=context.timeout):
            pass
    except OSError as e:
        return Result(FAIL, f"cannot connect to the collector at {host}:{port}: {e.strerror or e}",
                      "sudo systemctl start aws-otel-collector  "
                      "(or: sudo /opt/aws/aws-otel-collector/bin/aws-otel-collector-ctl -a start)")
    return Result(PASS, f"collector listening at {host}:{port}")


def _agent_metric() -> str:
    """A series only otel-efa serves: tells our endpoint from another program on the port."""
    return catalog.COLLECTIONS.prometheus_name


def check_prometheus(context: Context) -> Result:
    if not _uses(context, "prometheus"):
        return Result(SKIP, "prometheus exporter not configured")
    import urllib.error
    import urllib.request

    host, port = parse_host_port(context.config.prometheus.address)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    url = f"http://{host}:{port}/metrics" if ":" not in host else f"http://[{host}]:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=context.timeout) as response:
            body = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        body = ""
        answered = f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Result(FAIL, f"nothing answers at {url}: {getattr(reason, 'strerror', None) or reason}",
                      f"sudo journalctl -u {context.service} -n 50; {RESTART}")
    else:
        answered = "without otel-efa metrics"
    if _agent_metric() in body:
        return Result(PASS, f"{url} serves otel-efa metrics")
    return Result(FAIL, f"port {port} answers {answered}: another program holds it",
                  f"sudo ss -ltnp 'sport = :{port}' to find it, or move the agent: set prometheus.address "
                  f"in {CONFIG_FILE}, then {RESTART}")


def _region(context: Context) -> Optional[str]:
    region = (context.config.cloudwatch.region or context.environ.get("AWS_REGION")
              or context.environ.get("AWS_DEFAULT_REGION"))
    if region:
        return region
    from otel_efa.node.imds import ImdsClient

    return ImdsClient(environ=context.environ).identity().get("region") or None


def check_cloudwatch(context: Context) -> Result:
    if not _uses(context, "cloudwatch"):
        return Result(SKIP, "cloudwatch exporter not configured")
    region = _region(context)
    if not region:
        return Result(FAIL, "no AWS region (config, AWS_REGION, AWS_DEFAULT_REGION or IMDS)",
                      f"set cloudwatch.region in {CONFIG_FILE}, then {RESTART}")
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    namespace = context.config.cloudwatch.namespace
    role_fix = ("attach CloudWatchAgentServerPolicy (cloudwatch:PutMetricData, cloudwatch:ListMetrics) "
                "to the node's instance role (ParallelCluster: Iam: AdditionalIamPolicies)")
    try:
        client = boto3.session.Session(region_name=region).client("cloudwatch", config=BotoConfig(
            connect_timeout=context.timeout, read_timeout=context.timeout, retries={"max_attempts": 1}))
        metrics = client.list_metrics(Namespace=namespace).get("Metrics", [])
    except NoCredentialsError:
        return Result(FAIL, f"no AWS credentials (region {region})", role_fix)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        return Result(FAIL, f"CloudWatch refused ListMetrics in {region}: {code}", role_fix)
    except BotoCoreError as e:
        return Result(FAIL, f"cannot reach CloudWatch in {region}: {e}",
                      f"give the node a route to monitoring.{region}.amazonaws.com "
                      "(NAT gateway or a com.amazonaws.REGION.monitoring VPC endpoint)")
    names = sorted({m["MetricName"] for m in metrics})
    return Result(PASS, f"region {region}, credentials accepted; {len(names)} metric name(s) in {namespace}")


def check_interval(context: Context) -> Result:
    interval = context.config.interval
    low = MIN_CLOUDWATCH_INTERVAL_S if _uses(context, "cloudwatch") else MIN_INTERVAL_S
    if low <= interval <= MAX_INTERVAL_S:
        return Result(PASS, f"interval {interval:g} s")
    why = "costs CPU and CloudWatch API calls" if interval < low else "makes rates and dashboards coarse"
    return Result(FAIL, f"interval {interval:g} s is outside {low:g}..{MAX_INTERVAL_S:g} s: {why}",
                  f"set 'interval: 60' in {CONFIG_FILE}, then {RESTART}")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _agent_pid(context: Context) -> Optional[int]:
    if context.pid is not None:
        return context.pid
    if not context.service:
        return None
    done = context.systemctl("show", "-p", "MainPID", "--value", context.service)
    if done is None or done.returncode != 0 or not done.stdout.strip().isdigit():
        return None
    return int(done.stdout.strip()) or None


def check_cpu(context: Context) -> Result:
    pid = _agent_pid(context)
    if pid is None:
        return Result(SKIP, "agent not running (no process to measure)")
    try:
        before, started = _cpu_seconds(pid), time.monotonic()
        time.sleep(context.cpu_sample_s)
        used = (_cpu_seconds(pid) - before) / (time.monotonic() - started)
    except (OSError, IndexError, ValueError):
        return Result(SKIP, f"process {pid} is gone")
    if used <= CPU_LIMIT:
        return Result(PASS, f"agent (pid {pid}) uses {used:.1%} CPU")
    return Result(FAIL, f"agent (pid {pid}) uses {used:.1%} CPU, above {CPU_LIMIT:.0%}",
                  f"raise 'interval' in {CONFIG_FILE} (60 s is the default), then {RESTART}")

def check_adot_version(context: Context) -> Result:
    """ADOT below the minimum forms no node totals (otel_efa/tools/adot_version.py says why)."""
    if not _uses(context, "otlp"):
        return Result(SKIP, "otlp exporter not configured")
    from otel_efa.tools import adot_version

    return Result(*adot_version.check(context.root))


Check = Tuple[str, Callable[[Context], Result]]
CHECKS: Tuple[Check, ...] = (
    ("EFA devices", check_devices),
    ("counters readable", check_counters),
    ("service", check_service),
    ("log file", check_log),
    ("OTLP collector", check_collector),
    ("ADOT version", check_adot_version),
    ("Prometheus endpoint", check_prometheus),
    ("CloudWatch", check_cloudwatch),
    ("interval", check_interval),
    ("CPU", check_cpu),
)


def run_checks(context: Context, checks: Tuple[Check, ...] = CHECKS) -> List[Tuple[str, Result]]:
    results = []
    for name, check in checks:
        try:
            result = check(context)
        except ConfigError as e:  # a setting the agent would refuse at start-up (OTEL_METRICS_EXPORTER, say)
            result = Result(FAIL, f"the agent would refuse its settings: {e}",
                            f"correct {e.key} (in {CONFIG_FILE} or the service's environment), then {RESTART}")
        except Exception as e:  # a broken check is a finding, not a crash of the doctor
            result = Result(FAIL, f"check crashed: {type(e).__name__}: {e}",
                            "report it with the output of: otel-efa doctor")
        results.append((name, result))
    return results


def format_result(name: str, result: Result) -> str:
    line = f"{result.status}  {name}: {result.detail}"
    return f"{line}  -> fix: {result.fix}" if result.status == FAIL and result.fix else line


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check this node's EFA monitoring and say how to fix what fails")
    p.add_argument("--config", help=f"the agent's YAML file (default {CONFIG_FILE} if present)")
    p.add_argument("--sysfs", help="sysfs root (default /sys)")
    p.add_argument("--service", default="efa-monitor", help="systemd service name (default efa-monitor; '' for none)")
    p.add_argument("--pid", type=at_least_one, help="the agent's process id (default: the service's main PID)")
    p.add_argument("--timeout", type=seconds, default=3.0, metavar="SECONDS",
                   help="seconds per network check (default %(default)g)")
    p.add_argument("--root", default="/", help="where installed software such as ADOT is looked for (default /)")
    p.set_defaults(handler=_doctor)


def _doctor(args) -> int:
    import sys

    from otel_efa import config as config_module

    config = config_module.load(args.config, flags={"sysfs": args.sysfs})
    context = Context(config=config, service=args.service, pid=args.pid, timeout=args.timeout, root=args.root)
    failed = False
    for name, result in run_checks(context):
        sys.stdout.write(format_result(name, result) + "\n")
        sys.stdout.flush()
        failed = failed or result.status == FAIL
    return 1 if failed else 0
