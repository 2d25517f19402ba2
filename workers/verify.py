"""Own-address verification: one-time links that bind a home user to the connection they are on.

Chat platforms never tell a bot the user's IP address. ``/check`` issues a random token bound
to the user (and to where the answer should go); opening the link from the home connection
redeems the token once, and the address the request came from becomes the user's verified
address for 30 days (``workers.store.PolicyStore.bind_address``).
Key layout: ``pp:check:<token>`` holds the pending link (JSON) for ``TOKEN_TTL_S``; redeeming
uses GETDEL, so a link works exactly once even when opened twice at the same moment.
Imports: redis, ``workers.models``, ``workers.queue``, ``workers.store``, ``workers.tickets``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

import redis

from workers.models import Frozen, Requester
from workers.queue import ScanService
from workers.store import PolicyStore
from workers.tickets import ScanRefused, Ticket

CHECK_PREFIX = "pp:check:"
TOKEN_TTL_S = 600
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class PendingCheck(Frozen):
    """A link handed out by /check: who asked, and where the scan result should go."""

    requester: Requester
    reply_to: dict[str, Any]


class CheckLinks:
    """Issues and redeems one-time own-address links."""

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection

    def issue(self, requester: Requester, reply_to: dict[str, Any]) -> str:
        """Create a single-use token for the user, valid for ten minutes."""
        token = secrets.token_urlsafe(32)
        pending = PendingCheck(requester=requester, reply_to=reply_to)
        self._redis.set(f"{CHECK_PREFIX}{token}", pending.model_dump_json(), ex=TOKEN_TTL_S)
        return token

    def redeem(self, token: str) -> PendingCheck | None:
        """Use a token up: return what it was issued for, or None if unknown, used or expired."""
        if not TOKEN_PATTERN.match(token):
            return None
        raw = self._redis.getdel(f"{CHECK_PREFIX}{token}")
        if raw is None:
            return None
        return PendingCheck.model_validate(json.loads(raw))

    def peek(self, token: str) -> bool:
        """Return whether a token is still valid, without using it (to render the page)."""
        return bool(TOKEN_PATTERN.match(token)) and bool(
            self._redis.exists(f"{CHECK_PREFIX}{token}")
        )


class CheckFailed(Exception):
    """The link could not be used; ``reason`` is one line for the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def client_address(remote: str | None, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """Return the address a request came from, trusting ``X-Forwarded-For`` only from proxies.

    The chain is read from the right: the first hop that is not a trusted proxy is the client.
    IPv4-mapped IPv6 peers (``::ffff:a.b.c.d`` from dual-stack sockets) become plain IPv4.
    """
    networks = [ipaddress.ip_network(item, strict=False) for item in trusted]

    def canonical(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        address = ipaddress.ip_address(text.strip())
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address

    def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address.version == net.version and address in net for net in networks)

    if remote is None:
        raise CheckFailed("the connection's address is unknown")
    try:
        peer = canonical(remote)
    except ValueError as error:
        raise CheckFailed("the connection's address is unknown") from error
    if not forwarded_for or not is_trusted(peer):
        return str(peer)
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()][-16:]
    for hop in reversed(hops):
        try:
            address = canonical(hop)
        except ValueError as error:
            raise CheckFailed("the proxy sent an address that cannot be read") from error
        if not is_trusted(address):
            return str(address)
    return str(peer)


def complete_check(
    links: CheckLinks, store: PolicyStore, service: ScanService, token: str, address: str
) -> Ticket:
    """Redeem a link opened from ``address``: bind it to the user and queue a scan of it."""
    pending = links.redeem(token)
    if pending is None:
        raise CheckFailed(
            "this link is not valid any more: links work once and expire after 10 minutes; "
            "ask the bot for a new one with /check"
        )
    store.bind_address(pending.requester, address)
    service.audit.record(
        actor=str(pending.requester), action="verify_address", target=address, decision="done"
    )
    try:
        return service.submit_scan(pending.requester, address, "quick", pending.reply_to)
    except ScanRefused as refusal:
        raise CheckFailed(
            f"your connection ({address}) is now verified, but it cannot be scanned: "
            f"{refusal.reason}"
        ) from refusal
