"""Watches: /watch, /unwatch and /watches, their refusals, /forget, and runs on rq's scheduler.

The command tests run on the test Redis with no worker (a daily watch never comes due during a
test); the end-to-end test runs watches every few seconds through a real worker's rq scheduler
and real nmap against a lab host whose telnet service is stopped between runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from harness import Chat, WorkerProcess, open_chat
from rq.registry import ScheduledJobRegistry

from bot.core.messages import ReplyKind
from bot.core.render import render_reply
from bot.lab import LabHost, LabService
from bot.wiring import Runtime, build_watches
from workers.models import Requester
from workers.queue import scan_queue
from workers.watches import NEXT_RUN_PREFIX, USER_WATCHES_PREFIX, WATCH_PREFIX

HOME = Requester(platform="telegram", user="4242")
TELNET_PORT = 2323
FTP_PORT = 2121
TELNET_SERVICE = LabService("telnet", TELNET_PORT, b"\r\nBusyBox v1.31.1 router login: ", "telnet")
FTP_SERVICE = LabService("ftp", FTP_PORT, b"220 (vsFTPd 3.0.3)\r\n", "ftp")
INTERVAL = timedelta(seconds=3)


def scheduled_jobs(rt: Runtime) -> list[str]:
    """Return the ids of the jobs waiting on rq's scheduled registry of the scan queue."""
    registry = ScheduledJobRegistry(queue=scan_queue(rt.connection))  # type: ignore[no-untyped-call]  # rq leaves it unannotated
    return list(registry.get_job_ids())


def audit_decisions(rt: Runtime, action: str) -> list[str]:
    """Return the decisions of the audit events with this action, oldest first."""
    return [event.decision for event in reversed(rt.audit.query()) if event.action == action]


@pytest.fixture
def home_chat(rt: Runtime, lab_address: str) -> Iterator[Chat]:
    """A home user whose verified connection is the lab address (under a lab allow entry)."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="watch test")
    rt.store.bind_address(HOME, lab_address)
    opened = open_chat(rt, HOME)
    yield opened
    opened.session.close()


def test_add_list_and_remove_a_watch(rt: Runtime, chat: Chat, lab_address: str) -> None:
    """/watch stores and schedules a watch, /watches lists it, /unwatch deletes both; audited."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="watch test")
    [added] = chat.say(f"/watch {lab_address} weekly")
    assert added.kind is ReplyKind.TEXT, added.text
    assert added.text.startswith(f"Watching {lab_address} weekly (watch ")
    [watch] = rt.watches.watches_of(rt.operator)
    assert (watch.address, watch.interval, watch.interval_s) == (lab_address, "weekly", 7 * 86400)
    assert watch.reply_to == chat.session.address.to_payload()
    assert rt.connection.exists(f"{WATCH_PREFIX}{watch.watch_id}")
    assert rt.connection.sismember(f"{USER_WATCHES_PREFIX}{rt.operator}", watch.watch_id)
    assert scheduled_jobs(rt) == [rt.watches.store.next_job(watch.watch_id)]

    [listed] = chat.say("/watches")
    assert f"{lab_address} ({lab_address}) weekly" in listed.text
    assert watch.watch_id in listed.text

    [duplicate] = chat.say(f"/watch {lab_address}")
    assert duplicate.kind is ReplyKind.REFUSED
    assert "already watch" in duplicate.text

    [removed] = chat.say(f"/unwatch {lab_address}")
    assert removed.text == f"Stopped watching {lab_address}."
    assert rt.watches.watches_of(rt.operator) == []
    assert scheduled_jobs(rt) == []
    assert not rt.connection.exists(f"{WATCH_PREFIX}{watch.watch_id}")
    assert not rt.connection.exists(f"{NEXT_RUN_PREFIX}{watch.watch_id}")
    [empty] = chat.say("/watches")
    assert empty.text.startswith("You watch nothing.")
    [again] = chat.say(f"/unwatch {lab_address}")
    assert again.kind is ReplyKind.REFUSED
    assert audit_decisions(rt, "watch_add") == ["accepted", "refused"]
    assert audit_decisions(rt, "watch_remove") == ["done", "refused"]


@pytest.mark.parametrize(
    "case",
    [
        ("none", "/watch 8.8.8.8", "8.8.8.8 is not in the allowlist"),
        ("lab", "/watch {address} hourly", "unknown interval; choose one of: daily, weekly"),
        ("none", "/watch {address}", "special-purpose space"),
        ("optout", "/watch {address}", "is on the opt-out list (entry {address}/32: owner asked)"),
        ("lab", "/watch", "Usage: /watch TARGET [daily|weekly]"),
    ],
)
def test_refused_watches_say_why_and_store_nothing(
    rt: Runtime, chat: Chat, lab_address: str, case: tuple[str, str, str]
) -> None:
    """Not allowlisted, a bad interval, special-purpose space and opt-outs are refused, audited."""
    setup, command, reason = case
    if setup in ("lab", "optout"):
        rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="watch test")
    if setup == "optout":
        rt.admin.opt_out(rt.operator, f"{lab_address}/32", note="owner asked")
    [reply] = chat.say(command.format(address=lab_address))
    assert reason.format(address=lab_address) in reply.text
    assert rt.watches.watches_of(rt.operator) == []
    assert scheduled_jobs(rt) == []
    if command != "/watch":
        assert audit_decisions(rt, "watch_add") == ["refused"]


