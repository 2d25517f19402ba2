"""Administering portpatrol: scoped allow entries, YAML import/export, opt-outs and roles.

Every front end works on the same store: the CLI in its own processes, the console chat, Slack
over signed HTTP against the fake Web API, and Telegram against the fake Bot API. Opt-outs are
proven at both gates: ``submit_scan`` refuses, and a job that got into the queue anyway (accepted
before the opt-out, or written straight into Redis) fails in a real worker whose ``nmap`` is the
recording stand-in, so "nmap never ran" is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from fake_slack import FakeSlack
from fake_telegram import FakeTelegram
from harness import Chat, RecordingNmap, free_port, open_chat, start_worker, stop_worker
from test_slack import RunningApp
from test_telegram import RunningBot, wait_text
from test_worker import enqueue, failed_reason, payload_for, wait_for_job

from bot.core.messages import Reply, ReplyKind
from bot.lab import free_loopback_address
from bot.settings import Settings
from bot.wiring import Runtime, local_operator, runtime
from workers.admin import load_allow_file
from workers.datafile import DataFileError
from workers.models import Requester, Role
from workers.policy import PolicyRefused
from workers.store import ALLOW_KEY, OPT_OUT_KEY

PORTPATROL = Path(sys.executable).with_name("portpatrol")
AGENT = Requester(platform="slack", user="UAGENT")
HOME_USER = Requester(platform="telegram", user="4242")
# Public unicast used purely as data: these requests are refused before anything is queued, and
# no worker runs in the tests that use it.
PUBLIC = "100.128.0.5"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def only_reply(replies: list[Reply]) -> Reply:
    """Return the single reply a command gave."""
    assert len(replies) == 1, replies
    return replies[0]


@pytest.fixture
def agent_chat(rt: Runtime) -> Iterator[Chat]:
    """A console chat as a support agent."""
    rt.store.grant(str(AGENT), Role.AGENT)
    opened = open_chat(rt, AGENT)
    yield opened
    opened.session.close()


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Cli:
    """Run ``portpatrol ARGS`` in a new process on the test Redis, as the local operator."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PORTPATROL_", "REDIS_", "TELEGRAM_", "SLACK_"))
    }
    env["REDIS_URL"] = settings.redis_url or ""
    env["PORTPATROL_STATE_DIR"] = str(tmp_path / "state")
    workdir = tmp_path / "cwd"  # empty: no stray .env
    workdir.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PORTPATROL), *args],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


# The CLI -------------------------------------------------------------------------------------


def test_cli_manages_scoped_allow_entries(cli: Cli, rt: Runtime) -> None:
    """`allow add --scope`, `allow list [--scope]` and `allow remove` work across processes."""
    operator = str(local_operator())
    customers = cli("allow", "add", "198.51.100.0/24", "--scope", "customers", "--note", "Acme")
    assert customers.returncode == 0, customers.stderr
    assert customers.stdout == "allowed 198.51.100.0/24 in scope customers\n"
    lab = cli("allow", "add", "127.0.0.0/8", "--lab", "--note", "bench")
    assert lab.stdout == "allowed 127.0.0.0/8 (lab)\n"

    every = [line.split("\t") for line in cli("allow", "list").stdout.splitlines()]
    assert [(row[0], row[1], row[2], row[3], row[5]) for row in every] == [
        ("127.0.0.0/8", "default", "lab", operator, "bench"),
        ("198.51.100.0/24", "customers", "-", operator, "Acme"),
    ]
    scoped = cli("allow", "list", "--scope", "customers").stdout.splitlines()
    assert [line.split("\t")[0] for line in scoped] == ["198.51.100.0/24"]
    assert cli("allow", "list", "--scope", "lab").stdout == "scope lab is empty\n"

    moved = cli("allow", "add", "198.51.100.0/24", "--scope", "partners")
    assert moved.returncode == 0, moved.stderr
    first, second = moved.stdout.splitlines()
    assert first == "allowed 198.51.100.0/24 in scope partners"
    assert second.startswith("replaced the earlier entry: 198.51.100.0/24\tcustomers\t")
    assert second.endswith("\tAcme")
    [entry] = rt.store.allow_entries("partners")
    assert (entry.network, entry.note) == ("198.51.100.0/24", "")
    assert rt.store.allow_entries("customers") == []

    bad_scope = cli("allow", "add", "203.0.113.0/24", "--scope", "Big Customers!")
    assert bad_scope.returncode == 2
    assert "is not a scope name" in bad_scope.stderr
    removed = cli("allow", "remove", "198.51.100.0/24")
    assert removed.stdout == "removed 198.51.100.0/24\n"
    assert [item.network for item in rt.store.allow_entries()] == ["127.0.0.0/8"]


