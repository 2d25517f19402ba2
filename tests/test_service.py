"""ScanService on a real Redis: refusals, tickets, joining, dedupe, the queue cap, rate limits.

No worker runs in this module, so nothing is ever scanned: every request either is refused or
stays in the queue, which is what lets the tests look at the queue, the audit trail and the
event stream exactly as ``submit_scan`` left them.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bot.settings import Settings
from bot.wiring import Runtime, runtime
from workers.audit import AuditEvent
from workers.events import STREAM_KEY, subscribers
from workers.models import (
    EventKind,
    Requester,
    Risk,
    Role,
    ScanReport,
)
from workers.queue import JOB_FUNCTION, LATEST_PREFIX, ScanService, ServiceConfig
from workers.tickets import ScanRefused, Ticket, TicketState

HOME_USER = Requester(platform="telegram", user="4242")
AGENT = Requester(platform="slack", user="UAGENT")
LAB_NETWORK = "127.0.0.0/8"
T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def settings_with(settings: Settings, **overrides: str) -> Settings:
    """Return the test settings with some environment variables overridden."""
    return Settings.model_validate(
        {
            "REDIS_URL": settings.redis_url,
            "PORTPATROL_STATE_DIR": str(settings.state_dir),
            "PORTPATROL_ADMINS": ",".join(sorted(settings.admins)),
            **overrides,
        }
    )


@pytest.fixture
def runtime_with(settings: Settings) -> Iterator[Callable[..., Runtime]]:
    """Open extra runtimes on the test Redis with overridden settings (closed at the end)."""
    opened: list[Any] = []

    def open_runtime(**overrides: str) -> Runtime:
        context = runtime(
            settings_with(settings, **overrides), operator=Requester(platform="cli", user="tester")
        )
        opened.append(context)
        return context.__enter__()

    yield open_runtime
    for context in reversed(opened):
        context.__exit__(None, None, None)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        """Return the current (test) time."""
        return self.now


def service_with(rt: Runtime, *, clock: Callable[[], datetime], **config: Any) -> ScanService:
    """Build a ScanService over the runtime's stores, with our own clock and config."""
    return ScanService(
        rt.connection,
        policy=rt.store,
        limiter=rt.service.limiter,
        profiles=rt.profiles,
        resolve=rt.service.resolve,
        audit=rt.audit,
        events=rt.events,
        reports=rt.reports,
        config=ServiceConfig(**config),
        clock=clock,
    )


def allow_lab(rt: Runtime, network: str = LAB_NETWORK) -> None:
    """Let the operator allow a loopback lab network."""
    rt.admin.allow(rt.operator, network, lab=True, note="test lab")


def scan_audits(rt: Runtime) -> list[AuditEvent]:
    """Return the audit events of scan requests."""
    return [event for event in rt.audit.events() if event.action == "scan"]


def stream_events(client: redis.Redis) -> list[dict[str, str]]:
    """Return the job event stream's entries as plain dicts."""
    return [
        {key.decode(): value.decode() for key, value in fields.items()}
        for _id, fields in client.xrange(STREAM_KEY)
    ]


def assert_nothing_enqueued(rt: Runtime, client: redis.Redis) -> None:
    """No job, no dedupe key and no job event exist."""
    assert rt.service.queue.count == 0
    assert client.keys(f"{LATEST_PREFIX}*") == []
    assert client.keys("rq:job:*") == []
    assert stream_events(client) == []


def make_report(ticket: Ticket, requester: Requester, finished_at: datetime) -> ScanReport:
    """A finished report for a ticket's job, as a worker would store it."""
    return ScanReport(
        job_id=ticket.job_id,
        target=ticket.target,
        address=ticket.address,
        profile=ticket.profile,
        requested_by=requester,
        started_at=finished_at - timedelta(seconds=3),
        finished_at=finished_at,
        host_state="up",
        complete=True,
        risk=Risk.NONE,
    )


@dataclass(frozen=True)
class RefusalCase:
    """One class of refused request: how to set it up, what to ask, which code to expect."""

    name: str
    requester: Requester
    target: str
    profile: str
    code: str
    setup: Callable[[Runtime, str], None]


def _no_setup(rt: Runtime, lab_address: str) -> None:
    """Nothing to prepare."""


def _lab_entry(rt: Runtime, lab_address: str) -> None:
    allow_lab(rt)


def _home_user_owns_lab(rt: Runtime, lab_address: str) -> None:
    allow_lab(rt)
    rt.store.bind_address(HOME_USER, lab_address)


