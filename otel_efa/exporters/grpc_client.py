"""One gRPC unary call at a time over HTTP/2, in pure Python (h2 frames HTTP/2, grpc_wire.py the gRPC message
and status; no grpcio, whose C core and threads cost the agent 12-14 MiB of RSS).

A ``GrpcChannel`` keeps one connection open between calls: h2c with prior knowledge, or TLS with ALPN "h2".
A call is HEADERS, the message (5-byte length prefix, gzip when asked) sent as the peer's flow-control windows
allow, then the reply read until its trailers, each step bounded by the call's deadline. Any failure drops
the connection and raises ``CallFailed`` with a gRPC status name and one line of detail; the next call
connects anew. ``close()`` from another thread shuts the socket down, so a call under way ends at once.
"""
import select
import socket
import ssl
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hpack.exceptions import HPACKError
from hyperframe.exceptions import HyperframeError

from otel_efa.exporters.grpc_wire import (
    CallFailed,
    NotProcessed,
    Reply,
    frame_message,
    grpc_timeout,
    metadata_problem,
    outcome,
)

# A stream reset (RST_STREAM's error code) as the gRPC status it means for the call.
RESET_CODES = {ErrorCodes.REFUSED_STREAM: "UNAVAILABLE", ErrorCodes.CANCEL: "CANCELLED",
               ErrorCodes.ENHANCE_YOUR_CALM: "RESOURCE_EXHAUSTED", ErrorCodes.INADEQUATE_SECURITY: "PERMISSION_DENIED"}
RECEIVE_SIZE = 65536
GOAWAY = 0x7  # the HTTP/2 frame type
HeaderList = List[Tuple[str, str]]  # as h2 hands them on, decoded (header_encoding)
PEER_ERRORS = (h2.exceptions.H2Error, HyperframeError, HPACKError)  # what a peer speaking no HTTP/2 causes


