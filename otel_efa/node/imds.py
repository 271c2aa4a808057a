"""A small EC2 instance metadata (IMDSv2) client: token first, then GETs, with a short timeout.

Honours botocore's variables: ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (tests point it at a server on
loopback) and ``AWS_EC2_METADATA_DISABLED=true``. Off EC2 nothing answers at 169.254.169.254; the
timeout keeps that to about a second in all.
"""
import json
import os
import time
import urllib.error
import urllib.request
from typing import Dict, Mapping, Optional

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600


class ImdsClient:
    """Not thread-safe: give each thread its own client.

    ``unreachable_holdoff``: after a connection failure, answer None at once for that many seconds
    instead of paying the timeout again (callers with their own back-off pass 0).
    ``reachable`` tells a caller whether the last None meant "no answer" or "IMDS said no".
    """

    def __init__(self, endpoint: Optional[str] = None, timeout: float = 0.5,
                 environ: Mapping[str, str] = os.environ, unreachable_holdoff: float = 30.0):
        self.endpoint = (endpoint or environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                         or DEFAULT_ENDPOINT).rstrip("/")
        self.disabled = environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
        self.timeout = timeout
        self.unreachable_holdoff = unreachable_holdoff
        self.reachable = not self.disabled
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._unreachable_until = 0.0

    def _fetch_token(self) -> Optional[str]:
        request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            token: str = response.read().decode()
        self._token = token
        self._token_expires = time.monotonic() + TOKEN_TTL_SECONDS - 60
        return token

    def get(self, path: str) -> Optional[str]:
        """The text at ``/latest/<path>``, or None when IMDS is off, unreachable or says no."""
        if self.disabled or time.monotonic() < self._unreachable_until:
            return None
        for attempt in range(2):
            try:
                if self._token is None or time.monotonic() >= self._token_expires:
                    self._fetch_token()
                request = urllib.request.Request(f"{self.endpoint}/latest/{path}",
                                                 headers={"X-aws-ec2-metadata-token": self._token or ""})
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    text: str = response.read().decode()
                self.reachable = True
                return text
            except urllib.error.HTTPError as e:
                self.reachable = True
                if e.code == 401 and attempt == 0:  # token expired or revoked: fetch a new one once
                    self._token = None
                    continue
                return None
            except (OSError, ValueError):
                # Unreachable (off EC2): do not pay the timeout again on every call for a while.
                self.reachable = False
                self._token = None  # a restarted IMDS knows none of our tokens
                self._unreachable_until = time.monotonic() + self.unreachable_holdoff
                return None
        return None

    def identity(self) -> Dict[str, str]:
        """The instance identity document, or {} off EC2."""
        text = self.get("dynamic/instance-identity/document")
        if not text:
            return {}
        try:
            document = json.loads(text)
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}