def test_cli_export_then_import_round_trips(cli: Cli, rt: Runtime, tmp_path: Path) -> None:
    """`allow export` prints YAML that `allow import` reads back into the very same entries."""
    rt.admin.allow(rt.operator, "127.0.0.0/8", lab=True, note="lab: loopback", scope="lab")
    rt.admin.allow(rt.operator, "198.51.100.0/24", note="Acme #1", scope="customers")
    rt.admin.allow(rt.operator, "2001:db8::/32", lab=True, note="docs v6")
    before = rt.store.allow_entries()

    exported = cli("allow", "export")
    assert exported.returncode == 0, exported.stderr
    documents = yaml.safe_load(exported.stdout)
    assert [list(document) for document in documents] == [
        ["network", "scope", "lab", "note", "added_by", "added_at"]
    ] * 3
    only_customers = yaml.safe_load(cli("allow", "export", "--scope", "customers").stdout)
    assert [document["network"] for document in only_customers] == ["198.51.100.0/24"]

    saved = tmp_path / "allowlist.yaml"
    saved.write_text(exported.stdout)
    rt.connection.delete(ALLOW_KEY)
    imported = cli("allow", "import", str(saved))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"imported 3 entries from {saved}\n"
    assert rt.store.allow_entries() == before
    [event] = [event for event in rt.audit.events() if event.action == "allow_import"]
    assert (event.actor, event.decision, event.detail["count"]) == (
        str(local_operator()),
        "done",
        3,
    )
    assert event.detail["scopes"] == ["customers", "default", "lab"]


def test_cli_import_with_replace_scope_drops_what_the_file_omits(
    cli: Cli, rt: Runtime, tmp_path: Path
) -> None:
    """`--replace-scope` makes the file's scopes hold exactly its entries; other scopes stay."""
    rt.admin.allow(rt.operator, "198.51.100.0/24", scope="customers", note="old customer")
    rt.admin.allow(rt.operator, "203.0.113.0/24", scope="customers", note="leaving")
    rt.admin.allow(rt.operator, "127.0.0.0/8", lab=True, scope="lab")
    source = tmp_path / "customers.yaml"
    source.write_text(
        "- network: 198.51.100.0/24\n"
        "  scope: customers\n"
        "  note: renewed\n"
        "- network: 192.0.2.0/24\n"
        "  scope: customers\n"
    )
    result = cli("allow", "import", str(source), "--replace-scope")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"imported 2 entries from {source}"
    assert lines[1].startswith("replaced the earlier entry: 198.51.100.0/24\tcustomers\t")
    assert lines[2] == "removed 203.0.113.0/24 (not in the file)"
    customers = rt.store.allow_entries("customers")
    assert [(entry.network, entry.note) for entry in customers] == [
        ("192.0.2.0/24", ""),
        ("198.51.100.0/24", "renewed"),
    ]
    assert all(entry.added_by == str(local_operator()) for entry in customers)
    assert [entry.network for entry in rt.store.allow_entries("lab")] == ["127.0.0.0/8"]


BAD_FILES = [
    (
        "bad CIDR",
        "- network: 198.51.100.0/24\n- network: 10.0.0.1/8\n  note: host bits\n",
        2,
        "has host bits set",
    ),
    (
        "unknown key",
        "- network: 198.51.100.0/24\n- network: 192.0.2.0/24\n  colour: blue\n",
        3,
        "Extra inputs are not permitted",
    ),
    ("too wide", "- network: 198.51.100.0/24\n\n- network: 0.0.0.0/0\n", 3, "is too wide"),
    (
        "bad scope name",
        "- network: 198.51.100.0/24\n  scope: Customers\n",
        2,
        "String should match pattern",
    ),
    (
        "duplicate network",
        "- network: 198.51.100.0/24\n  scope: a\n- network: 192.0.2.0/24\n"
        "- network: 198.51.100.0/24\n  scope: b\n",
        4,
        "198.51.100.0/24 is listed twice (first on line 1)",
    ),
    ("not a list", "network: 198.51.100.0/24\n", 1, "Input should be a valid list"),
]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_cli_import_of_a_bad_file_changes_nothing_and_names_the_line(  # noqa: PLR0917 - fixtures and parameters
    cli: Cli, rt: Runtime, tmp_path: Path, text: str, line: int, problem: str
) -> None:
    """A file with one bad entry is refused as a whole (exit 2) with file:line and the problem."""
    rt.admin.allow(rt.operator, "203.0.113.0/24", note="already there", scope="customers")
    before = rt.connection.hgetall(ALLOW_KEY)
    source = tmp_path / "bad.yaml"
    source.write_text(text)
    result = cli("allow", "import", str(source), "--replace-scope")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"portpatrol: nothing imported: {source}:{line}: ")
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
    assert rt.connection.hgetall(ALLOW_KEY) == before
    [event] = [event for event in rt.audit.events() if event.action == "allow_import"]
    assert event.decision == "refused"
    assert f"{source}:{line}:" in event.reason


