"""A small HTTP/1.1 server that a slow, idle, oversized or broken client cannot take down.

Why not ``http.server``: its ThreadingHTTPServer runs a thread per connection and never times a client
out, so 150 idle connections held 153 threads (the unit's TasksMax=64 stopped every scrape at about 60),
30 clients sending 6 MB of headers each raised RSS by 100 MiB (MemoryMax=256M), and its listen backlog is 5.

Here one asyncio event loop, on one thread, serves every connection: an idle connection costs a few KiB
and no thread. h11 parses HTTP/1.1 (request line, headers, bodies, keep-alive, pipelining), so that the
framing is a well-tested library's, not ours. Each request has one deadline for its whole head and body
(:attr:`Limits.read_timeout`): a client that trickles a byte a second is dropped as surely as an idle one.
The request head is capped (431 past it), bodies are read and discarded up to a cap (413 past it), the
number of connections is capped, and a refusal is followed by a short lingering read so that the client
hears the status instead of a reset. A client that hangs up is a closed connection, never a traceback.

The handler is a coroutine ``handle(request) -> Response``; it may await work done elsewhere (a bcrypt
check on a worker thread) but must not block the loop for long.
"""
import asyncio
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Awaitable, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import h11

log = logging.getLogger(__name__)

_READ_CHUNK = 16 * 1024
_WRITE_CHUNK = 64 * 1024
_LINGER_S = 2.0  # after a refusal: how long to read (and drop) what the client is still sending


@dataclass(frozen=True)
class Limits:
    read_timeout: float = 5.0  # seconds for a whole request (head and body), and for an idle keep-alive
    write_timeout: float = 10.0  # seconds for a client to take a whole response
    max_head: int = 32 * 1024  # bytes of request line plus headers; 431 past it (a scrape sends ~300)
    max_body: int = 64 * 1024  # bytes of request body read and dropped; 413 past it (a scrape sends none)
    max_connections: int = 512  # open at once; more are closed on accept (a few KiB each)
    backlog: int = 1024  # the listen queue (the kernel caps it at net.core.somaxconn)


class Request(NamedTuple):
    method: str
    target: str
    headers: Dict[str, str]  # names lower-cased; a repeated header's values joined with ", "


class Response(NamedTuple):
    status: int
    headers: Sequence[Tuple[str, str]] = ()
    body: bytes = b""


Handler = Callable[[Request], Awaitable[Response]]


