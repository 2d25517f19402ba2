"""Admin operations with their audit trail: allowlist, opt-outs and roles, for every front end.

The CLI, the console and the chat bots all call these, so an allow entry added from Slack is
the one the CLI lists, and every change — done or refused — is audited the same way.
Allowlist files (``allow import`` / ``allow export``) are YAML lists of entries, validated in
full before anything is written.
Imports: PyYAML, pydantic, ``workers.audit``, ``workers.datafile``, ``workers.models``,
``workers.policy``, ``workers.store``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import ConfigDict, Field, RootModel
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from workers.audit import AuditLog
from workers.datafile import DataFileError, load_data_file
from workers.models import Frozen, Requester, Role, UtcDatetime, utc_now
from workers.policy import (
    DEFAULT_SCOPE,
    BoundedNetworkText,
    EntryChange,
    NetworkEntry,
    PolicyRefused,
    ScopeName,
    parse_scope,
)
from workers.store import AllowImport, PolicyStore

NOTE_LIMIT = 200

ResultT = TypeVar("ResultT")


class AllowFileEntry(Frozen):
    """One entry of an allowlist file; ``added_by``/``added_at`` default to the importer and now."""

    network: BoundedNetworkText
    scope: ScopeName = DEFAULT_SCOPE
    lab: bool = False
    note: str = Field(default="", max_length=NOTE_LIMIT)
    added_by: str | None = Field(default=None, min_length=1, max_length=200)
    added_at: UtcDatetime | None = None


class AllowFile(RootModel[list[AllowFileEntry]]):
    """An allowlist file: a YAML list of entries, as ``portpatrol allow export`` prints it."""

    model_config = ConfigDict(frozen=True)


def load_allow_file(source: Path) -> list[AllowFileEntry]:
    """Read and validate a whole allowlist file; raise ``DataFileError`` naming file and line."""
    items = load_data_file(source, AllowFile).root
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.network in first_index:
            lines = _item_lines(source, len(items))
            raise DataFileError(
                f"{source}:{lines[index]}: {item.network} is listed twice (first on line "
                f"{lines[first_index[item.network]]}); a network has one entry in one scope"
            )
        first_index[item.network] = index
    return items


def _item_lines(source: Path, count: int) -> list[int | str]:
    # load_data_file validated the file already; composing it again (no construction) only
    # recovers the line of each list item for the message.
    try:
        root = yaml.compose(source.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeError, yaml.YAMLError):
        root = None
    if not isinstance(root, SequenceNode) or len(root.value) != count:
        return ["?"] * count
    lines: list[int | str] = []
    for item in root.value:
        node = item
        if isinstance(item, MappingNode):
            node = next(
                (
                    value
                    for key, value in item.value
                    if isinstance(key, ScalarNode) and key.value == "network"
                ),
                item,
            )
        lines.append(node.start_mark.line + 1)
    return lines


def dump_allow_entries(entries: Sequence[NetworkEntry]) -> str:
    """Return entries as an allowlist file (YAML) that ``load_allow_file`` reads back."""
    documents = [
        {
            "network": entry.network,
            "scope": entry.scope,
            "lab": entry.lab,
            "note": entry.note,
            "added_by": entry.added_by,
            "added_at": entry.added_at.isoformat(),
        }
        for entry in entries
    ]
    return yaml.safe_dump(documents, sort_keys=False, allow_unicode=True)


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
            self._refused(actor, action, target, "not an admin")
            raise PolicyRefused("only admins can do that", "not_admin")

    def _refused(self, actor: Requester, action: str, target: str, reason: str) -> None:
        self.audit.record(
            actor=str(actor), action=action, target=target, decision="refused", reason=reason
        )

    def _attempt(
        self, actor: Requester, action: str, target: str, change: Callable[[], ResultT]
    ) -> ResultT:
        """Run a store change; a refusal (bad network, last admin, …) is audited, then raised."""
        try:
            return change()
        except PolicyRefused as refusal:
            self._refused(actor, action, target, refusal.reason)
            raise

    def _note(self, actor: Requester, action: str, target: str, note: str) -> None:
        if len(note) > NOTE_LIMIT:
            reason = f"the note is too long ({NOTE_LIMIT} characters at most)"
            self._refused(actor, action, target, reason)
            raise PolicyRefused(reason, "note")

    # Allowlist --------------------------------------------------------------------------------

    def allow(
        self,
        actor: Requester,
        network: str,
        *,
        note: str = "",
        lab: bool = False,
        scope: str = DEFAULT_SCOPE,
    ) -> NetworkEntry:
        """Add an allow entry (``lab`` permits special-purpose space)."""
        return self.add_allow(actor, network, note=note, lab=lab, scope=scope).entry

    def add_allow(
        self,
        actor: Requester,
        network: str,
        *,
        note: str = "",
        lab: bool = False,
        scope: str = DEFAULT_SCOPE,
    ) -> EntryChange:
        """Add an allow entry in a scope; say which entry it replaced (one entry per network)."""
        self._require_admin(actor, "allow_add", network)
        self._note(actor, "allow_add", network, note)

        def change() -> EntryChange:
            entry = NetworkEntry.make(
                network, added_by=str(actor), at=self.clock(), note=note, lab=lab, scope=scope
            )
            return EntryChange(entry, self.store.put_allow(entry))

        done = self._attempt(actor, "allow_add", network, change)
        self.audit.record(
            actor=str(actor),
            action="allow_add",
            target=done.entry.network,
            decision="done",
            reason=note,
            lab=lab,
            scope=done.entry.scope,
            replaced_scope=done.replaced.scope if done.replaced else None,
        )
        return done

    def disallow(self, actor: Requester, network: str) -> str:
        """Remove an allow entry."""
        self._require_admin(actor, "allow_remove", network)
        removed = self._attempt(
            actor, "allow_remove", network, lambda: self.store.disallow(network)
        )
        self.audit.record(actor=str(actor), action="allow_remove", target=removed, decision="done")
        return removed

    def allow_entries(self, actor: Requester, scope: str | None = None) -> list[NetworkEntry]:
        """List the allowlist, or one scope of it (agents and admins may look)."""
        if self.store.role_of(actor) is Role.USER:
            raise PolicyRefused("only agents and admins can see the allowlist", "not_agent")
        return self.store.allow_entries(None if scope is None else parse_scope(scope))

    def export_allow(self, actor: Requester, scope: str | None = None) -> str:
        """Return the allowlist (or one scope) as an allowlist file (YAML)."""
        return dump_allow_entries(self.allow_entries(actor, scope))

    def import_allow(
        self, actor: Requester, source: Path, *, replace_scope: bool = False
    ) -> AllowImport:
        """Validate a whole allowlist file, then write every entry in one transaction.

        A bad file changes nothing (``DataFileError`` names the file and line). Entries keep the
        file's ``added_by``/``added_at`` so an export imports back unchanged; entries without
        them are the importer's, now. With ``replace_scope`` the file's scopes end up holding
        exactly the file's entries.
        """
        self._require_admin(actor, "allow_import", str(source))
        try:
            items = load_allow_file(source)
        except DataFileError as error:
            self._refused(actor, "allow_import", str(source), str(error).splitlines()[0])
            raise
        at = self.clock()
        entries = [
            NetworkEntry(
                network=item.network,
                scope=item.scope,
                lab=item.lab,
                note=item.note,
                added_by=item.added_by or str(actor),
                added_at=item.added_at or at,
            )
            for item in items
        ]
        outcome = self.store.import_allow(entries, replace_scopes=replace_scope)
        self.audit.record(
            actor=str(actor),
            action="allow_import",
            target=str(source),
            decision="done",
            reason=f"{outcome.written} entries",
            count=outcome.written,
            scopes=sorted({entry.scope for entry in entries}),
            replaced=len(outcome.replaced),
            removed=len(outcome.removed),
            replace_scope=replace_scope,
        )
        return outcome

    # Opt-outs ---------------------------------------------------------------------------------

    def opt_out(self, actor: Requester, network: str, *, note: str = "") -> EntryChange:
        """Put a network on the opt-out list: its owner asked not to be scanned."""
        self._require_admin(actor, "optout_add", network)
        self._note(actor, "optout_add", network, note)

        def change() -> EntryChange:
            entry = NetworkEntry.make(network, added_by=str(actor), at=self.clock(), note=note)
            return EntryChange(entry, self.store.put_opt_out(entry))

        done = self._attempt(actor, "optout_add", network, change)
        self.audit.record(
            actor=str(actor),
            action="optout_add",
            target=done.entry.network,
            decision="done",
            reason=note,
            replaced=done.replaced is not None,
        )
        return done

    def remove_opt_out(self, actor: Requester, network: str) -> str:
        """Take a network off the opt-out list."""
        self._require_admin(actor, "optout_remove", network)
        removed = self._attempt(
            actor, "optout_remove", network, lambda: self.store.remove_opt_out(network)
        )
        self.audit.record(actor=str(actor), action="optout_remove", target=removed, decision="done")
        return removed

    def opt_out_entries(self, actor: Requester) -> list[NetworkEntry]:
        """List the opt-out list (agents and admins may look)."""
        if self.store.role_of(actor) is Role.USER:
            raise PolicyRefused("only agents and admins can see the opt-out list", "not_agent")
        return self.store.opt_outs()

    # Roles ------------------------------------------------------------------------------------

    def grant(self, actor: Requester, principal: str, role: Role) -> Requester:
        """Give ``platform:user_id`` a role (an admin's downgrade is checked like a revoke)."""
        self._require_admin(actor, "role_grant", principal)
        who = self._attempt(
            actor,
            "role_grant",
            principal,
            lambda: self.store.grant(principal, role, actor=str(actor)),
        )
        self.audit.record(
            actor=str(actor),
            action="role_grant",
            target=str(who),
            decision="done",
            reason=role.value,
        )
        return who

    def revoke(self, actor: Requester, principal: str) -> Requester:
        """Take a granted role away; never the last admin's (see ``PolicyStore.revoke``)."""
        self._require_admin(actor, "role_revoke", principal)
        who = self._attempt(
            actor, "role_revoke", principal, lambda: self.store.revoke(principal, actor=str(actor))
        )
        self.audit.record(actor=str(actor), action="role_revoke", target=str(who), decision="done")
        return who

    def roles(self, actor: Requester) -> dict[str, Role]:
        """List who has which role (admins only)."""
        self._require_admin(actor, "role_list", "")
        return self.store.roles()
