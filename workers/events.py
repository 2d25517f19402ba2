"""The job event log: a Redis Stream of queued → started → (preliminary) → finished/failed.

Workers append; each chat front end reads with its own consumer group and acknowledges an
event only after the platform accepted the message, so a result is never lost while a bot is
down: unacknowledged events stay pending and are re-claimed when a consumer comes back.
The event model is open: ``preliminary`` is reserved for a fast first pass, and readers skip
kinds they do not know instead of failing.
Imports: redis, ``workers.models``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from workers.connection import as_text
from workers.models import EventKind, JobEvent

STREAM_KEY = "pp:events"
SUBSCRIBERS_PREFIX = "pp:subscribers:"
SUBSCRIBERS_TTL_S = 2 * 24 * 3600
DELIVERED_PREFIX = "pp:delivered:"
DELIVERED_TTL_S = 2 * 24 * 3600
MESSAGES_PREFIX = "pp:messages:"
STREAM_MAX_LENGTH = 100_000
"""Approximate cap on stored events; far above what can be pending between restarts."""


def _decode(event_id: bytes | str, fields: dict[bytes, bytes]) -> JobEvent | None:
    """Turn a stream entry into an event; None for kinds this version does not know."""
    # Anyone who can write to Redis can XADD: an entry that cannot be read is skipped like an
    # unknown kind, or it would be re-read and fail on every fetch, blocking all later events.
    try:
        text = {key.decode(): value.decode() for key, value in fields.items()}
        kind = EventKind(text.get("kind", ""))
        identifier = event_id.decode() if isinstance(event_id, bytes) else event_id
        return JobEvent(
            job_id=text["job_id"],
            kind=kind,
            at=datetime.fromisoformat(text["at"]),
            data=json.loads(text.get("data", "{}")),
            event_id=identifier,
        )
    except (KeyError, ValueError):
        return None


class EventLog:
    """Appends job events and reads them, with or without a consumer group."""

    def __init__(self, connection: redis.Redis, *, key: str = STREAM_KEY) -> None:
        self._redis = connection
        self.key = key

    def append(self, event: JobEvent) -> str:
        """Append an event; return its stream id."""
        entry_id = self._redis.xadd(
            self.key,
            {
                "job_id": event.job_id,
                "kind": event.kind.value,
                "at": event.at.isoformat(),
                "data": json.dumps(event.data, separators=(",", ":")),
            },
            maxlen=STREAM_MAX_LENGTH,
            approximate=True,
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def last_id(self) -> str:
        """Return the id of the newest event ("0-0" when empty), to read only what comes next."""
        newest = self._redis.xrevrange(self.key, count=1)
        if not newest:
            return "0-0"
        event_id = newest[0][0]
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    def ensure_group(self, group: str, *, start: str = "$") -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            self._redis.xgroup_create(self.key, group, id=start, mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def read_group(
        self, group: str, consumer: str, *, count: int = 50, block_ms: int = 1000
    ) -> list[JobEvent]:
        """Read new events for this consumer (blocking up to ``block_ms``)."""
        answer = self._redis.xreadgroup(
            group, consumer, {self.key: ">"}, count=count, block=block_ms
        )
        return self._known(group, answer)

    def claim_stale(
        self, group: str, consumer: str, *, idle_ms: int, count: int = 50
    ) -> list[JobEvent]:
        """Take over events another (dead) consumer read but never acknowledged."""
        _, entries, *_ = self._redis.xautoclaim(
            self.key, group, consumer, min_idle_time=idle_ms, start_id="0-0", count=count
        )
        return [
            event
            for entry_id, fields in entries
            if fields is not None and (event := _decode(entry_id, fields)) is not None
        ]

    def pending_for(self, group: str, consumer: str, *, count: int = 50) -> list[JobEvent]:
        """Re-read this consumer's own unacknowledged events (after a restart under one name)."""
        answer = self._redis.xreadgroup(group, consumer, {self.key: "0"}, count=count)
        return self._known(group, answer)

    def ack(self, group: str, event_id: str) -> None:
        """Acknowledge an event: it was delivered (or deliberately skipped)."""
        self._redis.xack(self.key, group, event_id)

    def read_after(self, last_id: str, *, block_ms: int = 1000, count: int = 100) -> list[JobEvent]:
        """Read events after ``last_id`` without a group (one-shot CLI waits)."""
        answer = self._redis.xread({self.key: last_id}, count=count, block=block_ms)
        return self._events(answer)

    def _known(self, group: str, answer: Any) -> list[JobEvent]:
        """Decode a group read; acknowledge (skip) kinds this version does not know."""
        events: list[JobEvent] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                event = _decode(entry_id, fields) if fields is not None else None
                if event is None:
                    self.ack(group, entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
                else:
                    events.append(event)
        return events

    @staticmethod
    def _events(answer: Any) -> list[JobEvent]:
        events: list[JobEvent] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                if fields is None:
                    continue
                event = _decode(entry_id, fields)
                if event is not None:
                    events.append(event)
        return events


def subscribe(connection: redis.Redis, job_id: str, reply_to: dict[str, Any]) -> None:
    """Add a reply address (opaque JSON) to the job's subscribers."""
    key = f"{SUBSCRIBERS_PREFIX}{job_id}"
    with connection.pipeline() as pipe:
        pipe.rpush(key, json.dumps(reply_to, separators=(",", ":")))
        pipe.expire(key, SUBSCRIBERS_TTL_S)
        pipe.execute()


def subscribers(connection: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """Return the reply addresses waiting for a job's events."""
    raw = connection.lrange(f"{SUBSCRIBERS_PREFIX}{job_id}", 0, -1)
    return [json.loads(item) for item in raw]


class GroupFeed:
    """One consumer's view of the event log (the chat core's ``EventFeed``).

    Each fetch first re-claims events a dead consumer of the same group left unacknowledged
    (idle longer than ``stale_ms``), then reads new ones.
    """

    def __init__(
        self,
        connection: redis.Redis,
        log: EventLog,
        *,
        group: str,
        consumer: str,
        start: str = "0",
        block_ms: int = 500,
        stale_ms: int = 60_000,
    ) -> None:
        self._redis = connection
        self.log = log
        self.group = group
        self.consumer = consumer
        self.block_ms = block_ms
        self.stale_ms = stale_ms
        log.ensure_group(group, start=start)
        self._recovered = False

    def fetch(self) -> list[JobEvent]:
        """Return this consumer's own pending events once, then stale and new events."""
        if not self._recovered:
            self._recovered = True
            pending = self.log.pending_for(self.group, self.consumer)
            if pending:
                return pending
        stale = self.log.claim_stale(self.group, self.consumer, idle_ms=self.stale_ms)
        if stale:
            return stale
        return self.log.read_group(self.group, self.consumer, block_ms=self.block_ms)

    def ack(self, event: JobEvent) -> None:
        """Acknowledge a delivered event."""
        self.log.ack(self.group, event.event_id)

    def retry_later(self) -> None:
        """Re-read own pending events on the next fetch (after a failed delivery)."""
        self._recovered = False

    def subscribers(self, job_id: str) -> list[dict[str, Any]]:
        """Return the reply addresses of a job."""
        return subscribers(self._redis, job_id)

    def was_delivered(self, event: JobEvent, recipient: str) -> bool:
        """Return whether this event already reached this recipient (before a crash)."""
        return bool(self._redis.exists(self._mark(event, recipient)))

    def mark_delivered(self, event: JobEvent, recipient: str) -> None:
        """Remember that the platform accepted this event's message for this recipient."""
        self._redis.set(self._mark(event, recipient), 1, ex=DELIVERED_TTL_S)

    def _mark(self, event: JobEvent, recipient: str) -> str:
        return f"{DELIVERED_PREFIX}{self.group}:{event.event_id}:{recipient}"

    def close(self, *, destroy: bool = False) -> None:
        """Leave the group; ``destroy`` removes a per-session group entirely."""
        if destroy:
            self._redis.xgroup_destroy(self.log.key, self.group)
        else:
            self._redis.xgroup_delconsumer(self.log.key, self.group, self.consumer)


class MessageIndex:
    """Which chat message shows a job for each recipient, so updates edit it in place.

    Key layout: ``pp:messages:<job_id>`` is a hash recipient → platform message id (TTL 2 days).
    """

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection

    def remember(self, job_id: str, recipient: str, message_id: str) -> None:
        """Record the message that shows the job to this recipient."""
        key = f"{MESSAGES_PREFIX}{job_id}"
        with self._redis.pipeline() as pipe:
            pipe.hset(key, recipient, message_id)
            pipe.expire(key, SUBSCRIBERS_TTL_S)
            pipe.execute()

    def lookup(self, job_id: str, recipient: str) -> str | None:
        """Return the message that shows the job to this recipient, if any."""
        value = self._redis.hget(f"{MESSAGES_PREFIX}{job_id}", recipient)
        return as_text(value) if value is not None else None
