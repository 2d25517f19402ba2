"""The audit trail: every request, accepted or refused, every admin change, every lost message.

Events carry who (platform and user id), what (action and target), the decision and its reason,
when, and the job id; never a secret, never a chat message body, and never data that was
deleted (a ``forget`` event says that something was deleted, not what).
Key layout: the Redis Stream ``pp:audit``. An entry's id is its ``at`` in milliseconds whenever
the stream allows it (ids only grow), so trimming by id (``XTRIM MINID``) drops exactly the
events older than the retention; it runs on every append and once at start-up.
Imports: redis, ``workers.models``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from pydantic import Field
from redis.typing import EncodableT, FieldT

from workers.models import Frozen, UtcDatetime, utc_now

AUDIT_KEY = "pp:audit"
DEFAULT_RETENTION = timedelta(days=180)
QUERY_PAGE = 500
"""Stream entries read per round trip while a query walks back in time."""


class AuditEvent(Frozen):
    """One audited action."""

    at: UtcDatetime
    actor: str
    action: str
    target: str = ""
    decision: str
    reason: str = ""
    job_id: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


def _stream_ms(moment: datetime) -> int:
    """A moment as a stream id's millisecond part (never negative)."""
    return max(int(moment.timestamp() * 1000), 0)


def _as_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


class AuditQuery:
    """The filters of one audit query, matched against events."""

    def __init__(self, *, user: str | None, target: str | None) -> None:
        self.user = user.strip().casefold() if user and user.strip() else None
        self.target = target.strip().casefold() if target and target.strip() else None
        self.network = _as_network(self.target) if self.target else None

    def matches(self, event: AuditEvent) -> bool:
        """Return whether the event passes the user and target filters."""
        if self.user is not None and self.user not in event.actor.casefold():
            return False
        if self.target is None:
            return True
        if self.network is None:
            return self.target in event.target.casefold()
        # An address or network matches by containment: 203.0.113.5 does not also find
        # 203.0.113.50, and 198.51.100.0/24 finds every scan inside it and the allow entry itself.
        for candidate in (event.target, str(event.detail.get("address", ""))):
            network = _as_network(candidate) if candidate else None
            if (
                network is not None
                and network.network_address in self.network
                and network.broadcast_address in self.network
            ):
                return True
        return False


class AuditLog:
    """Appends audit events, reads them back, and forgets what is past the retention."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if retention <= timedelta(0):
            raise ValueError("the audit retention must be positive")
        self._redis = connection
        self.retention = retention
        self.clock = clock

    def _cutoff_ms(self) -> int:
        return _stream_ms(self.clock() - self.retention)

    def record(
        self,
        *,
        actor: str,
        action: str,
        decision: str,
        target: str = "",
        reason: str = "",
        job_id: str = "",
        at: datetime | None = None,
        **detail: Any,
    ) -> AuditEvent:
        """Append one audit event (and trim what is past retention)."""
        event = AuditEvent(
            at=at or self.clock(),
            actor=actor,
            action=action,
            target=target[:256],
            decision=decision,
            reason=reason[:500],
            job_id=job_id,
            detail=detail,
        )
        fields: dict[FieldT, EncodableT] = {"event": event.model_dump_json()}
        cutoff = f"{self._cutoff_ms()}-0"
        # One round trip on the request path. Exact trimming (not "~"): an approximate trim
        # only drops whole radix-tree nodes, so expired events could outlive the retention.
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(AUDIT_KEY, fields, id=f"{_stream_ms(event.at)}-*")
            pipe.xtrim(AUDIT_KEY, minid=cutoff, approximate=False)
            added, _trimmed = pipe.execute(raise_on_error=False)
        if isinstance(added, redis.ResponseError):
            # ``at`` is older than the newest entry (a back-dated event, or this host's clock
            # lags another's): ids only grow, so it takes the server's "now" instead. An event
            # already past the retention is not kept at all: its new id would outlive it.
            if _stream_ms(event.at) < self._cutoff_ms():
                return event
            self._redis.xadd(AUDIT_KEY, fields)
        return event

    def enforce_retention(self) -> int:
        """Drop every event older than the retention; return how many (run at start-up)."""
        return int(self._redis.xtrim(AUDIT_KEY, minid=f"{self._cutoff_ms()}-0", approximate=False))

    def query(
        self,
        *,
        since: datetime | None = None,
        user: str | None = None,
        target: str | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Return up to ``limit`` events, newest first, optionally filtered.

        ``user`` matches the actor, ``platform:user_id`` or any part of it (case-insensitive);
        ``target`` is an address or network (matching events about addresses inside it) or
        else any part of the target as typed.
        """
        if limit < 1:
            return []
        wanted = AuditQuery(user=user, target=target)
        floor = self._cutoff_ms()
        if since is not None:
            floor = max(floor, _stream_ms(since))
        # Ids are never earlier than the events' ``at``, so the id range is a safe first cut;
        # ``at`` decides.
        earliest = since if since is not None else self.clock() - self.retention
        found: list[AuditEvent] = []
        upper = "+"
        while len(found) < limit:
            entries: list[Any] = (
                self._redis.xrevrange(AUDIT_KEY, max=upper, min=f"{floor}-0", count=QUERY_PAGE)
                or []
            )
            for _entry_id, fields in entries:
                event = _decode(fields)
                if event is not None and event.at >= earliest and wanted.matches(event):
                    found.append(event)
                    if len(found) == limit:
                        break
            if len(entries) < QUERY_PAGE:
                break
            oldest_id = entries[-1][0]
            upper = "(" + (oldest_id.decode() if isinstance(oldest_id, bytes) else str(oldest_id))
        return found

    def events(self, *, count: int = 1000) -> list[AuditEvent]:
        """Return the newest audit events, oldest first."""
        entries: list[Any] = self._redis.xrevrange(AUDIT_KEY, count=count) or []
        decoded = (_decode(fields) for _id, fields in reversed(entries))
        return [event for event in decoded if event is not None]


def _decode(fields: dict[bytes, bytes]) -> AuditEvent | None:
    """Parse one stream entry; None for an entry that is not an audit event of ours."""
    raw = fields.get(b"event")
    if raw is None:
        return None
    try:
        return AuditEvent.model_validate_json(raw)
    except ValueError:
        # Anyone with Redis access can append to the stream: one bad entry must not hide the
        # rest of the trail.
        return None
