"""Own-address verification, /history and /forget: links that work once, data that can go."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from harness import Chat, open_chat

from bot.core.messages import ReplyKind
from bot.settings import Settings
from bot.wiring import Runtime, runtime
from workers.models import (
    NmapInfo,
    Requester,
    Risk,
    Role,
    ScanReport,
    utc_now,
)
from workers.tickets import TicketState
from workers.verify import (
    CHECK_PREFIX,
    CheckFailed,
    CheckLinks,
    client_address,
    complete_check,
)

HOME = Requester(platform="telegram", user="4242")
OTHER = Requester(platform="telegram", user="5151")
AGENT = Requester(platform="slack", user="UAGENT")


def stored_report(rt: Runtime, address: str, requester: Requester, job_id: str) -> ScanReport:
    """Store a finished report as the worker would."""
    now = utc_now()
    report = ScanReport(
        job_id=job_id,
        target=address,
        address=address,
        profile="quick",
        requested_by=requester,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
        host_state="up",
        complete=True,
        risk=Risk.NONE,
        nmap=NmapInfo(version="7.93"),
    )
    rt.reports.save(report)
    return report


@pytest.fixture
def public_rt(settings: Settings) -> Iterator[Runtime]:
    """A runtime whose operator set PORTPATROL_PUBLIC_URL, so /check hands out links."""
    configured = settings.model_copy(update={"public_url": "https://pp.example/base/"})
    with runtime(configured, operator=Requester(platform="cli", user="tester")) as built:
        yield built


@pytest.fixture
def home(public_rt: Runtime) -> Iterator[Chat]:
    """A home user's chat."""
    opened = open_chat(public_rt, HOME)
    yield opened
    opened.session.close()


def test_check_without_public_url_is_refused_with_the_reason(rt: Runtime) -> None:
    """Without PORTPATROL_PUBLIC_URL, /check says why it cannot work."""
    chat = open_chat(rt, HOME)
    [reply] = chat.say("/check")
    assert reply.kind is ReplyKind.REFUSED
    assert "PORTPATROL_PUBLIC_URL" in reply.text
    chat.session.close()


def test_check_hands_out_a_single_use_link_that_expires(public_rt: Runtime, home: Chat) -> None:
    """/check answers with a link under the public URL whose token lives 10 minutes, once."""
    [reply] = home.say("/check")
    link = reply.text.splitlines()[-1]
    assert link.startswith("https://pp.example/base/check/")
    token = link.rsplit("/", 1)[1]
    ttl = public_rt.connection.ttl(f"{CHECK_PREFIX}{token}")
    assert 0 < ttl <= 600
    links = CheckLinks(public_rt.connection)
    assert links.peek(token)
    pending = links.redeem(token)
    assert pending is not None
    assert pending.requester == HOME
    assert links.redeem(token) is None
    assert not links.peek(token)


@pytest.mark.parametrize("token", ["", "short", "../../etc", "x" * 1000, "a b", "<script>"])
def test_malformed_tokens_are_never_looked_up(public_rt: Runtime, token: str) -> None:
    """Tokens that cannot be ours are refused before Redis is asked."""
    assert CheckLinks(public_rt.connection).redeem(token) is None


def test_completing_a_check_binds_the_address_and_queues_a_scan(
    public_rt: Runtime, home: Chat, lab_address: str
) -> None:
    """Redeeming the link binds the client address to the user and queues a scan of it."""
    public_rt.admin.allow(public_rt.operator, f"{lab_address}/32", lab=True, note="lab")
    [reply] = home.say("/check")
    token = reply.text.rsplit("/", 1)[1]
    links = CheckLinks(public_rt.connection)
    ticket = complete_check(links, public_rt.store, public_rt.service, token, lab_address)
    assert ticket.state is TicketState.QUEUED
    assert ticket.address == lab_address
    assert public_rt.store.verified_address(HOME) == lab_address
    with pytest.raises(CheckFailed, match="not valid any more"):
        complete_check(links, public_rt.store, public_rt.service, token, lab_address)


