"""Tests for workers.events (the job event stream) and bot.core.delivery, on the real Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from bot.core.delivery import Delivery, reply_for_event
from bot.core.messages import Reply, ReplyAddress, ReplyKind
from bot.core.service import DeliveryFailed
from workers.events import (
    STREAM_KEY,
    SUBSCRIBERS_PREFIX,
    SUBSCRIBERS_TTL_S,
    EventLog,
    GroupFeed,
    subscribe,
    subscribers,
)
from workers.models import EventKind, JobEvent, Requester, Risk, ScanReport

AT = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
GROUP = "bot"


def report_document(job_id: str = "job-1") -> dict[str, Any]:
    """A valid report document for a finished event."""
    return ScanReport(
        job_id=job_id,
        target="127.0.0.23",
        address="127.0.0.23",
        profile="quick",
        requested_by=Requester(platform="console", user="tester"),
        started_at=AT,
        finished_at=AT,
        host_state="up",
        complete=True,
        risk=Risk.NONE,
    ).to_document()


@pytest.fixture
def log(redis_client: redis.Redis) -> EventLog:
    """The event log on the flushed test Redis."""
    return EventLog(redis_client)


def pending_count(client: redis.Redis, group: str = GROUP) -> int:
    """Return how many events of the group are read but not acknowledged."""
    return int(client.xpending(STREAM_KEY, group)["pending"])


def feed(client: redis.Redis, log: EventLog, consumer: str = "c1", **options: Any) -> GroupFeed:
    """A group feed with a short block so empty reads return quickly."""
    options.setdefault("block_ms", 10)
    return GroupFeed(client, log, group=GROUP, consumer=consumer, **options)


# EventLog ---------------------------------------------------------------------------------------


def test_append_and_read_after_round_trip(log: EventLog) -> None:
    """Appended events read back in order with their kind, time, data and stream id."""
    assert log.last_id() == "0-0"
    first = log.append(JobEvent.make("job-1", EventKind.QUEUED, at=AT, position=3))
    second = log.append(
        JobEvent.make("job-1", EventKind.FAILED, at=AT, reason="\x1b[31m<b>boom</b> ünï")
    )
    events = log.read_after("0-0", block_ms=10)
    assert [(event.event_id, event.kind) for event in events] == [
        (first, EventKind.QUEUED),
        (second, EventKind.FAILED),
    ]
    assert events[0].data == {"position": 3}
    assert events[1].data == {"reason": "\x1b[31m<b>boom</b> ünï"}
    assert events[0].at == AT
    assert log.last_id() == second


def test_read_after_returns_only_later_events(log: EventLog) -> None:
    """Reading after an id skips that event and everything before it."""
    log.append(JobEvent.make("job-1", EventKind.QUEUED, at=AT))
    mark = log.last_id()
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    assert [event.kind for event in log.read_after(mark, block_ms=10)] == [EventKind.STARTED]
    assert log.read_after(log.last_id(), block_ms=10) == []


def test_read_after_skips_unknown_and_malformed_entries(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """Entries a newer version or a stranger wrote are skipped by one-shot reads too."""
    redis_client.xadd(STREAM_KEY, {"kind": "teleported", "job_id": "x", "at": AT.isoformat()})
    redis_client.xadd(STREAM_KEY, {"kind": "finished", "job_id": "x", "at": "yesterday"})
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    assert [event.job_id for event in log.read_after("0-0", block_ms=10)] == ["job-1"]


def test_large_report_round_trips(log: EventLog) -> None:
    """A finished event carries the whole report document through the stream."""
    document = report_document()
    document["notes"] = ["n" * 50_000]
    log.append(JobEvent.make("job-1", EventKind.FINISHED, at=AT, report=document))
    [event] = log.read_after("0-0", block_ms=10)
    assert event.data["report"] == document


# GroupFeed --------------------------------------------------------------------------------------


def test_ack_removes_the_event_from_pending(log: EventLog, redis_client: redis.Redis) -> None:
    """A fetched event stays pending until acknowledged, and ack clears it."""
    reader = feed(redis_client, log)
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    [event] = reader.fetch()
    assert pending_count(redis_client) == 1
    reader.ack(event)
    assert pending_count(redis_client) == 0
    assert reader.fetch() == []


def test_unacked_event_returns_after_restart_under_the_same_name(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """A new feed with the same consumer name gets its predecessor's unacknowledged events first."""
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    [lost] = feed(redis_client, log).fetch()
    restarted = feed(redis_client, log)
    [again] = restarted.fetch()
    assert again.event_id == lost.event_id
    restarted.ack(again)
    assert pending_count(redis_client) == 0


