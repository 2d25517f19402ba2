"""The fake Bot API server works with the real python-telegram-bot over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_telegram import FakeTelegram, MarkupError, describe_event, parse_html
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes

USER = 4242
HOOK_HEADER_VALUE = "hook-header-value"


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    """A running fake Bot API server, stopped after the test."""
    with FakeTelegram() as server:
        yield server


def bot_for(fake: FakeTelegram) -> Bot:
    """A real PTB Bot pointed at the fake server."""
    return Bot(fake.token, base_url=fake.base_url)


def test_get_me_reports_the_bot_identity(fake: FakeTelegram) -> None:
    """get_me returns the configured bot username and is recorded as a call."""

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            me = await bot.get_me()
            assert me.is_bot
            assert me.username == "portpatrol_test_bot"
            assert me.id == 123456

    asyncio.run(scenario())
    assert [call.method for call in fake.calls()] == ["getMe", "getMe"]
    assert fake.base_url.startswith("http://127.0.0.1:")


def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    """A token other than the fake's gets 401, which PTB raises as InvalidToken."""

    async def scenario() -> None:
        async with Bot("999:WRONG", base_url=fake.base_url) as bot:
            await bot.get_me()

    with pytest.raises(InvalidToken):
        asyncio.run(scenario())
    assert fake.calls() == []


def test_send_message_records_parameters_and_returns_a_message(fake: FakeTelegram) -> None:
    """send_message decodes every parameter and returns a Message PTB can parse."""
    incoming = fake.message_update(user_id=USER, text="/scan 127.0.0.1")
    replied_id = incoming["message"]["message_id"]
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Scan again", callback_data="again")]])

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            first = await bot.send_message(
                USER,
                "<b>Queued</b> &lt;port&gt; 1 of 3",
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_parameters=ReplyParameters(replied_id),
            )
            second = await bot.send_message(USER, "  plain 123  ")
            assert first.text == "Queued <port> 1 of 3"
            assert first.text_html == "<b>Queued</b> &lt;port&gt; 1 of 3"
            assert first.reply_markup == keyboard
            assert first.reply_to_message is not None
            assert first.reply_to_message.message_id == replied_id
            assert first.chat.id == USER
            assert first.from_user is not None
            assert first.from_user.is_bot
            assert second.message_id == first.message_id + 1
            assert second.text == "plain 123"

    asyncio.run(scenario())
    first_call, second_call = fake.calls("sendMessage")
    assert first_call.params["chat_id"] == USER
    assert first_call.params["parse_mode"] == "HTML"
    assert first_call.params["text"] == "<b>Queued</b> &lt;port&gt; 1 of 3"
    assert first_call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Scan again", "callback_data": "again"}]]
    }
    assert first_call.params["link_preview_options"] == {"is_disabled": True}
    assert first_call.params["reply_parameters"] == {"message_id": replied_id}
    assert second_call.params["text"] == "  plain 123  "
    assert list(fake.messages(USER).values()) == ["Queued <port> 1 of 3", "plain 123"]


def test_html_is_parsed_as_telegram_does(fake: FakeTelegram) -> None:
    """Escaped hostile markup shows as text; unsupported tags fail with Telegram's error."""
    banner = '<a href="https://evil.example">login</a></code><b>'
    escaped = banner.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            await bot.send_message(USER, f"<code>{escaped}</code>", parse_mode=ParseMode.HTML)
            with pytest.raises(
                BadRequest, match=r"(?i)can't parse entities: Unsupported start tag"
            ):
                await bot.send_message(USER, "line one<br>line two", parse_mode=ParseMode.HTML)
            with pytest.raises(BadRequest, match=r"(?i)message is too long"):
                await bot.send_message(USER, "x" * 4097)

    asyncio.run(scenario())
    assert list(fake.messages(USER).values()) == [banner]
    assert [call.status for call in fake.calls("sendMessage")] == [200, 400, 400]


@pytest.mark.parametrize(
    ("source", "text", "entities"),
    [
        ("a &amp; b &lt;c&gt; &#65;&#x42; &nbsp;", "a & b <c> AB &nbsp;", []),
        (
            '<pre><code class="language-python">x = 1</code></pre>',
            "x = 1",
            [{"offset": 0, "length": 5, "type": "pre", "language": "python"}],
        ),
        (
            '<b>bold <a href="https://example.org/?a=1&amp;b=2">link</a></b>',
            "bold link",
            [
                {"offset": 0, "length": 9, "type": "bold"},
                {
                    "offset": 5,
                    "length": 4,
                    "type": "text_link",
                    "url": "https://example.org/?a=1&b=2",
                },
            ],
        ),
        ("😀 <i>x</i>", "😀 x", [{"offset": 3, "length": 1, "type": "italic"}]),
    ],
)
def test_parse_html_yields_visible_text_and_entities(
    source: str, text: str, entities: list[dict[str, object]]
) -> None:
    """parse_html returns Telegram's visible text and UTF-16 entity offsets."""
    assert parse_html(source) == (text, entities)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
