"""Which ENI an EFA device belongs to: port ``gids/0`` -> MAC -> IMDSv2 ``interface-id``.

The kernel derives the port's first GID from the NIC's MAC as an IPv6 link-local EUI-64 address
(``fe80::`` + MAC with the universal/local bit flipped and ``ff:fe`` in the middle); IMDS maps a MAC
to its ENI under ``meta-data/network/interfaces/macs/<mac>/interface-id``. The CloudWatch agent and
the ``awsefareceiver`` resolve ``aws.efa.eni.id`` the same way.

An ENI id never changes while its MAC exists, so answers are cached for good; MACs IMDS does not
answer for yet (IMDS down at boot, an ENI attached a moment ago) are retried with exponential back-off.
"""
import ipaddress
import logging
import re
import time
from typing import Callable, Dict, Iterable, Optional

from otel_efa.node.imds import ImdsClient

log = logging.getLogger(__name__)
_ENI_ID = re.compile(r"^eni-[0-9a-f]{8,17}$")


def mac_from_link_local(gid: str) -> Optional[str]:
    """``fe80::c:5aff:fe00:c100`` -> ``0e:00:5a:00:c1:00``; None for anything not EUI-64 link-local."""
    try:
        address = ipaddress.IPv6Address(gid.strip())
    except ValueError:
        return None
    if not address.is_link_local:
        return None
    eui = address.packed[8:]
    if eui[3:5] != b"\xff\xfe":
        return None
    mac = bytes([eui[0] ^ 0x02]) + eui[1:3] + eui[5:]
    return ":".join(f"{octet:02x}" for octet in mac)


class EniResolver:
    """MAC -> ENI id, cached; unresolved MACs are retried, with back-off, only when :meth:`resolve` runs.

    One round asks IMDS about each unresolved MAC and stops at the first sign that IMDS is unreachable
    (one timeout per round, not one per device). While anything stays unresolved the next round waits
    ``first_retry`` seconds, doubling up to ``max_retry``; a MAC resolving resets the wait.
    """

    def __init__(self, imds: ImdsClient, first_retry: float = 1.0, max_retry: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.imds = imds
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._clock = clock
        self._known: Dict[str, str] = {}
        self._delay = first_retry
        self._next_round = 0.0
        self.lookups = 0  # IMDS requests made, for tests and debugging

    def eni_of(self, mac: str) -> Optional[str]:
        return self._known.get(mac)

    def resolve(self, macs: Iterable[str]) -> bool:
        """Try the unresolved ``macs`` if the back-off allows; True when one got its ENI id."""
        pending = [mac for mac in dict.fromkeys(macs) if mac not in self._known]
        now = self._clock()
        if not pending or now < self._next_round:
            return False
        resolved = False
        for mac in pending:
            self.lookups += 1
            text = self.imds.get(f"meta-data/network/interfaces/macs/{mac}/interface-id")
            eni = (text or "").strip()
            if _ENI_ID.match(eni):
                self._known[mac] = eni
                resolved = True
                log.info("ENI of %s: %s", mac, eni)
            elif not self.imds.reachable:
                break
        if resolved:
            self._delay = self.first_retry
        if any(mac not in self._known for mac in pending):
            self._next_round = now + self._delay
            self._delay = min(self._delay * 2, self.max_retry)
        return resolved
