"""Property-based fuzzing (hypothesis) of what reads the outside world: sysfs values and names, rates, configuration.

Settings, and why: ``derandomize=True`` so every CI run, on 3.9 and 3.11, tries the same examples and a
red build is reproducible from its log alone. Random examples with an example database are the better
search but the wrong gate: CI starts from a clean checkout, so the database would never carry a failure
from one run to the next, and a failure found by chance would turn a build red for a change that did
not cause it. ``database=None`` so nothing is written into the checkout. Every bug the fuzzer found is
kept as an ``@example``, which runs first, always, whatever the settings. ``max_examples``: 300 for the
pure parsers and rate functions (microseconds each), 100-250 where an example loads YAML or builds a
parser, 40-150 where it writes and reads real files; the file then takes about 20 s on Python 3.11 and
45 s on 3.9 on a loaded 2-core machine. To search wider than CI does, run
``FUZZ_EXPLORE=1 pytest tests/test_fuzz.py`` (random examples, 20x as many, failures kept in the local
``.hypothesis`` database); a failure found that way becomes a new ``@example``.
"""
import contextlib
import io
import math
import os
import re
import string
import typing
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from odd_files import ODD_KINDS, replace_with_odd_file

from otel_efa import cli
from otel_efa import config as config_module
from otel_efa.catalog import NOT_COUNTERS, is_device_counter
from otel_efa.config import ConfigError
from otel_efa.node.sysfs import (
    NOT_AVAILABLE,
    PARSE,
    READ_SIZE,
    U64_MAX,
    CounterValueError,
    SysfsReader,
    parse_counter,
    parse_numa_node,
    parse_rate_gbps,
    parse_state,
    read_u64s,
)
from otel_efa.pipeline.rates import RateTracker, rate
from otel_efa.tools.simulator import Simulator

EXPLORE = bool(os.environ.get("FUZZ_EXPLORE"))


def fuzz_settings(max_examples: int):
    return settings(
        max_examples=max_examples * (20 if EXPLORE else 1),
        deadline=None,  # the machine is shared and loaded: a slow example is not a bug
        derandomize=not EXPLORE,
        database=settings.default.database if EXPLORE else None,
        # Drawing nested YAML documents on a machine shared with other jobs can be slow; that is the
        # machine, not the strategy.
        suppress_health_check=[HealthCheck.too_slow],
    )


# --- sysfs values ---------------------------------------------------------------------------------

_U64_TEXT = re.compile(rb"\A[ \t\n\r\x0b\x0c]*([0-9]+)[ \t\n\r\x0b\x0c]*\Z")


def expected_counter(content: bytes):
    """The contract, written independently of the parser: (value, None) or (None, reason).

    A counter file holds a u64 in ASCII decimal (``%llu\\n``), optionally padded with whitespace, and
    fits the reader's buffer; ``N/A...`` means the counter is not available; anything else is a parse
    error.
    """
    seen = content[:READ_SIZE]
    match = _U64_TEXT.match(seen)
    if match and len(content) < READ_SIZE and int(match.group(1)) <= U64_MAX:
        return int(match.group(1)), None
    return None, NOT_AVAILABLE if seen.strip().startswith(b"N/A") else PARSE


counter_contents = st.one_of(
    st.integers(0, U64_MAX).map(lambda v: b"%d\n" % v),  # what the kernel writes
    st.sampled_from([0, 1, U64_MAX - 1, U64_MAX, U64_MAX + 1, 2 ** 70, -1]).map(lambda v: b"%d\n" % v),
    st.integers(-2 ** 80, 2 ** 80).map(lambda v: b"%d" % v),
    st.tuples(st.sampled_from([b"", b" ", b"\n", b"+", b"-", b"0", b"\t"]), st.integers(0, 2 ** 66),
              st.sampled_from([b"", b"\n", b" \n", b"_1", b"\x00", b".0", b"e3"]))
    .map(lambda t: t[0] + b"%d" % t[1] + t[2]),
    st.integers(0, U64_MAX).map(lambda v: b"%d" % v + b" " * 60 + b"\n"),  # padded past the buffer
    st.from_regex(rb"\A[0-9 _+\-\n]{0,70}\Z"),
    st.sampled_from([b"", b"\n", b"N/A (no PMA)\n", b"N/A", b" N/A\n", b"1 2\n", b"0x10\n", b"1e3\n",
                     b"\xef\xbc\x91\n", "\u0661\u0662\n".encode(), b"nan\n", b"inf\n"]),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=100),
)


@fuzz_settings(300)
@given(counter_contents)
@example(b"+5\n")  # int() took a sign: "+5" was read as 5
@example(b"-0\n")  # ...and "-0" as 0
@example(b"1_000\n")  # int() took digit separators: "1_000" was read as 1000
@example(b"7" + b" " * 63 + b"junk")  # only the first 64 bytes were looked at: this was read as 7
@example(b"N/A (no PMA)\n")
def test_parse_counter_contract(content):
    value, reason = expected_counter(content)
    data = content[:READ_SIZE]  # what one pread gives the reader
    if reason is None:
        assert parse_counter(data) == value
        assert parse_counter(b"%d\n" % value) == value  # valid text round-trips exactly
    else:
        with pytest.raises(CounterValueError) as error:
            parse_counter(data)
        assert error.value.reason == reason
        assert str(error.value)  # says why