def test_home_user_watches_only_their_verified_address(
    rt: Runtime, home_chat: Chat, lab_address: str
) -> None:
    """A home user is refused another address (even an allowlisted one) and may watch their own."""
    rt.admin.allow(rt.operator, "127.0.0.0/8", lab=True, note="all of loopback")
    [other] = home_chat.say("/watch 127.0.0.1")
    assert other.kind is ReplyKind.REFUSED
    assert "you can scan only the connection you verified as yours" in other.text
    [own] = home_chat.say(f"/watch {lab_address}")
    assert own.text.startswith(f"Watching {lab_address} daily"), own.text
    assert [watch.address for watch in rt.watches.watches_of(HOME)] == [lab_address]


def test_forget_removes_the_users_watches(rt: Runtime, home_chat: Chat, lab_address: str) -> None:
    """/forget deletes the user's watches and their scheduled runs, and says how many."""
    home_chat.say(f"/watch {lab_address} weekly")
    assert len(scheduled_jobs(rt)) == 1
    [reply] = home_chat.say("/forget")
    assert reply.text == "Deleted your verified connection and 0 stored scan reports and 1 watches."
    assert rt.watches.watches_of(HOME) == []
    assert scheduled_jobs(rt) == []
    assert rt.connection.keys(f"{WATCH_PREFIX}*") == []
    [event] = [event for event in rt.audit.query() if event.action == "forget"]
    assert event.reason.endswith(", 1 watches")


def wait_for_history(rt: Runtime, chat: Chat, address: str, count: int) -> None:
    """Deliver chat events until the address has ``count`` stored reports (a run finished)."""
    deadline = time.monotonic() + 90
    while len(rt.reports.history(address)) < count:
        assert time.monotonic() < deadline, f"no watch run stored report {count} within 90 s"
        if chat.session.pump():
            time.sleep(0.2)


def settle(chat: Chat, seconds: float) -> None:
    """Deliver chat events for a while, so a message that would arrive has arrived."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if chat.session.pump():
            time.sleep(0.2)


def reports_received(chat: Chat) -> list[str]:
    """Return the rendered report replies the chat got, in order."""
    return [render_reply(reply) for reply in chat.replies() if reply.kind is ReplyKind.REPORT]


@pytest.mark.nmap
def test_watch_runs_on_rqs_scheduler_and_speaks_only_on_change(
    rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """Real worker and nmap: silent while unchanged, one "closed — fixed" message, then silent."""
    rt.watches = build_watches(
        rt.settings,
        connection=rt.connection,
        redis_url=rt.redis_url,
        store=rt.store,
        audit=rt.audit,
        profiles=rt.profiles,
        intervals={"daily": INTERVAL},
    )
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="watch test")
    chat = open_chat(rt, rt.operator)
    try:
        with LabHost(lab_address, [FTP_SERVICE]), LabHost(lab_address, [TELNET_SERVICE]) as telnet:
            baseline = chat.scan(lab_address)
            assert baseline.kind is ReplyKind.REPORT, baseline.text
            assert len(reports_received(chat)) == 1
            [added] = chat.say(f"/watch {lab_address} daily")
            assert added.text.startswith(f"Watching {lab_address} daily"), added.text

            wait_for_history(rt, chat, lab_address, 2)  # nothing changed: silence
            settle(chat, 2)
            assert len(reports_received(chat)) == 1

            telnet.stop()
            wait_for_history(rt, chat, lab_address, 3)
            settle(chat, 3)
            reports = reports_received(chat)
            assert len(reports) == 2, reports
            assert f"closed: {TELNET_PORT}/tcp telnet" in reports[1]
            assert f"Good news: {TELNET_PORT}/tcp telnet is now closed — fixed." in reports[1]

            wait_for_history(rt, chat, lab_address, 4)  # unchanged since the closing: silence
            settle(chat, 2)
            assert len(reports_received(chat)) == 2

            [removed] = chat.say(f"/unwatch {lab_address}")
            assert removed.text == f"Stopped watching {lab_address}."
            settle(chat, 6)  # a run under way when /unwatch came may still store its report
            stored = len(rt.reports.history(lab_address))
            settle(chat, 4 * INTERVAL.total_seconds())
            assert len(rt.reports.history(lab_address)) == stored
            assert scheduled_jobs(rt) == []
        decisions = audit_decisions(rt, "watch_scan")
        assert decisions[:3] == ["unchanged", "changed", "unchanged"]
        assert len(reports_received(chat)) == 2
    finally:
        chat.session.close()