def test_check_from_special_space_without_lab_entry_binds_but_does_not_scan(
    public_rt: Runtime, home: Chat
) -> None:
    """A verified loopback address is still refused for scanning without a lab entry."""
    [reply] = home.say("/check")
    token = reply.text.rsplit("/", 1)[1]
    with pytest.raises(CheckFailed, match="special-purpose"):
        complete_check(
            CheckLinks(public_rt.connection), public_rt.store, public_rt.service, token, "127.0.0.9"
        )
    assert public_rt.service.queue.count == 0


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        ("198.51.100.7", None, [], "198.51.100.7"),
        ("198.51.100.7", "203.0.113.9", [], "198.51.100.7"),
        ("10.0.0.2", "203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "192.0.2.1, 203.0.113.9, 10.0.0.3", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "10.0.0.5", ["10.0.0.0/8"], "10.0.0.2"),
        ("::ffff:198.51.100.7", None, [], "198.51.100.7"),
        ("2001:db8::1", None, [], "2001:db8::1"),
    ],
)
def test_client_address_trusts_forwarded_for_only_from_proxies(
    remote: str, forwarded: str | None, trusted: list[str], expected: str
) -> None:
    """X-Forwarded-For is read right to left, and only when the peer is a trusted proxy."""
    assert client_address(remote, forwarded, trusted) == expected


@pytest.mark.parametrize(
    ("remote", "forwarded"),
    [(None, None), ("not-an-ip", None), ("10.0.0.2", "1.2.3.4, <script>")],
)
def test_unreadable_client_addresses_fail_cleanly(
    remote: str | None, forwarded: str | None
) -> None:
    """A peer or forwarded hop that is not an address is a clear failure, not a crash."""
    with pytest.raises(CheckFailed):
        client_address(remote, forwarded, ["10.0.0.0/8"])


def test_home_user_history_needs_a_verified_address(public_rt: Runtime, home: Chat) -> None:
    """/history without a verified connection explains /check."""
    [reply] = home.say("/history")
    assert reply.kind is ReplyKind.REFUSED
    assert "/check" in reply.text


def test_home_user_sees_only_their_own_history(public_rt: Runtime, home: Chat) -> None:
    """A home user lists their own connection's scans and cannot name another address."""
    public_rt.store.bind_address(HOME, "198.51.100.7")
    stored_report(public_rt, "198.51.100.7", HOME, "job1")
    [reply] = home.say("/history")
    assert "198.51.100.7" in reply.text
    assert "job1" in reply.text
    [other] = home.say("/history 198.51.100.8")
    assert other.kind is ReplyKind.REFUSED


def test_agent_history_names_a_target(public_rt: Runtime) -> None:
    """Agents list any address's history and must name one."""
    public_rt.store.grant(str(AGENT), Role.AGENT)
    stored_report(public_rt, "198.51.100.7", HOME, "job1")
    agent = open_chat(public_rt, AGENT)
    [reply] = agent.say("/history 198.51.100.7")
    assert "job1" in reply.text
    [usage] = agent.say("/history")
    assert usage.kind is ReplyKind.REFUSED
    [hostile] = agent.say("/history -oN/tmp/x")
    assert hostile.kind is ReplyKind.REFUSED
    agent.session.close()


def test_forget_removes_the_users_address_and_reports_only(public_rt: Runtime, home: Chat) -> None:
    """/forget deletes the verified address and the user's reports, keeps others', and audits."""
    public_rt.store.bind_address(HOME, "198.51.100.7")
    stored_report(public_rt, "198.51.100.7", HOME, "mine")
    stored_report(public_rt, "198.51.100.7", OTHER, "theirs")
    [reply] = home.say("/forget")
    assert "1 stored scan reports" in reply.text
    assert public_rt.store.verified_address(HOME) is None
    assert public_rt.reports.get("mine") is None
    assert public_rt.reports.get("theirs") is not None
    actions = [(event.actor, event.action) for event in public_rt.audit.events()]
    assert (str(HOME), "forget") in actions
    [again] = home.say("/forget")
    assert "nothing stored" in again.text


def test_start_says_what_is_stored_and_how_to_delete_it(public_rt: Runtime, home: Chat) -> None:
    """/start explains the bot, what it stores for how long, and /forget."""
    replies = home.say("/start")
    text = "\n".join(reply.text for reply in replies)
    assert "30 days" in text
    assert "/forget" in text
    assert "/check" in text