def _open_files(directory, contents):
    fds = []
    for i, content in enumerate(contents):
        path = os.path.join(directory, f"c{i}")
        with open(path, "wb") as f:
            f.write(content)
        fds.append(os.open(path, os.O_RDONLY))
    return fds


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


@fuzz_settings(150)
@given(st.lists(counter_contents, max_size=8))
@example([b"5\n", b"+5\n"])
@example([b"1_0\n"])
@example([b"3" + b" " * 70])
def test_fast_path_agrees_with_the_file_by_file_path(scratch, contents):
    """read_u64s() (every file in one C-level pass) gives exactly what parse_counter() gives file by
    file, or None, and None only when some file is not a plain u64."""
    fds = _open_files(scratch, contents)
    try:
        fast = read_u64s(fds)
        careful = [expected_counter(c) for c in contents]
        for fd, (value, reason) in zip(fds, careful):  # and the careful path meets the contract
            if reason is None:
                assert parse_counter(os.pread(fd, READ_SIZE, 0)) == value
            else:
                with pytest.raises(CounterValueError):
                    parse_counter(os.pread(fd, READ_SIZE, 0))
        if all(reason is None for _, reason in careful):
            assert fast == [value for value, _ in careful]
        else:
            assert fast is None
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture(scope="module")
def corruptible(tmp_path_factory):
    """One simulated node and one reader kept across examples, as the agent keeps its descriptors."""
    simulator = Simulator("p4d.24xlarge", str(tmp_path_factory.mktemp("sys")))
    reader = SysfsReader(simulator.root)
    try:
        yield simulator, reader
    finally:
        reader.close()
        simulator.close()


@fuzz_settings(60)
@given(st.data())
@example(None)
def test_corrupt_counter_files_through_the_reader(corruptible, data):
    """Garbage in some counter files, written in place like sysfs content changes: each bad file is
    reported once with its reason, every other counter still reads its true value, and healing
    brings the value back."""
    simulator, reader = corruptible
    device = simulator.devices[0]
    counters = sorted(device.port_counters + device.device_counters)
    if data is None:  # regression: a sign in one file; the fast path used to read it as a number
        corrupted = {"rx_bytes": b"+12\n"}
    else:
        corrupted = data.draw(st.dictionaries(st.sampled_from(counters), counter_contents, min_size=1,
                                              max_size=3))
    try:
        simulator.advance_by(1.0)  # every counter moves between examples
        for name, content in corrupted.items():
            simulator.corrupt(device.name, name, content)
        reading = reader.read()
        bad = set()
        for got in reading.devices:
            values = dict(got.counters)
            values.update(got.ports[0].counters)
            for name in counters:
                if got.name == device.name and name in corrupted:
                    value, reason = expected_counter(corrupted[name])
                else:
                    value, reason = simulator.value(got.name, name), None
                if reason is None:
                    assert values[name] == value, (got.name, name)
                else:
                    assert name not in values
                    bad.add((simulator.path_of(got.name, name), reason))
        assert {(e.path, e.reason) for e in reading.errors} == bad  # each bad file, once, with its reason
        assert len(reading.errors) == len(bad) and all(e.detail for e in reading.errors)
    finally:
        for name in corrupted:
            simulator.heal(device.name, name)
    healed = {d.name: d for d in reader.read().devices}[device.name]
    assert {**healed.counters, **healed.ports[0].counters} == {n: simulator.value(device.name, n) for n in counters}


@pytest.fixture(scope="module")
def attribute_tree(tmp_path_factory):
    simulator = Simulator("p4d.24xlarge", str(tmp_path_factory.mktemp("attrs")))
    try:
        yield simulator
    finally:
        simulator.close()


ATTRIBUTE_FILES = ("ports/1/state", "ports/1/phys_state", "ports/1/rate", "ports/1/link_layer", "ports/1/gids/0",
                   "node_guid", "fw_ver", "device/numa_node", "device/vendor", "device/local_cpulist")
attribute_contents = st.one_of(st.binary(max_size=80), st.text(max_size=30).map(lambda s: s.encode("utf-8")),
                               st.sampled_from([b"4: ACTIVE\n", b"1: DOWN\n", b"100 Gb/sec (4X EDR)\n",
                                                b"nan Gb/sec\n", b"-1\n", b"\xff" * 300, b""]))


@fuzz_settings(40)
@given(st.dictionaries(st.sampled_from(ATTRIBUTE_FILES), attribute_contents, min_size=1))
@example({"device/numa_node": b"-1\n", "ports/1/rate": b"nan Gb/sec (4X EDR)\n"})
def test_attribute_files_with_any_content(attribute_tree, contents):
    """Any content in a device's attribute files (port state and rate, GUID, firmware, the PCI
    function's NUMA node...): discovery and collection do not fail, every counter still reads its
    true value, and what reaches the metrics is sane (link speed positive and finite or absent,
    the port up only when its state says ACTIVE, a NUMA node that is a small number or None)."""
    from otel_efa.pipeline.collector import Collector

    simulator = attribute_tree
    device = simulator.devices[0].name
    base = os.path.join(simulator.root, "class", "infiniband", device)
    for name, content in contents.items():
        path = os.path.join(base, name)
        os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(content)
    simulator.advance_by(1.0)
    with SysfsReader(simulator.root) as reader:
        snapshot = Collector(reader).collect()
        reading = reader.read()
    assert not reading.errors
    got = {d.name: d for d in snapshot.devices}[device]
    port = got.ports[0]
    names = simulator.devices[0].port_counters + simulator.devices[0].device_counters
    assert {**got.counters, **port.counters} == {n: simulator.value(device, n) for n in names}
    speed = port.link_bytes_per_second
    assert speed is None or (math.isfinite(speed) and speed > 0)
    with open(os.path.join(base, "ports/1/state"), "rb") as f:
        state = f.read(256)
    assert port.up in (None, True, False) and (not port.up or b"ACTIVE" in state)
    assert got.info.numa_node is None or 0 <= got.info.numa_node <= 9999