def test_parse_html_refuses_what_telegram_refuses(source: str, error: str) -> None:
    """parse_html raises MarkupError with Telegram's wording for malformed markup."""
    with pytest.raises(MarkupError) as raised:
        parse_html(source)
    assert str(raised.value) == error


def test_edit_message_text_replaces_text_and_refuses_no_op_edits(fake: FakeTelegram) -> None:
    """Edits replace the text; an identical edit or an unknown message raises BadRequest."""

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            sent = await bot.send_message(USER, "queued (position 1)")
            edited = await bot.edit_message_text("scanning…", chat_id=USER, message_id=sent.id)
            assert not isinstance(edited, bool)
            assert edited.text == "scanning…"
            assert edited.edit_date is not None
            with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
                await bot.edit_message_text("scanning…", chat_id=USER, message_id=sent.id)
            with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
                await bot.edit_message_text("x", chat_id=USER, message_id=sent.id + 100)
            await bot.send_chat_action(USER, "typing")

    asyncio.run(scenario())
    assert list(fake.messages(USER).values()) == ["scanning…"]
    assert [call.status for call in fake.calls("editMessageText")] == [200, 400, 400]
    assert fake.calls("sendChatAction")[0].params == {"chat_id": USER, "action": "typing"}


def test_edit_without_markup_removes_the_keyboard(fake: FakeTelegram) -> None:
    """Re-sending the same text without reply_markup is a change: it drops the buttons."""
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Full scan", callback_data="full")]])

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            sent = await bot.send_message(USER, "done", reply_markup=keyboard)
            edited = await bot.edit_message_text("done", chat_id=USER, message_id=sent.id)
            assert not isinstance(edited, bool)
            assert edited.reply_markup is None
            with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
                await bot.send_message(
                    USER,
                    "x",
                    reply_markup=InlineKeyboardMarkup(
                        [[InlineKeyboardButton("too long", callback_data="d" * 65)]]
                    ),
                )

    asyncio.run(scenario())


def test_set_my_commands_round_trips(fake: FakeTelegram) -> None:
    """set_my_commands stores the list that get_my_commands returns; bad names are refused."""

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            commands = [BotCommand("start", "What this bot does"), BotCommand("scan", "Scan")]
            assert await bot.set_my_commands(commands)
            assert await bot.get_my_commands() == tuple(commands)
            with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
                await bot.set_my_commands([BotCommand("Scan-Now", "bad name")])

    asyncio.run(scenario())
    assert fake.calls("setMyCommands")[0].params["commands"] == [
        {"command": "start", "description": "What this bot does"},
        {"command": "scan", "description": "Scan"},
    ]


def test_get_updates_serves_pushed_updates_until_confirmed(fake: FakeTelegram) -> None:
    """Pushed updates are served in order and dropped once an offset confirms them."""
    first = fake.push_update(fake.message_update(user_id=USER, text="/start", username="ann"))
    second = fake.push_update(fake.callback_update(user_id=USER, data="again", message_id=1))

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            updates = await bot.get_updates()
            assert [update.update_id for update in updates] == [first, second]
            message = updates[0].message
            assert message is not None
            assert message.text == "/start"
            assert message.entities[0].type == "bot_command"
            assert message.from_user is not None
            assert message.from_user.username == "ann"
            query = updates[1].callback_query
            assert query is not None
            assert query.data == "again"
            assert query.message is not None
            assert query.message.message_id == 1
            assert await bot.answer_callback_query(query.id, text="Queued")
            assert [u.update_id for u in await bot.get_updates(offset=second)] == [second]
            assert await bot.get_updates(offset=second + 1) == ()

    asyncio.run(scenario())
    assert [call.params.get("offset") for call in fake.calls("getUpdates")] == [
        None,
        second,
        second + 1,
    ]


