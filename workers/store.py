"""The Redis-backed admin state: allow entries, opt-outs, roles and verified own addresses.

Key layout (all under the ``pp:`` prefix so one Redis can be shared with rq):
``pp:allow`` and ``pp:optout`` are hashes network → entry JSON; ``pp:roles`` is a hash
``platform:user`` → role; ``pp:verified:<platform>:<user>`` holds a home user's verified
address with a TTL (the binding expires by itself).
Imports: redis, ``workers.models``, ``workers.policy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import redis

from workers.connection import as_text
from workers.models import Requester, Role
from workers.policy import (
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

    def grant(self, principal: str, role: Role) -> Requester:
        """Give ``platform:user_id`` the role agent or admin."""
        who = parse_principal(principal)
        if role is Role.USER:
            raise PolicyRefused("grant agent or admin; revoke to make someone a home user", "role")
        self._redis.hset(ROLES_KEY, str(who), role.value)
        return who

    def revoke(self, principal: str) -> Requester:
        """Take a granted role away (configured admins stay admins: they come from settings)."""
        who = parse_principal(principal)
        if str(who) in self._admins:
            raise PolicyRefused(
                f"{who} is an admin from PORTPATROL_ADMINS; change that setting instead",
                "configured_admin",
            )
        if not self._redis.hdel(ROLES_KEY, str(who)):
            raise PolicyRefused(f"{who} has no granted role", "no_role")
        return who

    def roles(self) -> dict[str, Role]:
        """Return every principal with a role, configured admins included."""
        granted = {
            as_text(key): Role(as_text(value))
            for key, value in self._redis.hgetall(ROLES_KEY).items()
        }
        return {**granted, **dict.fromkeys(sorted(self._admins), Role.ADMIN)}

    # Allowlist and opt-outs -------------------------------------------------------------------

    def allow_entries(self) -> list[NetworkEntry]:
        """Return every allow entry."""
        return self._entries(ALLOW_KEY)

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
        scope: str = "default",
    ) -> NetworkEntry:
        """Add (or replace) an allow entry; ``lab`` permits special-purpose space."""
        entry = NetworkEntry(
            network=str(parse_network(network)),
            note=note,
            lab=lab,
            scope=scope,
            added_by=added_by,
            added_at=at,
        )
        self._redis.hset(ALLOW_KEY, entry.network, entry.model_dump_json())
        return entry

    def disallow(self, network: str) -> str:
        """Remove an allow entry; return its canonical network."""
        canonical = str(parse_network(network))
        if not self._redis.hdel(ALLOW_KEY, canonical):
            raise PolicyRefused(f"{canonical} is not in the allowlist", "no_entry")
        return canonical

    def opt_out(self, network: str, *, added_by: str, at: datetime, note: str = "") -> NetworkEntry:
        """Add an opt-out: the network's owner asked not to be scanned."""
        entry = NetworkEntry(
            network=str(parse_network(network)), note=note, added_by=added_by, added_at=at
        )
        self._redis.hset(OPT_OUT_KEY, entry.network, entry.model_dump_json())
        return entry

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


def _parse_entries(raw: Mapping[bytes | str, bytes | str]) -> list[NetworkEntry]:
    entries = [NetworkEntry.model_validate_json(value) for value in raw.values()]
    return sorted(entries, key=lambda entry: (entry.ip_network.version, entry.ip_network))
