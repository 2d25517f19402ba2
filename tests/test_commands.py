"""Chat commands through the console front end: help by role, usage, hostile input, admin work.

The hostile-input test runs a real worker whose ``nmap`` is the recording stand-in, so "nmap
was never started" is checked, not assumed; a final allowed scan of a lab address is the
positive control showing the worker was alive and the stand-in does record calls.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import pytest
import redis
from harness import Chat, RecordingNmap, WorkerProcess, open_chat

from bot.core.messages import MAX_COMMAND_LENGTH, Reply, ReplyKind
from bot.core.render import render_reply
from bot.wiring import Runtime
from workers.models import Requester, Role

HOME_USER = Requester(platform="telegram", user="4242")
AGENT = Requester(platform="slack", user="UAGENT")
MEGABYTE = 1 << 20


@pytest.fixture
def home_chat(rt: Runtime) -> Iterator[Chat]:
    """A console chat as a home user with no verified address."""
    opened = open_chat(rt, HOME_USER)
    yield opened
    opened.session.close()


@pytest.fixture
def agent_chat(rt: Runtime) -> Iterator[Chat]:
    """A console chat as a support agent."""
    rt.store.grant(str(AGENT), Role.AGENT)
    opened = open_chat(rt, AGENT)
    yield opened
    opened.session.close()


def only_reply(replies: list[Reply]) -> Reply:
    """Return the single reply a command gave."""
    assert len(replies) == 1, replies
    return replies[0]


def test_help_for_admin_lists_admin_commands(chat: Chat) -> None:
    """An admin's /help lists the scan commands and the admin commands."""
    reply = only_reply(chat.say("/help"))
    assert reply.kind is ReplyKind.TEXT
    assert "/scan TARGET" in reply.text
    assert "Admin commands" in reply.text
    assert "/allow add NETWORK" in reply.text
    assert "/role grant" in reply.text


def test_help_for_home_user_points_to_check(home_chat: Chat) -> None:
    """A home user's /help explains /check and hides the admin commands."""
    reply = only_reply(home_chat.say("/help"))
    assert reply.kind is ReplyKind.TEXT
    assert "/scan TARGET" in reply.text
    assert "/check" in reply.text
    assert "Admin commands" not in reply.text
    assert "/allow" not in reply.text
    assert "/role" not in reply.text


def test_help_for_agent_mentions_allowlist_without_admin_commands(agent_chat: Chat) -> None:
    """An agent's /help talks about the allowlist but shows no admin commands."""
    reply = only_reply(agent_chat.say("/help"))
    assert "allowlist" in reply.text
    assert "/check" not in reply.text
    assert "Admin commands" not in reply.text


def test_scan_without_target_shows_usage(chat: Chat) -> None:
    """/scan alone answers with its usage."""
    reply = only_reply(chat.say("/scan"))
    assert reply.kind is ReplyKind.TEXT
    assert reply.text.startswith("Usage: /scan TARGET [PROFILE]")


def test_unknown_command_and_plain_text_point_to_help(chat: Chat) -> None:
    """An unknown command and text without a slash are answered with a pointer to /help."""
    unknown = only_reply(chat.say("/frobnicate now"))
    assert unknown.kind is ReplyKind.TEXT
    assert unknown.text == "Unknown command /frobnicate. Try /help."
    plain = only_reply(chat.say("hello there"))
    assert plain.text == "Commands start with /. Try /help."


def test_over_long_message_is_refused(chat: Chat) -> None:
    """A message longer than any command is refused before it is parsed."""
    reply = only_reply(chat.say("/help " + "x" * MAX_COMMAND_LENGTH))
    assert reply.kind is ReplyKind.REFUSED
    assert "too long" in reply.text


