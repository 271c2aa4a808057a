"""The name mapping (otel_efa/names.py), pure: what each destination gets for a hostile name."""
import os

import pytest
from opentelemetry.metrics._internal.instrument import _name_regex

from otel_efa import names

HOSTILE = ["foo{bar}", "sp ace", 'qu"ote', "new-counter.x", "ünï", os.fsdecode(b"bad\xffbyte"), "rx-dropped",
           "new\nline", "tab\there", "back\\slash", "a\\xffb", "9lives", "", " ", "\x7f", "x" * 300, "é" * 200,
           "\ud800lone", "%41", "__name__", "::", "efa_ok"]


@pytest.mark.parametrize("name,text", [
    ("rdmap0s6", "rdmap0s6"),  # ordinary names are untouched
    ("ünï", "ünï"),  # valid UTF-8 stays
    (os.fsdecode(b"rdmap\xff0s6"), "rdmap\\xff0s6"),  # a byte that is not UTF-8
    ("new\nline", "new\\x0aline"),  # a control character
    ("back\\slash", "back\\\\slash"),  # the escape character itself, so that it reverses
    ("a\\xffb", "a\\\\xffb"),  # ...and a literal "\xff" stays distinct from the byte
    ('qu"ote', 'qu"ote'),  # the text formats escape quotes themselves
])
def test_escape(name, text):
    assert names.escape(name) == text
    assert names.unescape(text) == name


@pytest.mark.parametrize("name", HOSTILE)
def test_escape_is_valid_utf8_printable_and_reversible(name):
    text = names.escape(name)
    text.encode("utf-8")  # strict: what protobuf needs
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    assert names.unescape(text) == name


@pytest.mark.parametrize("name", HOSTILE)
def test_cloudwatch_value_is_printable_ascii_with_a_visible_character_and_reversible(name):
    value = names.cloudwatch_value(name)
    assert value.isascii() and value.isprintable() and value.strip() and len(value) <= 1024, value
    if name and len(name.encode("utf-8", "surrogatepass")) <= 255:  # any file name
        assert names.unescape(value) == name
    assert names.cloudwatch_value("rdmap0s6") == "rdmap0s6"
    assert names.cloudwatch_value("ünï") == "\\xc3\\xbcn\\xc3\\xaf"


@pytest.mark.parametrize("name,mapped", [
    ("efa_new-counter.x", "efa_new-counter.x"),  # valid: kept as it is
    ("efa_rx_bytes", "efa_rx_bytes"),
    ("efa_" + "x" * 251, "efa_" + "x" * 251),  # 255 characters: still valid
    ("efa_foo{bar}", "efa_foo_bar_7b79d59e"),  # the documented mapping, pinned: dashboards may use it
    ("efa_sp ace", "efa_sp_ace_33e5d8f3"),
    ("efa_ünï", "efa_n_047b2fcb"),
    (os.fsdecode(b"efa_bad\xffbyte"), "efa_bad_byte_33cd31aa"),
])
def test_instrument_name(name, mapped):
    assert names.instrument_name(name) == mapped


@pytest.mark.parametrize("name", HOSTILE)
def test_every_name_becomes_a_valid_instrument_name(name):
    mapped = names.instrument_name("efa_" + name)
    assert _name_regex.fullmatch(mapped), mapped  # the OTel API's own check
    assert mapped == names.instrument_name("efa_" + name)  # deterministic
    assert names.instrument_name(name) and _name_regex.fullmatch(names.instrument_name(name))


def test_mapped_names_differ_where_the_originals_do():
    mapped = {names.instrument_name("efa_" + n) for n in HOSTILE}
    assert len(mapped) == len(set(HOSTILE))
    assert names.instrument_name("efa_a b") != names.instrument_name("efa_a{b")


@pytest.mark.parametrize("name", HOSTILE + ["efa_new-counter.x", "efa_a.b/c", "1abc"])
def test_prometheus_names_are_the_otel_exporter_s(name):
    mapping = pytest.importorskip("opentelemetry.exporter.prometheus._mapping")  # 0.66 (Python 3.11)
    sanitize_full_name, sanitize_attribute = mapping.sanitize_full_name, mapping.sanitize_attribute
    if name:
        assert names.prometheus_metric_name(name) == sanitize_full_name(name)
        assert names.prometheus_label_name(name) == sanitize_attribute(name)
    assert names.prometheus_label_name("") == "_"


def test_unique_names_keep_the_first_and_suffix_the_rest_stably():
    taken = names.UniqueNames(str.lower, reserved=["efa_rx_bytes"])
    assert taken.claim("efa_RX_bytes") == "efa_RX_bytes_" + names.stable_suffix("efa_RX_bytes")
    assert taken.claim("efa_new") == "efa_new"
    second = taken.claim("efa_new")
    third = taken.claim("efa_new")
    assert len({"efa_new", second, third}) == 3 and second.startswith("efa_new_")
    # the suffix depends on the key alone, not on what else was claimed before
    other = names.UniqueNames(reserved=["efa_new"])
    assert other.claim("efa_new") == second
    assert names.UniqueNames(reserved=["a"]).claim("a", key="other") == "a_" + names.stable_suffix("other")
    long = names.UniqueNames(reserved=["x" * 255]).claim("x" * 255, limit=255)
    assert len(long) == 255


def test_unique_names_see_a_counter_s_family_name():
    family = names.UniqueNames(reserved=["efa_port_up"])
    claimed = family.claim("efa_port_up", build=lambda b: b + "_total",
                           also=lambda n: (n, n[:-len("_total")]))
    assert claimed != "efa_port_up_total" and claimed.endswith("_total")