def listen(host: str, port: int, backlog: int = Limits.backlog) -> socket.socket:
    """A listening socket in the address's family: "[::]:9464" is IPv6 and IPv4 both, as the
    prometheus_client server this endpoint replaced was. Raises OSError (gaierror included)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    dual = family == socket.AF_INET6 and address[0] == "::" and socket.has_dualstack_ipv6()
    return socket.create_server(address, family=family, backlog=backlog, dualstack_ipv6=dual)


def accepts_coding(header: Optional[str], coding: str) -> bool:
    """Whether an Accept-Encoding header (RFC 9110 12.5.3) accepts ``coding``: named with a q-value above
    0, or not named and ``*`` is, with q above 0. ``gzip;q=0`` refuses it; a q-value that is not a number
    makes its entry count as refused (a client that cannot say q=1 is not sent gzip)."""
    named = star = None
    for entry in (header or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        name = name.lower()
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also NaN
                    q = 0.0
        if name == coding:
            named = q if named is None else max(named, q)
        elif name == "*":
            star = q if star is None else max(star, q)
    if named is not None:
        return named > 0
    return star is not None and star > 0


class HttpServer:
    """Serves ``handler`` on a listening socket from one event-loop thread; optionally TLS."""

    def __init__(self, sock: socket.socket, handler: Handler, ssl_context: Optional[ssl.SSLContext] = None,
                 limits: Limits = Limits(), name: str = "http"):
        self._socket = sock
        self._handler = handler
        self._ssl = ssl_context
        self.limits = limits
        self._name = name
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()
        self._failure: Optional[BaseException] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._connections: set = set()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise self._failure

    def stop(self, timeout: float) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            self._socket.close()
            return
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # already closed
            pass
        thread.join(timeout)
        self._loop = self._thread = None

    # --- the loop's thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_one_line_exception)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._connection, sock=self._socket, ssl=self._ssl, backlog=self.limits.backlog,
                ssl_handshake_timeout=self.limits.read_timeout if self._ssl else None, limit=_READ_CHUNK))
        except BaseException as e:  # noqa: B902 - handed to start()'s caller
            self._failure = e
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                loop.run_until_complete(asyncio.wait(list(self._connections), timeout=1.0))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.limits.max_connections:
            writer.transport.abort()
            return
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a response is written in a few pieces
        deadline = _Deadline(asyncio.get_running_loop(), task)  # type: ignore[arg-type]
        clean = False
        try:
            await self._serve(h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head),
                              reader, writer, deadline)
            clean = True
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError, h11.LocalProtocolError):
            pass  # the client went quiet, hung up or broke the protocol: its connection ends, nothing else
        except asyncio.CancelledError:
            pass  # a deadline passed (the client was too slow), or stopping
        except Exception as e:  # a bug of ours: one line, and the server goes on
            log.error("%s: a connection failed: %s: %s", self._name, type(e).__name__, e)
        finally:
            deadline.disarm()
            self._connections.discard(task)
            if clean:
                writer.close()
            else:
                writer.transport.abort()

    async def _serve(self, conn: h11.Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, deadline: "_Deadline") -> None:
        limits = self.limits
        while True:
            deadline.arm(limits.read_timeout)
            try:
                request = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as e:
                deadline.disarm()
                await self._refuse(conn, reader, writer, e.error_status_hint, str(e), deadline)
                return
            deadline.disarm()
            if request is None:  # the client closed between requests
                return
            response = await self._handler(request)
            deadline.arm(limits.write_timeout)
            await self._send(conn, writer, response, with_body=request.method != "HEAD")
            deadline.disarm()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0, or a body we did not read to its end
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Optional[Request]:
        """The next request, its body read and dropped; None on a clean close before one began."""
        received = len(conn.trailing_data[0])  # pipelined bytes already in h11's buffer
        request: Optional[h11.Request] = None
        body = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ_CHUNK)
                if request is None:
                    received += len(data)
                conn.receive_data(data)  # b"" is the end of the stream
            elif isinstance(event, h11.Request):
                if received - len(conn.trailing_data[0]) > self.limits.max_head:
                    raise h11.RemoteProtocolError("request head too large", 431)
                request = event
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > self.limits.max_body:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers: Dict[str, str] = {}
                for name, value in request.headers:
                    key = name.decode("ascii").lower()
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                return Request(request.method.decode("ascii"), request.target.decode("ascii", "replace"), headers)
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # PAUSED cannot happen before we answer; anything else is h11's to explain
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", 400)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response,
                    with_body: bool = True) -> None:
        """The response, its body (unless HEAD: the headers say what GET would send) in pieces, each
        waiting for the client to take the previous ones (the connection's deadline bounds it all)."""
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        pending = [conn.send(h11.Response(status_code=response.status, headers=headers,
                                          reason=HTTPStatus(response.status).phrase.encode()))]
        if with_body and response.body:
            body = memoryview(response.body)  # h11 frames it once: one event, however large the body
            framed: list = conn.send_with_data_passthrough(h11.Data(data=body)) or []  # type: ignore[arg-type]
            if len(framed) == 1 and framed[0] is body:  # Content-Length framing: the body as it is, in views
                framed = [body[start:start + _WRITE_CHUNK] for start in range(0, len(body), _WRITE_CHUNK)]
            for piece in framed:
                pending.append(piece)
                _write(writer, b"".join(pending))  # the head with the first piece: one segment, no Nagle wait
                pending = []
                await _drain(writer)
        pending.append(conn.send(h11.EndOfMessage()))
        _write(writer, b"".join(pending))
        await _drain(writer)

    async def _refuse(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      status: int, reason: str, deadline: "_Deadline") -> None:
        """Answer a request we will not serve, then read and drop what the client still sends for a
        moment: closing with unread data resets the connection, and the client would never see why."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE) or writer.transport.is_closing():
            return
        body = f"{HTTPStatus(status).phrase}: {reason}\n".encode()
        response = Response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")], body)
        deadline.arm(self.limits.write_timeout)
        await self._send(conn, writer, response)
        if writer.can_write_eof():
            writer.write_eof()
        deadline.arm(_LINGER_S)
        try:
            while await reader.read(_READ_CHUNK):
                pass
        except asyncio.CancelledError:
            if not deadline.expired:
                raise  # stopping
            deadline.uncancel()
        deadline.disarm()


class _Deadline:
    """One timer per phase of a connection (reading a request, writing a response): when it fires, the
    connection's task is cancelled wherever it waits. No task and no timer per read or write, as
    ``asyncio.wait_for`` around each would make (a scrape had seven of each)."""

    __slots__ = ("_loop", "_task", "_handle", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: "asyncio.Task"):
        self._loop = loop
        self._task = task
        self._handle: Optional[asyncio.TimerHandle] = None
        self.expired = False

    def arm(self, seconds: float) -> None:
        """From now, ``seconds`` at most until the phase is over (:meth:`disarm`)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(self._loop.time() + seconds, self._expire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        self._task.cancel()

    def uncancel(self) -> None:
        """The expiry was handled where it landed: the task goes on (Python 3.11+ counts cancellations)."""
        self.expired = False
        uncancel = getattr(self._task, "uncancel", None)
        if uncancel is not None:
            uncancel()


def _write(writer: asyncio.StreamWriter, data) -> None:
    if writer.transport.is_closing():  # writing on would only make asyncio log "socket.send() raised"
        raise ConnectionResetError("the client closed the connection")
    if data:
        writer.write(data)


async def _drain(writer: asyncio.StreamWriter) -> None:
    """Wait for the client to take what is buffered (only when something is: a plain await, no task)."""
    if writer.transport.get_write_buffer_size():
        await writer.drain()
    if writer.transport.is_closing():
        raise ConnectionResetError("the client closed the connection")

def _one_line_exception(loop: asyncio.AbstractEventLoop, context: Dict) -> None:
    """asyncio's own reports (a failed TLS handshake, accept() out of descriptors): one line, no traceback."""
    exception = context.get("exception")
    detail = f": {type(exception).__name__}: {exception}" if exception is not None else ""
    log.warning("HTTP endpoint: %s%s", context.get("message", "error"), detail)

