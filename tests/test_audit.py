"""The audit trail: filters, retention, what gets audited, delivery failures, CLI and chat access.

Everything runs on the session's real redis-server; the CLI tests run ``portpatrol`` in its own
processes, in embedded mode with a short private state directory under /tmp (as test_cli does)
or against the test Redis through ``REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fake_slack import FakeSlack
from fake_telegram import FakeTelegram
from harness import Chat, open_chat
from slack_sdk.web.async_client import AsyncWebClient
from telegram.ext import Application, ApplicationBuilder
from test_cli import PORTPATROL, base_env, processes_using, reason_lines
from test_own_address import stored_report

from bot.core.commands import parse_audit_arguments, parse_since
from bot.core.delivery import Delivery
from bot.core.messages import Reply, ReplyAddress, ReplyKind
from bot.core.service import DeliveryFailed, DeliveryGivenUp
from bot.settings import Settings
from bot.slack.app import SlackReplySink, command_text
from bot.telegram.app import TelegramReplySink
from bot.wiring import Runtime, local_operator, runtime
from workers.audit import AUDIT_KEY, QUERY_PAGE, AuditEvent, AuditLog
from workers.events import STREAM_KEY, EventLog, GroupFeed, subscribe
from workers.models import EventKind, JobEvent, Requester, Role, utc_now
from workers.tickets import ScanRefused

AGENT = Requester(platform="slack", user="UAGENT")
HOME = Requester(platform="telegram", user="4242")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        """Return the test's current time."""
        return self.now


def trail(rt: Runtime, **filters: Any) -> list[AuditEvent]:
    """Query the runtime's audit trail (newest first)."""
    return rt.audit.query(**filters)


# AuditLog.query ---------------------------------------------------------------------------------


@pytest.fixture
def audit(redis_client: redis.Redis) -> AuditLog:
    """An audit log on the flushed test Redis whose clock stands at NOW."""
    return AuditLog(redis_client, clock=Clock(NOW))


@pytest.fixture
def sample(audit: AuditLog) -> AuditLog:
    """A trail of five events over three days (written oldest first, as they would happen)."""
    audit.record(
        actor="slack:UAGENT",
        action="scan",
        target="203.0.113.5",
        decision="accepted",
        job_id="j1",
        at=NOW - timedelta(days=3),
    )
    audit.record(
        actor="slack:UAGENT",
        action="scan",
        target="203.0.113.50",
        decision="accepted",
        job_id="j2",
        at=NOW - timedelta(days=2),
    )
    audit.record(
        actor="telegram:4242",
        action="scan",
        target="home.example",
        decision="accepted",
        at=NOW - timedelta(hours=5),
        address="198.51.100.7",
    )
    audit.record(
        actor="cli:ops",
        action="allow_add",
        target="198.51.100.0/24",
        decision="done",
        at=NOW - timedelta(hours=2),
    )
    audit.record(
        actor="telegram:4242",
        action="scan",
        target="127.1",
        decision="refused",
        reason="not canonical",
        at=NOW - timedelta(minutes=10),
    )
    return audit


def test_query_returns_newest_first_and_respects_the_limit(sample: AuditLog) -> None:
    """Without filters the query lists every event newest first, cut at the limit."""
    assert [event.target for event in sample.query()] == [
        "127.1",
        "198.51.100.0/24",
        "home.example",
        "203.0.113.50",
        "203.0.113.5",
    ]
    assert [event.target for event in sample.query(limit=2)] == ["127.1", "198.51.100.0/24"]
    assert sample.query(limit=0) == []


def test_query_since_keeps_only_later_events(sample: AuditLog) -> None:
    """``since`` drops everything that happened before it."""
    recent = sample.query(since=NOW - timedelta(hours=6))
    assert [event.target for event in recent] == ["127.1", "198.51.100.0/24", "home.example"]
    assert sample.query(since=NOW + timedelta(minutes=1)) == []