def _opt_out(rt: Runtime, lab_address: str) -> None:
    allow_lab(rt)
    rt.store.opt_out(f"{lab_address}/32", added_by="cli:tester", at=T0, note="owner said no")


def _home_owns_other(rt: Runtime, lab_address: str) -> None:
    allow_lab(rt)
    rt.store.bind_address(HOME_USER, "127.0.0.9")


OPERATOR = Requester(platform="cli", user="tester")
LAB = "{lab}"

REFUSALS = [
    RefusalCase("bad target", OPERATOR, "-oN", "quick", "option", _lab_entry),
    RefusalCase("unknown profile", OPERATOR, LAB, "aggressive", "profile", _lab_entry),
    RefusalCase("full, home user", HOME_USER, LAB, "full", "profile_role", _home_user_owns_lab),
    RefusalCase("opt-out", OPERATOR, LAB, "quick", "opt_out", _opt_out),
    RefusalCase("special, no lab entry", OPERATOR, "127.0.0.1", "quick", "special", _no_setup),
    RefusalCase("not in allowlist", OPERATOR, "8.8.8.8", "quick", "not_allowed", _lab_entry),
    RefusalCase("not own address", HOME_USER, LAB, "quick", "not_own_address", _home_owns_other),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS, ids=[case.name for case in REFUSALS])
def test_refusal_is_audited_and_enqueues_nothing(
    rt: Runtime, redis_client: redis.Redis, lab_address: str, case: RefusalCase
) -> None:
    """Each refusal class raises ScanRefused with its code, is audited, and queues nothing."""
    case.setup(rt, lab_address)
    target = case.target.format(lab=lab_address)
    with pytest.raises(ScanRefused) as refused:
        rt.service.submit_scan(case.requester, target, case.profile)
    assert refused.value.code == case.code
    assert refused.value.reason
    assert "\n" not in refused.value.reason
    [audit] = scan_audits(rt)
    assert audit.actor == str(case.requester)
    assert audit.target == target
    assert audit.decision == "refused"
    assert audit.detail["code"] == case.code
    assert audit.reason == refused.value.reason
    assert_nothing_enqueued(rt, redis_client)


def test_accepted_request_is_queued_announced_and_audited(
    rt: Runtime, redis_client: redis.Redis, lab_address: str
) -> None:
    """An allowed request gets a QUEUED ticket at position 1, a queued event and an audit entry."""
    allow_lab(rt, f"{lab_address}/32")
    ticket = rt.service.submit_scan(rt.operator, lab_address, "quick")
    assert ticket.state is TicketState.QUEUED
    assert ticket.position == 1
    assert ticket.address == lab_address
    assert ticket.target == lab_address
    assert ticket.profile == "quick"
    assert rt.service.queue.job_ids == [ticket.job_id]
    [event] = stream_events(redis_client)
    assert event["job_id"] == ticket.job_id
    assert event["kind"] == EventKind.QUEUED.value
    [audit] = scan_audits(rt)
    assert audit.decision == "accepted"
    assert audit.job_id == ticket.job_id
    assert audit.actor == "cli:tester"
    assert audit.reason == f"allow entry {lab_address}/32"
    assert audit.detail["address"] == lab_address
    assert redis_client.get(f"{LATEST_PREFIX}{lab_address}:quick") == ticket.job_id.encode()


def test_job_is_json_serialized_with_timeouts_retry_and_rate_limit(
    rt: Runtime, redis_client: redis.Redis, lab_address: str
) -> None:
    """The stored job is JSON, not pickle, with timeouts, a retry and a per-address RateLimit."""
    allow_lab(rt, f"{lab_address}/32")
    ticket = rt.service.submit_scan(rt.operator, lab_address, "quick")
    raw = redis_client.hgetall(f"rq:job:{ticket.job_id}")
    data = zlib.decompress(raw[b"data"])
    assert not data.startswith(b"\x80")  # every pickle protocol >= 2 starts with PROTO
    function, instance, args, kwargs = json.loads(data)
    assert function == JOB_FUNCTION
    assert instance is None
    assert kwargs == {}
    [payload] = args
    assert payload["job_id"] == ticket.job_id
    assert payload["address"] == lab_address
    assert payload["profile"] == "quick"
    assert payload["requested_by"] == {"platform": "cli", "user": "tester"}
    assert set(payload) == {
        "job_id",
        "target",
        "address",
        "hostname",
        "profile",
        "requested_by",
        "requested_at",
    }
    assert raw[b"rate_limit_key"] == f"pp-address-{lab_address}".encode()
    assert raw[b"rate_limit_concurrency"] == b"1"
    job = Job.fetch(ticket.job_id, connection=redis_client, serializer=JSONSerializer)
    profile = rt.profiles.get("quick")
    assert profile is not None
    assert job.timeout == profile.job_timeout_s
    assert job.retries_left == rt.service.config.retries
    assert job.result_ttl == rt.service.config.result_ttl_s
    assert job.failure_ttl == rt.service.config.failure_ttl_s


