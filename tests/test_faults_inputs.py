"""The fault matrix, input side: what the node's sysfs can do to the agent, end to end.

Each test runs the real agent with its real exporters (OTLP over gRPC to tests/otlp_receiver.py and the
Prometheus endpoint scraped over HTTP) on a simulated node, injects one fault, and shows

* what the agent did: one log line when the fault starts and one when it ends, and
  ``otel_efa_read_errors{reason}`` counting every failed read;
* that nothing measured was lost: once the fault clears, both exporters give the simulator's ground
  truth exactly, every other counter and device was exported exactly throughout, and no rate gauge ever
  went negative or above what the link can carry.

tests/test_bad_input.py proves the same faults at the pipeline level (every content and reason,
counter files vanishing); this file proves them through the agent's loop and exporters.
"""
import logging
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

import pytest
from conftest import free_port
from opentelemetry.sdk.resources import Resource
from otlp_receiver import GrpcReceiver, points
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import PrometheusServer
from waiting import wait_until

from otel_efa import catalog
from otel_efa.config import Config, OtlpConfig, PrometheusConfig
from otel_efa.node.instance_types import INSTANCE_TYPES
from otel_efa.tools.simulator import Simulator

PROFILE = "p4d.24xlarge"  # 4 devices at 100 Gb/s
INTERVAL = 0.3
U64 = 1 << 64
INT64_MAX = (1 << 63) - 1
LINE_RATE = INSTANCE_TYPES[PROFILE].device_bytes_per_second
RATE_GAUGES = tuple(catalog.RATE_SOURCES)

# A point: (OTel metric name, attributes with OTel's dots as Prometheus's underscores), so both match.
Key = Tuple[str, FrozenSet[Tuple[str, str]]]


def key(name: str, **attributes: str) -> Key:
    return name, frozenset(attributes.items())


def counter_key(device: str, counter: str, level: str = "port") -> Key:
    if level == "port":
        return key(catalog.port_counter_spec(counter).name, aws_efa_device=device, aws_efa_port="1")
    return key(catalog.device_counter_spec(counter).name, aws_efa_device=device)


def errors_key(reason: str) -> Key:
    return key("otel_efa_read_errors", reason=reason)


COLLECTIONS = key("otel_efa_collections")


def as_otlp(truth: int):
    """What OTLP must carry for a u64: the int while it fits int64, the nearest double above."""
    return truth if truth <= INT64_MAX else float(truth)


def _otlp_points(request) -> Dict[Key, object]:
    return {(p.name, frozenset((k.replace(".", "_"), v) for k, v in p.attributes)): p.value
            for p in points(request)}


_PROMETHEUS_NAMES = {spec.prometheus_name: spec.name for spec in catalog.METRICS}


def _otel_name(sample_name: str) -> str:
    if sample_name in _PROMETHEUS_NAMES:
        return _PROMETHEUS_NAMES[sample_name]
    return sample_name