@pytest.mark.parametrize(
    ("user", "targets"),
    [
        ("telegram:4242", ["127.1", "home.example"]),
        ("TELEGRAM:4242", ["127.1", "home.example"]),
        ("uagent", ["203.0.113.50", "203.0.113.5"]),
        ("cli:", ["198.51.100.0/24"]),
        ("slack:nobody", []),
    ],
)
def test_query_by_user_matches_the_actor_or_part_of_it(
    sample: AuditLog, user: str, targets: list[str]
) -> None:
    """``user`` matches platform:user_id exactly or any part of it, ignoring case."""
    assert [event.target for event in sample.query(user=user)] == targets


@pytest.mark.parametrize(
    ("target", "targets"),
    [
        ("203.0.113.5", ["203.0.113.5"]),
        ("203.0.113.0/24", ["203.0.113.50", "203.0.113.5"]),
        ("198.51.100.7", ["home.example"]),
        ("198.51.100.0/24", ["198.51.100.0/24", "home.example"]),
        ("198.51.0.0/16", ["198.51.100.0/24", "home.example"]),
        ("HOME.example", ["home.example"]),
        ("127.1", ["127.1"]),
        ("2001:db8::1", []),
    ],
)
def test_query_by_target_matches_addresses_by_containment_and_text_by_part(
    sample: AuditLog, target: str, targets: list[str]
) -> None:
    """An address or network matches events inside it (never 203.0.113.50 for .5); text by part."""
    assert [event.target for event in sample.query(target=target)] == targets


def test_query_combines_filters(sample: AuditLog) -> None:
    """Filters combine: this user, this target, since then."""
    found = sample.query(user="telegram:4242", target="198.51.100.0/24", since=NOW - timedelta(1))
    assert [(event.actor, event.target) for event in found] == [("telegram:4242", "home.example")]


def test_query_walks_back_past_one_page(audit: AuditLog, redis_client: redis.Redis) -> None:
    """A match older than a page of newer events is still found, and the limit still holds."""
    audit.record(actor="slack:UOLD", action="scan", decision="accepted", at=NOW - timedelta(1))
    audit.record(actor="slack:UOLD", action="scan", decision="accepted", at=NOW - timedelta(1))
    for minute in range(QUERY_PAGE + 20):
        audit.record(
            actor="slack:UNEW",
            action="scan",
            decision="accepted",
            at=NOW - timedelta(hours=1) + timedelta(seconds=minute),
        )
    assert [event.actor for event in audit.query(user="uold")] == ["slack:UOLD", "slack:UOLD"]
    assert len(audit.query(user="uold", limit=1)) == 1
    assert len(audit.query(limit=QUERY_PAGE + 5)) == QUERY_PAGE + 5


def test_query_skips_entries_that_are_not_audit_events(
    audit: AuditLog, redis_client: redis.Redis
) -> None:
    """Anyone with Redis access can append junk to the stream; the rest of the trail still reads."""
    audit.record(actor="cli:ops", action="role_grant", decision="done", at=NOW - timedelta(1))
    redis_client.xadd(AUDIT_KEY, {"event": "{not json"})
    redis_client.xadd(AUDIT_KEY, {"other": "field"})
    assert [event.action for event in audit.query()] == ["role_grant"]
    assert [event.action for event in audit.events()] == ["role_grant"]


# Retention --------------------------------------------------------------------------------------


def test_retention_trims_old_events_on_write_and_at_start_up(redis_client: redis.Redis) -> None:
    """Events past the retention are gone after the next write and after enforce_retention()."""
    clock = Clock(NOW)
    long_kept = AuditLog(redis_client, retention=timedelta(days=400), clock=clock)
    for days in (300, 200, 100):
        long_kept.record(
            actor="slack:U1", action="scan", decision="accepted", at=NOW - timedelta(days=days)
        )
    assert redis_client.xlen(AUDIT_KEY) == 3

    default = AuditLog(redis_client, clock=clock)
    assert default.retention == timedelta(days=180)
    assert [event.at for event in default.query()] == [NOW - timedelta(days=100)]
    assert default.enforce_retention() == 2
    assert redis_client.xlen(AUDIT_KEY) == 1

    clock.now = NOW + timedelta(days=90)
    default.record(actor="slack:U1", action="scan", decision="accepted")
    assert [event.at for event in default.events()] == [clock.now]
    assert redis_client.xlen(AUDIT_KEY) == 1


