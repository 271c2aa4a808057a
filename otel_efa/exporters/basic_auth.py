"""HTTP basic auth against bcrypt hashes, as exporter-toolkit checks its ``basic_auth_users``.

A bcrypt check costs tens of milliseconds of CPU by design (cost 10: ~70-140 ms), so it never runs on the
endpoint's event loop: one worker thread does them one at a time (the toolkit's bcrypt mutex), and a
verdict is cached per (user, hash, password), so Prometheus' scrape every 15 s costs one check per process
life, not one per scrape. An unknown user is checked against a hash of the same cost (no timing tells
which names exist). Past a few checks waiting, a request is told to come back (429) instead of queueing
CPU work behind a password-guessing client: the agent's CPU quota is for collecting.
"""
import asyncio
import base64
import binascii
import hashlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Optional, Tuple

import bcrypt

CACHE_SIZE = 256
MAX_WAITING = 4


class Busy(Exception):
    """Too many checks waiting: answer 429 and let the client retry."""


class BasicAuth:
    def __init__(self, users: Mapping[str, bytes]):
        self._users = dict(users)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._waiting = 0
        self._decoy: Optional[bytes] = None

    async def allows(self, authorization: Optional[str]) -> bool:
        """Whether an Authorization header carries a known user's password. Raises Busy."""
        credentials = parse(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password))).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            if self._waiting >= MAX_WAITING:
                raise Busy()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prometheus-bcrypt")
            self._waiting += 1
            try:
                verdict = await asyncio.get_running_loop().run_in_executor(self._pool, self._check, hashed, password)
            finally:
                self._waiting -= 1
            self._cache[key] = verdict
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return verdict

    def _check(self, hashed: Optional[bytes], password: bytes) -> bool:
        if hashed is None:
            if self._decoy is None:  # the cost of the first user's hash, made once
                cost = int(next(iter(self._users.values()))[4:6]) if self._users else 10
                self._decoy = bcrypt.hashpw(b"otel-efa decoy", bcrypt.gensalt(rounds=cost))
            bcrypt.checkpw(password, self._decoy)
            return False
        return bcrypt.checkpw(password, _two_b(hashed))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def parse(authorization: Optional[str]) -> Optional[Tuple[str, bytes]]:
    """(user, password) of a ``Basic`` Authorization header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _two_b(hashed: bytes) -> bytes:
    """htpasswd's $2y$ is the same algorithm as $2b$; say so for bcrypt libraries that know only the latter."""
    return b"$2b$" + hashed[4:] if hashed[:4] == b"$2y$" else hashed
