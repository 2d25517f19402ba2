"""Who may scan what: the pure decision over allow entries, opt-outs and verified addresses.

The decision is a function of data (no Redis here), so the service that enqueues and the worker
that runs a job apply exactly the same rules. Storage lives in ``workers.store``.
Imports: stdlib, pydantic, ``workers.models``, ``workers.targets``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated

from pydantic import AfterValidator, Field

from workers.models import Frozen, Role, UtcDatetime
from workers.targets import special_purpose

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_PREFIX_ADDRESSES = {4: 8, 6: 16}
"""Smallest prefix length an entry may have per IP version (/8, /16): wider is surely a typo."""

DEFAULT_SCOPE = "default"
SCOPE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
"""Scope names: short lowercase words (``customers``, ``lab``), safe in chat, YAML and keys."""


def _canonical_network(text: str) -> str:
    network = ipaddress.ip_network(text, strict=True)
    return str(network)


def _bounded_network(text: str) -> str:
    try:
        return str(parse_network(text))
    except PolicyRefused as refusal:
        # pydantic turns a ValueError into a validation error that carries the file's line.
        raise ValueError(refusal.reason) from None


NetworkText = Annotated[str, AfterValidator(_canonical_network)]
BoundedNetworkText = Annotated[str, AfterValidator(_bounded_network)]
"""A network as an admin may enter it: canonical, no host bits, no wider than /8 (IPv6 /16)."""
ScopeName = Annotated[str, Field(pattern=SCOPE_PATTERN)]


class NetworkEntry(Frozen):
    """An allowlist or opt-out entry: a network, why it is there, who added it and when."""

    network: NetworkText
    note: str = Field(default="", max_length=200)
    lab: bool = Field(default=False, description="may cover special-purpose space")
    scope: ScopeName = DEFAULT_SCOPE
    added_by: str = Field(max_length=200)
    added_at: UtcDatetime

    @classmethod
    def make(
        cls,
        network: str,
        *,
        added_by: str,
        at: datetime,
        note: str = "",
        lab: bool = False,
        scope: str = DEFAULT_SCOPE,
    ) -> NetworkEntry:
        """Build an entry from an admin's input, refusing bad networks and scope names."""
        return cls(
            network=str(parse_network(network)),
            note=note,
            lab=lab,
            scope=parse_scope(scope),
            added_by=added_by,
            added_at=at,
        )

    @cached_property
    def ip_network(self) -> IPNetwork:
        """Return the entry as an ``ipaddress`` network (parsed once per entry)."""
        return ipaddress.ip_network(self.network)


@dataclass(frozen=True)
class EntryChange:
    """An entry just stored, and the entry it replaced for the same network, if there was one."""

    entry: NetworkEntry
    replaced: NetworkEntry | None = None


class PolicyRefused(Exception):
    """A target that policy forbids; ``reason`` is one line a user can read."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def parse_network(text: str) -> IPNetwork:
    """Parse an allow/opt-out network (an address or a CIDR), refusing host bits and huge ranges."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as error:
        # ipaddress quotes the whole input: cap it, the reason goes back into a chat or terminal.
        raise PolicyRefused(f"not a network: {str(error)[:200]}", "bad_network") from error
    smallest = MAX_PREFIX_ADDRESSES[network.version]
    if network.prefixlen < smallest:
        raise PolicyRefused(
            f"{network} is too wide: allow entries must be /{smallest} or narrower", "too_wide"
        )
    return network


def parse_scope(text: str) -> str:
    """Check an allowlist scope name (``customers``, ``lab``); return it."""
    if not re.fullmatch(SCOPE_PATTERN, text):
        raise PolicyRefused(
            f"{text[:40]!r} is not a scope name: use 1-32 characters of a-z, 0-9, _ and -, "
            "starting with a letter or digit",
            "bad_scope",
        )
    return text


def covering(entries: Iterable[NetworkEntry], address: IPAddress) -> list[NetworkEntry]:
    """Return the entries whose network holds the address, narrowest first."""
    found = [
        entry
        for entry in entries
        if entry.ip_network.version == address.version and address in entry.ip_network
    ]
    return sorted(found, key=lambda entry: -entry.ip_network.prefixlen)


@dataclass(frozen=True)
class PolicyFacts:
    """What policy needs to know about one request: the stored data that applies to it."""

    role: Role
    allow: Sequence[NetworkEntry]
    opt_outs: Sequence[NetworkEntry]
    verified_address: str | None


@dataclass(frozen=True)
class Decision:
    """Why a scan is allowed: the entry or binding that permits it."""

    basis: str


def decide(address: IPAddress, resolved: Sequence[IPAddress], facts: PolicyFacts) -> Decision:
    """Allow or refuse scanning ``address`` (pinned from ``resolved``) for the given facts.

    Order matters: an opt-out always wins; a home user may only ever ask for their own
    verified address (told first, so they hear about /check rather than about address space);
    special-purpose space needs a lab entry; agents and admins need an allow entry.
    """
    for candidate in resolved or (address,):
        opt_out = covering(facts.opt_outs, candidate)
        if opt_out:
            # Name the entry and its note: an agent can tell the customer exactly why, and an
            # admin can find the entry to remove should the owner change their mind.
            note = f": {opt_out[0].note}" if opt_out[0].note else ""
            raise PolicyRefused(
                f"{candidate} is on the opt-out list (entry {opt_out[0].network}{note}): "
                "its owner asked not to be scanned",
                "opt_out",
            )
    own = facts.verified_address is not None and facts.verified_address == str(address)
    if facts.role is Role.USER and not own:
        raise PolicyRefused(
            f"you can scan only the connection you verified as yours; {address} is not it "
            "(use /check from that connection first)",
            "not_own_address",
        )
    for candidate in resolved or (address,):
        block = special_purpose(candidate)
        if block is not None and not any(entry.lab for entry in covering(facts.allow, candidate)):
            raise PolicyRefused(
                f"{candidate} is special-purpose space ({block}); "
                "only an admin's lab allow entry (allow add --lab) permits it",
                "special",
            )
    if facts.role in (Role.AGENT, Role.ADMIN):
        entries = covering(facts.allow, address)
        if not entries:
            raise PolicyRefused(
                f"{address} is not in the allowlist; an admin can add its range", "not_allowed"
            )
        return Decision(basis=f"allow entry {entries[0].network}")
    return Decision(basis="verified own address")


def recheck(address: IPAddress, facts: PolicyFacts) -> Decision:
    """The worker's check before nmap starts: is the address scannable on any basis at all?

    The job payload is not trusted for the caller's role (anyone who can write to Redis can
    enqueue), so the worker asks only what holds for every role: no opt-out, special-purpose
    space only under a lab entry, and an allow entry or the requester's verified address.
    """
    as_agent = PolicyFacts(
        role=Role.AGENT, allow=facts.allow, opt_outs=facts.opt_outs, verified_address=None
    )
    try:
        return decide(address, (address,), as_agent)
    except PolicyRefused as refusal:
        if refusal.code != "not_allowed" or facts.verified_address != str(address):
            raise
    return Decision(basis="verified own address")