def test_back_dated_events_are_kept_within_retention_and_dropped_past_it(
    audit: AuditLog, redis_client: redis.Redis
) -> None:
    """An event dated before the newest one is still kept if recent, and never kept if expired."""
    audit.record(actor="slack:U1", action="scan", decision="accepted", at=NOW)
    audit.record(actor="slack:U1", action="scan", decision="late", at=NOW - timedelta(days=1))
    audit.record(actor="slack:U1", action="scan", decision="expired", at=NOW - timedelta(days=181))
    assert sorted(event.decision for event in audit.query()) == ["accepted", "late"]
    assert redis_client.xlen(AUDIT_KEY) == 2


def test_retention_setting_is_used_and_enforced_when_a_runtime_starts(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """PORTPATROL_AUDIT_RETENTION_DAYS sets the retention; opening a runtime trims to it."""
    old = AuditLog(redis_client, retention=timedelta(days=400))
    old.record(actor="slack:U1", action="scan", decision="accepted", at=utc_now() - timedelta(40))
    old.record(actor="slack:U1", action="scan", decision="accepted", at=utc_now() - timedelta(20))
    configured = Settings.model_validate(
        {
            "REDIS_URL": settings.redis_url,
            "PORTPATROL_STATE_DIR": str(settings.state_dir),
            "PORTPATROL_AUDIT_RETENTION_DAYS": "30",
        }
    )
    assert Settings.model_fields["audit_retention_days"].default == 180
    with runtime(configured, operator=Requester(platform="cli", user="tester")) as rt:
        assert rt.audit.retention == timedelta(days=30)
        assert redis_client.xlen(AUDIT_KEY) == 1


@pytest.mark.parametrize("days", ["0", "-1", "many"])
def test_retention_setting_must_be_a_positive_number_of_days(days: str) -> None:
    """A zero, negative or non-numeric retention is a settings error, not a trail wiped at once."""
    with pytest.raises(ValueError, match="PORTPATROL_AUDIT_RETENTION_DAYS"):
        Settings.model_validate({"PORTPATROL_AUDIT_RETENTION_DAYS": days})


# What is audited --------------------------------------------------------------------------------


def test_accepted_refused_and_admin_actions_are_audited(rt: Runtime, lab_address: str) -> None:
    """An admin's grant and allow, an agent's accepted scan and a home user's refusal are events."""
    rt.admin.grant(rt.operator, str(AGENT), Role.AGENT)
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="lab for the audit test")
    ticket = rt.service.submit_scan(AGENT, lab_address)
    with pytest.raises(ScanRefused):
        rt.service.submit_scan(HOME, "198.51.100.7")
    with pytest.raises(ScanRefused):
        rt.service.submit_scan(HOME, "10.0.0.1 -oN /tmp/x")

    events = trail(rt)
    assert [(event.actor, event.action, event.decision) for event in events] == [
        (str(HOME), "scan", "refused"),
        (str(HOME), "scan", "refused"),
        (str(AGENT), "scan", "accepted"),
        (str(rt.operator), "allow_add", "done"),
        (str(rt.operator), "role_grant", "done"),
    ]
    [accepted] = trail(rt, user=str(AGENT))
    assert accepted.job_id == ticket.job_id
    assert accepted.target == lab_address
    assert accepted.reason  # the policy basis: why it was allowed
    [refused] = trail(rt, target="198.51.100.7")
    assert refused.reason
    assert refused.detail["code"]
    assert [event.action for event in trail(rt, target=lab_address)] == ["scan", "allow_add"]


def test_admin_actions_from_chat_are_audited_and_refusals_too(rt: Runtime, chat: Chat) -> None:
    """/role from an admin's chat is audited as done, and from an agent's chat as refused."""
    [granted] = chat.say(f"/role grant {AGENT} agent")
    assert granted.kind is ReplyKind.TEXT, granted.text
    agent_chat = open_chat(rt, AGENT)
    try:
        [refused] = agent_chat.say("/role grant slack:USELF admin")
    finally:
        agent_chat.session.close()
    assert refused.kind is ReplyKind.REFUSED
    assert [(event.actor, event.decision) for event in trail(rt, target="slack:U")] == [
        (str(AGENT), "refused"),
        (str(rt.operator), "done"),
    ]


