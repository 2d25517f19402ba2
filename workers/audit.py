"""The audit trail: every request, accepted or refused, and every admin change, as a stream.

Events carry who (platform and user id), what (action and target), the decision and its reason,
when, and the job id; never a secret and never a chat message body.
Key layout: the Redis Stream ``pp:audit``; entries older than the retention are trimmed by id
(stream ids are millisecond timestamps) whenever one is appended.
Imports: redis, ``workers.models``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import redis
from pydantic import Field

from workers.models import Frozen, UtcDatetime, utc_now

AUDIT_KEY = "pp:audit"
DEFAULT_RETENTION = timedelta(days=180)


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


class AuditLog:
    """Appends audit events and reads them back."""

    def __init__(
        self, connection: redis.Redis, *, retention: timedelta = DEFAULT_RETENTION
    ) -> None:
        self._redis = connection
        self.retention = retention

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
            at=at or utc_now(),
            actor=actor,
            action=action,
            target=target[:256],
            decision=decision,
            reason=reason[:500],
            job_id=job_id,
            detail=detail,
        )
        oldest_ms = int((event.at - self.retention).timestamp() * 1000)
        with self._redis.pipeline() as pipe:
            pipe.xadd(AUDIT_KEY, {"event": event.model_dump_json()})
            pipe.xtrim(AUDIT_KEY, minid=f"{max(oldest_ms, 0)}-0", approximate=True)
            pipe.execute()
        return event

    def events(self, *, count: int = 1000) -> list[AuditEvent]:
        """Return the newest audit events, oldest first."""
        entries: list[Any] = self._redis.xrevrange(AUDIT_KEY, count=count) or []
        return [
            AuditEvent.model_validate_json(fields[b"event"]) for _id, fields in reversed(entries)
        ]
