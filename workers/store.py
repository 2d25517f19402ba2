"""The Redis-backed admin state: allow entries, opt-outs, roles and verified own addresses.

Key layout (all under the ``pp:`` prefix so one Redis can be shared with rq):
``pp:allow`` and ``pp:optout`` are hashes network → entry JSON (one entry per network: the
scope is a field of the entry, so a network is in exactly one scope); ``pp:roles`` is a hash
``platform:user`` → role; ``pp:verified:<platform>:<user>`` holds a home user's verified
address with a TTL (the binding expires by itself).
Changes that read before they write (replacing an entry, a bulk import, the last-admin guard)
run as WATCH/MULTI/EXEC transactions, so two admins acting at once cannot undo each other's
checks.
Imports: redis, ``workers.models``, ``workers.policy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.client import Pipeline

from workers.connection import as_text
from workers.models import Requester, Role
from workers.policy import (
    DEFAULT_SCOPE,
    NetworkEntry,
    PolicyFacts,
    PolicyRefused,
    parse_network,
)

ALLOW_KEY = "pp:allow"
OPT_OUT_KEY = "pp:optout"
ROLES_KEY = "pp:roles"
VERIFIED_PREFIX = "pp:verified:"
VERIFIED_TTL_S = 30 * 24 * 3600
LOCAL_PLATFORM = "cli"
"""The CLI's platform: its operator is an admin by holding the terminal (see the guard below)."""


@dataclass(frozen=True)
class AllowImport:
    """What a bulk import changed."""

    written: int
    replaced: list[NetworkEntry]
    """Entries that were there before for a network of the file (possibly in another scope)."""
    removed: list[str]
    """Networks removed from the file's scopes (``replace_scopes``) because the file omits them."""


def parse_principal(text: str) -> Requester:
    """Parse ``platform:user_id`` (as used by PORTPATROL_ADMINS and role commands)."""
    platform, separator, user = text.strip().partition(":")
    if not separator or not platform or not user:
        raise PolicyRefused(
            f"expected platform:user_id (for example slack:U012AB), got {text[:64]!r}",
            "bad_principal",
        )
    try:
        return Requester(platform=platform.lower(), user=user)
    except ValueError as error:
        raise PolicyRefused(f"not a valid platform:user_id: {text[:64]!r}", "bad_principal") from (
            error
        )