def test_forget_is_audited_as_the_fact_of_deletion_only(rt: Runtime) -> None:
    """An admin's forget deletes the user's data; the event names who and how many, not what."""
    rt.store.bind_address(HOME, "198.51.100.7")
    stored_report(rt, "198.51.100.7", HOME, "job-home")
    said = rt.service.forget(HOME, by=rt.operator)
    assert said == f"Deleted {HOME}'s verified connection and 1 stored scan reports."
    assert rt.store.verified_address(HOME) is None
    assert rt.reports.get("job-home") is None
    [event] = trail(rt, target=str(HOME))
    assert (event.actor, event.action, event.decision) == (str(rt.operator), "forget", "done")
    assert "198.51.100.7" not in event.model_dump_json()
    assert "job-home" not in event.model_dump_json()


def test_forget_for_someone_else_needs_an_admin(rt: Runtime) -> None:
    """An agent cannot delete another user's data; the attempt is audited and changes nothing."""
    rt.admin.grant(rt.operator, str(AGENT), Role.AGENT)
    rt.store.bind_address(HOME, "198.51.100.7")
    with pytest.raises(ScanRefused, match="only admins"):
        rt.service.forget(HOME, by=AGENT)
    assert rt.store.verified_address(HOME) == "198.51.100.7"
    [event] = trail(rt, user=str(AGENT))
    assert (event.action, event.decision, event.target) == ("forget", "refused", str(HOME))


# Delivery failures ------------------------------------------------------------------------------


@dataclass
class RefusingSink:
    """A platform that refuses every message: for good, or only for now."""

    error: type[DeliveryFailed]
    calls: list[ReplyAddress] = field(default_factory=list)

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Refuse the message."""
        self.calls.append(address)
        raise self.error("Forbidden: bot was blocked by the user")


def delivery_for(rt: Runtime, sink: RefusingSink) -> Delivery:
    """A Telegram-platform delivery over the runtime's event log, audited as the bot does it."""
    feed = GroupFeed(rt.connection, rt.events, group="audit-test", consumer="c1", block_ms=10)
    return Delivery(feed, sink, platform="telegram", on_given_up=rt.record_delivery_failure)


def test_a_message_refused_for_good_is_audited_and_not_retried(
    rt: Runtime, redis_client: redis.Redis
) -> None:
    """A blocked chat ends the delivery: a delivery_failed event with job and platform, acked."""
    address = ReplyAddress(platform="telegram", chat="4242", user="4242")
    subscribe(redis_client, "job-7", address.to_payload())
    sink = RefusingSink(DeliveryGivenUp)
    delivery = delivery_for(rt, sink)
    EventLog(redis_client).append(JobEvent.make("job-7", EventKind.FAILED, reason="nmap failed"))
    assert delivery.run_once() is True
    assert delivery.run_once() is True
    assert len(sink.calls) == 1
    assert int(redis_client.xpending(STREAM_KEY, "audit-test")["pending"]) == 0
    [event] = trail(rt)
    assert (event.actor, event.action, event.decision) == (str(HOME), "deliver", "delivery_failed")
    assert event.job_id == "job-7"
    assert event.detail["platform"] == "telegram"
    assert "blocked" in event.reason


def test_a_message_failing_for_now_is_retried_and_not_audited(
    rt: Runtime, redis_client: redis.Redis
) -> None:
    """A passing failure leaves the event pending for a retry and writes no audit event."""
    subscribe(redis_client, "job-8", {"platform": "telegram", "chat": "4242"})
    sink = RefusingSink(DeliveryFailed)
    delivery = delivery_for(rt, sink)
    EventLog(redis_client).append(JobEvent.make("job-8", EventKind.STARTED))
    assert delivery.run_once() is False
    assert int(redis_client.xpending(STREAM_KEY, "audit-test")["pending"]) == 1
    assert trail(rt) == []