def scrape(port: int) -> Dict[Key, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope_"))
            found[(_otel_name(sample.name), labels)] = float(sample.value)  # as Prometheus stores it
    return found


class Node:
    """A simulated node, the agent on it (OTLP + Prometheus), and everything the exporters gave out."""

    def __init__(self, make_simulator, run_agent, prometheus_port: Optional[int] = None, **simulator_args):
        self.sim: Simulator = make_simulator(PROFILE, **simulator_args)
        self.receiver = GrpcReceiver()
        self.prometheus_port = prometheus_port or free_port()
        config = Config(interval=INTERVAL, sysfs=self.sim.root, instance_type=PROFILE,
                        exporters=["otlp", "prometheus"],
                        prometheus=PrometheusConfig(f"127.0.0.1:{self.prometheus_port}"),
                        otlp=OtlpConfig(endpoint=self.receiver.endpoint, timeout=5.0))
        self.running_agent = run_agent(config, resource=Resource.create({"service.name": "otel-efa",
                                                                          "host.id": "i-0faults"}))
        self.agent = self.running_agent.agent
        self._running = None

    @property
    def devices(self) -> List[str]:
        return list(self.sim.device_names)

    def run(self, seconds: float) -> None:
        """Traffic flows for ``seconds``, then the counters hold still."""
        self.sim.idle_until()  # no catch-up burst for the time the counters stood still
        self._running = self.sim.start(tick=0.02)
        try:
            time.sleep(seconds)
        finally:
            self._running.stop()
            self._running = None

    def settle(self) -> Tuple[Dict[Tuple[str, str], int], Dict[Key, object], Dict[Key, float]]:
        """(ground truth, OTLP export, Prometheus scrape), both exports of a read made after the counters
        stopped moving, so they must equal the truth."""
        assert self._running is None
        truth = self.sim.values()
        stopped = time.monotonic()
        wait_until(lambda: self.agent.collector.latest is not None and self.agent.collector.latest.monotonic > stopped,
                   what="a collection after the counters stopped")
        after = self.agent.collector.latest.collections
        otlp: Dict[Key, object] = {}

        def exported() -> bool:
            nonlocal otlp
            for _, request in reversed(self.receiver.requests):
                flat = _otlp_points(request)
                if flat.get(COLLECTIONS, 0) >= after:
                    otlp = flat
                    return True
            return False

        wait_until(exported, what=f"an OTLP export of collection {after} or later")
        prometheus = scrape(self.prometheus_port)
        assert prometheus[COLLECTIONS] >= after
        return truth, otlp, prometheus

    def stream(self) -> List[Dict[Key, object]]:
        """Every OTLP export so far, in order."""
        return [_otlp_points(request) for _, request in list(self.receiver.requests)]

    def close(self) -> None:
        self.running_agent.stop()
        self.receiver.stop()


@pytest.fixture
def node(make_simulator, run_agent, caplog):
    caplog.set_level(logging.INFO, logger="otel_efa")
    made: List[Node] = []

    def make(**args) -> Node:
        made.append(Node(make_simulator, run_agent, **args))
        return made[-1]

    yield make
    for each in made:
        each.close()


def all_counters(sim: Simulator, devices: Iterable[str]) -> List[Tuple[str, str, str]]:
    """(device, kernel counter, "port" or "device") for every counter of ``devices``."""
    by_name = {d.name: d for d in sim.devices}
    found = []
    for device in devices:
        found += [(device, c, "port") for c in by_name[device].port_counters]
        found += [(device, c, "device") for c in by_name[device].device_counters]
    return found


def assert_exact(sim: Simulator, truth, otlp: Optional[Dict[Key, object]], prometheus: Dict[Key, float],
                 devices: Iterable[str], unavailable: Set[Tuple[str, str]] = frozenset()) -> None:
    """Every counter of ``devices`` equals the ground truth in the exports (the unavailable ones are absent).

    OTLP carries the exact int (a double above int64); Prometheus the nearest float64, as it stores."""
    counters = all_counters(sim, devices)
    assert counters
    for device, counter, level in counters:
        k = counter_key(device, counter, level)
        if (device, counter) in unavailable:
            assert k not in prometheus and (otlp is None or k not in otlp), k
            continue
        value = truth[(device, counter)]
        assert prometheus[k] == float(value), (k, prometheus[k], value)
        if otlp is not None:
            exported = otlp[k]
            assert exported == as_otlp(value) and type(exported) is type(as_otlp(value)), (k, exported, value)


def assert_no_bad_rate(exports: Iterable[Dict[Key, object]]) -> int:
    """No rate gauge ever below 0 or above twice the line rate (a reset read as traffic would be ~1e19)."""
    seen = 0
    for export in exports:
        for (name, _), value in export.items():
            if name in RATE_GAUGES:
                assert 0 <= value <= 2 * LINE_RATE, (name, value)
                seen += 1
    assert seen, "no rate gauge was exported at all"
    return seen


def assert_rest_exported_throughout(exports: List[Dict[Key, object]], sim: Simulator, devices: Iterable[str],
                                    allowed_to_drop: Set[Key] = frozenset()) -> None:
    """In every export: every counter of ``devices`` present, and never going down except ``allowed_to_drop``."""
    wanted = [counter_key(d, c, level) for d, c, level in all_counters(sim, devices)]
    previous: Dict[Key, object] = {}
    for export in exports:
        for k in wanted:
            assert k in export, f"{k} missing from an export"
            if k not in allowed_to_drop and k in previous:
                assert export[k] >= previous[k], (k, previous[k], export[k])
            previous[k] = export[k]


def messages(caplog, level: int, *needles: str) -> List[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and all(n in r.getMessage() for n in needles)]


def around_drop(exports: List[Dict[Key, object]], k: Key) -> Tuple[Dict[Key, object], Dict[Key, object]]:
    """The two exports of consecutive collections between which ``k`` went down."""
    for before, after in zip(exports, exports[1:]):
        if k in before and k in after and after[k] < before[k]:
            assert after[COLLECTIONS] == before[COLLECTIONS] + 1, \
                "the collection that saw the counter go down was not exported on its own"
            return before, after
    raise AssertionError(f"{k} never went down in the exports")


# --- the faults ------------------------------------------------------------------------------------------

def test_fault_device_removed_and_returned(node, caplog):
    """A device unbinds for a while and is probed again (counters back from 0): it leaves the exports and
    comes back exact, with no rate spanning the gap; the other devices never miss a collection."""
    n = node()
    gone = n.devices[2]
    others = [d for d in n.devices if d != gone]
    n.run(1.0)
    n.sim.remove_device(gone)
    n.run(1.5)
    truth, otlp, prometheus = n.settle()
    assert not any(dict(attrs).get("aws_efa_device") == gone for _, attrs in list(otlp) + list(prometheus))
    assert_exact(n.sim, truth, otlp, prometheus, others)

    n.sim.restore_device(gone)
    n.run(1.5)
    truth, otlp, prometheus = n.settle()
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)
    exports = n.stream()
    assert_rest_exported_throughout(exports, n.sim, others)
    assert_no_bad_rate(exports)
    of_gone = [e for e in exports if any(dict(attrs).get("aws_efa_device") == gone for _, attrs in e)]
    absent_from = [e for e in exports if e not in of_gone]
    assert absent_from, "no export was made while the device was away"
    back = next(e for e in of_gone if e[COLLECTIONS] > absent_from[-1][COLLECTIONS])
    rate_key = key("efa_rx_throughput", aws_efa_device=gone, aws_efa_port="1")
    assert back[COLLECTIONS] == absent_from[-1][COLLECTIONS] + 1, "its first collection was not exported alone"
    assert rate_key not in back  # its first sample: no rate across the gap
    assert rate_key in otlp and rate_key in prometheus  # rates again once it has two samples
    assert messages(caplog, logging.WARNING, "EFA devices gone", gone) == [f"EFA devices gone: {gone}"]
    assert messages(caplog, logging.INFO, "EFA devices found", gone)[1:] == [f"EFA devices found: {gone}"]
    assert not messages(caplog, logging.WARNING, "were reset")  # a new device generation, not a reset
    assert all(otlp[errors_key(reason)] == 0 for reason in ("missing", "parse", "permission", "io"))