def test_load_allow_file_accepts_what_export_writes_and_nothing_else(tmp_path: Path) -> None:
    """The file loader validates the whole file: missing files and empty files are errors too."""
    with pytest.raises(DataFileError, match="cannot read"):
        load_allow_file(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(DataFileError, match="empty"):
        load_allow_file(empty)
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("[]\n")
    assert load_allow_file(nothing) == []


def test_cli_manages_the_opt_out_list(cli: Cli, rt: Runtime) -> None:
    """`optout add|list|remove` change and show the opt-out list; each change is audited."""
    added = cli("optout", "add", "198.51.100.7", "--note", "owner asked, ticket 42")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "opted out 198.51.100.7/32\n"
    [row] = cli("optout", "list").stdout.splitlines()
    network, _scope, lab, added_by, _when, note = row.split("\t")
    assert (network, lab, added_by, note) == (
        "198.51.100.7/32",
        "-",
        str(local_operator()),
        "owner asked, ticket 42",
    )
    again = cli("optout", "add", "198.51.100.7/32", "--note", "ticket 43")
    assert again.stdout.splitlines()[1].startswith("replaced the earlier opt-out: 198.51.100.7/32")
    assert cli("optout", "remove", "198.51.100.7").stdout == (
        "removed 198.51.100.7/32 from the opt-out list\n"
    )
    assert cli("optout", "list").stdout == "the opt-out list is empty\n"
    missing = cli("optout", "remove", "198.51.100.7")
    assert missing.returncode == 2
    assert missing.stderr == "portpatrol: 198.51.100.7/32 is not on the opt-out list\n"
    changes = [
        (event.action, event.target, event.decision)
        for event in rt.audit.events()
        if event.action.startswith("optout_")
    ]
    assert changes == [
        ("optout_add", "198.51.100.7/32", "done"),
        ("optout_add", "198.51.100.7/32", "done"),
        ("optout_remove", "198.51.100.7/32", "done"),
        ("optout_remove", "198.51.100.7", "refused"),
    ]


# The console chat ----------------------------------------------------------------------------


def test_chat_allow_with_scopes(rt: Runtime, chat: Chat, agent_chat: Chat) -> None:
    """/allow add --scope, /allow list [SCOPE] and a re-add that says what it replaced."""
    added = only_reply(chat.say("/allow add 198.51.100.0/24 --scope customers Acme Corp"))
    assert added.text == "Allowed 198.51.100.0/24 in scope customers."
    lab = only_reply(chat.say("/allow add 127.0.0.0/8 --lab --scope=lab the test lab"))
    assert lab.text == "Allowed 127.0.0.0/8 (lab) in scope lab."
    listed = only_reply(agent_chat.say("/allow list")).text.splitlines()
    assert listed[0] == "Allowlist:"
    assert listed[1].startswith("127.0.0.0/8 [lab] [scope lab] — the test lab (by cli:tester, ")
    assert listed[2].startswith("198.51.100.0/24 [scope customers] — Acme Corp (by cli:tester, ")
    scoped = only_reply(agent_chat.say("/allow list customers")).text.splitlines()
    assert scoped[0] == "Allowlist, scope customers:"
    assert len(scoped) == 2
    assert only_reply(chat.say("/allow list partners")).text == (
        "No allow entries in scope partners."
    )
    replaced = only_reply(chat.say("/allow add 198.51.100.0/24 renewed"))
    assert replaced.text.startswith(
        "Allowed 198.51.100.0/24. It replaces the entry in scope customers: Acme Corp "
        "(by cli:tester, "
    )
    [entry] = [item for item in rt.store.allow_entries() if item.network == "198.51.100.0/24"]
    assert (entry.scope, entry.note) == ("default", "renewed")
    refused = only_reply(chat.say("/allow add 192.0.2.0/24 --scope NOPE!"))
    assert refused.kind is ReplyKind.REFUSED
    assert "is not a scope name" in refused.text
    usage = only_reply(chat.say("/allow add 192.0.2.0/24 --scope"))
    assert usage.text.startswith("Usage: /allow add NETWORK [--lab] [--scope SCOPE] [NOTE]")
    scopes = [
        (event.target, event.detail["scope"], event.detail["replaced_scope"])
        for event in rt.audit.events()
        if event.action == "allow_add" and event.decision == "done"
    ]
    assert scopes == [
        ("198.51.100.0/24", "customers", None),
        ("127.0.0.0/8", "lab", None),
        ("198.51.100.0/24", "default", "customers"),
    ]


def test_chat_opt_outs_for_admins_agents_and_home_users(
    rt: Runtime, chat: Chat, agent_chat: Chat
) -> None:
    """Admins add and remove opt-outs, agents may only list them, home users see nothing."""
    added = only_reply(chat.say(f"/optout add {PUBLIC} owner asked, ticket 42"))
    assert added.text == f"Opted out {PUBLIC}/32: it is refused for everyone from now on."
    listed = only_reply(agent_chat.say("/optout list"))
    assert listed.text.startswith(
        f"Opt-out list (never scanned):\n{PUBLIC}/32 — owner asked, ticket 42 (by cli:tester, "
    )
    refused = only_reply(agent_chat.say("/optout add 192.0.2.0/24"))
    assert (refused.kind, refused.text) == (ReplyKind.REFUSED, "only admins can do that")
    home = open_chat(rt, HOME_USER)
    try:
        hidden = only_reply(home.say("/optout list"))
    finally:
        home.session.close()
    assert hidden.kind is ReplyKind.REFUSED
    assert PUBLIC not in hidden.text
    removed = only_reply(chat.say(f"/optout remove {PUBLIC}"))
    assert removed.text == f"Removed {PUBLIC}/32 from the opt-out list."
    assert only_reply(chat.say("/optout list")).text == "The opt-out list is empty."
    assert only_reply(chat.say("/optout")).text.startswith("Usage: /optout add NETWORK")


def test_opt_out_wins_over_allow_entries_at_submit(
    rt: Runtime, agent_chat: Chat, lab_address: str
) -> None:
    """An agent's scan of an opted-out address is refused naming the entry and note, lab or not."""
    rt.admin.allow(rt.operator, "100.128.0.0/16", note="customers")
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="lab")
    rt.admin.opt_out(rt.operator, "100.128.0.0/24", note="owner asked, ticket 42")
    rt.admin.opt_out(rt.operator, lab_address, note="lab owner said no")
    public = only_reply(agent_chat.say(f"/scan {PUBLIC}"))
    assert public.kind is ReplyKind.REFUSED
    assert public.text == (
        f"{PUBLIC} is on the opt-out list (entry 100.128.0.0/24: owner asked, ticket 42): "
        "its owner asked not to be scanned"
    )
    lab = only_reply(agent_chat.say(f"/scan {lab_address}"))
    assert lab.kind is ReplyKind.REFUSED
    assert f"(entry {lab_address}/32: lab owner said no)" in lab.text
    assert rt.service.queue.count == 0
    refusals = [
        (event.target, event.decision)
        for event in rt.audit.events()
        if event.action == "scan" and event.actor == str(AGENT)
    ]
    assert refusals == [(PUBLIC, "refused"), (lab_address, "refused")]


