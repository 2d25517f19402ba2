"""The Slack front end end to end: real slack-bolt over HTTP with requests signed as Slack signs
them, a local fake Web API, real Redis, real worker processes and real nmap on loopback.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_slack import FakeSlack, sign, slash_command_body
from harness import HOSTILE_TELNET, WorkerProcess, free_port, start_worker, stop_worker

from bot.lab import LabHost, LabService, voip_adapter
from bot.settings import Settings
from bot.slack.app import SlackBot, command_text, verify_request
from bot.web import WebServer
from bot.wiring import Runtime, runtime
from workers.models import Requester, Role

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # noqa: S105 - the fake app's secret
ADMIN = "UADMIN"  # slack:UADMIN is a configured admin in the settings fixture
AGENT = "UAGENT"
STRANGER = "USTRANGER"
CHANNEL = "C0CHAN"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A local Slack Web API server."""
    with FakeSlack() as server:
        yield server


@dataclass
class RunningApp:
    """`portpatrol slack` (HTTP mode) in a background thread."""

    rt: Runtime
    fake: FakeSlack
    port: int
    consumer: str = "test-host"
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop_event: asyncio.Event | None = None
    errors: list[BaseException] = field(default_factory=list)
    sequence: int = 0

    def start(self) -> RunningApp:
        """Start the app and wait until its web server answers."""

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            bot = SlackBot(
                self.rt,
                bot_token=self.fake.bot_token,
                signing_secret=SIGNING_SECRET,
                base_url=self.fake.base_url,
                consumer=self.consumer,
            )
            web_server = WebServer(self.rt, host="127.0.0.1", port=self.port)
            await bot.run(web_server, app_token=None, stop=self.stop_event)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as error:  # surfaced by stop()
                self.errors.append(error)

        self.thread = threading.Thread(target=run, name="slack-app", daemon=True)
        self.thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Stop the app and re-raise anything it died of."""
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "the app did not stop"
        if self.errors:
            raise self.errors[0]

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, float]:
        """POST to /slack/events; return status, body and seconds taken."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        started = time.monotonic()
        connection.request(
            "POST",
            "/slack/events",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
        return response.status, text, time.monotonic() - started

    def command(
        self, user: str, text: str, *, command: str = "/scan", trigger: str | None = None
    ) -> tuple[int, str, bytes]:
        """Send a signed slash command; return status, ack body and the request body."""
        self.sequence += 1
        body = slash_command_body(
            command=command,
            text=text,
            user_id=user,
            channel_id=CHANNEL,
            response_url=self.fake.response_url(CHANNEL, user),
            trigger_id=trigger or f"{self.sequence}.{time.monotonic_ns()}",
        )
        status, answer, _ = self.post(body, sign(SIGNING_SECRET, body))
        return status, answer, body


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Wait until the web server answers /healthz."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
        finally:
            connection.close()
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def slack_rt(settings: Settings) -> Iterator[Runtime]:
    """A runtime with an agent granted on Slack."""
    with runtime(settings, operator=Requester(platform="cli", user="tester")) as built:
        built.store.grant(f"slack:{AGENT}", Role.AGENT)
        yield built


@pytest.fixture
def app(slack_rt: Runtime, fake: FakeSlack) -> Iterator[RunningApp]:
    """The Slack app in HTTP mode."""
    running = RunningApp(slack_rt, fake, free_port()).start()
    yield running
    running.stop()


def channel_texts(fake: FakeSlack) -> list[str]:
    """Fallback text of every bot message in the channel, oldest first."""
    return [message["text"] for _, message in sorted(fake.messages(CHANNEL).items())]


def blocks_json(fake: FakeSlack) -> str:
    """Every block of every bot message in the channel, as JSON text."""
    return json.dumps([message["blocks"] for message in fake.messages(CHANNEL).values()])


def wait_channel(fake: FakeSlack, needle: str, timeout: float = 60) -> str:
    """Wait until a channel message's fallback text contains ``needle``."""
    fake.wait_for(lambda _calls: any(needle in text for text in channel_texts(fake)), timeout)
    return next(text for text in channel_texts(fake) if needle in text)


def test_agent_scan_acks_fast_then_updates_the_channel_message(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """An agent's /scan is acked ephemerally with the position; one channel message tracks it."""
    slack_rt.admin.allow(slack_rt.operator, f"{lab_address}/32", lab=True, note="slack test")
    with voip_adapter(lab_address, privileged=False):
        body = slash_command_body(
            text=lab_address,
            user_id=AGENT,
            channel_id=CHANNEL,
            response_url=fake.response_url(CHANNEL, AGENT),
            trigger_id="1.1",
        )
        status, answer, seconds = app.post(body, sign(SIGNING_SECRET, body))
        assert status == 200
        assert seconds < 3
        ack = json.loads(answer)
        assert ack["response_type"] == "ephemeral"
        assert "Queued" in ack["text"]
        final = wait_channel(fake, "CRITICAL", timeout=90)
    assert lab_address in final
    messages = fake.messages(CHANNEL)
    assert len(messages) == 1  # posted once, then updated
    [message] = messages.values()
    assert message["edited"] >= 2  # scanning, then done
    assert message["unfurl_links"] is False
    text = json.dumps(message["blocks"])
    assert "telnet" in text
    assert "Scan again" in text
    assert "Full scan" in text
    assert "Lingo" in text


def test_unknown_user_is_refused_with_who_can_grant_access(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime
) -> None:
    """Someone without a role gets an ephemeral refusal naming the admins; nothing is queued."""
    status, answer, _ = app.command(STRANGER, "198.51.100.7")
    assert status == 200
    ack = json.loads(answer)
    assert ack["response_type"] == "ephemeral"
    assert f"<@{ADMIN}>" in ack["text"]
    assert slack_rt.service.queue.count == 0
    assert fake.messages(CHANNEL) == {}


@pytest.mark.parametrize(
    "tamper",
    [
        "bad signature",
        "stale timestamp",
        "non-numeric timestamp",
        "non-ASCII signature",
        "missing headers",
        "future timestamp",
        "uppercase signature",
    ],
)
def test_badly_signed_requests_get_401_and_do_nothing(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime, tamper: str
) -> None:
    """Forged, stale or malformed signatures are refused with 401 before anything happens."""
    slack_rt.admin.allow(slack_rt.operator, "198.51.100.0/24", lab=True, note="customers")
    body = slash_command_body(
        text="198.51.100.7",
        user_id=AGENT,
        channel_id=CHANNEL,
        response_url=fake.response_url(CHANNEL, AGENT),
    )
    headers = sign(SIGNING_SECRET, body)
    if tamper == "bad signature":
        headers = sign("not-the-secret", body)
    elif tamper == "stale timestamp":
        headers = sign(SIGNING_SECRET, body, int(time.time()) - 301)
    elif tamper == "future timestamp":
        headers = sign(SIGNING_SECRET, body, int(time.time()) + 301)
    elif tamper == "non-numeric timestamp":
        headers = sign(SIGNING_SECRET, body, "12ab")
    elif tamper == "non-ASCII signature":
        headers["X-Slack-Signature"] = "v0=" + "é" * 64
    elif tamper == "uppercase signature":
        headers["X-Slack-Signature"] = headers["X-Slack-Signature"].upper()
    else:
        headers = {}
    encoded = {key: value.encode("utf-8").decode("latin-1") for key, value in headers.items()}
    status, _, _ = app.post(body, encoded)
    assert status == 401
    assert slack_rt.service.queue.count == 0
    assert [call for call in fake.calls() if call.method != "auth.test"] == []


def test_retries_and_replays_create_one_job(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime
) -> None:
    """The same command re-sent with X-Slack-Retry-Num 1..3, or replayed, queues one scan."""
    slack_rt.admin.allow(slack_rt.operator, "198.51.100.0/24", lab=True, note="customers")
    body = slash_command_body(
        text="198.51.100.7",
        user_id=AGENT,
        channel_id=CHANNEL,
        response_url=fake.response_url(CHANNEL, AGENT),
        trigger_id="42.42",
    )
    for retry in (None, "1", "2", "3"):
        headers = sign(SIGNING_SECRET, body)
        if retry is not None:
            headers["X-Slack-Retry-Num"] = retry
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        status, _, _ = app.post(body, headers)
        assert status == 200
    replay_headers = sign(SIGNING_SECRET, body)
    assert app.post(body, replay_headers)[0] == 200
    assert app.post(body, replay_headers)[0] == 200
    assert slack_rt.service.queue.count == 1
    assert len(fake.messages(CHANNEL)) == 1


def test_hostile_banner_is_escaped_and_pings_no_one(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """A banner holding <!channel>, a mention and a link shows as text in the blocks."""
    slack_rt.admin.allow(slack_rt.operator, f"{lab_address}/32", lab=True, note="hostile")
    with LabHost(lab_address, [LabService("telnet", 2323, HOSTILE_TELNET, "telnet")]):
        app.command(AGENT, lab_address)
        wait_channel(fake, "CRITICAL", timeout=90)
    sent = blocks_json(fake) + json.dumps(channel_texts(fake))
    assert "&lt;!channel&gt;" in sent
    for raw in ("<!channel>", "<https://evil", "\\u001b", "\\u0007"):
        assert raw not in sent


def test_scan_again_button_answers_from_the_fresh_result(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """Clicking "Scan again" under a result re-runs the request (the fresh result answers)."""
    slack_rt.admin.allow(slack_rt.operator, f"{lab_address}/32", lab=True, note="buttons")
    with LabHost(lab_address, [LabService("ftp", 2121, b"220 lab FTP ready", "ftp")]):
        app.command(AGENT, lab_address)
        wait_channel(fake, "Risk", timeout=90)
    [ts] = fake.messages(CHANNEL)
    body = fake.button_click_body(user_id=AGENT, channel=CHANNEL, ts=ts, text="Scan again")
    status, _, _ = app.post(body, sign(SIGNING_SECRET, body))
    assert status == 200
    fake.wait_for(lambda _calls: len(fake.messages(CHANNEL)) == 2)
    assert slack_rt.service.queue.count == 0  # answered from the stored report, nothing queued


def test_flood_control_429_is_honoured_and_the_result_posted_once(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime
) -> None:
    """A 429 with Retry-After on chat.postMessage is waited out; the message is posted once."""
    slack_rt.admin.allow(slack_rt.operator, "198.51.100.0/24", lab=True, note="customers")
    fake.fail("chat.postMessage", times=1, retry_after=1)
    app.command(AGENT, "198.51.100.7")
    fake.wait_for(lambda _calls: len(fake.messages(CHANNEL)) == 1, timeout=30)
    posts = fake.calls("chat.postMessage")
    assert [call.status for call in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.9


def test_admin_commands_work_and_non_admins_are_refused(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime
) -> None:
    """/scan-admin allow and role work for admins and are refused for an agent."""
    _, answer, _ = app.command(ADMIN, "allow add 198.51.100.0/24 customers", command="/scan-admin")
    assert "Allowed 198.51.100.0/24" in json.loads(answer)["text"]
    _, listed, _ = app.command(ADMIN, "allow list", command="/scan-admin")
    assert "198.51.100.0/24" in json.loads(listed)["text"]
    _, granted, _ = app.command(ADMIN, "role grant slack:UNEW agent", command="/scan-admin")
    assert "slack:UNEW is now agent" in json.loads(granted)["text"]
    _, refused, _ = app.command(AGENT, "allow add 203.0.113.0/24", command="/scan-admin")
    assert "only admins" in json.loads(refused)["text"]
    _, refused_role, _ = app.command(AGENT, "role grant slack:UX admin", command="/scan-admin")
    assert "only admins" in json.loads(refused_role)["text"]
    assert [entry.network for entry in slack_rt.store.allow_entries()] == ["198.51.100.0/24"]


def test_scan_subcommands_map_to_status_history_and_help(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime
) -> None:
    """/scan help, /scan status and /scan history reach the matching core commands."""
    _, help_text, _ = app.command(AGENT, "help")
    assert "Commands:" in json.loads(help_text)["text"]
    _, status_text, _ = app.command(AGENT, "status")
    assert "not asked for a scan" in json.loads(status_text)["text"]
    _, history_text, _ = app.command(AGENT, "history 198.51.100.7")
    assert "No stored scans" in json.loads(history_text)["text"]


HOSTILE_TEXTS = [
    "-oN /tmp/pwned 198.51.100.7",
    "--script=x 198.51.100.7",
    "198.51.100.7;reboot",
    "$(id)",
    "<!channel>",
    "<@U123> 1.2.3.4",
    "<https://evil.example|click>",
    "2130706433",
    "0x7f.1",
    "::ffff:127.0.0.1",
    "10.0.0.0/8",
    "1.2.3.4,5.6.7.8",
    "a" * 5000,
    "１２７.０.０.１",
    "status " + "9" * 3000,
    "history -oX",
]


def test_hostile_command_texts_are_refused_and_escaped(
    app: RunningApp, fake: FakeSlack, slack_rt: Runtime
) -> None:
    """Hostile /scan texts get an ephemeral answer, queue nothing, and echo no live markup."""
    for text in HOSTILE_TEXTS:
        status, answer, _ = app.command(AGENT, text)
        assert status == 200
        ack = json.loads(answer)
        assert ack["response_type"] == "ephemeral"
        dumped = json.dumps(ack)
        assert "<!channel>" not in dumped
        assert "<@U123>" not in dumped
        assert "<https://evil" not in dumped
        assert "Traceback" not in dumped
    assert slack_rt.service.queue.count == 0


def test_restart_between_finished_and_delivery_posts_exactly_once(
    slack_rt: Runtime, fake: FakeSlack, settings: Settings, tmp_path: Any, lab_address: str
) -> None:
    """A result that finished while the app was down is posted once when it comes back."""
    slack_rt.admin.allow(slack_rt.operator, f"{lab_address}/32", lab=True, note="restart")
    port = free_port()
    first = RunningApp(slack_rt, fake, port).start()
    first.command(AGENT, lab_address)
    fake.wait_for(lambda _calls: len(fake.messages(CHANNEL)) == 1)
    first.stop()
    with voip_adapter(lab_address, privileged=False):
        worker = start_worker(settings, tmp_path)
        try:
            deadline = time.monotonic() + 90
            while not any(
                event.kind.value == "finished"
                for event in slack_rt.events.read_after("0-0", block_ms=500)
            ):
                assert time.monotonic() < deadline, "the scan did not finish"
        finally:
            stop_worker(worker)
    assert not any("CRITICAL" in text for text in channel_texts(fake))
    second = RunningApp(slack_rt, fake, port).start()
    wait_channel(fake, "CRITICAL", timeout=30)
    second.stop()
    third = RunningApp(slack_rt, fake, port).start()
    time.sleep(2)
    third.stop()
    updates = [
        call
        for call in fake.calls("chat.update") + fake.calls("chat.postMessage")
        if call.ok and "CRITICAL" in str(call.params.get("text"))
    ]
    assert len(updates) == 1


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        ("/scan", "198.51.100.7", "/scan 198.51.100.7"),
        ("/scan", "198.51.100.7 full", "/scan 198.51.100.7 full"),
        ("/scan", "status abc123", "/status abc123"),
        ("/scan", "STATUS", "/status"),
        ("/scan", "history 198.51.100.7", "/history 198.51.100.7"),
        ("/scan", "help", "/help"),
        ("/scan", "watch 198.51.100.7 weekly", "/watch 198.51.100.7 weekly"),
        ("/scan", "unwatch 198.51.100.7", "/unwatch 198.51.100.7"),
        ("/scan", "watches", "/watches"),
        ("/scan", "", "/scan"),
        ("/scan-admin", "allow add 198.51.100.0/24 x", "/allow add 198.51.100.0/24 x"),
        ("/scan-admin", "role list", "/role list"),
        ("/scan-admin", "nonsense", "/help"),
        ("/scan-admin", "", "/help"),
    ],
)
def test_command_translation(command: str, text: str, expected: str) -> None:
    """Slack's /scan and /scan-admin map onto the core's commands."""
    assert command_text(command, text) == expected


def test_request_verification_accepts_only_exact_fresh_signatures() -> None:
    """The signature check accepts Slack's v0 form and refuses every malformed variant."""
    body = b"token=x&text=1.2.3.4"
    now = time.time()
    good = {key.lower(): value for key, value in sign(SIGNING_SECRET, body, int(now)).items()}
    assert verify_request(SIGNING_SECRET, good, body, now=now)
    assert not verify_request(SIGNING_SECRET, good, body + b"x", now=now)
    assert not verify_request(SIGNING_SECRET, good, body, now=now + 301)
    for timestamp in ("", "-1", "1e9", "１２３", " 123", "9" * 40):
        headers = {**good, "x-slack-request-timestamp": timestamp}
        assert not verify_request(SIGNING_SECRET, headers, body, now=now)
    for signature in ("", "v0=", "v1=" + "0" * 64, "v0=" + "g" * 64, "v0=" + "é" * 64):
        headers = {**good, "x-slack-signature": signature}
        assert not verify_request(SIGNING_SECRET, headers, body, now=now)


def test_manifest_declares_the_commands_scopes_and_interactivity() -> None:
    """deploy/slack-manifest.yaml parses and names what the app needs."""
    manifest = yaml.safe_load((ROOT / "deploy" / "slack-manifest.yaml").read_text())
    commands = {item["command"] for item in manifest["features"]["slash_commands"]}
    assert commands == {"/scan", "/scan-admin"}
    assert {"commands", "chat:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    urls = [item["url"] for item in manifest["features"]["slash_commands"]]
    assert all(url.endswith("/slack/events") for url in urls)
