"""gRPC's layer on HTTP/2 for one unary call (doc/PROTOCOL-HTTP2.md): the length-prefixed message, gzip,
the ``grpc-timeout`` header, and the call's status read from the reply's headers and trailers.
grpc_client.py moves these over a connection.
"""
import re
import struct
import zlib
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

# The gRPC status codes by number (grpc/status.proto), for the one line a failure reads as.
STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
# An HTTP status other than 200 means the reply did not come from a gRPC server (a proxy, a load balancer):
# the code gRPC's clients derive from it (doc/http-grpc-status-mapping.md).
HTTP_STATUS_CODES = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED",
                     429: "UNAVAILABLE", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}


# Custom metadata (gRPC's PROTOCOL-HTTP2.md): a lowercase token, and a printable ASCII value.
METADATA_NAME = re.compile(r"[0-9a-z_.\-]+\Z")
METADATA_VALUE = re.compile(r"[\x20-\x7e]*\Z")
RESERVED_NAMES = ("te", "content-type", "user-agent", "grpc-")


def metadata_problem(metadata: Sequence[Tuple[str, str]]) -> Optional[str]:
    """Why these headers cannot go with a gRPC call, or None."""
    for name, value in metadata:
        name = name.lower()
        if not METADATA_NAME.match(name) or name.startswith(RESERVED_NAMES):
            return f"the header name {name!r} is not one gRPC metadata can have"
        if not METADATA_VALUE.match(value):
            return f"the value of header {name!r} is not printable ASCII"
    return None


class CallFailed(Exception):
    """The call did not succeed: ``code`` is a gRPC status name, the message ``CODE: detail``."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code


class NotProcessed(CallFailed):
    """The server said it did not take the request (GOAWAY below our stream, REFUSED_STREAM), or a connection
    kept from an earlier call was closed before anything came back: safe to send again on a new one."""


def grpc_timeout(seconds: float) -> str:
    """The ``grpc-timeout`` header: at most 8 digits and a unit."""
    milliseconds = max(1, int(seconds * 1000 + 0.999))
    return f"{milliseconds}m" if milliseconds < 10 ** 8 else f"{min(int(seconds) + 1, 10 ** 8 - 1)}S"


def frame_message(message: bytes, compress: bool) -> bytes:
    """The length-prefixed message: compressed flag, 4-byte big-endian length, the bytes."""
    if compress:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: the gzip container
        message = compressor.compress(message) + compressor.flush()
    return struct.pack(">BI", int(compress), len(message)) + message


def unframe_message(body: bytes, encoding: Optional[str], cap: int) -> bytes:
    """The reply's one message (b"" when the server sent none), decompressed within ``cap`` bytes."""
    if not body:
        return b""
    if len(body) < 5:
        raise CallFailed("INTERNAL", "the reply's message is cut short")
    compressed, length = struct.unpack(">BI", body[:5])
    if length > cap:
        raise CallFailed("RESOURCE_EXHAUSTED", f"the reply is larger than {cap} bytes")
    message = body[5:5 + length]
    if len(message) < length:
        raise CallFailed("INTERNAL", "the reply's message is cut short")
    if not compressed:
        return message
    if encoding != "gzip":
        raise CallFailed("INTERNAL", f"a compressed reply with grpc-encoding {encoding!r}, not gzip")
    inflater = zlib.decompressobj(31)
    try:
        plain = inflater.decompress(message, cap + 1)
    except zlib.error as e:
        raise CallFailed("INTERNAL", f"the reply's gzip is corrupt ({e})") from None
    if len(plain) > cap:
        raise CallFailed("RESOURCE_EXHAUSTED", f"the reply is larger than {cap} bytes once decompressed")
    if not inflater.eof:
        raise CallFailed("INTERNAL", "the reply's gzip is cut short")
    return plain


class Reply:
    """What came back on one stream."""

    def __init__(self, stream: int):
        self.stream = stream
        self.headers: Dict[str, str] = {}
        self.trailers: Dict[str, str] = {}
        self.data: List[bytes] = []
        self.size = 0
        self.ended = False


def outcome(reply: Reply, cap: int) -> bytes:
    """The reply's message when the call succeeded; otherwise CallFailed with the server's status."""
    status = reply.headers.get(":status", "")
    if status != "200":
        code = HTTP_STATUS_CODES.get(int(status) if status.isdigit() else 0, "UNKNOWN")
        raise CallFailed(code, f"HTTP status {status} from the peer (no gRPC server answered)")
    content_type = reply.headers.get("content-type", "")
    if not content_type.startswith("application/grpc"):
        raise CallFailed("UNKNOWN", f"the reply's content-type is {content_type!r}, not application/grpc")
    final = reply.trailers or reply.headers  # a trailers-only reply carries its status in the headers
    if "grpc-status" not in final:
        raise CallFailed("INTERNAL", "the reply ended without a grpc-status")
    number = final["grpc-status"]
    code = STATUS_NAMES[int(number)] if number.isdigit() and int(number) < len(STATUS_NAMES) else "UNKNOWN"
    if code != "OK":
        raise CallFailed(code, unquote(final.get("grpc-message", ""), errors="replace") or "no message")
    return unframe_message(b"".join(reply.data), reply.headers.get("grpc-encoding"), cap)
