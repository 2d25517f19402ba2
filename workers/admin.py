"""Admin operations with their audit trail: allowlist and roles, for every front end alike.

The CLI, the console and the chat bots all call these, so an allow entry added from Slack is
the one the CLI lists, and every change is audited the same way.
Imports: ``workers.audit``, ``workers.models``, ``workers.policy``, ``workers.store``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from workers.audit import AuditLog
from workers.models import Requester, Role, utc_now
from workers.policy import NetworkEntry, PolicyRefused
from workers.store import PolicyStore

NOTE_LIMIT = 200


class Administration:
    """Allowlist and role changes, each checked for the admin role and audited."""

    def __init__(
        self, store: PolicyStore, audit: AuditLog, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock

    def _require_admin(self, actor: Requester, action: str, target: str) -> None:
        if self.store.role_of(actor) is not Role.ADMIN:
            self.audit.record(
                actor=str(actor),
                action=action,
                target=target,
                decision="refused",
                reason="not an admin",
            )
            raise PolicyRefused("only admins can do that", "not_admin")

    def allow(
        self,
        actor: Requester,
        network: str,
        *,
        note: str = "",
        lab: bool = False,
        scope: str = "default",
    ) -> NetworkEntry:
        """Add an allow entry (``lab`` permits special-purpose space)."""
        self._require_admin(actor, "allow_add", network)
        if len(note) > NOTE_LIMIT:
            raise PolicyRefused(f"the note is too long ({NOTE_LIMIT} characters at most)", "note")
        entry = self.store.allow(
            network, added_by=str(actor), at=self.clock(), note=note, lab=lab, scope=scope
        )
        self.audit.record(
            actor=str(actor),
            action="allow_add",
            target=entry.network,
            decision="done",
            reason=note,
            lab=lab,
            scope=scope,
        )
        return entry

    def disallow(self, actor: Requester, network: str) -> str:
        """Remove an allow entry."""
        self._require_admin(actor, "allow_remove", network)
        removed = self.store.disallow(network)
        self.audit.record(actor=str(actor), action="allow_remove", target=removed, decision="done")
        return removed

    def allow_entries(self, actor: Requester) -> list[NetworkEntry]:
        """List the allowlist (agents and admins may look)."""
        if self.store.role_of(actor) is Role.USER:
            raise PolicyRefused("only agents and admins can see the allowlist", "not_agent")
        return self.store.allow_entries()

    def grant(self, actor: Requester, principal: str, role: Role) -> Requester:
        """Give ``platform:user_id`` a role."""
        self._require_admin(actor, "role_grant", principal)
        who = self.store.grant(principal, role)
        self.audit.record(
            actor=str(actor),
            action="role_grant",
            target=str(who),
            decision="done",
            reason=role.value,
        )
        return who

    def revoke(self, actor: Requester, principal: str) -> Requester:
        """Take a granted role away."""
        self._require_admin(actor, "role_revoke", principal)
        who = self.store.revoke(principal)
        self.audit.record(actor=str(actor), action="role_revoke", target=str(who), decision="done")
        return who

    def roles(self, actor: Requester) -> dict[str, Role]:
        """List who has which role (admins only)."""
        self._require_admin(actor, "role_list", "")
        return self.store.roles()