def test_second_scan_of_same_address_waits_for_the_first(
    rt: Runtime, redis_client: redis.Redis, lab_address: str
) -> None:
    """A second profile for a queued address is held back by rq's RateLimit, not run alongside."""
    allow_lab(rt, f"{lab_address}/32")
    first = rt.service.submit_scan(rt.operator, lab_address, "quick")
    second = rt.service.submit_scan(rt.operator, lab_address, "standard")
    assert first.job_id != second.job_id
    assert second.state is TicketState.QUEUED
    assert second.position is None
    assert second.held
    held = Job.fetch(second.job_id, connection=redis_client, serializer=JSONSerializer)
    assert held.get_status() == JobStatus.RATE_LIMITED
    assert rt.service.queue.job_ids == [first.job_id]


def test_identical_request_joins_the_queued_job(
    rt: Runtime, redis_client: redis.Redis, lab_address: str
) -> None:
    """A second identical request while the first is queued joins it and is subscribed too."""
    allow_lab(rt, f"{lab_address}/32")
    first_chat = {"platform": "console", "chat": "first"}
    second_chat = {"platform": "console", "chat": "second"}
    first = rt.service.submit_scan(rt.operator, lab_address, "quick", first_chat)
    second = rt.service.submit_scan(rt.operator, lab_address, "quick", second_chat)
    assert second.state is TicketState.JOINED
    assert second.job_id == first.job_id
    assert second.position == 1
    assert subscribers(redis_client, first.job_id) == [first_chat, second_chat]
    assert rt.service.queue.job_ids == [first.job_id]
    assert [audit.decision for audit in scan_audits(rt)] == ["accepted", "accepted:joined"]


def test_fresh_report_answers_within_the_dedupe_window_and_not_after(
    rt: Runtime, redis_client: redis.Redis, lab_address: str
) -> None:
    """In the dedupe window a stored report answers (CACHED, with its age); after it, a new job."""
    allow_lab(rt, f"{lab_address}/32")
    clock = Clock(T0)
    service = service_with(rt, clock=clock, dedupe_window=timedelta(minutes=10))
    first = service.submit_scan(rt.operator, lab_address, "quick")
    report = make_report(first, rt.operator, finished_at=T0 + timedelta(seconds=30))
    rt.reports.save(report)
    rt.store.grant(str(AGENT), Role.AGENT)

    clock.now = T0 + timedelta(minutes=5)
    cached = service.submit_scan(AGENT, lab_address, "quick")
    assert cached.state is TicketState.CACHED
    assert cached.job_id == first.job_id
    assert cached.report == report
    assert cached.age_s == 270
    assert service.queue.job_ids == [first.job_id]
    assert scan_audits(rt)[-1].decision == "accepted:cached"

    clock.now = T0 + timedelta(seconds=30) + timedelta(minutes=10, seconds=1)
    renewed = service.submit_scan(rt.operator, lab_address, "quick")
    assert renewed.state is TicketState.QUEUED
    assert renewed.job_id != first.job_id
    assert renewed.report is None
    assert redis_client.get(f"{LATEST_PREFIX}{lab_address}:quick") == renewed.job_id.encode()


def test_full_queue_refuses_with_busy_and_drops_nothing(
    runtime_with: Callable[..., Runtime], redis_client: redis.Redis
) -> None:
    """At the queue cap the next request is refused as busy with a wait; queued jobs stay."""
    rt = runtime_with(PORTPATROL_QUEUE_MAX="2")
    allow_lab(rt)
    queued = [rt.service.submit_scan(rt.operator, f"127.0.1.{n}", "quick") for n in (1, 2)]
    with pytest.raises(ScanRefused) as refused:
        rt.service.submit_scan(rt.operator, "127.0.1.3", "quick")
    assert refused.value.code == "busy"
    assert re.search(r"try again in \d+ (seconds|minutes)$", refused.value.reason)
    assert refused.value.retry_after_s is not None
    assert refused.value.retry_after_s > 0
    assert rt.service.queue.job_ids == [ticket.job_id for ticket in queued]
    assert redis_client.get(f"{LATEST_PREFIX}127.0.1.3:quick") is None
    assert [audit.decision for audit in scan_audits(rt)] == ["accepted", "accepted", "refused"]