def test_fault_counter_reset(node, caplog):
    """One device resets its counters mid-traffic (a device reset): no rate for that interval on that device
    (never a negative one), one warning, totals follow the device from its new start, the rest untouched."""
    n = node()
    reset, others = n.devices[0], n.devices[1:]
    n.run(1.0)
    n.sim.reset([reset])
    n.run(1.0)
    truth, otlp, prometheus = n.settle()
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)
    exports = n.stream()
    assert_rest_exported_throughout(exports, n.sim, others)
    assert_no_bad_rate(exports)
    rx_bytes = counter_key(reset, "rx_bytes")
    before, after = around_drop(exports, rx_bytes)
    rate_of = lambda device: key("efa_rx_throughput", aws_efa_device=device, aws_efa_port="1")  # noqa: E731
    assert rate_of(reset) not in after, "a reset gave a rate"
    assert all(rate_of(device) in after for device in others)
    later = exports[exports.index(after) + 1]
    assert 0 < later[rate_of(reset)] <= 2 * LINE_RATE  # the rate is back from the next interval
    warnings = messages(caplog, logging.WARNING, "were reset")
    assert len(warnings) == 1 and reset in warnings[0] and "rx_bytes" in warnings[0], warnings


def test_fault_counter_above_int64(node, caplog):
    """Counters at 2**63 and above (u64 values OTLP's int64 cannot hold): they go out as doubles, equal to
    what Prometheus shows, every other metric of the node is still exported exactly, and a real
    Prometheus's rate() over such a counter gives the same rate as over a small one.

    Before the fix one such value made the OTLP encoder raise and every export of the node was lost."""
    agent_port = free_port()
    # Started before any gRPC traffic: forking while gRPC threads are in a call can kill the child
    # (grpcio's fork handlers, seen with the Python 3.9 build).
    server = PrometheusServer([{"job_name": "agent", "scrape_interval": "250ms",
                                "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]}], free_port())
    try:
        _counter_above_int64(node(prometheus_port=agent_port), server, caplog)
    finally:
        server.stop()


def _counter_above_int64(n: Node, server: PrometheusServer, caplog) -> None:
    big = {(n.devices[0], "rx_bytes"): U64 - (1 << 40), (n.devices[1], "tx_pkts"): 1 << 63,
           (n.devices[2], "keep_alive_rcvd"): U64 - 1_000_000}
    n.sim.set_value(n.devices[3], "rx_pkts", INT64_MAX)  # the largest value that stays an int
    for (device, counter), value in big.items():
        n.sim.set_value(device, counter, value)
    truth, otlp, prometheus = n.settle()
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)
    assert type(otlp[counter_key(n.devices[3], "rx_pkts")]) is int
    for device, counter in big:
        level = "device" if catalog.is_device_counter(counter) else "port"
        assert isinstance(otlp[counter_key(device, counter, level)], float)
    rx_bytes = catalog.BY_NAME["efa_rx_bytes"].prometheus_name
    # They keep growing: still exported, still monotonic, and a real Prometheus's rate() still works.
    server.wait_for(rx_bytes, count=4)
    n.sim.idle_until()
    with n.sim.start(tick=0.02):
        time.sleep(2.5)
        rates = server.values(f"rate({rx_bytes}[2s])", "aws_efa_device")
    normal = n.devices[3]
    assert rates[n.devices[0]] == pytest.approx(rates[normal], rel=0.1)  # 1.8e19 B still counts bytes
    assert rates[n.devices[0]] == pytest.approx(n.sim.expected_rate(n.devices[0], "rx_bytes"), rel=0.5)
    truth, otlp, prometheus = n.settle()
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)
    exports = n.stream()
    assert_rest_exported_throughout(exports, n.sim, n.devices)
    assert_no_bad_rate(exports)
    assert not messages(caplog, logging.WARNING, "OTLP export")
    assert n.agent.exporters[0].reporter.failed_exports == 0


def test_fault_counter_wraps_past_u64_max(node, caplog):
    """Counters at 2**64-1 and just below it wrap to small values: the interval across the wrap gets the
    true rate (not a reset's gap, not a 1e19 spike), one log line per wrap, totals exact on both sides."""
    n = node()
    at_max, near_max = n.devices[0], n.devices[1]
    per_second = n.sim.expected_rate(near_max, "rx_bytes")
    n.sim.set_value(at_max, "rx_bytes", U64 - 1)
    n.sim.set_value(near_max, "rx_bytes", U64 - 1 - int(per_second * 0.8))  # wraps 0.8 s into the traffic
    truth, otlp, prometheus = n.settle()
    assert otlp[counter_key(at_max, "rx_bytes")] == float(U64 - 1) == prometheus[counter_key(at_max, "rx_bytes")]
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)
    n.run(2.0)
    truth, otlp, prometheus = n.settle()
    assert truth[(near_max, "rx_bytes")] < per_second * 2 and truth[(at_max, "rx_bytes")] < per_second * 3
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)  # small ints again
    exports = n.stream()
    wrapped = {counter_key(at_max, "rx_bytes"), counter_key(near_max, "rx_bytes")}
    assert_rest_exported_throughout(exports, n.sim, n.devices, allowed_to_drop=wrapped)
    assert_no_bad_rate(exports)
    _, after = around_drop(exports, counter_key(near_max, "rx_bytes"))
    across = after[key("efa_rx_throughput", aws_efa_device=near_max, aws_efa_port="1")]
    assert across == pytest.approx(per_second, rel=0.5), "the interval across the wrap lost its rate"
    _, after = around_drop(exports, counter_key(at_max, "rx_bytes"))
    assert key("efa_rx_throughput", aws_efa_device=at_max, aws_efa_port="1") in after
    for device in (at_max, near_max):
        lines = messages(caplog, logging.INFO, "wrapped past", device)
        assert len(lines) == 1 and "rx_bytes" in lines[0], lines
    assert not messages(caplog, logging.WARNING, "were reset")