def deliver_twice(
    delivery: Delivery,
    sink: TelegramReplySink | SlackReplySink,
    application: Application[Any, Any, Any, Any, Any, Any] | None = None,
) -> list[bool]:
    """Run two delivery rounds from a thread, as the bots' delivery thread does, on a live loop."""

    async def rounds() -> list[bool]:
        if application is not None:
            await application.initialize()
        try:
            sink.loop = asyncio.get_running_loop()
            return [await asyncio.to_thread(delivery.run_once) for _ in range(2)]
        finally:
            if application is not None:
                await application.shutdown()

    return asyncio.run(rounds())


def test_telegram_blocked_chat_is_audited_once_and_not_retried(
    rt: Runtime, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403 from the Bot API (bot blocked) is audited as delivery_failed and never re-sent."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    address = ReplyAddress(platform="telegram", chat="4242", user="4242")
    subscribe(redis_client, "job-9", address.to_payload())
    EventLog(redis_client).append(JobEvent.make("job-9", EventKind.FAILED, reason="nmap failed"))
    with FakeTelegram() as fake:
        fake.fail(
            "sendMessage", times=5, status=403, description="Forbidden: bot was blocked by the user"
        )
        application = ApplicationBuilder().token(fake.token).base_url(fake.base_url).build()
        sink = TelegramReplySink(rt, application)
        feed = GroupFeed(rt.connection, rt.events, group="telegram", consumer="c1", block_ms=10)
        delivery = Delivery(feed, sink, platform="telegram", on_given_up=rt.record_delivery_failure)
        assert deliver_twice(delivery, sink, application) == [True, True]
        assert len(fake.calls("sendMessage")) == 1
    [event] = trail(rt)
    assert (event.actor, event.decision, event.job_id) == (str(HOME), "delivery_failed", "job-9")
    assert event.detail["platform"] == "telegram"
    assert "blocked" in event.reason


def test_slack_channel_refused_for_good_is_audited_once_and_not_retried(
    rt: Runtime, redis_client: redis.Redis
) -> None:
    """Slack's channel_not_found is audited as delivery_failed; other errors are retried."""
    address = ReplyAddress(platform="slack", chat="CGONE", user="UAGENT")
    subscribe(redis_client, "job-10", address.to_payload())
    EventLog(redis_client).append(JobEvent.make("job-10", EventKind.STARTED))
    with FakeSlack() as fake:
        fake.fail("chat.postMessage", times=1, status=200, error="internal_error")
        fake.fail("chat.postMessage", times=5, status=200, error="channel_not_found")
        sink = SlackReplySink(rt, AsyncWebClient(token=fake.bot_token, base_url=fake.base_url))
        feed = GroupFeed(rt.connection, rt.events, group="slack", consumer="c1", block_ms=10)
        delivery = Delivery(feed, sink, platform="slack", on_given_up=rt.record_delivery_failure)
        assert deliver_twice(delivery, sink) == [False, True]
        assert len(fake.calls("chat.postMessage")) == 2
    [event] = trail(rt)
    assert (event.actor, event.decision, event.job_id) == (str(AGENT), "delivery_failed", "job-10")
    assert event.detail == {"platform": "slack", "chat": "CGONE"}
    assert "channel_not_found" in event.reason


# Chat /audit ------------------------------------------------------------------------------------


def test_admin_reads_the_audit_trail_in_chat(rt: Runtime, chat: Chat) -> None:
    """/audit shows an admin the latest events as plain text, newest first, with filters."""
    rt.admin.grant(rt.operator, str(AGENT), Role.AGENT)
    rt.audit.record(actor=str(HOME), action="scan", target="bad\x1b[2Jtarget", decision="refused")
    [reply] = chat.say("/audit")
    assert reply.kind is ReplyKind.TEXT
    lines = reply.text.splitlines()
    assert lines[0].startswith("Audit trail, newest first")
    assert f"{HOME} scan bad?[2Jtarget → refused" in lines[1]
    assert f"{rt.operator} role_grant {AGENT} → done" in lines[2]
    [filtered] = chat.say(f"/audit 1h --user {AGENT.user.lower()}")
    assert filtered.text == "No audit events match."
    [by_dash] = chat.say("/audit —target slack:")
    assert "role_grant" in by_dash.text
    assert "bad?[2J" not in by_dash.text


def test_audit_in_chat_shows_twenty_events_unless_asked(rt: Runtime, chat: Chat) -> None:
    """/audit lists 20 events by default; --limit asks for more, up to the chat's cap."""
    for number in range(60):
        rt.audit.record(actor="slack:U1", action="scan", target=f"t{number}", decision="ok")
    [default] = chat.say("/audit")
    assert len(default.text.splitlines()) == 1 + 20
    [more] = chat.say("/audit --limit 30")
    assert len(more.text.splitlines()) == 1 + 30
    [capped] = chat.say("/audit --limit 1000")
    assert len(capped.text.splitlines()) == 1 + 50


def test_audit_in_chat_is_for_admins_only(rt: Runtime) -> None:
    """An agent and a home user are refused /audit, and the refusal is itself audited."""
    rt.admin.grant(rt.operator, str(AGENT), Role.AGENT)
    for who in (AGENT, HOME):
        opened = open_chat(rt, who)
        try:
            [reply] = opened.say("/audit")
        finally:
            opened.session.close()
        assert reply.kind is ReplyKind.REFUSED
        assert reply.text == "Only admins can read the audit trail."
        assert "role_grant" not in reply.text
        [event] = trail(rt, user=str(who))
        assert (event.action, event.decision) == ("audit_read", "refused")


@pytest.mark.parametrize(
    "text", ["/audit yesterday", "/audit 2h 3h", "/audit --user", "/audit --limit x", "/audit -x"]
)
def test_audit_in_chat_refuses_bad_arguments_with_the_usage(chat: Chat, text: str) -> None:
    """Wrong /audit arguments get a refusal with the usage line, never a trace."""
    [reply] = chat.say(text)
    assert reply.kind is ReplyKind.REFUSED
    assert "Usage: /audit" in reply.text


def test_slack_admin_command_reaches_audit() -> None:
    """`/scan-admin audit …` in Slack is the core's /audit."""
    assert command_text("/scan-admin", "audit 2h --user slack:U1") == "/audit 2h --user slack:U1"
    assert command_text("/scan-admin", "AUDIT") == "/audit"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1D", NOW - timedelta(days=1)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),
        ("2026-02-01T10:30", datetime(2026, 2, 1, 10, 30, tzinfo=UTC)),
        ("2026-02-01T10:30:00+02:00", datetime(2026, 2, 1, 8, 30, tzinfo=UTC)),
        ("2026-02-01T10:30Z", datetime(2026, 2, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_parse_since_reads_relative_windows_and_iso_times(text: str, expected: datetime) -> None:
    """Relative windows count back from now; ISO times without a zone are UTC."""
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "0h", "2x", "h", "-2h", "yesterday", "999999w", "2026-13-01"])
def test_parse_since_refuses_anything_else_in_one_line(text: str) -> None:
    """Anything but a positive window or an ISO time is a ValueError with a one-line reason."""
    with pytest.raises(ValueError, match="is not a time") as refused:
        parse_since(text, NOW)
    assert "\n" not in str(refused.value)


def test_parse_audit_arguments_reads_the_options() -> None:
    """Positional SINCE and the --user, --target and --limit options are read."""
    filters = parse_audit_arguments(
        ["1d", "--user", "slack:U1", "--target", "10.0.0.0/8", "--limit", "5"], NOW
    )
    assert filters.since == NOW - timedelta(days=1)
    assert (filters.user, filters.target, filters.limit) == ("slack:U1", "10.0.0.0/8", 5)


# The command line -------------------------------------------------------------------------------


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short private state directory; fails the test if a process from it outlives it."""
    directory = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    yield directory
    leftovers = processes_using(directory)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)
    assert leftovers == [], f"processes left running from {directory}: {leftovers}"


def portpatrol(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``portpatrol ARGS`` in a new process from an empty directory (no stray .env)."""
    return subprocess.run(
        [str(PORTPATROL), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_audit_lists_the_trail_as_a_table_and_as_json_lines(
    state_dir: Path, tmp_path: Path
) -> None:
    """`portpatrol audit` prints a table by default and one JSON document per line with --json."""
    env = base_env(state_dir)
    for command in (("role", "grant", "slack:U1", "agent"), ("role", "revoke", "slack:U1")):
        done = portpatrol(*command, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr

    table = portpatrol("audit", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["WHEN", "ACTOR", "ACTION", "TARGET", "DECISION", "REASON", "JOB"]
    assert [row.split()[2:6] for row in rows] == [
        [str(local_operator()), "role_revoke", "slack:U1", "done"],
        [str(local_operator()), "role_grant", "slack:U1", "done"],
    ]

    as_json = portpatrol("audit", "--json", "--limit", "1", env=env, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    [line] = as_json.stdout.splitlines()
    event = AuditEvent.model_validate(json.loads(line))
    assert (event.actor, event.action, event.target) == (
        str(local_operator()),
        "role_revoke",
        "slack:U1",
    )

    filtered = portpatrol("audit", "--since", "1h", "--user", "nobody", env=env, cwd=tmp_path)
    assert filtered.returncode == 0, filtered.stderr
    assert filtered.stdout == "no audit events match\n"
    nothing = portpatrol("audit", "--json", "--target", "192.0.2.1", env=env, cwd=tmp_path)
    assert (nothing.returncode, nothing.stdout) == (0, "")


@pytest.mark.parametrize("since", ["yesterday", "2h ago", "0d"])
def test_cli_audit_refuses_a_bad_since_in_one_line(
    state_dir: Path, tmp_path: Path, since: str
) -> None:
    """A --since that is not a time exits 2 with a one-line reason before starting anything."""
    result = portpatrol("audit", "--since", since, env=base_env(state_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    [reason] = reason_lines(result.stderr)
    assert reason.startswith("portpatrol: --since: ")
    assert "is not a time" in reason
    assert list(state_dir.iterdir()) == []


def test_cli_audit_help_names_its_options(tmp_path: Path) -> None:
    """`portpatrol audit --help` and `forget --help` name their options and argument."""
    env = base_env(tmp_path / "unused-state")
    result = portpatrol("audit", "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0
    for name in ("--since", "--user", "--target", "--limit", "--json"):
        assert name in result.stdout
    forget_help = portpatrol("forget", "--help", env=env, cwd=tmp_path)
    assert forget_help.returncode == 0
    assert "PRINCIPAL" in forget_help.stdout.upper()
    assert "platform:user_id" in forget_help.stdout


def test_cli_forget_deletes_a_users_data_and_audits_the_operator(
    rt: Runtime, redis_url: str, tmp_path: Path
) -> None:
    """`portpatrol forget` removes the address and reports; the trail names the operator only."""
    rt.store.bind_address(HOME, "198.51.100.7")
    stored_report(rt, "198.51.100.7", HOME, "job-home")
    stored_report(rt, "198.51.100.7", AGENT, "job-agent")
    env = base_env(tmp_path / "state", REDIS_URL=redis_url)
    result = portpatrol("forget", str(HOME), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Deleted {HOME}'s verified connection and 1 stored scan reports.\n"
    assert rt.store.verified_address(HOME) is None
    assert rt.reports.get("job-home") is None
    assert rt.reports.get("job-agent") is not None
    [event] = trail(rt, target=str(HOME))
    assert (event.actor, event.action, event.decision) == (
        str(local_operator()),
        "forget",
        "done",
    )
    assert "198.51.100.7" not in event.model_dump_json()

    again = portpatrol("forget", str(HOME), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"There was nothing stored about {HOME} to delete.\n"
    bad = portpatrol("forget", "not-a-principal", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    [reason] = reason_lines(bad.stderr)
    assert reason.startswith("portpatrol: expected platform:user_id")
