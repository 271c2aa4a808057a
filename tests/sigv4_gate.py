"""AMP's front door for tests: checks each remote write's SigV4 signature, then hands it to a real Prometheus.

Amazon Managed Prometheus refuses a write whose signature does not verify; Prometheus's own remote-write
receiver ignores the ``Authorization`` header. This gate stands where AMP's endpoint stands: it recomputes
the signature from the request as received (AWS Signature Version 4: canonical request, string to sign,
signing key from the secret; the signed headers are those the client listed) and answers 403 to a write
that does not verify, so a test proves that the collector's ``sigv4auth`` signs for the right region,
service (``aps``) and credentials. A real HTTP server on loopback; the body goes on to Prometheus unchanged.
"""
import hashlib
import hmac
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

ALGORITHM = "AWS4-HMAC-SHA256"
FORWARDED = ("Content-Type", "Content-Encoding", "X-Prometheus-Remote-Write-Version", "User-Agent")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _authorization(header: str) -> Dict[str, str]:
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"algorithm {algorithm!r}")
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    return {"credential": fields["Credential"], "signed_headers": fields["SignedHeaders"],
            "signature": fields["Signature"]}


def expected_signature(method: str, path: str, headers: Dict[str, str], body: bytes, secret: str,
                       signed_headers: str, scope: str) -> str:
    """The SigV4 signature of a request (headers by lower-case name)."""
    url = urllib.parse.urlsplit(path)
    query = "&".join(sorted(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                            for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True)))
    names = signed_headers.split(";")
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in names)
    payload = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join((method, urllib.parse.quote(url.path or "/", safe="/-_.~"), query, canonical_headers,
                           signed_headers, payload))
    string_to_sign = "\n".join((ALGORITHM, headers["x-amz-date"], scope,
                                hashlib.sha256(canonical.encode()).hexdigest()))
    date, region, service, terminal = scope.split("/")
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), terminal)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class SigV4Gate:
    """Verifies, then forwards to ``upstream`` (Prometheus's /api/v1/write); counts both outcomes."""

    def __init__(self, upstream: str, port: int, access_key: str, secret: str, region: str, service: str = "aps"):
        self.verified = 0
        self.refused: List[str] = []  # why each refused write was refused
        self.scopes: set = set()
        self._lock = threading.Lock()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                problem = gate._check(self.command, self.path, self.headers, body, access_key, secret,
                                      region, service)
                if problem:
                    with gate._lock:
                        gate.refused.append(problem)
                    self.send_error(403, problem)
                    return
                status = gate._forward(upstream, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/write"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _check(self, method, path, headers, body, access_key, secret, region, service) -> Optional[str]:
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            auth = _authorization(lowered.get("authorization", ""))
            key_id, date, scope_region, scope_service, terminal = auth["credential"].split("/")
            scope = "/".join((date, scope_region, scope_service, terminal))
            with self._lock:
                self.scopes.add(scope.split("/", 1)[1])
            if key_id != access_key or (scope_region, scope_service) != (region, service):
                return f"credential scope {auth['credential']}"
            wanted = expected_signature(method, path, lowered, body, secret, auth["signed_headers"], scope)
        except (KeyError, ValueError) as e:
            return f"malformed SigV4: {e!r}"
        if not hmac.compare_digest(wanted, auth["signature"]):
            return "signature does not verify"
        with self._lock:
            self.verified += 1
        return None

    @staticmethod
    def _forward(upstream: str, headers, body: bytes) -> int:
        request = urllib.request.Request(upstream, data=body, method="POST",
                                         headers={k: headers[k] for k in FORWARDED if k in headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
