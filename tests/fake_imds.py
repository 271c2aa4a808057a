"""A fake EC2 instance metadata service (IMDSv2) on loopback, for what only EC2 answers."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeImds:
    """IMDSv2 on loopback: a token from PUT /latest/api/token, then GETs that must carry it."""

    TOKEN = "fake-imds-token"

    def __init__(self, document):
        self.calls = []
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                imds.calls.append(("PUT", self.path, ttl))
                if self.path != "/latest/api/token" or not ttl:
                    self._reply(400, "")
                else:  # the real service echoes the TTL; AWS SDKs rely on it
                    self._reply(200, imds.TOKEN, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

            def do_GET(self):
                token = self.headers.get("X-aws-ec2-metadata-token")
                imds.calls.append(("GET", self.path, token))
                if token != imds.TOKEN:
                    self._reply(401, "")
                elif self.path == "/latest/dynamic/instance-identity/document":
                    self._reply(200, json.dumps(document))
                else:
                    self._reply(404, "")

            def _reply(self, status, body, headers=None):
                data = body.encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