def test_opt_out_wins_in_the_worker_and_nmap_never_runs(  # noqa: PLR0917 - pytest passes fixtures by name
    rt: Runtime,
    settings: Settings,
    agent_chat: Chat,
    redis_client: redis.Redis,
    recording_nmap: RecordingNmap,
    tmp_path: Path,
    lab_address: str,
) -> None:
    """A job accepted before its opt-out, or written straight into Redis, fails in the worker."""
    control_address = free_loopback_address()
    rt.admin.allow(rt.operator, "127.0.0.0/8", lab=True, note="the whole lab")
    accepted = only_reply(agent_chat.say(f"/scan {lab_address}"))
    assert accepted.kind is ReplyKind.ACCEPTED, accepted.text
    assert accepted.job_id is not None
    rt.admin.opt_out(rt.operator, lab_address, note="owner said no after the request")
    smuggled = enqueue(rt, payload_for(lab_address))
    control = enqueue(rt, payload_for(control_address))
    worker = start_worker(settings, tmp_path, path_prefix=recording_nmap.directory)
    try:
        wait_for_job(redis_client, control)
        for job_id in (accepted.job_id, smuggled):
            wait_for_job(redis_client, job_id)
            assert failed_reason(redis_client, job_id) == (
                f"refused at the worker: {lab_address} is on the opt-out list "
                f"(entry {lab_address}/32: owner said no after the request): "
                "its owner asked not to be scanned"
            )
    finally:
        stop_worker(worker)
    # The control job reached the stand-in, so the worker was alive and nmap calls are recorded.
    assert [call.rsplit(" ", 1)[-1] for call in recording_nmap.calls()] == [control_address]
    result = agent_chat.result(accepted.job_id, timeout=30)
    assert result.kind is ReplyKind.FAILED
    assert "opt-out list" in result.text