def test_stale_event_is_claimed_by_another_consumer(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """An event a dead consumer never acknowledged is taken over once it is older than stale_ms."""
    log.append(JobEvent.make("job-1", EventKind.FINISHED, at=AT, report=report_document()))
    [taken] = feed(redis_client, log, consumer="dead").fetch()
    patient = feed(redis_client, log, consumer="patient", stale_ms=600_000)
    assert patient.fetch() == []
    time.sleep(0.05)
    survivor = feed(redis_client, log, consumer="survivor", stale_ms=10)
    [claimed] = survivor.fetch()
    assert claimed.event_id == taken.event_id
    [owner] = redis_client.xpending_range(STREAM_KEY, GROUP, "-", "+", 10)
    assert owner["consumer"] == b"survivor"
    survivor.ack(claimed)
    assert pending_count(redis_client) == 0


def test_retry_later_refetches_own_pending_events(log: EventLog, redis_client: redis.Redis) -> None:
    """After a failed delivery, the next fetch returns the same unacknowledged events."""
    reader = feed(redis_client, log)
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    log.append(JobEvent.make("job-2", EventKind.STARTED, at=AT))
    first = reader.fetch()
    assert reader.fetch() == []
    reader.retry_later()
    assert [event.event_id for event in reader.fetch()] == [event.event_id for event in first]


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "teleported", "job_id": "x", "at": AT.isoformat(), "data": "{}"},
        {"kind": "", "job_id": "x"},
        {"job_id": "x", "at": AT.isoformat()},
        {"nothing": "useful"},
        {"kind": "finished", "at": AT.isoformat()},
        {"kind": "finished", "job_id": "x", "at": "not a time"},
        {"kind": "finished", "job_id": "x", "at": "2026-05-06T07:08:09"},
        {"kind": "finished", "job_id": "x", "at": AT.isoformat(), "data": "{not json"},
        {"kind": "finished", "job_id": "x", "at": AT.isoformat(), "data": "[1, 2]"},
        {"kind": "failed", "job_id": "x", "at": AT.isoformat(), "data": "null"},
        {"kind": b"started\xff", "job_id": "x", "at": AT.isoformat()},
        {"kind": "started", "job_id": b"\xc3\x28", "at": AT.isoformat()},
        {"kind": "started\x1b[31m", "job_id": "x" * 100_000, "at": AT.isoformat()},
    ],
    ids=range(13),
)
def test_unreadable_entries_are_acknowledged_and_skipped(
    log: EventLog, redis_client: redis.Redis, fields: dict[str, str | bytes]
) -> None:
    """Entries of unknown kind or malformed fields are acked and skipped, never raised."""
    reader = feed(redis_client, log)
    redis_client.xadd(STREAM_KEY, fields)  # type: ignore[arg-type]
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    [event] = reader.fetch()
    assert event.job_id == "job-1"
    assert pending_count(redis_client) == 1
    reader.ack(event)
    assert pending_count(redis_client) == 0


