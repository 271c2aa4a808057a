"""A small IMDSv2 on loopback (http.server in a thread): what EC2 answers, with the parts we test.

- ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` (else 400), hands out a
  fresh token and echoes the TTL header (AWS SDKs rely on it); ``GET`` needs a token it issued and has
  not expired (else 401), as IMDSv2 does.
- ``dynamic/instance-identity/document`` answers ``document``; ``meta-data/hostname`` answers
  ``hostname`` and ``meta-data/instance-id`` the document's ``instanceId`` (the collector's ec2 resource
  detector asks for these three);
  ``meta-data/network/interfaces/macs/<mac>/interface-id`` answers from ``enis`` (else 404).
- ``expire_tokens()`` makes every issued token stale, as when its TTL runs out.
A real HTTP server, not a mock: the client under test speaks HTTP to it over a socket.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

import pytest

IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
HOSTNAME_PATH = "/latest/meta-data/hostname"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
ENI_PREFIX, ENI_SUFFIX = "/latest/meta-data/network/interfaces/macs/", "/interface-id"


class FakeImds:
    def __init__(self, document: Optional[dict] = None, port: int = 0, hostname: Optional[str] = None):
        self.document = document
        self.hostname = hostname
        self.enis: Dict[str, str] = {}
        self.valid_tokens: set = set()
        self.tokens_issued = 0
        self.unauthorized = 0  # 401s served
        self.requests: List[str] = []
        self.calls: List[Tuple[str, str, Optional[str]]] = []  # (method, path, ttl or token header)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, code: int, body: str = "", headers: Optional[dict] = None) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                with fake._lock:
                    fake.requests.append("PUT " + self.path)
                    fake.calls.append(("PUT", self.path, ttl))
                    if self.path != "/latest/api/token":
                        return self._reply(404)
                    if not ttl:
                        return self._reply(400)
                    fake.tokens_issued += 1
                    token = f"token-{fake.tokens_issued}"
                    fake.valid_tokens.add(token)
                return self._reply(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

            def do_GET(self):
                token = self.headers.get("X-aws-ec2-metadata-token")
                with fake._lock:
                    fake.requests.append("GET " + self.path)
                    fake.calls.append(("GET", self.path, token))
                    if token not in fake.valid_tokens:
                        fake.unauthorized += 1
                        return self._reply(401)
                    path = self.path
                    if path == IDENTITY_PATH and fake.document is not None:
                        return self._reply(200, json.dumps(fake.document))
                    if path == HOSTNAME_PATH and fake.hostname is not None:
                        return self._reply(200, fake.hostname)
                    if path == INSTANCE_ID_PATH and (fake.document or {}).get("instanceId"):
                        return self._reply(200, fake.document["instanceId"])
                    if path.startswith(ENI_PREFIX) and path.endswith(ENI_SUFFIX):
                        eni = fake.enis.get(path[len(ENI_PREFIX):-len(ENI_SUFFIX)])
                        if eni:
                            return self._reply(200, eni)
                return self._reply(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def expire_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    stop = close


@pytest.fixture
def imds(monkeypatch):
    """A FakeImds that the agent and its libraries find (AWS_EC2_METADATA_SERVICE_ENDPOINT)."""
    server = FakeImds()
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.endpoint)
    yield server
    server.close()