def hostile_commands(lab: str) -> list[tuple[str, Requester | None]]:
    """Hostile messages and who sends them (None: the operator, an admin)."""
    big = "1" * MEGABYTE
    admin_commands = [
        # option and shell injection around an allowed address
        f"/scan {lab} -oN /tmp/x",
        "/scan -oN /tmp/x",
        f"/scan {lab} --script=x",
        "/scan --script=x",
        f"/scan {lab} -sV --script=vuln",
        "/scan $(id)",
        f"/scan {lab}$(id)",
        "/scan `id`",
        f"/scan {lab};id",
        f"/scan {lab}|id",
        f"/scan {lab}&&id",
        f"/scan {lab}\n-oN /tmp/x",
        f"/scan {lab}\r\n--script=x",
        f"/scan {lab}\x00",
        f"/scan {lab}\x00-oN/tmp/x",
        f"/scan {lab}\u200b",
        f"/scan \u202e{lab}",
        # numbers that are not what they look like
        "/scan \uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits
        "/scan \u0661\u0662\u0667.\u0660.\u0660.\u0661",  # Arabic-Indic digits
        "/scan \U0001d7cf\U0001d7d0\U0001d7d5.0.0.1",  # mathematical bold digits
        "/scan 127\u30020\u30020\u30021",  # ideographic full stops
        "/scan 127\u20240\u20240\u20241",  # one-dot leaders
        "/scan l\u043ecalhost.example",  # Cyrillic o
        "/scan 0x7f.1",
        "/scan 0x7f000001",
        "/scan 2130706433",
        "/scan 127.1",
        "/scan 0177.0.0.1",
        "/scan 127.0.0.1.",
        "/scan 127.000.000.001",
        # IPv6 disguises, ports and brackets
        "/scan ::ffff:127.0.0.1",
        "/scan ::ffff:7f00:1",
        "/scan 64:ff9b::7f00:1",
        "/scan 2002:7f00:1::",
        "/scan ::1",
        "/scan [::1]:22",
        "/scan [::1]",
        "/scan fe80::1%eth0",
        f"/scan {lab}:23",
        f"/scan http://{lab}/",
        # ranges, lists and space that is never scanned
        "/scan 10.0.0.0/8",
        f"/scan {lab}/32",
        "/scan 1.2.3.4,5.6.7.8",
        "/scan 1.2.3.4 5.6.7.8",
        "/scan 10.0.0.1-20",
        "/scan 10.0.0.*",
        "/scan 10.0.0.1",
        "/scan 192.168.1.1",
        "/scan 169.254.169.254",
        "/scan 100.64.0.1",
        "/scan 8.8.8.8",
        "/scan 127.0.0.1",
        "/scan localhost",
        f"/scan {lab} full extra",
        # size, terminal escapes and markup
        "/scan " + big,
        "/scan " + "A" * 1500,
        "/status " + "a" * MEGABYTE,
        f"/scan \x1b[2J{lab}",
        "/scan \x1b]0;pwned\x07127.0.0.1",
        "/scan <b>127.0.0.1</b>",
        "/scan <!channel>",
        "/scan <@U012AB>",
        "/scan <https://evil.example|click>",
        "/\x1b[31mscan 127.0.0.1",
        # /status with things that are not job ids
        "/status $(id)",
        "/status ../../../etc/passwd",
        "/status *",
        "/status rq:job:x",
        "/status \x1b[2J",
        "/status <!channel>",
        "/status x\x00y",
        "/status \uff11\uff12\uff13",  # fullwidth digits pass str.isalnum()
        "/status a b",
        # /allow with networks that are not (or too wide)
        "/allow add 0.0.0.0/0 --lab",
        "/allow add ::/0 --lab",
        "/allow add abc",
        "/allow add 10.0.0.1/8",
        "/allow add 1.2.3.4,5.6.7.8",
        "/allow add $(id) --lab",
        "/allow add -oN /tmp/x",
        "/allow add ::ffff:127.0.0.1/300",
        "/allow remove 127.0.0.0/8",
        "/allow\x00add 127.0.0.0/8",
        # /role with principals and roles that are not
        "/role grant $(id) admin",
        "/role grant :U1 admin",
        "/role grant slack: admin",
        "/role grant SLACK!:U1 admin",
        "/role grant slack:U1 root",
        "/role grant slack:U1 user",
        "/role grant slack:U1 agent extra",
        "/role revoke telegram:1000",
        "/role revoke slack:UNOBODY",
        "/role grant " + "x" * 1900 + " admin",
    ]
    home_commands = [
        "/allow add 0.0.0.0/0 --lab",
        "/allow add 127.0.0.0/8 --lab",
        "/allow list",
        f"/allow remove {lab}/32",
        "/role grant telegram:4242 admin",
        "/role list",
        "/role revoke telegram:1000",
        f"/scan {lab}",
        "/scan 127.0.0.1",
    ]
    return [(text, None) for text in admin_commands] + [(text, HOME_USER) for text in home_commands]


