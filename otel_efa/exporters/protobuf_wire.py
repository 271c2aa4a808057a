"""Protobuf's wire format for the few OTLP pieces the agent writes and reads itself.

otlp_encoder.py writes the request (resource, scope, metric headers, attributes) and otlp_transport.py reads
the reply (its partial success) here rather than through opentelemetry-proto's generated classes, so the
agent does not load protobuf and the OTLP modules at all (3.4 MiB of its RSS). The bytes are the ones
protobuf writes for the same messages, field by field in field-number order, an empty string or zero
left out except inside a oneof (tests/test_otlp_encoder.py holds both equal).
"""
import struct
from typing import Any, Iterator, Mapping, NamedTuple, Tuple, Union

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
_U64 = 2 ** 64
_DOUBLE = struct.Struct("<d")


class DecodeError(ValueError):
    """Bytes that are not the message they should be."""


def varint(value: int) -> bytes:
    """An unsigned varint; a negative int64 as its two's complement (ten bytes), as protobuf writes it."""
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field_number: int, wire_type: int) -> bytes:
    return varint(field_number << 3 | wire_type)


def length_delimited(field_number: int, size: int) -> bytes:
    """The tag and length that go before a ``size``-byte message or string in field ``field_number``."""
    return tag(field_number, LENGTH_DELIMITED) + varint(size)


def message_field(field_number: int, body: bytes) -> bytes:
    return length_delimited(field_number, len(body)) + body


def string_field(field_number: int, text: str) -> bytes:
    """A proto3 string field: nothing when empty (UnicodeEncodeError for text that is not valid UTF-8)."""
    return message_field(field_number, text.encode("utf-8")) if text else b""


def any_value(value: Any) -> bytes:
    """An attribute value as an AnyValue message (bool before int: a bool is an int in Python); an int
    outside int64 as a double, and anything else as its str()."""
    if isinstance(value, bool):
        return tag(2, VARINT) + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return message_field(1, value.encode("utf-8"))
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return tag(3, VARINT) + varint(value)
        return tag(4, FIXED64) + _DOUBLE.pack(value)
    if isinstance(value, float):
        return tag(4, FIXED64) + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return message_field(7, value)
    if isinstance(value, Mapping):  # KeyValueList
        return message_field(6, key_values(1, value))
    if isinstance(value, (list, tuple)):  # ArrayValue
        return message_field(5, b"".join(message_field(1, any_value(v)) for v in value))
    return message_field(1, str(value).encode("utf-8"))


def key_values(field_number: int, attributes: Mapping[str, Any]) -> bytes:
    """``attributes`` as KeyValue messages in a repeated field ``field_number``, in the mapping's order."""
    return b"".join(message_field(field_number, string_field(1, key) + message_field(2, any_value(value)))
                    for key, value in attributes.items())


def _fields(data: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """(field number, wire type, value) of each field: an int, or the bytes of a length-delimited one."""
    position, end = 0, len(data)

    def read_varint() -> int:
        nonlocal position
        result = shift = 0
        while True:
            if position >= end or shift > 63:
                raise DecodeError("a varint runs past the end of the message")
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while position < end:
        key = read_varint()
        field_number, wire_type = key >> 3, key & 7
        if field_number == 0:
            raise DecodeError("field number 0")
        if wire_type == VARINT:
            yield field_number, wire_type, read_varint()
            continue
        size = {FIXED64: 8, FIXED32: 4}.get(wire_type)
        if wire_type == LENGTH_DELIMITED:
            size = read_varint()
        if size is None:
            raise DecodeError(f"wire type {wire_type}")
        if position + size > end:
            raise DecodeError("a field runs past the end of the message")
        chunk = data[position:position + size]
        position += size
        yield field_number, wire_type, chunk if wire_type == LENGTH_DELIMITED else int.from_bytes(chunk, "little")


class PartialSuccess(NamedTuple):
    rejected_data_points: int = 0
    error_message: str = ""


class ExportResponse(NamedTuple):
    """What the agent reads of an ExportMetricsServiceResponse."""

    partial_success: PartialSuccess = PartialSuccess()


def parse_export_response(data: bytes) -> ExportResponse:
    """An ExportMetricsServiceResponse; unknown fields skipped, DecodeError for bytes that are none."""
    partial = PartialSuccess()
    for field_number, wire_type, value in _fields(bytes(data)):
        if field_number == 1 and wire_type == LENGTH_DELIMITED:
            assert isinstance(value, bytes)
            rejected, message = partial
            for inner_number, inner_type, inner in _fields(value):
                if inner_number == 1 and inner_type == VARINT:
                    assert isinstance(inner, int)
                    rejected = inner - _U64 if inner > INT64_MAX else inner  # int64
                elif inner_number == 2 and inner_type == LENGTH_DELIMITED:
                    assert isinstance(inner, bytes)
                    message = inner.decode("utf-8", "replace")
            partial = PartialSuccess(rejected, message)
    return ExportResponse(partial)