def test_home_user_gets_exactly_three_scans_per_hour(rt: Runtime) -> None:
    """A home user's fourth request within the hour is refused as rate_limited with a retry time."""
    allow_lab(rt)
    accepted = []
    for n in range(1, 4):
        rt.store.bind_address(HOME_USER, f"127.0.2.{n}")
        accepted.append(rt.service.submit_scan(HOME_USER, f"127.0.2.{n}", "quick"))
    assert [ticket.state for ticket in accepted] == [TicketState.QUEUED] * 3
    rt.store.bind_address(HOME_USER, "127.0.2.4")
    with pytest.raises(ScanRefused) as refused:
        rt.service.submit_scan(HOME_USER, "127.0.2.4", "quick")
    assert refused.value.code == "rate_limited"
    assert "3 scans per hour" in refused.value.reason
    assert refused.value.retry_after_s is not None
    assert 0 < refused.value.retry_after_s <= 3600
    assert rt.service.queue.count == 3
    other = Requester(platform="telegram", user="4343")
    rt.store.bind_address(other, "127.0.2.5")
    assert rt.service.submit_scan(other, "127.0.2.5", "quick").state is TicketState.QUEUED


def test_agents_get_sixty_scans_per_hour_by_default(rt: Runtime) -> None:
    """The default agent limit lets exactly 60 requests through in an hour, then refuses."""
    allow_lab(rt)
    rt.store.grant(str(AGENT), Role.AGENT)
    for n in range(60):
        ticket = rt.service.submit_scan(AGENT, f"127.0.{10 + n // 200}.{1 + n % 200}", "quick")
        assert ticket.state is TicketState.QUEUED
    with pytest.raises(ScanRefused) as refused:
        rt.service.submit_scan(AGENT, "127.0.20.1", "quick")
    assert refused.value.code == "rate_limited"
    assert "60 scans per hour" in refused.value.reason


def test_configured_agent_rate_is_held_exactly(runtime_with: Callable[..., Runtime]) -> None:
    """PORTPATROL_AGENT_RATE=5/hour lets exactly five agent requests through, then refuses."""
    rt = runtime_with(PORTPATROL_AGENT_RATE="5/hour")
    allow_lab(rt)
    rt.store.grant(str(AGENT), Role.AGENT)
    for n in range(1, 6):
        assert rt.service.submit_scan(AGENT, f"127.0.3.{n}", "quick").state is TicketState.QUEUED
    with pytest.raises(ScanRefused) as refused:
        rt.service.submit_scan(AGENT, "127.0.3.6", "quick")
    assert refused.value.code == "rate_limited"
    assert "5 scans per hour" in refused.value.reason
    assert refused.value.retry_after_s is not None
    assert refused.value.retry_after_s > 0
    assert rt.service.queue.count == 5


def test_per_target_limit_holds_across_users(
    runtime_with: Callable[..., Runtime], redis_client: redis.Redis
) -> None:
    """The per-target limit counts requests for one address from every user together."""
    rt = runtime_with(PORTPATROL_TARGET_RATE="2/hour")
    allow_lab(rt)
    agents = [Requester(platform="slack", user=f"UAGENT{n}") for n in range(3)]
    for agent in agents:
        rt.store.grant(str(agent), Role.AGENT)
    first = rt.service.submit_scan(agents[0], "127.0.4.1", "quick")
    second = rt.service.submit_scan(agents[1], "127.0.4.1", "standard")
    assert {first.state, second.state} == {TicketState.QUEUED}
    with pytest.raises(ScanRefused) as refused:
        rt.service.submit_scan(agents[2], "127.0.4.1", "voip")
    assert refused.value.code == "rate_limited"
    assert refused.value.reason.startswith("127.0.4.1 has reached the limit of 2 scans per hour")
    assert redis_client.get(f"{LATEST_PREFIX}127.0.4.1:voip") is None
    assert rt.service.submit_scan(agents[2], "127.0.4.2", "voip").state is TicketState.QUEUED


def test_jobs_held_back_per_address_count_towards_the_queue_cap(
    settings: Settings, lab_address: str
) -> None:
    """Scans waiting behind another scan of the same address count as queued for "busy"."""
    capped = settings.model_copy(update={"queue_max": 2})
    with runtime(capped, operator=Requester(platform="cli", user="tester")) as built:
        allow_lab(built, f"{lab_address}/32")
        built.service.submit_scan(built.operator, lab_address, "quick")
        built.service.submit_scan(built.operator, lab_address, "standard")
        assert built.service.waiting() == 2
        with pytest.raises(ScanRefused) as refused:
            built.service.submit_scan(built.operator, lab_address, "voip")
        assert refused.value.code == "busy"