# Roles ---------------------------------------------------------------------------------------


@pytest.fixture
def bare_rt(settings: Settings) -> Iterator[Runtime]:
    """A runtime without PORTPATROL_ADMINS: only granted admins (and the CLI operator) exist."""
    unconfigured = settings.model_copy(update={"admins": frozenset()})
    with runtime(unconfigured, operator=Requester(platform="cli", user="tester")) as built:
        yield built


def test_last_admin_cannot_step_down(bare_rt: Runtime) -> None:
    """The only granted admin cannot revoke or downgrade themselves; with another admin they can."""
    rt = bare_rt
    rt.admin.grant(rt.operator, "telegram:1", Role.ADMIN)
    first = open_chat(rt, Requester(platform="telegram", user="1"))
    try:
        revoke = only_reply(first.say("/role revoke telegram:1"))
        assert revoke.kind is ReplyKind.REFUSED
        assert revoke.text.startswith("you are the last admin")
        downgrade = only_reply(first.say("/role grant telegram:1 agent"))
        assert downgrade.kind is ReplyKind.REFUSED
        assert downgrade.text.startswith("you are the last admin")
        assert rt.store.role_of(Requester(platform="telegram", user="1")) is Role.ADMIN
        # The operator at the terminal does not count as a standing admin either.
        with pytest.raises(PolicyRefused) as refused:
            rt.admin.revoke(rt.operator, "telegram:1")
        assert refused.value.code == "last_admin"
        assert refused.value.reason.startswith("telegram:1 is the last admin")

        assert only_reply(first.say("/role grant slack:U2 admin")).text == "slack:U2 is now admin."
        stepped = only_reply(first.say("/role grant telegram:1 agent"))
        assert stepped.text == "telegram:1 is now agent."
        second = open_chat(rt, Requester(platform="slack", user="U2"))
        try:
            assert only_reply(second.say("/role revoke telegram:1")).kind is ReplyKind.TEXT
            alone = only_reply(second.say("/role revoke slack:U2"))
            assert alone.text.startswith("you are the last admin")
        finally:
            second.session.close()
    finally:
        first.session.close()
    assert rt.store.roles() == {"slack:U2": Role.ADMIN, "cli:tester": Role.ADMIN}
    refused_events = [
        (event.actor, event.action, event.target)
        for event in rt.audit.events()
        if event.decision == "refused"
    ]
    assert refused_events == [
        ("telegram:1", "role_revoke", "telegram:1"),
        ("telegram:1", "role_grant", "telegram:1"),
        ("cli:tester", "role_revoke", "telegram:1"),
        ("slack:U2", "role_revoke", "slack:U2"),
    ]


def test_granted_admin_may_step_down_when_a_configured_admin_exists(rt: Runtime) -> None:
    """With PORTPATROL_ADMINS set, the only granted admin can revoke their own role."""
    rt.admin.grant(rt.operator, "telegram:1", Role.ADMIN)
    chat = open_chat(rt, Requester(platform="telegram", user="1"))
    try:
        reply = only_reply(chat.say("/role revoke telegram:1"))
    finally:
        chat.session.close()
    assert reply.text == "telegram:1 no longer has a granted role."