def test_group_start_decides_what_a_new_group_sees(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """A group created at "$" sees only later events; one created at "0" sees the backlog."""
    log.append(JobEvent.make("old", EventKind.STARTED, at=AT))
    fresh = GroupFeed(redis_client, log, group="fresh", consumer="c", start="$", block_ms=10)
    backlog = GroupFeed(redis_client, log, group="backlog", consumer="c", start="0", block_ms=10)
    log.append(JobEvent.make("new", EventKind.STARTED, at=AT))
    assert [event.job_id for event in fresh.fetch()] == ["new"]
    assert [event.job_id for event in backlog.fetch()] == ["old", "new"]


def test_ensure_group_twice_is_harmless(log: EventLog, redis_client: redis.Redis) -> None:
    """Creating an existing group again keeps it and its position."""
    first = feed(redis_client, log)
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    [event] = first.fetch()
    first.ack(event)
    second = feed(redis_client, log, consumer="c2")
    assert second.fetch() == []


def test_close_destroys_a_session_group(log: EventLog, redis_client: redis.Redis) -> None:
    """close(destroy=True) removes the group; close() only removes the consumer."""
    kept = feed(redis_client, log, consumer="kept")
    kept.close()
    assert [group["name"] for group in redis_client.xinfo_groups(STREAM_KEY)] == [b"bot"]
    assert redis_client.xinfo_consumers(STREAM_KEY, GROUP) == []
    feed(redis_client, log).close(destroy=True)
    assert redis_client.xinfo_groups(STREAM_KEY) == []


def test_subscribers_round_trip_with_ttl(redis_client: redis.Redis) -> None:
    """Reply addresses stored for a job come back in order and expire after about two days."""
    subscribe(redis_client, "job-1", {"platform": "console", "chat": "a"})
    subscribe(redis_client, "job-1", {"platform": "slack", "chat": "C1", "thread": "1.2"})
    assert subscribers(redis_client, "job-1") == [
        {"platform": "console", "chat": "a"},
        {"platform": "slack", "chat": "C1", "thread": "1.2"},
    ]
    assert subscribers(redis_client, "job-2") == []
    ttl = redis_client.ttl(f"{SUBSCRIBERS_PREFIX}job-1")
    assert SUBSCRIBERS_TTL_S - 60 <= ttl <= SUBSCRIBERS_TTL_S


# Delivery ---------------------------------------------------------------------------------------


@dataclass
class RecordingSink:
    """A reply sink that records what it sends and can refuse the first few sends."""

    client: redis.Redis
    failures: int = 0
    group: str = GROUP
    sent: list[tuple[ReplyAddress, Reply]] = field(default_factory=list)
    pending_at_send: list[int] = field(default_factory=list)

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Record the reply (and how many events were pending then), or fail while told to."""
        self.pending_at_send.append(pending_count(self.client, self.group))
        if self.failures:
            self.failures -= 1
            raise DeliveryFailed("platform said 502")
        self.sent.append((address, reply))


def address(platform: str, chat: str) -> dict[str, Any]:
    """A stored reply address."""
    return ReplyAddress(platform=platform, chat=chat).to_payload()


def test_delivery_acks_only_after_the_platform_accepted(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """The event is still pending while it is sent, and acknowledged once the send succeeded."""
    subscribe(redis_client, "job-1", address("console", "a"))
    sink = RecordingSink(redis_client)
    delivery = Delivery(feed(redis_client, log), sink, platform="console")
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    assert delivery.run_once() is True
    assert sink.pending_at_send == [1]
    assert pending_count(redis_client) == 0
    assert [reply.text for _, reply in sink.sent] == ["Scanning now…"]


def test_failed_send_leaves_the_event_pending_for_a_later_run(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """A sink raising DeliveryFailed leaves the event pending; a later run delivers and acks it."""
    subscribe(redis_client, "job-1", address("console", "a"))
    sink = RecordingSink(redis_client, failures=2)
    delivery = Delivery(feed(redis_client, log), sink, platform="console")
    log.append(JobEvent.make("job-1", EventKind.FAILED, at=AT, reason="nmap failed (exit 1)"))
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    assert delivery.run_once() is False
    assert pending_count(redis_client) == 2
    assert delivery.run_once() is False
    assert sink.sent == []
    assert delivery.run_once() is True
    assert [reply.kind for _, reply in sink.sent] == [ReplyKind.FAILED, ReplyKind.PROGRESS]
    assert pending_count(redis_client) == 0


def test_failed_send_is_delivered_after_a_restart(log: EventLog, redis_client: redis.Redis) -> None:
    """A bot that died after a failed send delivers the event when it comes back."""
    subscribe(redis_client, "job-1", address("console", "a"))
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    broken = RecordingSink(redis_client, failures=1)
    assert Delivery(feed(redis_client, log), broken, platform="console").run_once() is False
    working = RecordingSink(redis_client)
    assert Delivery(feed(redis_client, log), working, platform="console").run_once() is True
    assert len(working.sent) == 1
    assert pending_count(redis_client) == 0


def test_only_subscribers_of_the_platform_and_chat_get_replies(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """Delivery sends to its own platform's addresses, and only its chat's when one is set."""
    for payload in (
        address("console", "a"),
        address("console", "b"),
        address("slack", "a"),
        {"platform": "console"},
        {"platform": "console", "chat": "c", "evil": "<script>"},
        {"junk": True},
    ):
        subscribe(redis_client, "job-1", payload)
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    everyone = RecordingSink(redis_client, group="all")
    Delivery(
        GroupFeed(redis_client, log, group="all", consumer="c", block_ms=10),
        everyone,
        platform="console",
    ).run_once()
    only_b = RecordingSink(redis_client, group="b")
    Delivery(
        GroupFeed(redis_client, log, group="b", consumer="c", block_ms=10),
        only_b,
        platform="console",
        chat="b",
    ).run_once()
    assert [(sent.platform, sent.chat) for sent, _ in everyone.sent] == [
        ("console", "a"),
        ("console", "b"),
    ]
    assert [(sent.platform, sent.chat) for sent, _ in only_b.sent] == [("console", "b")]


def test_events_without_a_message_or_subscribers_are_acknowledged(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """Queued events and events nobody here waits for are acked without sending anything."""
    subscribe(redis_client, "job-1", address("slack", "C1"))
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    log.append(JobEvent.make("job-2", EventKind.QUEUED, at=AT, position=1))
    sink = RecordingSink(redis_client)
    assert Delivery(feed(redis_client, log), sink, platform="console").run_once() is True
    assert sink.sent == []
    assert pending_count(redis_client) == 0


def test_unreadable_report_is_delivered_as_a_failure_not_a_crash(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """A finished event with a broken report tells the user and does not block later events."""
    subscribe(redis_client, "job-1", address("console", "a"))
    broken = report_document()
    broken["address"] = {"not": "a string"}
    log.append(JobEvent.make("job-1", EventKind.FINISHED, at=AT, report=broken))
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    sink = RecordingSink(redis_client)
    assert Delivery(feed(redis_client, log), sink, platform="console").run_once() is True
    assert [(reply.kind, reply.text) for _, reply in sink.sent] == [
        (ReplyKind.FAILED, "The result could not be read."),
        (ReplyKind.PROGRESS, "Scanning now…"),
    ]
    assert pending_count(redis_client) == 0


def event(kind: EventKind, **data: Any) -> JobEvent:
    """An event of job-1."""
    return JobEvent.make("job-1", kind, at=AT, **data)


@pytest.mark.parametrize(
    ("job_event", "kind", "text", "final"),
    [
        (event(EventKind.STARTED), ReplyKind.PROGRESS, "Scanning now…", False),
        (
            event(EventKind.PRELIMINARY, open_ports=[23]),
            ReplyKind.PROGRESS,
            "Preliminary result, confirming services…",
            False,
        ),
        (event(EventKind.FINISHED), ReplyKind.FAILED, "The result could not be read.", True),
        (
            event(EventKind.FINISHED, report="not a document"),
            ReplyKind.FAILED,
            "The result could not be read.",
            True,
        ),
        (
            event(EventKind.FINISHED, report={"schema": "portpatrol.report/0"}),
            ReplyKind.FAILED,
            "The result could not be read.",
            True,
        ),
        (
            event(EventKind.FINISHED, report={**report_document(), "risk": "apocalyptic"}),
            ReplyKind.FAILED,
            "The result could not be read.",
            True,
        ),
        (event(EventKind.FAILED), ReplyKind.FAILED, "the scan failed", True),
        (
            event(EventKind.FAILED, reason="nmap failed (exit 1): boom"),
            ReplyKind.FAILED,
            "nmap failed (exit 1): boom",
            True,
        ),
        (event(EventKind.FAILED, reason="r" * 100_000), ReplyKind.FAILED, "r" * 500, True),
    ],
    ids=[
        "started",
        "preliminary",
        "finished-without-report",
        "finished-report-not-dict",
        "finished-wrong-schema",
        "finished-invalid-field",
        "failed-default",
        "failed-reason",
        "failed-huge-reason",
    ],
)
def test_reply_for_event_wording(
    job_event: JobEvent, kind: ReplyKind, text: str, final: bool
) -> None:
    """Each event kind is worded for the chat, and unreadable results become a failure reply."""
    reply = reply_for_event(job_event)
    assert reply is not None
    assert (reply.kind, reply.text, reply.final, reply.job_id) == (kind, text, final, "job-1")


def test_reply_for_finished_event_carries_the_report() -> None:
    """A finished event with a valid document becomes a report reply carrying that report."""
    reply = reply_for_event(event(EventKind.FINISHED, report=report_document()))
    assert reply is not None
    assert reply.kind is ReplyKind.REPORT
    assert reply.report is not None
    assert reply.report.to_document() == report_document()


def test_queued_event_needs_no_message() -> None:
    """A queued event produces no chat message (the ticket already said it)."""
    assert reply_for_event(event(EventKind.QUEUED, position=2)) is None


@dataclass
class FailSecondSink:
    """Accepts the first recipient, refuses every other one until told to recover."""

    sent: list[str] = field(default_factory=list)
    recovered: bool = False

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Record the chat, or fail for any chat but the first while not recovered."""
        if self.sent and not self.recovered and address.chat != self.sent[0]:
            raise DeliveryFailed("platform said 500")
        self.sent.append(address.chat)


def test_retry_after_a_partial_delivery_does_not_repeat_earlier_recipients(
    log: EventLog, redis_client: redis.Redis
) -> None:
    """When one of two recipients fails, the retry sends only to the one that did not get it."""
    subscribe(redis_client, "job-1", address("console", "a"))
    subscribe(redis_client, "job-1", address("console", "b"))
    log.append(JobEvent.make("job-1", EventKind.STARTED, at=AT))
    sink = FailSecondSink()
    delivery = Delivery(feed(redis_client, log), sink, platform="console")
    assert delivery.run_once() is False
    assert sink.sent == ["a"]
    sink.recovered = True
    assert delivery.run_once() is True
    assert sink.sent == ["a", "b"]
    assert pending_count(redis_client) == 0