# --- counter and device names ------------------------------------------------------------------

def _valid_file_name(name: bytes) -> bool:
    return b"/" not in name and b"\x00" not in name and name not in (b".", b"..")


# What a kernel (or a broken driver) could name a file: any bytes but "/" and NUL, up to 255 of them.
file_names = st.one_of(
    st.binary(min_size=1, max_size=255),
    st.text(min_size=1, max_size=60).map(lambda s: s.encode("utf-8")[:255]),
    st.from_regex(rb"\A[a-z_.\-]{1,20}\Z"),  # near-valid: collide once sanitized
    st.sampled_from([b"foo{bar}", b"sp ace", b'qu"ote', b"new-counter.x", "ünï".encode(), b"bad\xffbyte",
                     b"rx-dropped", b"port_up", b"RX_bytes", b"rx_bytes", b"new\nline", b"back\\slash", b"x" * 255,
                     b"info", b"device_info", b"9", b"_total", b"a.b", b"a_b", b"a__b"]),
).filter(_valid_file_name)

# The Prometheus text format 0.0.4, strictly: a sample line's name, its labels (each once) and value.
_SAMPLE_LINE = re.compile(r'\A([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\} '
                          r"(\S+)\Z")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\\n]|\\[\\"n])*"')
_COMMENT_LINE = re.compile(r"\A# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)\Z")


def assert_valid_page(page: bytes) -> None:
    """What Prometheus needs to keep the target up: UTF-8, every line well formed, each label once per
    sample, one HELP and TYPE per family, no name shared by two families, samples of a family together.
    Then prometheus_client's parser must read it too."""
    from prometheus_client.parser import text_string_to_metric_families

    text = page.decode("utf-8")
    assert text.endswith("\n")
    typed, helped, finished, current = {}, set(), set(), None
    for line in text[:-1].split("\n"):
        comment = _COMMENT_LINE.match(line)
        if comment:
            kind, name, rest = comment.groups()
            if kind == "HELP":
                assert name not in helped, line
                helped.add(name)
            else:
                assert name not in typed and rest in ("counter", "gauge"), line
                typed[name] = rest
            continue
        match = _SAMPLE_LINE.match(line)
        assert match, repr(line)
        name, labels, value = match.groups()
        label_names = _LABEL.findall(labels)
        assert len(label_names) == len(set(label_names)), line
        assert "__name__" not in label_names, line
        float(value)
        assert name in typed, line  # our pages type every family, by the sample name itself
        if name != current:
            assert name not in finished, f"{name}: samples not together"
            if current is not None:
                finished.add(current)
            current = name
    families = [name[:-len("_total")] if kind == "counter" else name for name, kind in typed.items()]
    assert len(families) == len(set(families)), sorted(families)
    parsed = list(text_string_to_metric_families(text))
    assert len(parsed) == len(typed)


@pytest.fixture(scope="module")
def names_scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("names")


@fuzz_settings(40)
@given(st.lists(file_names, min_size=1, max_size=6, unique=True),
       st.lists(file_names, max_size=3, unique=True),
       st.lists(file_names, min_size=1, max_size=2, unique=True))
@example([b"rx-dropped", b"rx_drops", b"port_up"], [b"info"], [b"rdmap\xff0s6"])
@example([b"\xff", b"\xfe"], [], [b"\n"])
@example([b"lifespan", b"a.b", b"a_b", b"a__b"], [b"x" * 255], [b"ok", "ünï".encode()])
@example([b"no_completion_cmds"], [], [b"\x01"])  # found by FUZZ_EXPLORE: the test expected it under the port
@example(["¹".encode()], [], ["rdmap²0".encode()])  # found by FUZZ_EXPLORE: sorting names raised ValueError in the reader
def test_any_counter_and_device_name_through_instruments_and_both_encoders(names_scratch, port_names,
                                                                            device_names, devices):
    """Counter files and device directories of any name: instrument creation never raises, every
    counter reaches both encoders under a valid, unique instrument name, the OTLP request serializes
    (protobuf needs UTF-8), and the Prometheus page is valid (assert_valid_page)."""
    import tempfile

    from opentelemetry.metrics._internal.instrument import _name_regex
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from otel_efa.exporters.otlp_encoder import OtlpEncoder
    from otel_efa.exporters.prometheus_text import PrometheusRenderer
    from otel_efa.names import escape
    from otel_efa.pipeline.collector import Collector
    from otel_efa.pipeline.instruments import EfaInstrumentor

    root = tempfile.mkdtemp(dir=names_scratch)
    simulator = Simulator("p4d.24xlarge", root, devices=len(devices))
    values = {}
    for index, (device, new_name) in enumerate(zip(simulator.devices, devices)):
        for offset, name in enumerate(port_names):
            _write_counter(device.port_dir, name, 7_000 + offset)
        for offset, name in enumerate(device_names):
            _write_counter(device.device_counter_dir, name, 8_000 + offset)
        old = os.fsencode(device.path)
        os.rename(old, os.path.join(os.path.dirname(old), new_name))
        values[escape(os.fsdecode(new_name))] = index
    reader = SysfsReader(root)
    provider = MeterProvider()
    try:
        collector = Collector(reader, "p4d.24xlarge")
        instrumentor = EfaInstrumentor()
        instrumentor.instrument(provider)
        frame = instrumentor.interval(collector.collect())
        names = [spec.name for spec, _ in instrumentor.series]
        assert all(_name_regex.fullmatch(n) for n in names)
        assert len({n.lower() for n in names}) == len(names)
        resource = Resource({"service.name": "otel-efa", "host.id": "i-1", "host_id": "x"})
        body = OtlpEncoder(resource, "otel_efa", "0").encode(frame)
        request = ExportMetricsServiceRequest.FromString(body)  # protobuf checks the strings are UTF-8
        assert request.SerializeToString() == body
        page = PrometheusRenderer(resource.attributes, "otel_efa", "0").render(frame)
        assert_valid_page(page)
        # every counter file of every device arrived: by its value, on its device
        arrived = {}
        for metric in request.resource_metrics[0].scope_metrics[0].metrics:
            for point in metric.sum.data_points:
                device = {kv.key: kv.value.string_value for kv in point.attributes}.get("aws.efa.device")
                if device is not None:
                    arrived.setdefault(point.as_int, set()).add(device)
        for offset, name in enumerate(port_names):
            # lifespan is a cache setting, never a counter; a device counter's name under the port is the
            # older kernels' place for it, and the device's own file wins (sysfs.py)
            if os.fsdecode(name) not in NOT_COUNTERS and not is_device_counter(os.fsdecode(name)):
                assert arrived.get(7_000 + offset) == set(values), name
        for offset, _ in enumerate(device_names):
            assert arrived.get(8_000 + offset) == set(values), device_names[offset]
    finally:
        provider.shutdown()
        reader.close()
        simulator.close()


def _write_counter(directory: str, name: bytes, value: int) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(os.fsencode(directory), name), "wb") as f:
        f.write(b"%d\n" % value)