class PolicyStore:
    """Reads and changes admin state in Redis; the decision itself is ``workers.policy.decide``."""

    def __init__(self, connection: redis.Redis, *, admins: frozenset[str] = frozenset()) -> None:
        self._redis = connection
        self._admins = admins

    # Roles -----------------------------------------------------------------------------------

    def role_of(self, requester: Requester) -> Role:
        """Return the caller's role: configured admins, then granted roles, else home user."""
        principal = str(requester)
        if principal in self._admins:
            return Role.ADMIN
        stored = self._redis.hget(ROLES_KEY, principal)
        return Role(as_text(stored)) if stored else Role.USER

    def grant(self, principal: str, role: Role, *, actor: str | None = None) -> Requester:
        """Give ``platform:user_id`` the role agent or admin.

        Downgrading an admin to agent is refused when it would leave no admin, as revoking is.
        """
        who = parse_principal(principal)
        if role is Role.USER:
            raise PolicyRefused("grant agent or admin; revoke to make someone a home user", "role")

        def change(pipe: Pipeline) -> None:
            granted = _granted(pipe.hgetall(ROLES_KEY))
            if role is not Role.ADMIN and granted.get(str(who)) is Role.ADMIN:
                self._refuse_last_admin(granted, str(who), actor)
            pipe.multi()
            pipe.hset(ROLES_KEY, str(who), role.value)

        self._redis.transaction(change, ROLES_KEY)
        return who

    def revoke(self, principal: str, *, actor: str | None = None) -> Requester:
        """Take a granted role away (configured admins stay admins: they come from settings).

        Refused when it would leave no admin at all; ``actor`` only words the refusal.
        """
        who = parse_principal(principal)
        if str(who) in self._admins:
            raise PolicyRefused(
                f"{who} is an admin from PORTPATROL_ADMINS; change that setting instead",
                "configured_admin",
            )

        def change(pipe: Pipeline) -> None:
            granted = _granted(pipe.hgetall(ROLES_KEY))
            if str(who) not in granted:
                raise PolicyRefused(f"{who} has no granted role", "no_role")
            if granted[str(who)] is Role.ADMIN:
                self._refuse_last_admin(granted, str(who), actor)
            pipe.multi()
            pipe.hdel(ROLES_KEY, str(who))

        self._redis.transaction(change, ROLES_KEY)
        return who

    def _standing_admins(self, granted: Mapping[str, Role]) -> set[str]:
        # The CLI operator is added to the configured admins by whoever holds the terminal
        # (bot.wiring does it for every runtime, the bots' included), so counting it would make
        # the guard a no-op: only PORTPATROL_ADMINS and granted admins are standing admins.
        configured = {
            principal
            for principal in self._admins
            if not principal.startswith(f"{LOCAL_PLATFORM}:")
        }
        return configured | {who for who, role in granted.items() if role is Role.ADMIN}

    def _refuse_last_admin(self, granted: Mapping[str, Role], who: str, actor: str | None) -> None:
        if self._standing_admins(granted) - {who}:
            return
        if actor == who:
            raise PolicyRefused(
                "you are the last admin: grant admin to someone else first "
                "(or set PORTPATROL_ADMINS), then step down",
                "last_admin",
            )
        raise PolicyRefused(
            f"{who} is the last admin: grant admin to someone else first "
            "(or set PORTPATROL_ADMINS)",
            "last_admin",
        )

    def roles(self) -> dict[str, Role]:
        """Return every principal with a role, configured admins included."""
        granted = _granted(self._redis.hgetall(ROLES_KEY))
        return {**granted, **dict.fromkeys(sorted(self._admins), Role.ADMIN)}

    # Allowlist and opt-outs -------------------------------------------------------------------

    def allow_entries(self, scope: str | None = None) -> list[NetworkEntry]:
        """Return every allow entry, or those of one scope."""
        entries = self._entries(ALLOW_KEY)
        return entries if scope is None else [entry for entry in entries if entry.scope == scope]

    def opt_outs(self) -> list[NetworkEntry]:
        """Return every opt-out entry."""
        return self._entries(OPT_OUT_KEY)

    def allow(
        self,
        network: str,
        *,
        added_by: str,
        at: datetime,
        note: str = "",
        lab: bool = False,
        scope: str = DEFAULT_SCOPE,
    ) -> NetworkEntry:
        """Add (or replace) an allow entry; ``lab`` permits special-purpose space."""
        entry = NetworkEntry.make(
            network, added_by=added_by, at=at, note=note, lab=lab, scope=scope
        )
        self.put_allow(entry)
        return entry

    def put_allow(self, entry: NetworkEntry) -> NetworkEntry | None:
        """Store an allow entry; return the entry it replaced (same network, any scope)."""
        return self._put(ALLOW_KEY, entry)

    def import_allow(
        self, entries: Sequence[NetworkEntry], *, replace_scopes: bool = False
    ) -> AllowImport:
        """Write many allow entries at once (one MULTI/EXEC): all of them or, on error, none.

        With ``replace_scopes`` the scopes named by the entries end up holding exactly them:
        other entries of those scopes are removed in the same transaction.
        """
        incoming = {entry.network: entry for entry in entries}
        scopes = {entry.scope for entry in entries}

        outcome: list[AllowImport] = []  # set by the attempt that committed (WATCH retries)

        def write(pipe: Pipeline) -> None:
            existing = _parse_entries(pipe.hgetall(ALLOW_KEY))
            replaced = [entry for entry in existing if entry.network in incoming]
            removed = [
                entry.network
                for entry in existing
                if replace_scopes and entry.scope in scopes and entry.network not in incoming
            ]
            outcome[:] = [AllowImport(written=len(incoming), replaced=replaced, removed=removed)]
            pipe.multi()
            if removed:
                pipe.hdel(ALLOW_KEY, *removed)
            if incoming:
                pipe.hset(
                    ALLOW_KEY,
                    mapping={
                        network: entry.model_dump_json() for network, entry in incoming.items()
                    },
                )

        self._redis.transaction(write, ALLOW_KEY)
        return outcome[0]

    def disallow(self, network: str) -> str:
        """Remove an allow entry; return its canonical network."""
        canonical = str(parse_network(network))
        if not self._redis.hdel(ALLOW_KEY, canonical):
            raise PolicyRefused(f"{canonical} is not in the allowlist", "no_entry")
        return canonical

    def opt_out(self, network: str, *, added_by: str, at: datetime, note: str = "") -> NetworkEntry:
        """Add an opt-out: the network's owner asked not to be scanned."""
        entry = NetworkEntry.make(network, added_by=added_by, at=at, note=note)
        self.put_opt_out(entry)
        return entry

    def put_opt_out(self, entry: NetworkEntry) -> NetworkEntry | None:
        """Store an opt-out entry; return the one it replaced for the same network."""
        return self._put(OPT_OUT_KEY, entry)

    def remove_opt_out(self, network: str) -> str:
        """Remove an opt-out; return its canonical network."""
        canonical = str(parse_network(network))
        if not self._redis.hdel(OPT_OUT_KEY, canonical):
            raise PolicyRefused(f"{canonical} is not on the opt-out list", "no_entry")
        return canonical

    def _put(self, key: str, entry: NetworkEntry) -> NetworkEntry | None:
        # HGET and HSET in one MULTI/EXEC: the entry reported as replaced is exactly the one
        # this write overwrote, even with another admin writing the same network.
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, entry.network)
            pipe.hset(key, entry.network, entry.model_dump_json())
            previous, _ = pipe.execute()
        return NetworkEntry.model_validate_json(previous) if previous else None

    def _entries(self, key: str) -> list[NetworkEntry]:
        return _parse_entries(self._redis.hgetall(key))

    # Verified own addresses -------------------------------------------------------------------

    def bind_address(self, requester: Requester, address: str) -> None:
        """Record that the home user proved ``address`` is their connection (30 days)."""
        self._redis.set(f"{VERIFIED_PREFIX}{requester}", address, ex=VERIFIED_TTL_S)

    def verified_address(self, requester: Requester) -> str | None:
        """Return the user's verified address, if the binding has not expired."""
        value = self._redis.get(f"{VERIFIED_PREFIX}{requester}")
        return as_text(value) if value else None

    def forget_address(self, requester: Requester) -> bool:
        """Delete the user's verified address; return whether there was one."""
        return bool(self._redis.delete(f"{VERIFIED_PREFIX}{requester}"))

    # Facts for a decision ---------------------------------------------------------------------

    def facts_for(self, requester: Requester, role: Role | None = None) -> PolicyFacts:
        """Gather what ``workers.policy.decide`` needs for this requester."""
        # One round trip: this runs for every request and again in the worker.
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(ALLOW_KEY)
            pipe.hgetall(OPT_OUT_KEY)
            pipe.get(f"{VERIFIED_PREFIX}{requester}")
            allow, opt_outs, verified = pipe.execute()
        return PolicyFacts(
            role=role if role is not None else self.role_of(requester),
            allow=_parse_entries(allow),
            opt_outs=_parse_entries(opt_outs),
            verified_address=as_text(verified) if verified else None,
        )


def _granted(raw: Mapping[Any, Any]) -> dict[str, Role]:
    return {as_text(key): Role(as_text(value)) for key, value in raw.items()}


def _parse_entries(raw: Mapping[bytes | str, bytes | str]) -> list[NetworkEntry]:
    entries = [NetworkEntry.model_validate_json(value) for value in raw.values()]
    return sorted(entries, key=lambda entry: (entry.ip_network.version, entry.ip_network))
