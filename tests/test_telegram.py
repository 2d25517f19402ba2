"""The Telegram front end end to end: real python-telegram-bot over HTTP against a local fake
Bot API, real Redis, real worker processes and real nmap against loopback lab services.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fake_telegram import Call, FakeTelegram
from harness import HOSTILE_TELNET, WorkerProcess, free_port, start_worker, stop_worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation

from bot.lab import LabHost, LabService, voip_adapter
from bot.settings import Settings
from bot.telegram.app import TelegramBot
from bot.web import WebServer
from bot.wiring import Runtime, runtime
from workers.models import Requester, Role

ADMIN_ID = 1000  # telegram:1000 is a configured admin in the settings fixture
AGENT_ID = 2000
HOME_ID = 3000
STRANGER_ID = 4000
SECRET = "s3cret-Token_value"  # noqa: S105 - the fake deployment's webhook secret


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB's timedelta retry_after, as `portpatrol telegram` does."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    """A local Telegram Bot API server."""
    with FakeTelegram() as server:
        yield server


@dataclass
class RunningBot:
    """`portpatrol telegram` in a background thread, as the CLI runs it."""

    rt: Runtime
    fake: FakeTelegram
    port: int
    webhook: bool = False
    consumer: str = "test-host"
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop_event: asyncio.Event | None = None
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> RunningBot:
        """Start the bot and wait until it registered its commands and serves HTTP."""
        before = len(self.fake.calls("setMyCommands"))
        ready = threading.Event()

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            bot = TelegramBot(
                self.rt,
                token=self.fake.token,
                base_url=self.fake.base_url,
                webhook_secret=SECRET,
                consumer=self.consumer,
            )
            web_server = WebServer(self.rt, host="127.0.0.1", port=self.port, checks=True)
            ready.set()
            await bot.run(
                web_server,
                webhook_url=f"http://127.0.0.1:{self.port}/telegram/webhook"
                if self.webhook
                else None,
                stop=self.stop_event,
            )

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as error:  # surfaced by stop()
                self.errors.append(error)

        self.thread = threading.Thread(target=run, name="telegram-bot", daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.fake.wait_for(
            lambda calls: len([c for c in calls if c.method == "setMyCommands"]) > before
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Stop the bot (as SIGTERM does) and re-raise anything it died of."""
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "the bot did not stop"
        if self.errors:
            raise self.errors[0]


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
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
def web_port() -> int:
    """The port the bot's web server uses (known before start: it is in the public URL)."""
    return free_port()


@pytest.fixture
def tg_rt(settings: Settings, web_port: int) -> Iterator[Runtime]:
    """A runtime configured like a Telegram deployment (public URL = the bot's web server)."""
    configured = settings.model_copy(update={"public_url": f"http://127.0.0.1:{web_port}"})
    with runtime(configured, operator=Requester(platform="cli", user="tester")) as built:
        built.store.grant(f"telegram:{AGENT_ID}", Role.AGENT)
        yield built


@pytest.fixture
def bot(tg_rt: Runtime, fake: FakeTelegram, web_port: int) -> Iterator[RunningBot]:
    """The Telegram bot in long-polling mode."""
    running = RunningBot(tg_rt, fake, web_port).start()
    yield running
    running.stop()


def sent_texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    """Visible text of every message the bot has in the chat, oldest first."""
    return [text for _, text in sorted(fake.messages(chat_id).items())]


def say(fake: FakeTelegram, user_id: int, text: str, **options: Any) -> dict[str, Any]:
    """Push a message update from a user; return the update."""
    update = fake.message_update(user_id=user_id, text=text, **options)
    fake.push_update(update)
    return update


def wait_text(fake: FakeTelegram, chat_id: int, pattern: str, timeout: float = 60) -> str:
    """Wait until a bot message in the chat matches ``pattern``; return its text."""
    regex = re.compile(pattern, re.DOTALL)

    def found(_calls: list[Call]) -> bool:
        return any(regex.search(text) for text in sent_texts(fake, chat_id))

    fake.wait_for(found, timeout=timeout)
    return next(text for text in sent_texts(fake, chat_id) if regex.search(text))


