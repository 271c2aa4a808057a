"""HTTP over a bare socket, for the endpoint tests that must say things a polite client never would.

Every call is bounded by a socket timeout: a server that hangs shows up as ``socket.timeout``, never as a
test that never ends.
"""
import http.client
import socket
import threading
from typing import Optional, Tuple


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def read_response(sock: socket.socket, method: str = "GET") -> http.client.HTTPResponse:
    """The next response on ``sock``, parsed by the standard library's client, body read."""
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    response.body = response.read()  # type: ignore[attr-defined]
    return response


def exchange(port: int, data: bytes, method: str = "GET", timeout: float = 10.0) -> http.client.HTTPResponse:
    """Send ``data`` (while reading, so that a server that answers early is heard) and read one response."""
    with connect(port, timeout=timeout) as sock:
        sender = threading.Thread(target=_send_quietly, args=(sock, data), daemon=True)
        sender.start()
        try:
            return read_response(sock, method)
        finally:
            sender.join(timeout)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the server answered and closed before we were done: that is allowed
        pass


def wait_for_eof(sock: socket.socket, deadline_s: float, trickle: Optional[bytes] = None) -> Tuple[bool, int]:
    """Read until the server closes ``sock`` (EOF or reset) or ``deadline_s`` passes; (closed, bytes read).

    With ``trickle``, one byte of it is sent each time a second passes without news: a slow client.
    """
    import time

    end = time.monotonic() + deadline_s
    got = 0
    position = 0
    while time.monotonic() < end:
        sock.settimeout(min(1.0, max(0.01, end - time.monotonic())))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            if trickle is not None:
                try:
                    sock.send(trickle[position % len(trickle):position % len(trickle) + 1])
                except OSError:
                    return True, got
                position += 1
            continue
        except ConnectionResetError:
            return True, got
        if not data:
            return True, got
        got += len(data)
    return False, got


class EofWatch:
    """``wait_for_eof`` on a thread of its own: a client started now whose verdict a test reads later, so
    that clients waiting out a server's timeout wait side by side instead of one after another."""

    def __init__(self, sock: socket.socket, deadline_s: float, trickle: Optional[bytes] = None):
        self.sock = sock
        self._verdict: Optional[Tuple[bool, int]] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._watch, args=(deadline_s, trickle), daemon=True)
        self._thread.start()

    def _watch(self, deadline_s: float, trickle: Optional[bytes]) -> None:
        try:
            self._verdict = wait_for_eof(self.sock, deadline_s, trickle)
        except BaseException as error:  # handed to the test that asks
            self._error = error
        finally:
            self.sock.close()

    def result(self) -> Tuple[bool, int]:
        """(closed, bytes read), once the server closed or the deadline passed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._verdict is not None
        return self._verdict