def test_fault_garbage_contents(node, caplog):
    """A counter file shows garbage for a while: absent from both exports (never a made-up value), one
    warning and one recovery line, one read error per collection; afterwards the exact true total."""
    n = node()
    device = n.devices[1]
    path = n.sim.path_of(device, "rx_bytes")
    n.run(0.6)
    n.sim.corrupt(device, "rx_bytes", b"\x00garbage\xff\n")
    n.run(1.5)  # the hardware keeps counting behind the garbage
    truth, otlp, prometheus = n.settle()
    assert_exact(n.sim, truth, otlp, prometheus, n.devices, unavailable={(device, "rx_bytes")})
    assert key("efa_rx_throughput", aws_efa_device=device, aws_efa_port="1") not in otlp
    assert otlp[errors_key("parse")] == prometheus[errors_key("parse")] > 0

    n.sim.heal(device, "rx_bytes")
    n.run(0.6)
    truth, otlp, prometheus = n.settle()
    assert_exact(n.sim, truth, otlp, prometheus, n.devices)
    exports = n.stream()
    assert_rest_exported_throughout(exports, n.sim, [d for d in n.devices if d != device])
    assert_no_bad_rate(exports)
    failing = [e for e in exports if counter_key(device, "rx_bytes") not in e]
    assert failing and len({e[COLLECTIONS] - e[errors_key("parse")] for e in failing}) == 1, \
        "not one parse error per collection while the file showed garbage"
    healed = [e for e in exports if counter_key(device, "rx_bytes") in e and e[errors_key("parse")] > 0]
    assert healed and len({e[errors_key("parse")] for e in healed}) == 1, "errors still counted after it healed"
    assert len(messages(caplog, logging.WARNING, "cannot read", path, "parse")) == 1
    assert len(messages(caplog, logging.INFO, path, "no longer failing")) == 1
    assert len(messages(caplog, logging.WARNING, "cannot read")) == 1  # nothing else complained