def successful(fake: FakeTelegram, method: str) -> list[Call]:
    """Calls of a method that the fake answered with 200."""
    return [call for call in fake.calls(method) if call.status == 200]


def test_start_explains_the_bot_and_commands_are_registered(
    bot: RunningBot, fake: FakeTelegram
) -> None:
    """/start says what the bot does and stores; the command menu is registered with Telegram."""
    say(fake, HOME_ID, "/start")
    text = wait_text(fake, HOME_ID, r"30 days")
    assert "/forget" in text
    [commands] = successful(fake, "setMyCommands")
    names = {command["command"] for command in commands.params["commands"]}
    assert {"start", "help", "check", "scan", "status", "history", "forget"} <= names
    for call in successful(fake, "sendMessage"):
        assert call.params["parse_mode"] == "HTML"
        assert call.params["link_preview_options"]["is_disabled"] is True


def test_agent_scan_acks_at_once_then_edits_to_the_result(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """An agent's /scan is acknowledged with its queue position, then edited to the result."""
    tg_rt.admin.allow(tg_rt.operator, f"{lab_address}/32", lab=True, note="telegram test")
    with voip_adapter(lab_address, privileged=False):
        say(fake, AGENT_ID, f"/scan {lab_address}")
        ack = wait_text(fake, AGENT_ID, r"Queued")
        assert re.search(r"position 1 in the queue|starting now", ack), ack
        final = wait_text(fake, AGENT_ID, r"Risk: CRITICAL", timeout=90)
    assert "telnet" in final
    assert "Lingo" in final
    edits = successful(fake, "editMessageText")
    assert any("Scanning" in call.params["text"] for call in edits)
    assert len(fake.messages(AGENT_ID)) == 1  # one bot message, edited as the job moved
    buttons = [
        button["text"]
        for call in edits
        for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", [])
        for button in row
    ]
    assert "Scan again" in buttons
    assert "Full scan" in buttons


def test_unknown_user_cannot_scan_an_allowlisted_address(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime
) -> None:
    """A user without a role is refused scanning and pointed at /check."""
    tg_rt.admin.allow(tg_rt.operator, "198.51.100.0/24", lab=True, note="customers")
    say(fake, STRANGER_ID, "/scan 198.51.100.7")
    text = wait_text(fake, STRANGER_ID, r"Refused")
    assert "/check" in text
    assert tg_rt.service.queue.count == 0


def test_group_chats_answer_only_commands_addressed_to_the_bot(
    bot: RunningBot, fake: FakeTelegram
) -> None:
    """In a group, /help without @bot is ignored; /help@thisbot is answered."""
    group = -100_777
    say(fake, HOME_ID, "/help", chat_id=group, chat_type="supergroup")
    say(fake, HOME_ID, "hello everyone", chat_id=group, chat_type="supergroup")
    say(fake, HOME_ID, "/help@someone_else_bot", chat_id=group, chat_type="supergroup")
    say(fake, HOME_ID, "/help@portpatrol_test_bot", chat_id=group, chat_type="supergroup")
    wait_text(fake, group, r"Commands:")
    time.sleep(1)
    bot_messages = [
        call for call in successful(fake, "sendMessage") if call.params["chat_id"] == group
    ]
    assert len(bot_messages) == 1


def test_the_same_update_delivered_twice_creates_one_job(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime
) -> None:
    """Telegram re-delivering an update (same update_id) does not queue a second scan."""
    tg_rt.admin.allow(tg_rt.operator, "198.51.100.0/24", lab=True, note="customers")
    update = fake.message_update(user_id=AGENT_ID, text="/scan 198.51.100.7")
    fake.push_update(update)
    wait_text(fake, AGENT_ID, r"Queued")
    fake.push_update(update)
    say(fake, AGENT_ID, "/help")
    wait_text(fake, AGENT_ID, r"Commands:")
    assert tg_rt.service.queue.count == 1
    acks = [text for text in sent_texts(fake, AGENT_ID) if "Queued" in text]
    assert len(acks) == 1


def test_flood_control_429_is_waited_out_and_the_message_arrives_once(
    bot: RunningBot, fake: FakeTelegram
) -> None:
    """A 429 with retry_after is honoured: the reply is sent again after the wait, once."""
    fake.fail("sendMessage", times=1, retry_after=1)
    say(fake, HOME_ID, "/help")
    wait_text(fake, HOME_ID, r"Commands:")
    failed = [call for call in fake.calls("sendMessage") if call.status == 429]
    ok = successful(fake, "sendMessage")
    assert len(failed) == 1
    assert len(ok) == 1
    assert ok[0].at - failed[0].at >= 0.9


def open_check_link(link: str, source: str) -> tuple[int, str]:
    """Open a /check link from ``source`` (a loopback address) and press the button."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/check/\S+)", link)
    assert match is not None, link
    port, path = int(match.group(1)), match.group(2)
    page = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    page.request("GET", path)
    shown = page.getresponse()
    body = shown.read().decode()
    page.close()
    if shown.status != 200:
        return shown.status, body
    assert "<form" in body
    press = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    press.request("POST", path, body=b"", headers={"Content-Length": "0"})
    answer = press.getresponse()
    result = answer.status, answer.read().decode()
    press.close()
    return result


def test_check_link_flow_end_to_end(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """/check → open the link from the home connection → the result arrives in the chat."""
    tg_rt.admin.allow(tg_rt.operator, f"{lab_address}/32", lab=True, note="home lab")
    say(fake, HOME_ID, "/check")
    link = wait_text(fake, HOME_ID, r"/check/")
    with voip_adapter(lab_address, privileged=False):
        status, page = open_check_link(link, lab_address)
        assert status == 200, page
        assert lab_address in page
        final = wait_text(fake, HOME_ID, r"Risk: CRITICAL", timeout=90)
    assert "What to do" in final or "what to do" in final.lower()
    assert tg_rt.store.verified_address(Requester(platform="telegram", user=str(HOME_ID))) == (
        lab_address
    )
    status, page = open_check_link(link, lab_address)
    assert status in (400, 404)
    assert "not valid any more" in page


def test_expired_check_link_is_refused(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime, lab_address: str
) -> None:
    """A link past its 10 minutes shows a clear page and binds nothing."""
    say(fake, HOME_ID, "/check")
    link = wait_text(fake, HOME_ID, r"/check/")
    for key in tg_rt.connection.scan_iter("pp:check:*"):
        tg_rt.connection.delete(key)  # what the 10-minute TTL does
    status, page = open_check_link(link, lab_address)
    assert status == 404
    assert "not valid any more" in page
    assert tg_rt.store.verified_address(Requester(platform="telegram", user=str(HOME_ID))) is None


def test_home_user_scan_of_another_address_explains_check(
    bot: RunningBot, fake: FakeTelegram
) -> None:
    """A home user's /scan of an address that is not theirs gets the /check explanation."""
    say(fake, HOME_ID, "/scan 198.51.100.7")
    text = wait_text(fake, HOME_ID, r"Refused")
    assert "/check" in text


def test_hostile_banner_is_shown_as_text(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """Markup a scanned device sends is escaped: it shows as text and makes no link."""
    tg_rt.admin.allow(tg_rt.operator, f"{lab_address}/32", lab=True, note="hostile lab")
    with LabHost(lab_address, [LabService("telnet", 2323, HOSTILE_TELNET, "telnet")]):
        say(fake, AGENT_ID, f"/scan {lab_address}")
        final = wait_text(fake, AGENT_ID, r"Risk: CRITICAL", timeout=90)
    assert "<!channel>" in final  # visible as text...
    assert '<a href="https://evil.example">' in final
    html_sent = [call.params["text"] for call in successful(fake, "editMessageText")]
    html_sent += [call.params["text"] for call in successful(fake, "sendMessage")]
    assert not any('<a href="https://evil' in text for text in html_sent)  # ...never as markup
    assert not any("\x1b" in text or "\x07" in text for text in html_sent)


def webhook_post(port: int, secret: str | None, body: bytes) -> int:
    """POST to the bot's webhook with an optional secret header; return the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    connection.request("POST", "/telegram/webhook", body=body, headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


def test_webhook_mode_checks_the_secret_token(
    tg_rt: Runtime, fake: FakeTelegram, web_port: int
) -> None:
    """Webhook requests without the exact secret are refused (403); the right one is served."""
    import json  # noqa: PLC0415 - only this test builds raw bodies

    running = RunningBot(tg_rt, fake, web_port, webhook=True).start()
    try:
        [registered] = successful(fake, "setWebhook")
        assert registered.params["secret_token"] == SECRET
        update = fake.message_update(user_id=HOME_ID, text="/help")
        body = json.dumps(update).encode()
        for secret in (None, "", "wrong", SECRET.upper(), SECRET + "x" * 300, SECRET[:-1]):
            assert webhook_post(web_port, secret, body) == 403
        assert sent_texts(fake, HOME_ID) == []
        assert webhook_post(web_port, SECRET, b"{not json") == 400
        assert webhook_post(web_port, SECRET, body) == 200
        wait_text(fake, HOME_ID, r"Commands:")
    finally:
        running.stop()


def test_restart_between_finished_and_delivery_delivers_exactly_once(  # noqa: PLR0917 - fixtures
    tg_rt: Runtime,
    fake: FakeTelegram,
    web_port: int,
    settings: Settings,
    tmp_path: Any,
    lab_address: str,
) -> None:
    """A result that finished while the bot was down is delivered once when it comes back."""
    tg_rt.admin.allow(tg_rt.operator, f"{lab_address}/32", lab=True, note="restart test")
    first = RunningBot(tg_rt, fake, web_port).start()
    say(fake, AGENT_ID, f"/scan {lab_address}")
    wait_text(fake, AGENT_ID, r"Queued")
    first.stop()
    with voip_adapter(lab_address, privileged=False):
        worker = start_worker(settings, tmp_path)
        try:
            deadline = time.monotonic() + 90
            while not any(
                event.kind.value == "finished"
                for event in tg_rt.events.read_after("0-0", block_ms=500)
            ):
                assert time.monotonic() < deadline, "the scan did not finish"
        finally:
            stop_worker(worker)
    assert not any("Risk:" in text for text in sent_texts(fake, AGENT_ID))
    second = RunningBot(tg_rt, fake, web_port).start()
    wait_text(fake, AGENT_ID, r"Risk: CRITICAL", timeout=30)
    second.stop()
    third = RunningBot(tg_rt, fake, web_port).start()
    time.sleep(2)
    third.stop()
    results = [
        call
        for call in successful(fake, "sendMessage") + successful(fake, "editMessageText")
        if "Risk: CRITICAL" in call.params["text"]
    ]
    assert len(results) == 1


def buttons_of(fake: FakeTelegram, chat_id: int) -> dict[str, tuple[int, str]]:
    """Inline buttons currently under the bot's messages: label → (message id, callback data)."""
    found: dict[str, tuple[int, str]] = {}
    for call in successful(fake, "sendMessage") + successful(fake, "editMessageText"):
        if call.params.get("chat_id") != chat_id or not isinstance(call.result, dict):
            continue
        for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", []):
            for button in row:
                found[button["text"]] = (call.result["message_id"], button["callback_data"])
    return found


def test_buttons_scan_again_and_full_scan(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """Scan again answers from the fresh result; an agent's Full scan queues a full scan."""
    tg_rt.admin.allow(tg_rt.operator, f"{lab_address}/32", lab=True, note="buttons")
    with LabHost(lab_address, [LabService("ftp", 2121, b"220 lab FTP ready", "ftp")]):
        say(fake, AGENT_ID, f"/scan {lab_address}")
        wait_text(fake, AGENT_ID, r"Risk:", timeout=90)
    buttons = buttons_of(fake, AGENT_ID)
    message_id, again = buttons["Scan again"]
    fake.push_update(fake.callback_update(user_id=AGENT_ID, data=again, message_id=message_id))
    wait_text(fake, AGENT_ID, r"was scanned .* ago")
    _, full = buttons["Full scan"]
    fake.push_update(fake.callback_update(user_id=AGENT_ID, data=full, message_id=message_id))
    fake.wait_for(lambda calls: any(c.method == "answerCallbackQuery" for c in calls))
    full_ack = wait_text(fake, AGENT_ID, r"Queued a full scan")
    say(fake, AGENT_ID, "/status")
    status = wait_text(fake, AGENT_ID, r"full scan of .* is")
    assert lab_address in status
    # A full scan takes minutes; stop it rather than leave it running into other tests.
    full_job = re.search(r"job ([0-9a-f]+)", full_ack)
    assert full_job is not None
    with contextlib.suppress(InvalidJobOperation):
        send_stop_job_command(tg_rt.connection, full_job.group(1))


def test_home_users_get_no_full_scan_button(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """Under a home user's result there is "Scan again" but no "Full scan"."""
    tg_rt.admin.allow(tg_rt.operator, f"{lab_address}/32", lab=True, note="home")
    tg_rt.store.bind_address(Requester(platform="telegram", user=str(HOME_ID)), lab_address)
    with LabHost(lab_address, [LabService("ftp", 2121, b"220 lab FTP ready", "ftp")]):
        say(fake, HOME_ID, f"/scan {lab_address}")
        wait_text(fake, HOME_ID, r"Risk:", timeout=90)
    assert set(buttons_of(fake, HOME_ID)) == {"Scan again"}


HOSTILE_MESSAGES = [
    "/scan -oN /tmp/pwned 198.51.100.7",
    "/scan --script=http-shellshock 198.51.100.7",
    "/scan 198.51.100.7;reboot",
    "/scan $(id)",
    "/scan `id`",
    "/scan 2130706433",
    "/scan 0x7f.1",
    "/scan 127.1",
    "/scan ::ffff:127.0.0.1",
    "/scan [::1]:22",
    "/scan 10.0.0.0/8",
    "/scan 169.254.169.254",
    "/scan 1.2.3.4,5.6.7.8",
    "/scan <b>x</b>",
    "/scan <!channel>",
    "/scan 198.51.100.7 full",
    "/status ../../etc/passwd",
    "/status " + "9" * 5000,
    "/allow add 0.0.0.0/0",
    "/role grant telegram:3000 admin",
    "/scan " + "a" * 100_000,
    "/scan １２７.０.０.１",
    "/scan\u202e1.0.0.127",
]


def test_hostile_messages_and_buttons_are_answered_and_start_nothing(
    bot: RunningBot, fake: FakeTelegram, tg_rt: Runtime
) -> None:
    """Hostile commands and forged button data get plain answers and never queue a scan."""
    for index, text in enumerate(HOSTILE_MESSAGES):
        say(fake, HOME_ID, text[:4096])
        fake.wait_for(
            lambda calls, n=index + 1: (
                len(
                    [
                        c
                        for c in calls
                        if c.method == "sendMessage" and c.params["chat_id"] == HOME_ID
                    ]
                )
                >= n
            ),
            timeout=30,
        )
    for data in ("again:../../x", "full:" + "9" * 58, "nonsense", "again:", ":"):
        fake.push_update(fake.callback_update(user_id=HOME_ID, data=data, message_id=1))
    fake.wait_for(lambda calls: len([c for c in calls if c.method == "answerCallbackQuery"]) >= 5)
    assert tg_rt.service.queue.count == 0
    texts = [call.params["text"] for call in successful(fake, "sendMessage")]
    assert all("Traceback" not in text for text in texts)
    assert not any("<b>x</b>" in text or "<!channel>" in text for text in texts)
    assert bot.errors == []