@fuzz_settings(300)
@given(st.one_of(
    st.text(max_size=40),
    st.builds("{} Gb/sec ({})".format, st.one_of(st.floats(), st.integers(-10, 10 ** 30), st.text(max_size=5)),
              st.text(max_size=8)),
))
@example("nan Gb/sec (4X EDR)")  # float() took "nan": a NaN link speed
@example("inf Gb/sec (4X EDR)")
@example("-100 Gb/sec (4X EDR)")  # ...and a negative one
@example("1e999 Gb/sec")
def test_parse_rate_gbps_is_a_positive_finite_speed_or_none(text):
    gbps = parse_rate_gbps(text)
    assert gbps is None or (math.isfinite(gbps) and gbps > 0)


@fuzz_settings(100)
@given(st.integers(1, 10 ** 6), st.sampled_from(["4X EDR", "8X HDR", "4X NDR", ""]))
def test_parse_rate_gbps_round_trips(gbps, width):
    assert parse_rate_gbps(f"{gbps} Gb/sec ({width})\n") == gbps


@fuzz_settings(300)
@given(st.text(max_size=40))
@example("4: ACTIVE")
@example(":")
@example("9" * 5000 + ": ACTIVE")  # past Python's int string limit (3.11+)
def test_parse_state_never_raises(text):
    number, name = parse_state(text)
    assert number is None or isinstance(number, int)
    assert name == name.strip()


@fuzz_settings(100)
@given(st.integers(0, 7), st.sampled_from(["ACTIVE", "DOWN", "INIT", "ARMED", "LinkUp", "Polling"]),
       st.sampled_from(["", "\n", " \n"]))
def test_parse_state_round_trips(number, name, end):
    assert parse_state(f"{number}: {name}{end}") == (number, name)


@fuzz_settings(300)
@given(st.one_of(st.integers(-5, 10 ** 6).map(str), st.text(max_size=12)))
@example("0007")
@example("-1")  # the kernel's "no NUMA node": was kept as -1 by the reader (None in topology)
@example("+1")  # int() took a sign
@example("1_0")  # ...and digit separators
@example("\u0661")  # ...and non-ASCII digits
def test_parse_numa_node(text):
    node = parse_numa_node(text)
    if text.strip().isascii() and text.strip().isdigit() and len(text.strip()) <= 4:
        assert node == int(text)
    else:
        assert node is None


# --- rates ----------------------------------------------------------------------------------------

u64 = st.one_of(st.integers(0, U64_MAX), st.sampled_from([0, 1, U64_MAX - 1, U64_MAX]))
elapsed_times = st.one_of(st.floats(-10.0, 1e9), st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e-9, 1e-6]))


def _rate_is_sane(value):
    return value is None or (isinstance(value, float) and math.isfinite(value) and value >= 0)


@fuzz_settings(300)
@given(st.one_of(st.none(), u64), u64, elapsed_times)
@example(0, U64_MAX, 5e-324)  # the counter jumped a u64 in one subnormal second: rate was inf
@example(U64_MAX, 0, 1.0)  # a wrap (or a reset)
@example(5, 5, 0.0)
def test_rate_is_absent_or_finite_and_not_negative(previous, value, elapsed):
    per_second = rate(previous, value, elapsed)
    assert _rate_is_sane(per_second)
    if previous is None or not elapsed > 0:
        assert per_second is None
    elif value >= previous:
        exact = (value - previous) / elapsed
        assert per_second == (exact if math.isfinite(exact) else None)


