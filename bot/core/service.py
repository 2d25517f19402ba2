"""The protocols the chat core depends on; real implementations are wired in ``bot.wiring``.

Imports: ``workers`` value-object modules only (no Redis, no rq).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from bot.core.messages import Reply, ReplyAddress
from workers.models import JobEvent, Requester, Role, ScanReport
from workers.policy import EntryChange, NetworkEntry
from workers.tickets import JobView, Ticket


class ScanQueue(Protocol):
    """The scan side's front door (``workers.queue.ScanService``)."""

    def role_of(self, requester: Requester) -> Role:
        """Return the caller's role."""
        ...

    def submit_scan(
        self,
        requester: Requester,
        target_text: str,
        profile_name: str = "quick",
        reply_to: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """Accept a scan or raise ``workers.tickets.ScanRefused``."""
        ...

    def status(self, job_id: str) -> JobView | None:
        """Return where a job stands."""
        ...

    def last_job(self, requester: Requester) -> str | None:
        """Return the caller's most recent job id."""
        ...

    def history(self, requester: Requester, target_text: str | None) -> list[ScanReport]:
        """Return past reports the caller may see."""
        ...

    def forget(self, requester: Requester) -> str:
        """Delete what is stored about the caller; return a sentence saying what."""
        ...


class WatchEntry(Protocol):
    """One standing rescan as the chat shows it (``workers.watches.Watch``)."""

    @property
    def watch_id(self) -> str:
        """The watch's id."""
        ...

    @property
    def target(self) -> str:
        """The target as typed."""
        ...

    @property
    def address(self) -> str:
        """The address pinned when the watch was added."""
        ...

    @property
    def interval(self) -> str:
        """How often it runs: daily, weekly."""
        ...

    @property
    def created_at(self) -> datetime:
        """When it was added (UTC)."""
        ...


class WatchBook(Protocol):
    """Adds, lists and removes watches (``workers.watches.WatchService``)."""

    def add(
        self,
        requester: Requester,
        target_text: str,
        interval_name: str = "daily",
        reply_to: Mapping[str, Any] | None = None,
    ) -> WatchEntry:
        """Watch an address or raise ``workers.tickets.ScanRefused``."""
        ...

    def remove(self, requester: Requester, target_text: str) -> WatchEntry:
        """Stop a watch or raise ``workers.tickets.ScanRefused``."""
        ...

    def watches_of(self, requester: Requester) -> Sequence[WatchEntry]:
        """Return the caller's watches, oldest first."""
        ...


class CheckLinkIssuer(Protocol):
    """Hands out the one-time own-address link (``/check``)."""

    def __call__(self, requester: Requester, reply_to: dict[str, Any]) -> str:
        """Return the full URL the user should open from their connection."""
        ...


class AdminOps(Protocol):
    """Allowlist, opt-out and role administration (``workers.admin.Administration``)."""

    def allow(
        self,
        actor: Requester,
        network: str,
        *,
        note: str = "",
        lab: bool = False,
        scope: str = "default",
    ) -> NetworkEntry:
        """Add an allow entry."""
        ...

    def add_allow(
        self,
        actor: Requester,
        network: str,
        *,
        note: str = "",
        lab: bool = False,
        scope: str = "default",
    ) -> EntryChange:
        """Add an allow entry in a scope; say which entry it replaced."""
        ...

    def disallow(self, actor: Requester, network: str) -> str:
        """Remove an allow entry."""
        ...

    def allow_entries(self, actor: Requester, scope: str | None = None) -> list[NetworkEntry]:
        """List allow entries (of one scope)."""
        ...

    def opt_out(self, actor: Requester, network: str, *, note: str = "") -> EntryChange:
        """Put a network on the opt-out list."""
        ...

    def remove_opt_out(self, actor: Requester, network: str) -> str:
        """Take a network off the opt-out list."""
        ...

    def opt_out_entries(self, actor: Requester) -> list[NetworkEntry]:
        """List opt-out entries."""
        ...

    def grant(self, actor: Requester, principal: str, role: Role) -> Requester:
        """Grant a role."""
        ...

    def revoke(self, actor: Requester, principal: str) -> Requester:
        """Revoke a role."""
        ...

    def roles(self, actor: Requester) -> dict[str, Role]:
        """List roles."""
        ...


class EventFeed(Protocol):
    """Job events for one consumer, and the reply addresses waiting for each job."""

    def fetch(self) -> list[JobEvent]:
        """Return events not yet acknowledged by this consumer (blocking briefly)."""
        ...

    def ack(self, event: JobEvent) -> None:
        """Acknowledge an event: every subscriber of this platform has it."""
        ...

    def subscribers(self, job_id: str) -> list[dict[str, Any]]:
        """Return the stored reply addresses of a job."""
        ...

    def retry_later(self) -> None:
        """Make the next fetch return the unacknowledged events again."""
        ...

    def was_delivered(self, event: JobEvent, recipient: str) -> bool:
        """Return whether this event already reached this recipient."""
        ...

    def mark_delivered(self, event: JobEvent, recipient: str) -> None:
        """Remember that the platform accepted this event's message for this recipient."""
        ...


class ReplySink(Protocol):
    """Sends or edits a message on one platform."""

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Deliver a reply; raise ``DeliveryFailed`` to have it retried later."""
        ...


class DeliveryFailed(Exception):
    """The platform did not accept a message; the event stays unacknowledged."""


class DeliveryGivenUp(DeliveryFailed):
    """The platform refused a message for good (bot blocked, channel archived).

    Retrying cannot help, so the event counts as delivered; the refusal is audited instead.
    """


class DeliveryAudit(Protocol):
    """Records a message the platform refused for good (an audit event, never the text)."""

    def __call__(self, address: ReplyAddress, job_id: str | None, reason: str) -> None:
        """Record one ``delivery_failed`` event for this recipient and job."""
        ...


class AuditEntry(Protocol):
    """One audit event as the chat shows it (``workers.audit.AuditEvent``)."""

    @property
    def at(self) -> datetime:
        """When it happened (UTC)."""
        ...

    @property
    def actor(self) -> str:
        """Who acted: ``platform:user_id``."""
        ...

    @property
    def action(self) -> str:
        """What was asked: scan, allow_add, forget, deliver…"""
        ...

    @property
    def target(self) -> str:
        """What it was about, as typed."""
        ...

    @property
    def decision(self) -> str:
        """accepted, refused, done, failed, delivery_failed…"""
        ...

    @property
    def reason(self) -> str:
        """Why (the policy basis or the refusal)."""
        ...

    @property
    def job_id(self) -> str:
        """The scan job concerned, if any."""
        ...


class AuditTrail(Protocol):
    """Reads and appends the audit trail (``workers.audit.AuditLog``)."""

    def query(
        self,
        *,
        since: datetime | None = None,
        user: str | None = None,
        target: str | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEntry]:
        """Return matching events, newest first."""
        ...

    def record(
        self,
        *,
        actor: str,
        action: str,
        decision: str,
        target: str = "",
        reason: str = "",
        job_id: str = "",
        **detail: Any,
    ) -> object:
        """Append one event."""
        ...