def test_cli_refuses_to_revoke_the_last_admin(cli: Cli, settings: Settings) -> None:
    """From the CLI too, revoking the only admin is refused with a one-line reason."""
    assert cli("role", "grant", "slack:U1", "admin").returncode == 0
    refused = cli("role", "revoke", "slack:U1")
    assert refused.returncode == 2
    assert refused.stderr == (
        "portpatrol: slack:U1 is the last admin: grant admin to someone else first "
        "(or set PORTPATROL_ADMINS)\n"
    )
    assert cli("role", "grant", "telegram:7", "admin").returncode == 0
    assert cli("role", "revoke", "slack:U1").returncode == 0


# Slack and Telegram --------------------------------------------------------------------------


@pytest.fixture
def slack_app(rt: Runtime) -> Iterator[RunningApp]:
    """The Slack app in HTTP mode against a fake Web API, with a granted agent."""
    rt.store.grant(str(AGENT), Role.AGENT)
    with FakeSlack() as fake:
        running = RunningApp(rt, fake, free_port()).start()
        yield running
        running.stop()


def admin_command(app: RunningApp, user: str, text: str) -> str:
    """Send ``/scan-admin TEXT`` as a user; return the ephemeral answer's text."""
    status, answer, _ = app.command(user, text, command="/scan-admin")
    assert status == 200
    return str(json.loads(answer)["text"])


def test_slack_scan_admin_manages_scopes_and_opt_outs(slack_app: RunningApp, rt: Runtime) -> None:
    """/scan-admin allow … --scope and /scan-admin optout … reach the same store as the CLI."""
    added = admin_command(slack_app, "UADMIN", "allow add 198.51.100.0/24 --scope customers Acme")
    assert "Allowed 198.51.100.0/24 in scope customers" in added
    listed = admin_command(slack_app, "UAGENT", "allow list customers")
    assert "Allowlist, scope customers:" in listed
    assert "198.51.100.0/24" in listed
    opted = admin_command(slack_app, "UADMIN", "optout add 198.51.100.7 owner asked")
    assert "Opted out 198.51.100.7/32" in opted
    assert "owner asked" in admin_command(slack_app, "UAGENT", "optout list")
    assert "only admins" in admin_command(slack_app, "UAGENT", "optout remove 198.51.100.7")
    scan = slack_app.command("UAGENT", "198.51.100.7")
    assert "opt-out list" in json.loads(scan[1])["text"]
    assert "owner asked" in json.loads(scan[1])["text"]
    removed = admin_command(slack_app, "UADMIN", "optout remove 198.51.100.7")
    assert "Removed 198.51.100.7/32 from the opt-out list" in removed
    assert [(item.network, item.scope) for item in rt.store.allow_entries()] == [
        ("198.51.100.0/24", "customers")
    ]
    assert rt.connection.hlen(OPT_OUT_KEY) == 0
    assert rt.service.queue.count == 0


@pytest.fixture
def telegram_bot(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningBot]:
    """The Telegram bot (long polling) against a fake Bot API."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # as `portpatrol telegram` does
    with FakeTelegram() as fake:
        running = RunningBot(rt, fake, free_port()).start()
        yield running
        running.stop()


def test_telegram_allow_with_scopes(telegram_bot: RunningBot, rt: Runtime) -> None:
    """An admin's /allow add --scope and /allow list SCOPE work from Telegram."""
    fake = telegram_bot.fake
    fake.push_update(
        fake.message_update(user_id=1000, text="/allow add 198.51.100.0/24 --scope customers Acme")
    )
    wait_text(fake, 1000, r"Allowed 198\.51\.100\.0/24 in scope customers\.")
    fake.push_update(fake.message_update(user_id=1000, text="/allow list customers"))
    listed = wait_text(fake, 1000, r"Allowlist, scope customers:")
    assert "198.51.100.0/24 [scope customers] — Acme (by telegram:1000, " in listed
    fake.push_update(fake.message_update(user_id=1000, text="/allow remove 198.51.100.0/24"))
    wait_text(fake, 1000, r"Removed 198\.51\.100\.0/24 from the allowlist\.")
    assert rt.store.allow_entries() == []
    added = [event for event in rt.audit.events() if event.action == "allow_add"]
    assert [(event.actor, event.detail["scope"]) for event in added] == [
        ("telegram:1000", "customers")
    ]