@fuzz_settings(200)
@given(st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]),  # ports
    st.dictionaries(st.sampled_from(["n", "m", "other"]), u64, max_size=3),
    st.one_of(st.floats(0, 1e4), st.sampled_from([0.0, 5e-324, 1e-12, 1e-9])),  # time since the last update
    st.integers(0, 2),  # generation: a device that came back gets a new one
    st.one_of(st.none(), st.frozensets(st.sampled_from(["a", "b", "c"]))),  # ports kept by forget()
), max_size=30))
@example([("a", {"n": 0}, 0.0, 0, None), ("a", {"n": U64_MAX}, 5e-324, 0, None)])  # was an infinite rate
@example([("a", {"n": U64_MAX - 5}, 1.0, 0, None), ("a", {"n": 10}, 1.0, 0, None)])  # a wrap (or a reset)
@example([("a", {"n": 1}, 1.0, 0, None), ("a", {"n": 9}, 1.0, 1, None), ("a", {"n": 9}, 1.0, 1, frozenset()),
          ("a", {"n": 10}, 1.0, 1, None)])  # the device came back, then went away
def test_rate_tracker_over_any_sequence(events):
    """Any ports, counter values, elapsed times, generations and forgetting: every rate is finite and
    not negative; a counter that did not go down, over positive elapsed time in the same generation,
    has exactly delta / elapsed."""
    tracker = RateTracker(["n", "m"])
    last = {}  # port -> (counters, time, generation): what the tracker should remember
    now = 0.0
    for port, counters, step, generation, keep in events:
        now += step
        rates = tracker.update(port, counters, now, generation)
        assert set(rates) <= {"n", "m"} & set(counters)
        assert all(_rate_is_sane(r) for r in rates.values())
        previous = last.get(port)
        if previous is None or previous[2] != generation:
            assert rates == {}
        else:
            elapsed = now - previous[1]
            for name in {"n", "m"} & set(counters) & set(previous[0]):
                before, after = previous[0][name], counters[name]
                if after >= before and elapsed > 0 and math.isfinite((after - before) / elapsed):
                    assert rates[name] == (after - before) / elapsed
                elif not elapsed > 0:
                    assert name not in rates
        last[port] = (counters, now, generation)
        if keep is not None:
            tracker.forget(keep)
            last = {k: v for k, v in last.items() if k in keep}


# --- configuration --------------------------------------------------------------------------------

def _dotted(data, prefix=""):
    """Every dotted key a document could name in an error."""
    keys = set()
    if isinstance(data, dict):
        for name, value in data.items():
            key = f"{prefix}{name}"
            keys.add(key)
            keys |= _dotted(value, key + ".")
    return keys


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2 ** 200, 2 ** 200), st.floats(),
    st.text(max_size=20), st.sampled_from(["log", "prometheus,otlp", "127.0.0.1:9", "info", "grpc", "gzip",
                                           "instance", "p5.48xlarge", "60", "-1", "0", "1e400", "nan", "yes"]),
)


def _containers(children):
    return st.one_of(st.lists(children, max_size=3),
                     st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=3))


junk = st.recursive(scalars, _containers, max_leaves=8)
known_keys = st.sampled_from(sorted(config_module.KEYS))


@st.composite
def documents(draw):
    """A mapping of known keys (as YAML nests them) and unknown ones to values of any shape."""
    flat = draw(st.dictionaries(st.one_of(known_keys, st.text(max_size=10)), junk, max_size=5))
    data = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if section in config_module.SECTIONS and draw(st.booleans()):
            target = data.setdefault(section, {})
            if isinstance(target, dict):
                target[name] = value
        else:
            data[key] = value
    return data


GOOD_TEXT = {  # values a key accepts, so that a fair share of documents load (and the valid side is tested)
    "exporters": ["log", "prometheus,log", ["otlp", "console"]], "log_level": ["info", "debug"],
    "simulate": ["p4d.24xlarge", None], "otlp.protocol": ["grpc", "http/protobuf"], "otlp.compression": ["gzip"],
    "otlp.endpoint": ["http://127.0.0.1:4317"], "otlp.headers": ["a=b,c=d"], "prometheus.address": ["127.0.0.1:9464"],
    "cloudwatch.dimension_sets": [["instance", "device"]], "cloudwatch.retry_mode": ["adaptive"],
    "cloudwatch.storage_resolution": [1, 60], "cloudwatch.namespace": ["Test/Efa"],
}


def _good_value(key):
    kind = config_module.KEYS[key][0]
    if key in GOOD_TEXT:
        return st.sampled_from(GOOD_TEXT[key])
    if kind in (float, typing.Optional[float]):
        return st.one_of(st.floats(1e-3, 1e4), st.integers(1, 10 ** 6))
    if kind in (int, typing.Optional[int]):
        return st.integers(1, 100)
    if kind in (bool, typing.Optional[bool]):
        return st.sampled_from([True, False, "yes", "off"])
    return st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=10)


@st.composite
def good_documents(draw):
    keys = draw(st.lists(known_keys.filter(lambda k: k != "cloudwatch.cluster_name"), max_size=6, unique=True))
    return {key: draw(_good_value(key)) for key in keys}