# --- permission denied: the agent must not be root, so it runs in a child that dropped to nobody ----------

NOBODY = 65534


def _agent_as_nobody(root: str, prometheus_port: int, log_fd: int) -> int:
    """Fork: the child drops to uid/gid 65534 (root reads through file modes) and runs the real agent with
    its Prometheus exporter until SIGTERM. No exec: the test's interpreter lives under /root, closed to
    nobody. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        handler = logging.StreamHandler(os.fdopen(log_fd, "w", buffering=1))
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        logging.getLogger().handlers = [handler]
        logging.getLogger().setLevel(logging.INFO)
        from otel_efa.pipeline.agent import Agent

        config = Config(interval=INTERVAL, sysfs=root, instance_type=PROFILE, exporters=["prometheus"],
                        prometheus=PrometheusConfig(f"127.0.0.1:{prometheus_port}"))
        agent = Agent(config, resource=Resource.create({"service.name": "otel-efa"}))
        signal.signal(signal.SIGTERM, lambda *_: agent.stop())
        status = agent.run()
    except BaseException:
        logging.getLogger("test").exception("the agent as nobody failed")
    finally:
        os._exit(status)


def _stop_child(pid: int, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``; its exit code."""
    os.kill(pid, signal.SIGTERM)

    def reaped() -> Tuple[int, ...]:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done else ()  # a tuple: exit status 0 is an answer too

    try:
        status = wait_until(reaped, timeout, "the agent's exit after SIGTERM")[0]
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
    return os.waitstatus_to_exitcode(status)


