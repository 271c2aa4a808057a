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