file_texts = st.one_of(
    good_documents().map(lambda d: yaml.safe_dump(d).encode()),
    documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8")),
    junk.map(lambda d: yaml.safe_dump(d).encode()),  # valid YAML of any shape
    st.sampled_from([
        b"", b"---\n", b"~\n", b"[", b"{a: 1", b"interval: [\n", b"- 1\n- 2\n", b"a: *nope\n",
        b"interval: !!python/object:os.system x\n", b"interval: 2001-13-45\n", b"interval: 2001-12-14\n",
        b"interval: " + b"9" * 5000 + b"\n", b"interval: " + b"9" * 400 + b"\n", b"count: 1e400\n",
        b"\xff\xfe\x00", b"interval: 5\x00\n", b"interval: 5\x85\n",
        b"? [a, b]\n: 1\n", b"interval: !!binary MTI=\n", b"count: !!float .inf\n", b"exporters: !!set {log}\n",
    ]),
    st.text(max_size=60).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=60),
)
env_values = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20)
environments = st.dictionaries(
    st.one_of(known_keys.map(config_module.env_name),
              st.text(string.ascii_uppercase + "_\n", min_size=1, max_size=8).map(lambda s: "OTEL_EFA_" + s)),
    st.one_of(env_values, st.sampled_from(["", "1", "0", "-1", "1e999", "nan", "yes", "log,otlp", " 5 ",
                                           "9" * 5000, "p4d.24xlarge", "127.0.0.1:9464"])),
    max_size=3)
flag_values = st.fixed_dictionaries({}, optional={
    "interval": st.floats(), "count": st.integers(-2, 2 ** 70), "exporters": env_values,
    "log_level": st.sampled_from(["debug", "info", "warning", "error"]), "sysfs": env_values,
    "simulate": env_values, "instance_type": env_values, "log_file": env_values,
    "prometheus.address": env_values,
})

REGRESSIONS = [  # (file content, environment) that once escaped as something other than a ConfigError
    (b"interval: " + b"9" * 400 + b"\n", {}),  # OverflowError: int too large to convert to float
    (b"interval: " + b"9" * 5000 + b"\n", {}),  # ValueError from PyYAML: past Python's int digit limit
    (b"interval: 2001-13-45\n", {}),  # ValueError from PyYAML: a timestamp that is no date
    (b"\xff\xfe\x00", {}),  # UnicodeDecodeError: not UTF-8
    (b"[" * 500 + b"]" * 500, {}),  # RecursionError: nested deeper than PyYAML can compose (slow: not drawn)
    (b"{\"a\\nb\": 1}\n", {}),  # a key with a newline made a two-line message
    (b"", {"OTEL_EFA_A\nB": "1"}),  # ...and so did an environment variable's name
    (b"sysfs: \"/sys\\0\"\n", {}),  # a path with a NUL byte passed, then crashed the reader
]


def _check_outcome(outcome, text, environ):
    event("ConfigError" if isinstance(outcome, ConfigError) else "valid Config")
    if isinstance(outcome, ConfigError):
        allowed = set(config_module.KEYS) | {"--config"} | set(environ)
        if outcome.key not in allowed:  # (reading a file of megabytes again only when needed)
            try:
                allowed |= _dotted(yaml.safe_load(text))
            except Exception:  # not YAML, or YAML that PyYAML cannot construct: only --config can be named
                pass
        assert outcome.key in allowed
        assert str(outcome).startswith("config error: ")
        assert len(str(outcome).splitlines()) == 1
    else:
        outcome.validate()
        for key, (_hint, attribute) in config_module.KEYS.items():
            section = outcome
            for part in key.split(".")[:-1]:
                section = getattr(section, part)
            value = getattr(section, attribute)
            assert value is None or isinstance(value, (list, bool, int, float, str)), key
            if isinstance(value, str):
                assert "\x00" not in value, key
            if isinstance(value, float):
                assert math.isfinite(value), key


def _write(directory, content: bytes) -> str:
    path = os.path.join(directory, "config.yaml")
    with open(path, "wb") as f:
        f.write(content)
    return path


@fuzz_settings(250)
@given(file_texts, st.one_of(st.just({}), environments), st.one_of(st.just({}), flag_values))
@example(*REGRESSIONS[0], {})
@example(*REGRESSIONS[1], {})
@example(*REGRESSIONS[2], {})
@example(*REGRESSIONS[3], {})
@example(*REGRESSIONS[4], {})
@example(*REGRESSIONS[5], {})
@example(*REGRESSIONS[6], {})
@example(*REGRESSIONS[7], {})
@example(b"", {}, {"count": 2 ** 70, "interval": 1e-300})
def test_config_load_gives_a_config_or_a_config_error(scratch, text, environ, flags):
    path = _write(scratch, text)
    try:
        outcome = config_module.load(path, environ=environ, flags=flags)
    except ConfigError as error:
        outcome = error
    _check_outcome(outcome, text, environ)


flag_args = st.lists(st.tuples(
    st.sampled_from(["--interval", "--count", "--exporters", "--log-level", "--sysfs", "--simulate",
                     "--instance-type", "--log-file", "--prometheus-address", "--bogus"]),
    st.one_of(env_values, st.sampled_from(["-1", "0", "nan", "inf", "1e999", "--bogus\nx", "9" * 5000, "log"])),
), max_size=3).map(lambda pairs: [item for pair in pairs for item in pair])


@pytest.fixture(scope="module")
def run_parser():
    """The real parser, built once: building it costs more than the rest of an example."""
    return cli.build_parser()