def test_get_updates_long_polls_and_wakes_on_push(fake: FakeTelegram) -> None:
    """A long poll waits (capped at 1 s) and returns as soon as an update is pushed."""
    pusher = threading.Timer(
        0.2, lambda: fake.push_update(fake.message_update(user_id=USER, text="hi"))
    )

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            started = time.monotonic()
            assert await bot.get_updates(timeout=30) == ()
            assert 0.9 < time.monotonic() - started < 3
            pusher.start()
            started = time.monotonic()
            updates = await bot.get_updates(timeout=30)
            assert len(updates) == 1
            assert time.monotonic() - started < 0.9

    try:
        asyncio.run(scenario())
    finally:
        pusher.join()


def test_get_updates_conflicts_with_an_active_webhook(fake: FakeTelegram) -> None:
    """While a webhook is set getUpdates answers 409, as the real API does."""

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            assert await bot.set_webhook("https://example.org/hook", secret_token=HOOK_HEADER_VALUE)
            assert (await bot.get_webhook_info()).url == "https://example.org/hook"
            with pytest.raises(Conflict, match=r"(?i)webhook is active"):
                await bot.get_updates()
            assert await bot.delete_webhook()
            assert await bot.get_updates() == ()

    asyncio.run(scenario())
    assert fake.calls("setWebhook")[0].params["secret_token"] == HOOK_HEADER_VALUE