def test_fault_permission_denied(tmp_path):
    """A counter file the agent's user may not read (agent running as nobody), fixed later by an admin: the
    rest is exported exactly; EACCES at discovery is "not available" (as awsefareceiver has it), counted once
    under ``not_available`` with one info line, retried quietly; one recovery line, and once readable its
    exact true total."""
    root = tempfile.mkdtemp(prefix="otel-efa-perm-")  # pytest's tmp_path is closed to nobody
    os.chmod(root, 0o755)
    log_path = tmp_path / "agent.log"
    port = free_port()
    pid = None
    try:
        with Simulator(PROFILE, root) as sim:
            device = sim.devices[3].name
            path = sim.path_of(device, "rx_pkts")
            sim.deny(device, "rx_pkts")
            with open(log_path, "w") as log_file:
                child_log = os.dup(log_file.fileno())
                pid = _agent_as_nobody(root, port, child_log)
                os.close(child_log)

            def scrape_after(collections: int) -> Dict[Key, float]:
                found: Dict[Key, float] = {}

                def ready() -> bool:
                    nonlocal found
                    try:
                        found = scrape(port)
                    except OSError:
                        return False
                    return found.get(COLLECTIONS, 0) >= collections

                wait_until(ready, what=f"collection {collections} on the agent's Prometheus endpoint")
                return found

            scrape_after(1)  # the agent is up
            sim.idle_until()
            with sim.start(tick=0.02):
                time.sleep(1.0)
            truth = sim.values()
            during = scrape_after(scrape_after(0)[COLLECTIONS] + 2)  # read after the counters stopped
            assert_exact(sim, truth, None, during, sim.device_names, unavailable={(device, "rx_pkts")})
            assert during[errors_key("not_available")] == 1  # once, not every collection
            assert during[errors_key("permission")] == 0

            sim.heal(device, "rx_pkts")  # the admin fixes the mode
            sim.idle_until()
            with sim.start(tick=0.02):
                time.sleep(0.6)
            truth = sim.values()
            after = scrape_after(scrape_after(0)[COLLECTIONS] + 2)
            assert_exact(sim, truth, None, after, sim.device_names)
            settled = scrape_after(after[COLLECTIONS] + 1)
            assert settled[errors_key("not_available")] == after[errors_key("not_available")] == 1, \
                "still counting after the file became readable"
            assert all(after[errors_key(r)] == 0 for r in ("missing", "parse", "io"))
    finally:
        if pid is not None:
            status = _stop_child(pid)
        shutil.rmtree(root, ignore_errors=True)
    assert status == 0, f"the agent exited with {status}"
    log = log_path.read_text()
    assert not [line for line in log.splitlines() if line.startswith("WARNING") and path in line], log
    noted = [line for line in log.splitlines() if line.startswith("INFO") and path in line and "not available" in line]
    assert len(noted) == 1 and "Permission denied" in noted[0], log
    assert len([line for line in log.splitlines() if path in line and "no longer failing" in line]) == 1, log
    assert "Traceback" not in log, log
