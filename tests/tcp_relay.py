"""A TCP relay on a loopback port in front of a server: what crossed the wire, which is the only place some
things show (gRPC's message compression: a receiver decompresses before anything else sees the request; the
HTTP/2 frames a server sent; how many connections a client made)."""
import socket
import threading
from typing import List

from waiting import wait_until


class TcpRelay:
    """Relays every connection to ``target_port``; counts the connections and keeps the bytes each side sent."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests = bytearray()  # what the clients sent
        self.replies = bytearray()  # what the server sent
        self._taken = 0  # bytes of requests already counted by take_requests()
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the server is gone (the test is ending): the client sees a refusal
                client.close()
                continue
            self.connections += 1
            self._sockets += [client, upstream]
            for source, sink, kept in ((client, upstream, self.requests), (upstream, client, self.replies)):
                thread = threading.Thread(target=self._pump, args=(source, sink, kept), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, kept: bytearray) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    kept += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take_requests(self) -> int:
        """Bytes the clients sent since the last call, once every connection has ended."""
        wait_until(lambda: all(not t.is_alive() for t in self._threads[1:]), 15, "the relay's connections to end")
        with self._lock:
            sent, self._taken = len(self.requests) - self._taken, len(self.requests)
        return sent

    def stop(self) -> None:
        self.listener.close()
        for s in self._sockets:
            s.close()