@fuzz_settings(100)
@given(file_texts, st.one_of(st.just({}), environments), st.one_of(st.just([]), flag_args))
@example(*REGRESSIONS[5], [])
@example(*REGRESSIONS[6], [])
@example(b"", {}, ["--bogus\nx"])  # argparse's "unrecognized arguments: --bogus\nx" made two lines
def test_cli_run_exits_2_with_one_line(scratch, run_parser, text, environ, flags):
    """``otel-efa run --config FILE ...`` with any file, environment and flag values: argparse or the
    config loader refuse with exit status 2 and one line on standard error, never a traceback.

    A configuration that loads is not run: the agent would call IMDS and whatever exporters the
    fuzzer chose, so for those this only checks the configuration (test_run.py runs the agent).
    """
    argv = ["run", "--config", _write(scratch, text)] + flags
    environment = {k: v for k, v in os.environ.items() if not k.startswith(config_module.ENV_PREFIX)}
    environment.update(environ)
    stderr = io.StringIO()
    with mock.patch.dict(os.environ, environment, clear=True), contextlib.redirect_stderr(stderr):
        try:
            args = run_parser.parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code == cli.EXIT_CONFIG
            assert len(stderr.getvalue().splitlines()) == 1, stderr.getvalue()
            return
        try:
            config = cli._load_config(args)
        except ConfigError:
            assert cli.main(argv) == cli.EXIT_CONFIG
            lines = stderr.getvalue().splitlines()
            assert len(lines) == 1 and lines[0].startswith("otel-efa: config error: "), stderr.getvalue()
        else:
            _check_outcome(config, text, environ)


# --- hostile configuration files and the argv of every subcommand (issue 13 parts 6-8) -------------------

def _laughs(levels: int, width: int = 10) -> bytes:
    """The billion laughs at ``levels`` = 9: YAML aliases that expand to width ** levels strings."""
    lines = ['l0: &l0 "lol"'] + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels + 1)]
    return ("\n".join(lines) + f"\ninterval: *l{levels}\nexporters: *l{levels}\n").encode()


HOSTILE_FILES = [  # (file content, environment) that were echoed whole in the error or hung the loader
    (_laughs(9), {}),  # the billion laughs: the error quoted the expanded value (it never finished)
    (_laughs(5), {}),  # a hundred thousand laughs: the error was megabytes long
    (b"cloudwatch:\n  namespace: " + b"x" * (2 * 1024 * 1024) + b"\n", {}),  # a 2 MB value
    (b"", {"OTEL_EFA_INTERVAL": "x" * (10 * 1024 * 1024)}),  # a 10 MB value, echoed whole
    (b"", {"OTEL_EFA_CLOUDWATCH_NAMESPACE": "x" * 100000}),  # ...and one that was accepted
    # a long list, quoted whole (10,000 items were 100,000: 4.5 s of pure-Python YAML for the same 80 characters)
    (b"interval: [" + b"1, " * 10000 + b"1]\n", {}),
]
hostile_texts = st.one_of(
    st.integers(1, 9).map(_laughs),
    # "KEY: yyy...": what yaml.safe_dump writes for a long plain value, without its emitter's 1 s a megabyte
    st.tuples(st.sampled_from(sorted(config_module.KEYS)), st.integers(1000, 3 * 1024 * 1024)).map(
        lambda kv: yaml.safe_dump({kv[0]: "y"}, width=10 ** 9).encode()[:-2] + b"y" * kv[1] + b"\n"),
)
hostile_environments = st.tuples(st.sampled_from(sorted(config_module.KEYS)), st.integers(100, 10 ** 6)).map(
    lambda kv: {config_module.env_name(kv[0]): "z" * kv[1]})


def _assert_brief(error: ConfigError) -> None:
    """One line that quotes at most QUOTE_CHARS of any value, however long the value was."""
    message = str(error)
    assert len(message.splitlines()) == 1
    assert len(message) < 800, message[:300]
    for letter in "xyz":
        assert letter * (config_module.QUOTE_CHARS + 1) not in message, message[:300]


@fuzz_settings(40)
@given(st.one_of(hostile_texts, file_texts), st.one_of(st.just({}), hostile_environments, environments))
@example(*HOSTILE_FILES[0])
@example(*HOSTILE_FILES[1])
@example(*HOSTILE_FILES[2])
@example(*HOSTILE_FILES[3])
@example(*HOSTILE_FILES[4])
@example(*HOSTILE_FILES[5])
def test_hostile_config_is_refused_briefly(scratch, text, environ):
    path = _write(scratch, text)
    try:
        outcome = config_module.load(path, environ=environ)
    except ConfigError as error:
        outcome = error
        _assert_brief(error)
    _check_outcome(outcome, text, environ)