def test_fail_answers_429_that_ptb_raises_as_retry_after(
    fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fail() makes the next calls answer 429 with retry_after, then calls succeed again."""
    # PTB 22 warns (an error here) when retry_after is read as an int; opt in to timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    fake.fail("sendMessage", times=1, retry_after=3)

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            with pytest.raises(RetryAfter) as raised:
                await bot.send_message(USER, "result")
            assert raised.value.retry_after == dt.timedelta(seconds=3)
            await bot.send_message(USER, "result")

    asyncio.run(scenario())
    assert [call.status for call in fake.calls("sendMessage")] == [429, 200]
    assert list(fake.messages(USER).values()) == ["result"]


def test_json_and_multipart_requests_are_decoded(fake: FakeTelegram) -> None:
    """JSON bodies, query strings and multipart uploads decode to the same parameters."""
    url = f"{fake.base_url}{fake.token}"
    with httpx.Client() as client:
        answer = client.post(f"{url}/sendMessage", json={"chat_id": USER, "text": "[1]"})
        assert answer.json()["result"]["text"] == "[1]"
        answer = client.get(f"{url}/sendMessage", params={"chat_id": str(USER), "text": "7"})
        assert answer.json()["result"]["text"] == "7"
        answer = client.post(
            f"{url}/sendDocument",
            data={"chat_id": str(USER), "caption": "report"},
            files={"document": ("report.txt", b"open ports", "text/plain")},
        )
        assert answer.json()["result"]["document"]["file_name"] == "report.txt"
        assert client.post(f"{url}/getMe").status_code == 200
        assert client.post(f"{fake.base_url}nope/getMe").json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }
    document = fake.calls("sendDocument")[0].params["document"]
    assert document == {
        "filename": "report.txt",
        "content_type": "text/plain",
        "content": b"open ports",
    }
    assert [call.params["text"] for call in fake.calls("sendMessage")] == ["[1]", "7"]


def test_application_polls_and_answers_a_command(fake: FakeTelegram) -> None:
    """A PTB Application polling the fake receives /start in a CommandHandler and replies."""
    seen: list[int] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_user is not None
        assert update.message is not None
        seen.append(update.effective_user.id)
        await update.message.reply_text("Welcome to portpatrol")

    async def scenario() -> None:
        application: Application = (  # type: ignore[type-arg]
            ApplicationBuilder().token(fake.token).base_url(fake.base_url).build()
        )
        application.add_handler(CommandHandler("start", start))
        async with application:
            await application.start()
            assert application.updater is not None
            await application.updater.start_polling(poll_interval=0, timeout=10)
            fake.push_update(fake.message_update(user_id=USER, text="/start@portpatrol_test_bot"))
            await fake.wait_for_async(lambda calls: any(c.method == "sendMessage" for c in calls))
            await application.updater.stop()
            await application.stop()

    asyncio.run(scenario())
    assert seen == [USER]
    assert list(fake.messages(USER).values()) == ["Welcome to portpatrol"]
    assert fake.calls("deleteWebhook")
    offsets = [call.params.get("offset") for call in fake.calls("getUpdates")]
    assert offsets[-1] == 2  # the stop confirms the one update (id 1)


def test_wait_for_reports_the_calls_so_far(fake: FakeTelegram) -> None:
    """wait_for raises AssertionError listing the recorded calls when time runs out."""
    with httpx.Client() as client:
        client.post(f"{fake.base_url}{fake.token}/getMe")
    assert fake.wait_for(lambda calls: len(calls) == 1, timeout=1)[0].method == "getMe"
    with pytest.raises(AssertionError, match=r"getMe -> 200"):
        fake.wait_for(lambda calls: len(calls) > 1, timeout=0.1)


def test_stop_ends_a_pending_long_poll_and_frees_the_port() -> None:
    """stop() answers a waiting long poll at once, closes the port and ends the thread."""
    fake = FakeTelegram()
    fake.start()
    port = int(fake.base_url.split(":")[2].split("/")[0])

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            poll = asyncio.create_task(bot.get_updates(timeout=30))
            await fake.wait_for_async(lambda calls: True)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await asyncio.to_thread(fake.stop)
            assert await poll == ()
            assert time.monotonic() - started < 0.9

    asyncio.run(scenario())
    assert not any(thread.name == "fake-telegram" for thread in threading.enumerate())
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_a_second_poller_terminates_the_first(fake: FakeTelegram) -> None:
    """A getUpdates arriving while another waits ends the older one with 409, as on Telegram."""

    async def scenario() -> None:
        async with bot_for(fake) as first, bot_for(fake) as second:
            older = asyncio.create_task(first.get_updates(timeout=30))
            await asyncio.sleep(0.2)
            assert await second.get_updates(timeout=0) == ()
            with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates"):
                await older

    asyncio.run(scenario())


# -- acting as a user: the control endpoints and the command line --------------------------------


def control_url(fake: FakeTelegram, path: str) -> str:
    """The URL of a control endpoint of the fake (outside the Bot API's /bot<token>/ paths)."""
    return fake.base_url.removesuffix("/bot") + path


def test_control_say_pushes_a_message_the_bot_polls(fake: FakeTelegram) -> None:
    """POST /_fake/say queues a message from the user that getUpdates serves and the chat shows."""
    with httpx.Client() as client:
        answer = client.post(
            control_url(fake, "/_fake/say"), json={"user_id": 3000, "text": "/check"}
        )
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "update_id": 1, "chat_id": 3000, "message_id": 1}

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            [update] = await bot.get_updates()
            assert update.message is not None
            assert update.message.text == "/check"
            assert update.message.from_user is not None
            assert update.message.from_user.id == 3000

    asyncio.run(scenario())
    assert fake.chat_view(3000)[0]["from"] == "user"


def test_control_chat_shows_visible_text_buttons_and_edits(fake: FakeTelegram) -> None:
    """GET /_fake/chat/<id> lists messages as the user sees them: parsed text, buttons, edits."""
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Scan again", callback_data="again:j1")]]
    )

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            sent = await bot.send_message(
                USER, "<b>Queued</b> &lt;1&gt;", parse_mode=ParseMode.HTML
            )
            await bot.edit_message_text(
                "Risk: LOW", chat_id=USER, message_id=sent.id, reply_markup=keyboard
            )

    asyncio.run(scenario())
    with httpx.Client() as client:
        view = client.get(control_url(fake, f"/_fake/chat/{USER}")).json()
        unknown = client.get(control_url(fake, "/_fake/chat/99")).json()
        bad = client.get(control_url(fake, "/_fake/chat/abc"))
        text = client.get(control_url(fake, f"/_fake/chat/{USER}"), params={"format": "text"})
    assert view["messages"] == [
        {
            "message_id": 1,
            "from": "bot",
            "user_id": 123456,
            "text": "Risk: LOW",
            "edited": True,
            "buttons": [[{"text": "Scan again", "data": "again:j1"}]],
        }
    ]
    assert unknown == {"ok": True, "chat_id": 99, "messages": []}
    assert text.text == "bot, message 1 (edited):\n  Risk: LOW\n  [Scan again]\n"
    assert bad.status_code == 400