def assert_safe_reply(text: str, reply: Reply) -> None:
    """A hostile message gets a short REFUSED or TEXT reply with no traceback or raw controls."""
    assert reply.kind in (ReplyKind.REFUSED, ReplyKind.TEXT), (text[:80], reply)
    assert reply.job_id is None, (text[:80], reply)
    assert "Traceback" not in reply.text
    assert len(reply.text) < MAX_COMMAND_LENGTH
    rendered = render_reply(reply)
    controls = [ch for ch in rendered if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")]
    assert controls == [], (text[:80], rendered)


@pytest.mark.nmap
def test_hostile_commands_are_answered_and_never_start_nmap(  # noqa: PLR0917 - pytest passes fixtures by name
    rt: Runtime,
    chat: Chat,
    home_chat: Chat,
    recording_worker: WorkerProcess,
    recording_nmap: RecordingNmap,
    redis_client: redis.Redis,
    lab_address: str,
) -> None:
    """At least 60 hostile commands each get a REFUSED or TEXT reply, and nmap is never started."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="positive control")
    commands = hostile_commands(lab_address)
    assert len(commands) >= 60
    for text, requester in commands:
        speaker = home_chat if requester == HOME_USER else chat
        replies = speaker.say(text)
        assert len(replies) == 1, (text[:80], replies)
        assert_safe_reply(text, replies[0])

    assert rt.service.queue.count == 0
    assert redis_client.keys("rq:job:*") == []
    assert [entry.network for entry in rt.store.allow_entries()] == [f"{lab_address}/32"]
    assert redis_client.hgetall("pp:roles") == {}

    # Positive control: an allowed scan reaches the worker, which starts the stand-in.
    accepted = only_reply(chat.say(f"/scan {lab_address}"))
    assert accepted.kind is ReplyKind.ACCEPTED, accepted.text
    assert accepted.job_id is not None
    result = chat.result(accepted.job_id, timeout=60)
    assert result.kind is ReplyKind.FAILED
    assert "nmap failed (exit 1)" in result.text
    assert "Traceback" not in result.text
    calls = recording_nmap.calls()
    assert calls, "the worker never started the nmap stand-in"
    assert all(call.endswith(f" -- {lab_address}") for call in calls), calls


def test_non_admins_cannot_change_allowlist_or_roles(
    rt: Runtime, home_chat: Chat, agent_chat: Chat
) -> None:
    """/allow add and /role grant from a home user or an agent are refused and audited."""
    for speaker in (home_chat, agent_chat):
        allow = only_reply(speaker.say("/allow add 127.0.0.0/8 --lab sneaky"))
        assert allow.kind is ReplyKind.REFUSED
        assert allow.text == "only admins can do that"
        grant = only_reply(speaker.say(f"/role grant {speaker.session.requester} admin"))
        assert grant.kind is ReplyKind.REFUSED
    assert rt.store.allow_entries() == []
    assert rt.store.role_of(HOME_USER) is Role.USER
    assert rt.store.role_of(AGENT) is Role.AGENT
    refused = [
        (event.actor, event.action)
        for event in rt.audit.events()
        if event.decision == "refused" and event.reason == "not an admin"
    ]
    assert refused == [
        (str(HOME_USER), "allow_add"),
        (str(HOME_USER), "role_grant"),
        (str(AGENT), "allow_add"),
        (str(AGENT), "role_grant"),
    ]


def test_home_user_cannot_see_the_allowlist_but_an_agent_can(
    rt: Runtime, home_chat: Chat, agent_chat: Chat
) -> None:
    """/allow list is refused to home users and shown to agents."""
    rt.admin.allow(rt.operator, "127.0.0.0/8", lab=True, note="lab")
    home = only_reply(home_chat.say("/allow list"))
    assert home.kind is ReplyKind.REFUSED
    agent = only_reply(agent_chat.say("/allow list"))
    assert agent.kind is ReplyKind.TEXT
    assert "127.0.0.0/8 [lab]" in agent.text


def test_admin_manages_the_allowlist_with_an_audit_trail(rt: Runtime, chat: Chat) -> None:
    """An admin adds, lists and removes an allow entry; each change is audited."""
    added = only_reply(chat.say("/allow add 127.0.0.0/8 --lab the test lab"))
    assert added.kind is ReplyKind.TEXT
    assert added.text == "Allowed 127.0.0.0/8 (lab)."
    [entry] = rt.store.allow_entries()
    assert (entry.network, entry.lab, entry.note, entry.added_by) == (
        "127.0.0.0/8",
        True,
        "the test lab",
        "cli:tester",
    )
    listed = only_reply(chat.say("/allow list"))
    assert listed.text.startswith("Allowlist:\n127.0.0.0/8 [lab] — the test lab (by cli:tester, ")
    removed = only_reply(chat.say("/allow remove 127.0.0.0/8"))
    assert removed.text == "Removed 127.0.0.0/8 from the allowlist."
    assert only_reply(chat.say("/allow list")).text == "The allowlist is empty."
    changes = [
        (event.actor, event.action, event.target, event.decision)
        for event in rt.audit.events()
        if event.action.startswith("allow_")
    ]
    assert changes == [
        ("cli:tester", "allow_add", "127.0.0.0/8", "done"),
        ("cli:tester", "allow_remove", "127.0.0.0/8", "done"),
    ]
    [add_event] = [event for event in rt.audit.events() if event.action == "allow_add"]
    assert add_event.detail["lab"] is True
    assert add_event.reason == "the test lab"


def test_admin_grants_lists_and_revokes_roles_with_an_audit_trail(
    rt: Runtime, chat: Chat, home_chat: Chat
) -> None:
    """An admin grants, lists and revokes a role; it takes effect and each change is audited."""
    granted = only_reply(chat.say(f"/role grant {HOME_USER} admin"))
    assert granted.text == f"{HOME_USER} is now admin."
    assert rt.store.role_of(HOME_USER) is Role.ADMIN
    assert "Admin commands" in only_reply(home_chat.say("/help")).text
    listed = only_reply(chat.say("/role list")).text
    assert listed.startswith("Roles:\n")
    assert f"{HOME_USER}: admin" in listed.splitlines()
    assert "telegram:1000: admin" in listed.splitlines()
    assert "slack:UADMIN: admin" in listed.splitlines()
    revoked = only_reply(chat.say(f"/role revoke {HOME_USER}"))
    assert revoked.text == f"{HOME_USER} no longer has a granted role."
    assert rt.store.role_of(HOME_USER) is Role.USER
    assert f"{HOME_USER}: admin" not in only_reply(chat.say("/role list")).text.splitlines()
    changes = [
        (event.actor, event.action, event.target, event.decision, event.reason)
        for event in rt.audit.events()
        if event.action in ("role_grant", "role_revoke")
    ]
    assert changes == [
        ("cli:tester", "role_grant", str(HOME_USER), "done", "admin"),
        ("cli:tester", "role_revoke", str(HOME_USER), "done", ""),
    ]


def test_configured_admin_cannot_be_revoked_from_chat(rt: Runtime, chat: Chat) -> None:
    """Revoking an admin that comes from PORTPATROL_ADMINS is refused with the reason."""
    reply = only_reply(chat.say("/role revoke telegram:1000"))
    assert reply.kind is ReplyKind.REFUSED
    assert "PORTPATROL_ADMINS" in reply.text
    assert rt.store.role_of(Requester(platform="telegram", user="1000")) is Role.ADMIN