def _leaves(parser, prefix=()):
    """(argv prefix, parser) of every subcommand that takes no further subcommand."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in sorted(action.choices.items()):
                yield from _leaves(sub, prefix + (name,))
            return
    yield prefix, parser


LEAVES = list(_leaves(cli.build_parser()))
# Run, not only parsed: what is quick and stays on this machine. run, top, doctor and the AWS commands are
# parsed only here (they loop, or reach IMDS and AWS); test_cli_run_exits_2_with_one_line and
# tests/test_cli_manners.py run them.
EXECUTED = {("metrics",), ("dashboard", "grafana"), ("alarms", "prometheus"), ("collector-config",), ("cost",),
            ("snapshot",), ("topology",), ("simulate",), ("docs",)}
NASTY_VALUES = ["nan", "-1", "0", "inf", "-inf", "1e999", "99999999", "", "x" * 5000, "a\nb", "1", "2.5",
                "p4d.24xlarge", "adot", "both", "log", "--bogus", "-", "sub/dir", "/proc/nope/x", "FILE"]


@st.composite
def argvs(draw):
    prefix, parser = draw(st.sampled_from(LEAVES))
    options = sorted(o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help", "--eni"))
    positionals = sorted(str(c) for a in parser._actions if not a.option_strings for c in (a.choices or []))
    tokens = draw(st.lists(st.one_of(st.sampled_from(options or ["--bogus"]),
                                     st.sampled_from(positionals or ["x"]), st.sampled_from(NASTY_VALUES),
                                     st.text(max_size=6)), max_size=7))
    return list(prefix), tokens


@fuzz_settings(150)
@given(argvs())
@example((["simulate"], ["p4d.24xlarge", "--root", "", "--once"]))  # an empty root wrote the tree under /
@example((["simulate"], ["p4d.24xlarge", "--root", "FILE", "--gbps", "nan"]))
@example((["collector-config"], ["--write", "FILE"]))
@example((["cost"], ["--nodes", "1", "--instance-type", "p4d.24xlarge", "--job-hours", "inf"]))
@example((["doctor"], ["--timeout", "0"]))
@example((["run"], ["--simulate", "p4d.24xlarge", "--sysfs", "sub/dir"]))
def test_any_argv_of_any_subcommand_gives_an_exit_status_never_a_traceback(scratch, command):
    """Random flags and values for every subcommand: argparse and the argument types refuse with exit 2 and
    one line; the commands that run here return a status or one config-error line. No other exception."""
    prefix, tokens = command
    file_path = os.path.join(scratch, "a-file")
    with open(file_path, "w") as f:
        f.write("interval: 5\n")
    argv = prefix + [file_path if t == "FILE" else t for t in tokens]
    if prefix == ["simulate"]:
        argv.append("--once")  # it would run until stopped
    stderr, stdout = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(scratch)  # relative paths the fuzzer picks (--root, --write) land in the scratch directory
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            try:
                args = cli.build_parser().parse_args(argv)
            except SystemExit as exit_:
                assert exit_.code in (0, 2), argv  # 0: --help or --version
                if exit_.code == 2:
                    assert len(stderr.getvalue().splitlines()) == 1, stderr.getvalue()
                return
            if tuple(prefix) in EXECUTED:
                status = cli.main(argv)
                assert isinstance(status, int)
                if status == cli.EXIT_CONFIG:
                    assert stderr.getvalue().startswith("otel-efa: config error: "), stderr.getvalue()
                    assert len(stderr.getvalue().splitlines()) == 1, stderr.getvalue()
            elif prefix == ["run"]:
                try:
                    cli._load_config(args)
                except ConfigError as error:
                    _assert_brief(error)
    finally:
        os.chdir(here)
    assert "Traceback" not in stderr.getvalue()


# --- hostile trees: any kind of file where a sysfs file belongs ----------------------------------------

FILE_KINDS = ODD_KINDS + ("content",)
HOSTILE_PLACES = ("ports/1/hw_counters/rx_bytes", "ports/1/hw_counters/tx_pkts", "hw_counters/cmds_err",
                  "ports/1/hw_counters/lifespan") + ATTRIBUTE_FILES


def _lay(path: str, kind: str, content: bytes, sockets: list) -> None:
    if kind != "content":
        replace_with_odd_file(path, kind, sockets)
        return
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    if not os.path.isdir(path):
        with open(path, "wb") as f:
            f.write(content)


@fuzz_settings(40)
@given(st.dictionaries(st.sampled_from(HOSTILE_PLACES), st.tuples(st.sampled_from(FILE_KINDS), attribute_contents),
                       min_size=1, max_size=6))
@example({"ports/1/hw_counters/rx_bytes": ("fifo", b""), "ports/1/state": ("socket", b""),
          "device/numa_node": ("loop", b"")})
def test_any_kind_of_file_anywhere_in_a_device_neither_hangs_nor_crashes_collection(tmp_path_factory, places):
    """A FIFO, socket, directory, symlink loop, dangling link or any content where one device's sysfs file
    belongs: discovery and three collections finish (a worker thread with a deadline: a blocking open of
    a FIFO would hang it), raise nothing, and the other devices read their true values."""
    import threading

    from otel_efa.pipeline.collector import Collector

    simulator = Simulator("p4d.24xlarge", str(tmp_path_factory.mktemp("hostile")))
    sockets: list = []
    try:
        device = simulator.devices[0].name
        base = os.path.join(simulator.root, "class", "infiniband", device)
        for place, (kind, content) in places.items():
            _lay(os.path.join(base, place), kind, content, sockets)
        outcome: dict = {}

        def collect() -> None:
            try:
                with SysfsReader(simulator.root) as reader:
                    collector = Collector(reader)
                    outcome["snapshots"] = [collector.collect() for _ in range(3)]
            except BaseException as e:  # reported below with the example
                outcome["error"] = e

        worker = threading.Thread(target=collect, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), f"collection hung on {places}"
        assert "error" not in outcome, repr(outcome.get("error"))
        last = {d.name: d for d in outcome["snapshots"][-1].devices}
        for other in simulator.devices[1:]:
            assert last[other.name].ports[0].counters["rx_bytes"] == simulator.value(other.name, "rx_bytes")
    finally:
        for s in sockets:
            s.close()
        simulator.close()