def test_control_press_sends_the_buttons_callback_and_refuses_others(fake: FakeTelegram) -> None:
    """POST /_fake/press sends a callback_query for a button on the message, by text or data."""
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Full scan", callback_data="full:j2")]])

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            await bot.send_message(USER, "result", reply_markup=keyboard)

    asyncio.run(scenario())
    url = control_url(fake, "/_fake/press")
    with httpx.Client() as client:
        by_text = client.post(url, json={"user_id": USER, "message_id": 1, "button": "Full scan"})
        by_data = client.post(url, json={"user_id": USER, "message_id": 1, "data": "full:j2"})
        missing = client.post(url, json={"user_id": USER, "message_id": 1, "data": "again:j2"})
        no_message = client.post(url, json={"user_id": USER, "message_id": 7, "data": "full:j2"})
    assert by_text.json()["data"] == by_data.json()["data"] == "full:j2"
    assert missing.status_code == 400
    assert "'Full scan' (full:j2)" in missing.json()["description"]
    assert no_message.status_code == 400
    queries = [update["callback_query"] for update in fake._updates]
    assert [(query["from"]["id"], query["message"]["message_id"]) for query in queries] == [
        (USER, 1),
        (USER, 1),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_fake/say", b"not json"),
        ("/_fake/say", b"[1]"),
        ("/_fake/say", b'{"text": "/start"}'),
        ("/_fake/say", b'{"user_id": true, "text": "/start"}'),
        ("/_fake/say", b'{"user_id": 5, "text": "  "}'),
        ("/_fake/press", b'{"user_id": 5, "message_id": 1}'),
    ],
)
def test_control_endpoints_refuse_bad_input_with_a_reason(
    fake: FakeTelegram, path: str, body: bytes
) -> None:
    """Malformed control requests get 400 with a description and push nothing."""
    with httpx.Client() as client:
        answer = client.post(control_url(fake, path), content=body)
    assert answer.status_code == 400
    assert answer.json()["ok"] is False
    assert answer.json()["description"]
    assert fake._updates == []


def test_bot_events_keep_every_step_of_an_edited_message(fake: FakeTelegram) -> None:
    """bot_events returns each send and edit with the text of that moment, and resumes after."""

    async def scenario() -> None:
        async with bot_for(fake) as bot:
            sent = await bot.send_message(USER, "Queued")
            await bot.edit_message_text("Scanning…", chat_id=USER, message_id=sent.id)
            await bot.edit_message_text("Risk: LOW", chat_id=USER, message_id=sent.id)

    asyncio.run(scenario())
    events, end = fake.bot_events()
    assert [(event["kind"], event["text"]) for event in events] == [
        ("sent", "Queued"),
        ("edited", "Scanning…"),
        ("edited", "Risk: LOW"),
    ]
    assert fake.bot_events(end) == ([], end)
    assert describe_event(events[1], with_chat=True) == (
        f"[chat {USER}] bot edited message 1:\n  Scanning…"
    )


def read_until(process: subprocess.Popen[bytes], marker: str, timeout: float = 10) -> str:
    """Read the process's stdout until it contains ``marker``; return what was read."""
    assert process.stdout is not None
    # os.read, not readline: a buffered reader would hide lines from select().
    descriptor = process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in output:\n{seen.decode()}"
        ready, _, _ = select.select([descriptor], [], [], remaining)
        if ready:
            chunk = os.read(descriptor, 65536)
            assert chunk, f"the fake exited; output:\n{seen.decode()}"
            seen += chunk
    return seen.decode()


def test_command_line_as_a_user_sends_lines_and_prints_replies_and_edits() -> None:
    """`fake_telegram.py --as N` sends each stdin line as user N and prints sends and edits."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).with_name("fake_telegram.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--as", "3000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        banner = read_until(process, "Type messages")
        assert f"TELEGRAM_API_BASE_URL=http://127.0.0.1:{port}/bot" in banner
        assert process.stdin is not None
        process.stdin.write(b"/start\n")
        process.stdin.flush()
        read_until(process, "you: /start")
        api = f"http://127.0.0.1:{port}/bot123456:TEST-TOKEN"
        with httpx.Client() as client:
            [update] = client.post(f"{api}/getUpdates").json()["result"]
            assert update["message"]["text"] == "/start"
            # Numbered from the clock: a bot that remembers handled ids still sees a restart's.
            assert update["update_id"] > 1_700_000_000_000
            client.post(f"{api}/sendMessage", json={"chat_id": 3000, "text": "Welcome"})
            client.post(
                f"{api}/editMessageText",
                json={"chat_id": 3000, "message_id": 2, "text": "Welcome back"},
            )
            client.post(f"{api}/sendMessage", json={"chat_id": 4000, "text": "someone else"})
        shown = read_until(process, "Welcome back")
        assert "bot, message 2:\n  Welcome\n" in shown
        assert "bot edited message 2:\n  Welcome back" in shown
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=10)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "someone else" not in shown + rest
    assert "fake Telegram stopped" in rest
    assert process.returncode == 0