class _Connection:
    """One HTTP/2 connection on a connected (and, for TLS, handshaken) socket."""

    # No header validation by h2 (a fifth of a call's CPU): the request's headers are checked once by
    # GrpcChannel._headers, and of the reply's only :status, content-type and grpc-* are read, each checked.
    CONFIG = h2.config.H2Configuration(client_side=True, header_encoding="latin-1", validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False,
                                       normalize_inbound_headers=False)

    def __init__(self, sock: socket.socket, reply_cap: int):
        self.sock = sock
        self.reply_cap = reply_cap
        self.h2 = h2.connection.H2Connection(self.CONFIG)
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0, h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0})
        self.h2.initiate_connection()
        self.calls = 0
        self.going_away = False
        self.first_bytes = b""  # what the peer sent first, for the message when it speaks no HTTP/2
        self.pending = b""  # the start of a frame not all received yet

    def usable(self) -> bool:
        """Still open, after taking in whatever the peer sent while it was idle (a GOAWAY, a PING, the end)."""
        if self.going_away or self.h2.open_outbound_streams:
            return False
        waiting = select.poll()  # not select(): the agent holds a thousand sysfs files open, fds past 1024
        waiting.register(self.sock, select.POLLIN)
        try:
            self.sock.settimeout(0.0)
            while waiting.poll(0):
                data = self.sock.recv(RECEIVE_SIZE)
                if not data:
                    return False
                self._take(data, None)
        except (ssl.SSLWantReadError, BlockingIOError):  # a TLS record that carried no data (a session ticket)
            pass
        except (OSError, CallFailed, *PEER_ERRORS):
            return False
        return not self.going_away

    def call(self, headers: Sequence[Tuple[bytes, bytes]], body: bytes, deadline: float) -> bytes:
        self.calls += 1
        reply = Reply(self.h2.get_next_available_stream_id())
        self.h2.send_headers(reply.stream, headers)
        sent = 0
        while sent < len(body) and not reply.ended:  # a server may answer (a refusal) before it has it all
            window = min(self.h2.local_flow_control_window(reply.stream), self.h2.max_outbound_frame_size)
            if window <= 0:
                self._flush(deadline)
                self._receive(deadline, reply)  # until a WINDOW_UPDATE opens the window again
                continue
            chunk = body[sent:sent + window]
            sent += len(chunk)
            self.h2.send_data(reply.stream, chunk, end_stream=sent == len(body))
        if sent < len(body):  # answered early (a refusal): the rest is not wanted
            try:
                self.h2.reset_stream(reply.stream, ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:  # the server has closed it already
                pass
        self._flush(deadline)
        while not reply.ended:
            self._receive(deadline, reply)
        return outcome(reply, self.reply_cap)

    def _flush(self, deadline: float) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.settimeout(_remaining(deadline))
            self.sock.sendall(data)

    def _receive(self, deadline: float, reply: Reply) -> None:
        self.sock.settimeout(_remaining(deadline))
        data = self.sock.recv(RECEIVE_SIZE)
        if not data:
            raise (NotProcessed if self.calls > 1 and not reply.headers else CallFailed)(
                "UNAVAILABLE", "the peer closed the connection before the reply ended")
        if len(self.first_bytes) < 16:
            self.first_bytes += data[:16 - len(self.first_bytes)]
        self._take(data, reply)
        self._flush(deadline)

    def _take(self, data: bytes, reply: Optional[Reply]) -> None:
        """Hands h2 the whole frames received, a GOAWAY on its own: h2 closes the connection at a GOAWAY and
        refuses the frames after it, which a graceful one lets come (see _going_away)."""
        data, at, end = self.pending + data, 0, 0
        while len(data) - end >= 9:
            size = 9 + int.from_bytes(data[end:end + 3], "big")
            if size - 9 > self.h2.max_inbound_frame_size:  # checked before it is all in (h2 waits for it)
                raise h2.exceptions.FrameTooLargeError(f"a frame of {size - 9} bytes")
            if len(data) - end < size:
                break
            if data[end + 3] == GOAWAY:
                self._feed(data[at:end], reply)  # the frames before it
                self._feed(data[end:end + size], reply)
                at = end + size
            end += size
        self._feed(data[at:end], reply)
        self.pending = data[end:]

    def _feed(self, frames: bytes, reply: Optional[Reply]) -> None:
        if frames:
            self._handle(self.h2.receive_data(frames), reply)

    def _handle(self, events, reply: Optional[Reply]) -> None:
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self._going_away(event, reply)
            if reply is None or getattr(event, "stream_id", None) != reply.stream:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                reply.headers = dict(cast(HeaderList, event.headers))
            elif isinstance(event, h2.events.TrailersReceived):
                reply.trailers = dict(cast(HeaderList, event.headers))
            elif isinstance(event, h2.events.DataReceived):
                reply.size += len(event.data)
                if reply.size > self.reply_cap + 5:  # the message and its length prefix
                    raise CallFailed("RESOURCE_EXHAUSTED", f"the reply is larger than {self.reply_cap} bytes")
                reply.data.append(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                reply.ended = True
            elif isinstance(event, h2.events.StreamReset) and not reply.ended:
                code = RESET_CODES.get(event.error_code, "INTERNAL")  # type: ignore[call-overload]
                failure = NotProcessed if event.error_code == ErrorCodes.REFUSED_STREAM else CallFailed
                raise failure(code, f"the peer reset the stream ({_name(event.error_code)})")

    def _going_away(self, event: h2.events.ConnectionTerminated, reply: Optional[Reply]) -> None:
        """GOAWAY: no new stream on this connection. One the server took (at or below last_stream_id) may
        still complete after a graceful GOAWAY, which h2 does not follow (python-hyper/h2#1181: its state
        machine closes at once), so the connection is put back to open for the rest of that one reply."""
        self.going_away = True
        if reply is None or reply.ended:
            return
        detail = f"the peer sent GOAWAY ({_name(event.error_code)}"
        detail += f": {event.additional_data.decode('latin-1')})" if event.additional_data else ")"
        if event.last_stream_id is not None and event.last_stream_id < reply.stream:
            raise NotProcessed("UNAVAILABLE", detail)
        if event.error_code != ErrorCodes.NO_ERROR:
            raise CallFailed("UNAVAILABLE", detail)
        self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def close(self) -> None:
        _shut(self.sock)
        self.sock.close()


class GrpcChannel:
    """Unary calls to ``host:port``, one at a time (a lock orders callers), on one connection kept open."""

    def __init__(self, host: str, port: int, tls: Optional[ssl.SSLContext], user_agent: str,
                 reply_cap: int = 1 << 20):
        self.host, self.port, self.tls = host, port, tls
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.user_agent = user_agent
        self.reply_cap = reply_cap
        self._lock = threading.Lock()
        self._connection: Optional[_Connection] = None
        self._socket: Optional[socket.socket] = None  # the one being connected or in use, for close()
        self._closed = False
        self._header_blocks: Dict[Tuple[str, bool, Tuple[Tuple[str, str], ...]], List[Tuple[bytes, bytes]]] = {}

    def unary(self, path: str, message: bytes, metadata: Sequence[Tuple[str, str]], timeout: float,
              gzip: bool = False) -> bytes:
        """The reply's message bytes; CallFailed (status name and one line) for anything else."""
        deadline = time.monotonic() + timeout
        body = frame_message(message, gzip)
        with self._lock:
            for attempt in (1, 2):
                try:
                    connection = self._connect(deadline)
                    return connection.call(self._headers(path, deadline, gzip, metadata), body, deadline)
                except NotProcessed as e:
                    self._drop()
                    if attempt == 2 or self._closed:
                        raise self._failure(e, timeout) from None
                except BaseException as e:
                    failure = self._failure(e, timeout)
                    self._drop()
                    raise failure from None
                finally:
                    if self._connection is not None and self._connection.going_away:
                        self._drop()
            raise AssertionError("unreachable")

    def _failure(self, error: BaseException, timeout: float) -> BaseException:
        """What ``error`` means as a gRPC status (anything but an Exception is passed on as it is)."""
        if not isinstance(error, Exception):
            return error
        if isinstance(error, CallFailed) and (error.code == "CANCELLED" or not self._closed):
            return error
        if self._closed:
            return CallFailed("CANCELLED", "the channel was closed during the call")
        if isinstance(error, socket.timeout):
            return CallFailed("DEADLINE_EXCEEDED", f"no reply from {self.authority} within {timeout:g} s")
        if isinstance(error, PEER_ERRORS):
            first = self._connection.first_bytes if self._connection is not None else b""
            if first.startswith(b"HTTP/"):
                return CallFailed("UNAVAILABLE", f"{self.authority} answered {first[:8].decode()}, not HTTP/2")
            return CallFailed("UNAVAILABLE", f"{self.authority} does not speak HTTP/2 ({type(error).__name__}: "
                                             f"{error}; it sent {first!r})")
        if isinstance(error, ssl.SSLError):
            return CallFailed("UNAVAILABLE", f"TLS with {self.authority}: {error.reason or error}")
        if isinstance(error, OSError):
            return CallFailed("UNAVAILABLE", f"{self.authority}: {error.strerror or type(error).__name__}")
        return error

    def _headers(self, path: str, deadline: float, gzip: bool, metadata) -> List[Tuple[bytes, bytes]]:
        """The request's header block, as bytes: h2 validates none (checked here, once per path and metadata)."""
        key = (path, gzip, tuple(metadata))
        fixed = self._header_blocks.get(key)
        if fixed is None:
            problem = metadata_problem(metadata)
            if problem:
                raise CallFailed("INTERNAL", problem)
            text = [(":method", "POST"), (":scheme", "https" if self.tls else "http"), (":path", path),
                    (":authority", self.authority), ("te", "trailers"), ("content-type", "application/grpc"),
                    ("user-agent", self.user_agent), ("grpc-accept-encoding", "identity,gzip"),
                    *([("grpc-encoding", "gzip")] if gzip else []), *((k.lower(), v) for k, v in metadata)]
            fixed = self._header_blocks[key] = [(k.encode("ascii"), v.encode("ascii")) for k, v in text]
        return fixed + [(b"grpc-timeout", grpc_timeout(deadline - time.monotonic()).encode("ascii"))]

    def _connect(self, deadline: float) -> _Connection:
        if self._closed:
            raise CallFailed("CANCELLED", "the channel is closed")
        if self._connection is not None:
            if self._connection.usable():
                return self._connection
            self._drop()
        try:
            addresses = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise CallFailed("UNAVAILABLE", f"cannot resolve {self.host}: {e.strerror or e}") from None
        error: Optional[OSError] = None
        for family, kind, protocol, _, address in addresses:
            sock = self._socket = socket.socket(family, kind, protocol)
            try:
                if self._closed:
                    raise CallFailed("CANCELLED", "the channel is closed")
                sock.settimeout(_remaining(deadline))
                sock.connect(address)
                break
            except OSError as e:
                sock.close()
                error = e
        else:
            reason = error.strerror if error is not None and error.strerror else error
            raise CallFailed("UNAVAILABLE", f"failed to connect to {self.authority}: {reason}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self._socket = self._handshake(sock, deadline)
        self._connection = _Connection(sock, self.reply_cap)
        return self._connection

    def _handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        assert self.tls is not None
        try:
            sock.settimeout(_remaining(deadline))
            secure = self.tls.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLError as e:
            sock.close()
            raise CallFailed("UNAVAILABLE", f"TLS handshake with {self.authority} failed: {e.reason or e}") from None
        except BaseException:
            sock.close()
            raise
        if secure.selected_alpn_protocol() != "h2":
            secure.close()
            raise CallFailed("UNAVAILABLE", f"{self.authority} did not agree to HTTP/2 in the TLS handshake (ALPN)")
        return secure

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Ends the call under way, if any (from any thread), and every later one."""
        self._closed = True
        _shut(self._socket)


def _name(error_code) -> str:
    return getattr(error_code, "name", str(error_code))


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    return left


def _shut(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv, send or connect under way in another thread
    except OSError:  # never connected, or gone already
        pass
