"""A local stand-in for the Telegram Bot API, close enough for python-telegram-bot.

Tests point ``TELEGRAM_API_BASE_URL`` (PTB's ``base_url``) at ``FakeTelegram.base_url`` so no
test ever reaches Telegram. The fake is a real aiohttp server on 127.0.0.1, run in a background
thread with its own event loop, so sync tests and the product's own asyncio loop can both talk
to it. It serves ``getUpdates`` from updates the test pushes, records every call, keeps the text
of every message the bot sent, and answers the way the real API does where tests depend on it:
HTML entity parsing (and its "can't parse entities" errors), "message is not modified",
"message to edit not found", 409 for a competing ``getUpdates`` or an active webhook, and
injected failures such as a 429 with ``retry_after``.

A person can run it too (``python tests/fake_telegram.py [--port 8081] [--as USER_ID]``, see
``main``) and act as Telegram users through small JSON endpoints under ``/_fake/``: ``POST
/_fake/say``, ``POST /_fake/press`` and ``GET /_fake/chat/<chat_id>`` (docs/TRY-TELEGRAM.md).

Imports only the standard library and aiohttp; it knows nothing about portpatrol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

# Real long polls last up to 50 s; tests only need to see that the bot waits and wakes up.
LONG_POLL_CAP = 1.0
MAX_TEXT_LENGTH = 4096
MAX_CALLBACK_DATA_BYTES = 64

# Values of these parameters are free text: never JSON-decode them (a text of "123" or "[1]"
# must stay a string). Every other form value is JSON-decoded when it parses, because PTB
# JSON-encodes everything that is not already a string (ints, bools, reply_markup, ...).
_TEXT_PARAMETERS = frozenset(
    {
        "business_connection_id",
        "callback_query_id",
        "caption",
        "currency",
        "custom_title",
        "description",
        "emoji",
        "explanation",
        "inline_message_id",
        "ip_address",
        "language_code",
        "message_effect_id",
        "name",
        "parse_mode",
        "payload",
        "question",
        "secret_token",
        "short_description",
        "start_parameter",
        "text",
        "title",
        "url",
    }
)

_INLINE_BUTTON_ACTIONS = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)

_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are"
    " exactly the same as a content and reply markup of the current message"
)


@dataclass(frozen=True)
class Call:
    """One Bot API call the bot made: method, decoded parameters, arrival time, outcome."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the request arrived
    status: int = 200  # HTTP status the fake answered with
    result: Any = None  # the "result" it returned (None for errors)


class ApiError(Exception):
    """A Bot API error answer: HTTP status, description and optional response parameters."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        """Return the JSON body the real API sends for this error."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass
class _Failure:
    status: int
    description: str
    retry_after: int | None


@dataclass
class _StoredMessage:
    message_id: int
    chat: dict[str, Any]
    sender: dict[str, Any]
    from_bot: bool
    date: int
    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_markup: dict[str, Any] | None = None
    edit_date: int | None = None
    document: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat,
            "date": self.date,
        }
        if self.edit_date is not None:
            message["edit_date"] = self.edit_date
        text_key = "text"
        if self.document is not None:
            message["document"] = self.document
            text_key = "caption"
        if self.text:
            message[text_key] = self.text
            if self.entities:
                message[f"{text_key}_entities" if text_key == "caption" else "entities"] = (
                    self.entities
                )
        if self.reply_markup is not None:
            message["reply_markup"] = self.reply_markup
        return copy.deepcopy(message)


@dataclass
class _ChatState:
    chat: dict[str, Any]
    next_message_id: int = 1
    messages: dict[int, _StoredMessage] = field(default_factory=dict)


class FakeTelegram:
    """A fake Bot API server on a free loopback port, run in its own thread and event loop."""

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",  # noqa: S107 - the fake's own token, not a secret
        bot_username: str = "portpatrol_test_bot",
        port: int = 0,
        first_update_id: int = 1,
    ) -> None:
        self.token = token
        self.bot_username = bot_username
        self.port = port  # 0: a free port, chosen at start
        bot_id, _, _ = token.partition(":")
        self.bot_user: dict[str, Any] = {
            "id": int(bot_id) if bot_id.isdigit() else 123456,
            "is_bot": True,
            "first_name": "PortPatrol Test",
            "username": bot_username,
        }
        self.base_url = ""
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._updates: list[dict[str, Any]] = []
        self._served_update_ids: set[int] = set()
        self._next_update_id = first_update_id
        self._callback_ids = itertools.count(4_000_000_000_000_000_001)
        self._chats: dict[int, _ChatState] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._webhook: dict[str, Any] = {}
        self._poll_generation = 0
        self._closing = False
        self._waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self._handlers: dict[str, tuple[str, Callable[[dict[str, Any]], Awaitable[Any] | Any]]] = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self._get_me,
                "getUpdates": self._get_updates,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "sendMessage": self._send_message,
                "sendDocument": self._send_document,
                "editMessageText": self._edit_message_text,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message,
                "deleteMessages": self._delete_messages,
                "answerCallbackQuery": self._answer_callback_query,
            }.items()
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving on 127.0.0.1 and ``port`` (a free one by default); sets ``base_url``."""
        if self._loop is not None:
            raise RuntimeError("FakeTelegram is already running")
        self._closing = False
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="fake-telegram", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        self.base_url = f"http://127.0.0.1:{port}/bot"

    def stop(self) -> None:
        """Answer pending long polls, close the server, its loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeTelegram:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._add_control_routes(app)
        # A short shutdown timeout: stop() must not wait on a client that keeps a poll open.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A fixed --port must be reusable at once after Ctrl-C (connections in TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._runner, self._socket = runner, sock
        await web.SockSite(runner, sock).start()
        port: int = sock.getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        self._closing = True
        self._wake_pollers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- what tests use ----------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update for getUpdates (assigning ``update_id`` if missing); return its id.

        The fake stores a copy; pushing the same dict twice delivers that update id twice.
        """
        stored = copy.deepcopy(update)
        with self._lock:
            if "update_id" not in stored:
                stored["update_id"] = self._allocate_update_id()
            else:
                self._next_update_id = max(self._next_update_id, int(stored["update_id"]) + 1)
            self._updates.append(stored)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_pollers)
        return int(stored["update_id"])

    def message_update(
        self,
        *,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        chat_type: str = "private",
        username: str | None = None,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        """Build a realistic message update (not yet pushed) from a user."""
        user = self._user(user_id, username)
        if chat_id is None:
            chat_id = user_id if chat_type == "private" else -1_000_000_000_000 - user_id
        with self._lock:
            state = self._chat_state(chat_id, chat_type, user)
            message = _StoredMessage(
                message_id=self._allocate_message_id(state),
                chat=state.chat,
                sender=user,
                from_bot=False,
                date=int(time.time()),
                text=text,
                entities=_command_entities(text),
            )
            state.messages[message.message_id] = message
            if update_id is None:
                update_id = self._allocate_update_id()
            else:
                self._next_update_id = max(self._next_update_id, update_id + 1)
        return {"update_id": update_id, "message": message.to_json()}

    def callback_update(
        self,
        *,
        user_id: int,
        data: str,
        message_id: int,
        chat_id: int | None = None,
        username: str | None = None,
    ) -> dict[str, Any]:
        """Build a callback_query update: the user pressed an inline button under a message."""
        user = self._user(user_id, username)
        if chat_id is None:
            chat_id = user_id
        with self._lock:
            state = self._chat_state(chat_id, "private" if chat_id > 0 else "supergroup", user)
            stored = state.messages.get(message_id)
            # An unknown message arrives as an InaccessibleMessage, as Telegram sends it.
            message = (
                stored.to_json()
                if stored is not None
                else {"message_id": message_id, "chat": state.chat, "date": 0}
            )
            query = {
                "id": str(next(self._callback_ids)),
                "from": user,
                "message": message,
                "chat_instance": str(abs(chat_id) * 7919 + 17),
                "data": data,
            }
            return {"update_id": self._allocate_update_id(), "callback_query": query}

    def calls(self, method: str | None = None) -> list[Call]:
        """Return recorded calls in order (failed ones too), optionally of one method."""
        with self._lock:
            calls = list(self._calls)
        if method is None:
            return calls
        return [call for call in calls if call.method.lower() == method.lower()]

    def wait_for(self, predicate: Callable[[list[Call]], bool], timeout: float = 30) -> list[Call]:
        """Poll until ``predicate(calls())`` holds and return the calls; else AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()
            if predicate(calls):
                return calls
            if time.monotonic() >= deadline:
                raise AssertionError(_describe_timeout(timeout, calls))
            time.sleep(0.01)

    async def wait_for_async(
        self, predicate: Callable[[list[Call]], bool], timeout: float = 30
    ) -> list[Call]:
        """Like ``wait_for`` but without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()
            if predicate(calls):
                return calls
            if time.monotonic() >= deadline:
                raise AssertionError(_describe_timeout(timeout, calls))
            await asyncio.sleep(0.01)

    def fail(
        self,
        method: str,
        *,
        times: int,
        status: int = 429,
        retry_after: int | None = 1,
        description: str = "Too Many Requests",
    ) -> None:
        """Make the next ``times`` calls of ``method`` answer with this Bot API error."""
        failure = _Failure(status, description, retry_after if status == 429 else None)
        with self._lock:
            self._failures.setdefault(method.lower(), []).extend([failure] * times)

    def messages(self, chat_id: int) -> dict[int, str]:
        """Return the current visible text of every message the bot sent in a chat, by id."""
        with self._lock:
            state = self._chats.get(chat_id)
            if state is None:
                return {}
            return {
                message_id: message.text
                for message_id, message in state.messages.items()
                if message.from_bot
            }

    # -- acting as a user (the control endpoints and the command line use these) ---------------

    def say(
        self, user_id: int, text: str, *, chat_id: int | None = None, chat_type: str = "private"
    ) -> dict[str, Any]:
        """Push a message from a user, as typing it in a Telegram client does; return the update."""
        update = self.message_update(
            user_id=user_id, text=text, chat_id=chat_id, chat_type=chat_type
        )
        self.push_update(update)
        return update

    def press(
        self,
        user_id: int,
        message_id: int,
        *,
        data: str | None = None,
        button: str | None = None,
        chat_id: int | None = None,
    ) -> dict[str, Any]:
        """Press an inline button under a bot message (by callback data or button text).

        Like a real client, only a button that is on the message now can be pressed; anything
        else raises ValueError naming the buttons that are there.
        """
        chat_id = user_id if chat_id is None else chat_id
        with self._lock:
            state = self._chats.get(chat_id)
            message = state.messages.get(message_id) if state is not None else None
            if message is None or not message.from_bot:
                raise ValueError(f"the bot has no message {message_id} in chat {chat_id}")
            buttons = list(itertools.chain.from_iterable(_buttons(message.reply_markup)))
        for candidate in buttons:
            if "data" in candidate and (
                candidate["data"] == data or (data is None and candidate["text"] == button)
            ):
                update = self.callback_update(
                    user_id=user_id, data=candidate["data"], message_id=message_id, chat_id=chat_id
                )
                self.push_update(update)
                return update
        shown = ", ".join(f"{b['text']!r} ({b.get('data', 'link')})" for b in buttons) or "none"
        raise ValueError(f"message {message_id} has no such button; its buttons: {shown}")

    def chat_view(self, chat_id: int) -> list[dict[str, Any]]:
        """Return the chat as its user sees it: each message's sender, visible text and buttons."""
        with self._lock:
            state = self._chats.get(chat_id)
            if state is None:
                return []
            return [_visible(state.messages[key]) for key in sorted(state.messages)]

    def bot_events(self, after: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Return what the bot did to chats since call number ``after``, and the next number.

        Each event is a message sent, edited or deleted, with the visible text and buttons at
        that moment, so a watcher sees every step (queued, scanning, result) even when they
        follow each other faster than it looks.
        """
        with self._lock:
            calls = self._calls[after:]
            end = after + len(calls)
        events: list[dict[str, Any]] = []
        for call in calls:
            method = call.method.lower()
            if call.status != 200:
                continue
            if method in (
                "sendmessage",
                "senddocument",
                "editmessagetext",
                "editmessagereplymarkup",
            ):
                if not isinstance(call.result, dict):
                    continue  # an inline message edit answers True: there is no chat to show
                kind = "sent" if method.startswith("send") else "edited"
                events.append(
                    {
                        "kind": kind,
                        "chat_id": call.result["chat"]["id"],
                        "message_id": call.result["message_id"],
                        "text": call.result.get("text", call.result.get("caption", "")),
                        "buttons": _buttons(call.result.get("reply_markup")),
                    }
                )
            elif method == "deletemessage":
                events.append(
                    {
                        "kind": "deleted",
                        "chat_id": _as_int(call.params.get("chat_id"), 0),
                        "message_id": _as_int(call.params.get("message_id"), 0),
                        "text": "",
                        "buttons": [],
                    }
                )
        return events, end

    def _add_control_routes(self, app: web.Application) -> None:
        # Bot API paths all start with /bot<token>/, so nothing under /_fake/ can clash.
        app.router.add_get("/_fake", self._control_index)
        app.router.add_get("/_fake/", self._control_index)
        app.router.add_post("/_fake/say", self._control_say)
        app.router.add_post("/_fake/press", self._control_press)
        app.router.add_get("/_fake/chat/{chat_id}", self._control_chat)

    async def _control_index(self, request: web.Request) -> web.Response:
        return _control_json(
            {
                "ok": True,
                "base_url": self.base_url,
                "token": self.token,
                "bot_username": self.bot_username,
                "endpoints": {
                    "POST /_fake/say": {"user_id": 1000, "text": "/start"},
                    "POST /_fake/press": {"user_id": 1000, "message_id": 5, "button": "Scan again"},
                    "GET /_fake/chat/<chat_id>": "the chat as its user sees it (JSON)",
                    "GET /_fake/chat/<chat_id>?format=text": "the same, as plain text",
                },
            }
        )

    async def _control_say(self, request: web.Request) -> web.Response:
        try:
            body = await _control_body(request)
            user_id = _control_int(body, "user_id")
            text = body.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError("text must be a non-empty string")
            chat_id = _control_int(body, "chat_id") if "chat_id" in body else None
            chat_type = str(body.get("chat_type") or "private")
            update = self.say(user_id, text, chat_id=chat_id, chat_type=chat_type)
        except ValueError as error:
            return _control_error(str(error))
        message = update["message"]
        return _control_json(
            {
                "ok": True,
                "update_id": update["update_id"],
                "chat_id": message["chat"]["id"],
                "message_id": message["message_id"],
            }
        )

    async def _control_press(self, request: web.Request) -> web.Response:
        try:
            body = await _control_body(request)
            user_id = _control_int(body, "user_id")
            message_id = _control_int(body, "message_id")
            chat_id = _control_int(body, "chat_id") if "chat_id" in body else None
            data, button = body.get("data"), body.get("button")
            if not isinstance(data, str) and not isinstance(button, str):
                raise ValueError("give the button's callback data as data, or its text as button")
            update = self.press(
                user_id,
                message_id,
                data=data if isinstance(data, str) else None,
                button=button if isinstance(button, str) else None,
                chat_id=chat_id,
            )
        except ValueError as error:
            return _control_error(str(error))
        query = update["callback_query"]
        return _control_json({"ok": True, "update_id": update["update_id"], "data": query["data"]})

    async def _control_chat(self, request: web.Request) -> web.Response:
        try:
            chat_id = int(request.match_info["chat_id"])
        except ValueError:
            return _control_error("chat_id must be a number")
        if request.query.get("format") == "text":
            lines = [describe_message(message) for message in self.chat_view(chat_id)]
            return web.Response(text="".join(f"{line}\n" for line in lines))
        return _control_json({"ok": True, "chat_id": chat_id, "messages": self.chat_view(chat_id)})

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        if request.match_info["token"] != self.token:
            error = ApiError(401, "Unauthorized")
            return web.json_response(error.body(), status=error.status)
        requested = request.match_info["method"]
        name, handler = self._handlers.get(requested.lower(), (requested, self._accept))
        try:
            params = await _read_params(request)
        except ValueError as exc:
            params = {}
            outcome: ApiError | Any = ApiError(400, f"Bad Request: {exc}")
        else:
            outcome = self._take_failure(name)
            if outcome is None:
                try:
                    outcome = handler(params)
                    if asyncio.iscoroutine(outcome):
                        outcome = await outcome
                except ApiError as error:
                    outcome = error
                except Exception as exc:  # a bug in the fake: say so instead of a bare 500
                    outcome = ApiError(500, f"Internal Server Error: fake_telegram: {exc!r}")
        if isinstance(outcome, ApiError):
            self._record(Call(name, params, arrived, outcome.status, None))
            return web.json_response(outcome.body(), status=outcome.status)
        self._record(Call(name, params, arrived, 200, copy.deepcopy(outcome)))
        return web.json_response({"ok": True, "result": outcome})

    def _take_failure(self, method: str) -> ApiError | None:
        with self._lock:
            queue = self._failures.get(method.lower())
            if not queue:
                return None
            failure = queue.pop(0)
        parameters = None if failure.retry_after is None else {"retry_after": failure.retry_after}
        return ApiError(failure.status, failure.description, parameters)

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def _wake_pollers(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    # -- methods -----------------------------------------------------------------------------

    def _accept(self, params: dict[str, Any]) -> Any:
        return True

    def _get_me(self, params: dict[str, Any]) -> Any:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._webhook.get("url"):
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active;"
                    " use deleteWebhook to delete the webhook first",
                )
            self._poll_generation += 1
            generation = self._poll_generation
            self._confirm(_as_int(params.get("offset"), 0))
        # A newer getUpdates ends an older one that is still waiting, as on Telegram.
        self._wake_pollers()
        limit = min(max(_as_int(params.get("limit"), 100), 1), 100)
        wait = min(max(_as_float(params.get("timeout"), 0.0), 0.0), LONG_POLL_CAP)
        deadline = loop.time() + wait
        while True:
            with self._lock:
                if generation != self._poll_generation:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request;"
                        " make sure that only one bot instance is running",
                    )
                batch = copy.deepcopy(self._updates[:limit])
                self._served_update_ids.update(update["update_id"] for update in batch)
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing:
                return batch
            # No await between the check above and registering the waiter: a push from another
            # thread wakes waiters through call_soon_threadsafe, so it cannot slip in between.
            waiter = asyncio.Event()
            self._waiters.add(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), remaining)
            finally:
                self._waiters.discard(waiter)

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            # Only updates served at least once are dropped, so a test that pushes an update id
            # the bot already confirmed still gets it delivered (a redelivery after a restart).
            self._updates = [
                update
                for update in self._updates
                if update["update_id"] >= offset
                or update["update_id"] not in self._served_update_ids
            ]
        elif offset < 0:
            self._updates = self._updates[offset:]

    def _set_webhook(self, params: dict[str, Any]) -> Any:
        with self._lock:
            if params.get("drop_pending_updates"):
                self._updates.clear()
            if not params.get("url"):
                self._webhook = {}
            else:
                self._webhook = dict(params)
        return True

    def _delete_webhook(self, params: dict[str, Any]) -> Any:
        with self._lock:
            if params.get("drop_pending_updates"):
                self._updates.clear()
            self._webhook = {}
        return True

    def _get_webhook_info(self, params: dict[str, Any]) -> Any:
        with self._lock:
            info: dict[str, Any] = {
                "url": self._webhook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }
            if self._webhook:
                info["max_connections"] = self._webhook.get("max_connections", 40)
                info["ip_address"] = "127.0.0.1"
                if self._webhook.get("allowed_updates"):
                    info["allowed_updates"] = self._webhook["allowed_updates"]
        return info

    def _set_my_commands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not re.fullmatch(
                r"[a-z0-9_]{1,32}", str(command.get("command", ""))
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        with self._lock:
            self._commands[_commands_key(params)] = copy.deepcopy(commands)
        return True

    def _get_my_commands(self, params: dict[str, Any]) -> Any:
        with self._lock:
            return copy.deepcopy(self._commands.get(_commands_key(params), []))

    def _delete_my_commands(self, params: dict[str, Any]) -> Any:
        with self._lock:
            self._commands.pop(_commands_key(params), None)
        return True

    def _send_message(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        text, entities = _render(params, "text", "entities")
        if len(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        return self._store_bot_message(chat_id, text, entities, params)

    def _send_document(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        upload = params.get("document")
        if upload is None or upload == "":
            raise ApiError(400, "Bad Request: there is no document in the request")
        caption: str = ""
        entities: list[dict[str, Any]] = []
        if params.get("caption"):
            caption, entities = _render(params, "caption", "caption_entities")
        if isinstance(upload, dict):
            size = len(upload.get("content", b""))
            file_name = upload.get("filename") or "document"
            mime_type = upload.get("content_type") or "application/octet-stream"
        else:
            size, file_name, mime_type = 0, "document", "application/octet-stream"
        unique = next(self._callback_ids)
        document = {
            "file_id": f"BQACAgQAAxkDAAI{unique}",
            "file_unique_id": f"AgAD{unique}",
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": size,
        }
        return self._store_bot_message(chat_id, caption, entities, params, document=document)

    def _store_bot_message(
        self,
        chat_id: int,
        text: str,
        entities: list[dict[str, Any]],
        params: dict[str, Any],
        document: dict[str, Any] | None = None,
    ) -> Any:
        markup = _check_markup(params.get("reply_markup"))
        with self._lock:
            state = self._chat_state(chat_id, None, None)
            message = _StoredMessage(
                message_id=self._allocate_message_id(state),
                chat=state.chat,
                sender=self.bot_user,
                from_bot=True,
                date=int(time.time()),
                text=text,
                entities=entities,
                reply_markup=_inline_only(markup),
                document=document,
            )
            state.messages[message.message_id] = message
            result = message.to_json()
            reply = params.get("reply_parameters")
            replied_id = (
                reply.get("message_id")
                if isinstance(reply, dict)
                else params.get("reply_to_message_id")
            )
            replied = state.messages.get(_as_int(replied_id, 0))
            if replied is not None:
                result["reply_to_message"] = replied.to_json()
        return result

    def _edit_message_text(self, params: dict[str, Any]) -> Any:
        if params.get("inline_message_id"):
            return True
        text, entities = _render(params, "text", "entities")
        if len(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        # Omitting reply_markup in an edit removes the inline keyboard, as on Telegram.
        markup = _inline_only(_check_markup(params.get("reply_markup")))
        with self._lock:
            message = self._message_to_edit(params)
            if (message.text, message.entities, message.reply_markup) == (text, entities, markup):
                raise ApiError(400, _NOT_MODIFIED)
            message.text, message.entities, message.reply_markup = text, entities, markup
            message.edit_date = int(time.time())
            return message.to_json()

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> Any:
        if params.get("inline_message_id"):
            return True
        markup = _inline_only(_check_markup(params.get("reply_markup")))
        with self._lock:
            message = self._message_to_edit(params)
            if message.reply_markup == markup:
                raise ApiError(400, _NOT_MODIFIED)
            message.reply_markup = markup
            message.edit_date = int(time.time())
            return message.to_json()

    def _message_to_edit(self, params: dict[str, Any]) -> _StoredMessage:
        chat_id = _chat_id(params)
        state = self._chats.get(chat_id)
        message_id = _as_int(params.get("message_id"), 0)
        message = state.messages.get(message_id) if state is not None else None
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    def _delete_message(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        with self._lock:
            state = self._chats.get(chat_id)
            message_id = _as_int(params.get("message_id"), 0)
            if state is None or state.messages.pop(message_id, None) is None:
                raise ApiError(400, "Bad Request: message to delete not found")
        return True

    def _delete_messages(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        with self._lock:
            state = self._chats.get(chat_id)
            for message_id in params.get("message_ids") or []:
                if state is not None:
                    state.messages.pop(_as_int(message_id, 0), None)
        return True

    def _answer_callback_query(self, params: dict[str, Any]) -> Any:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: QUERY_ID_INVALID")
        if len(str(params.get("text", ""))) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    # -- state (call with the lock held) -----------------------------------------------------

    def _allocate_update_id(self) -> int:
        update_id = self._next_update_id
        self._next_update_id += 1
        return update_id

    @staticmethod
    def _allocate_message_id(state: _ChatState) -> int:
        # Both sides of a chat share one message id sequence, as in Telegram private chats.
        message_id = state.next_message_id
        state.next_message_id += 1
        return message_id

    def _chat_state(
        self, chat_id: int, chat_type: str | None, user: dict[str, Any] | None
    ) -> _ChatState:
        state = self._chats.get(chat_id)
        if state is None:
            chat_type = chat_type or ("private" if chat_id > 0 else "supergroup")
            chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
            if chat_type == "private":
                chat["first_name"] = (user or {}).get("first_name", f"User {chat_id}")
                if user is not None and "username" in user:
                    chat["username"] = user["username"]
            else:
                chat["title"] = f"Chat {chat_id}"
            state = self._chats[chat_id] = _ChatState(chat)
        return state

    @staticmethod
    def _user(user_id: int, username: str | None) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User {user_id}",
            "language_code": "en",
        }
        if username is not None:
            user["username"] = username
        return user


# -- control endpoints ------------------------------------------------------------------------


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError as exc:
        raise ValueError(f"the body must be a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _control_int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} must be a number")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key} must be a number") from None


def _control_json(body: dict[str, Any], status: int = 200) -> web.Response:
    # One object per line, newline-terminated: people read these answers in a shell.
    return web.Response(
        text=json.dumps(body, ensure_ascii=False) + "\n",
        status=status,
        content_type="application/json",
    )


def _control_error(description: str) -> web.Response:
    return _control_json({"ok": False, "description": description}, status=400)


def _buttons(markup: dict[str, Any] | None) -> list[list[dict[str, str]]]:
    """Inline keyboard rows as {text, data} (or {text, url}) for people to read."""
    rows: list[list[dict[str, str]]] = []
    for row in (markup or {}).get("inline_keyboard", []):
        shown: list[dict[str, str]] = []
        for button in row:
            entry = {"text": str(button.get("text", ""))}
            if "callback_data" in button:
                entry["data"] = str(button["callback_data"])
            elif "url" in button:
                entry["url"] = str(button["url"])
            shown.append(entry)
        rows.append(shown)
    return rows


def _visible(message: _StoredMessage) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "message_id": message.message_id,
        "from": "bot" if message.from_bot else "user",
        "user_id": message.sender.get("id"),
        "text": message.text,
        "edited": message.edit_date is not None,
        "buttons": _buttons(message.reply_markup),
    }
    if message.document is not None:
        shown["document"] = message.document.get("file_name")
    return shown


# -- request decoding --------------------------------------------------------------------------


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Decode query string, JSON, form-encoded or multipart parameters into one dict."""
    params: dict[str, Any] = {
        key: _decode_value(key, value) for key, value in request.query.items()
    }
    if not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise ValueError(f"can't parse JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise ValueError("JSON body must be an object")
        params.update(body)
        return params
    form = await request.post()
    for key, value in form.items():
        if isinstance(value, web.FileField):
            content = value.file.read()
            value.file.close()
            params[key] = {
                "filename": value.filename,
                "content_type": value.content_type,
                "content": content,
            }
        else:
            params[key] = _decode_value(key, str(value))
    return params


def _decode_value(key: str, value: str) -> Any:
    if key in _TEXT_PARAMETERS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _chat_id(params: dict[str, Any]) -> int:
    value = params.get("chat_id")
    if value is None or value == "":
        raise ApiError(400, "Bad Request: chat_id is empty")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, "Bad Request: chat not found")
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, "Bad Request: chat not found") from None


def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")


def _check_markup(markup: Any) -> dict[str, Any] | None:
    if markup is None or markup == "":
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    keyboard = markup.get("inline_keyboard")
    if keyboard is None:
        return markup
    if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
        raise ApiError(400, "Bad Request: can't parse inline keyboard button: field must be array")
    for button in itertools.chain.from_iterable(keyboard):
        if not isinstance(button, dict) or not button.get("text"):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button: Text is empty")
        if not _INLINE_BUTTON_ACTIONS & button.keys():
            raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup


def _inline_only(markup: dict[str, Any] | None) -> dict[str, Any] | None:
    # A Message carries reply_markup only for inline keyboards; reply keyboards are not echoed.
    if markup is None or "inline_keyboard" not in markup or not markup["inline_keyboard"]:
        return None
    return copy.deepcopy(markup)


def _describe_timeout(timeout: float, calls: list[Call]) -> str:
    lines = [f"condition not met within {timeout} s; calls so far ({len(calls)}):"]
    for call in calls:
        params = {k: v for k, v in call.params.items() if not isinstance(v, dict | bytes)}
        lines.append(f"  {call.method} -> {call.status} {json.dumps(params, default=str)[:300]}")
    return "\n".join(lines)


# -- message text ------------------------------------------------------------------------------


def _render(
    params: dict[str, Any], text_key: str, entities_key: str
) -> tuple[str, list[dict[str, Any]]]:
    """Return the visible text and entities of a message, as Telegram would store it."""
    source = params.get(text_key)
    source = "" if source is None else str(source)
    parse_mode = str(params.get("parse_mode") or "").lower()
    if parse_mode == "html":
        try:
            text, entities = parse_html(source)
        except MarkupError as exc:
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
    else:
        # MarkdownV2 and Markdown are not parsed: the text is kept as sent.
        given = params.get(entities_key)
        text, entities = source, (given if isinstance(given, list) else [])
    text, entities = _strip(text, entities)
    if not text and text_key == "text":
        raise ApiError(400, "Bad Request: message text is empty")
    return text, entities


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _strip(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    # Telegram trims leading and trailing whitespace from message text and shifts entities.
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift = _utf16_length(text[: len(text) - len(text.lstrip())])
    total = _utf16_length(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


def _command_entities(text: str) -> list[dict[str, Any]]:
    match = re.match(r"/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?", text)
    if match is None:
        return []
    return [{"type": "bot_command", "offset": 0, "length": _utf16_length(match.group())}]


class MarkupError(Exception):
    """Text in parse mode HTML that Telegram would refuse (message in Telegram's words)."""


_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)
_SIMPLE_ENTITIES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_REFERENCE = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")


@dataclass
class _OpenTag:
    name: str
    attributes: dict[str, str]
    offset: int  # UTF-16 offset in the visible text
    text_index: int  # index into the list of visible chunks, to recover the inner text
    position: int  # index of "<" in the source, for error messages


def _decode_reference(source: str, start: int) -> tuple[str, int] | None:
    match = _REFERENCE.match(source, start)
    if match is None:
        return None
    named, decimal, hexadecimal = match.groups()
    if named:
        return _NAMED_REFERENCES[named], match.end()
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if not 0 < code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), match.end()


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Bot API HTML into visible text and entities, failing where Telegram fails.

    Follows the Bot API's rules: only the documented tags, only ``&lt; &gt; &amp; &quot;`` and
    numeric references (any other ``&`` stays literal), a ``<`` always starts a tag.
    """
    return _HtmlParser(source).parse()


class _HtmlParser:
    """One pass over Bot API HTML; error messages use Telegram's wording and byte offsets."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.size = len(source)
        self.i = 0
        self.chunks: list[str] = []
        self.offset = 0  # UTF-16 length of the visible text so far
        self.open_tags: list[_OpenTag] = []
        self.entities: list[dict[str, Any]] = []

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        while self.i < self.size:
            char = self.source[self.i]
            if char == "&" and (reference := _decode_reference(self.source, self.i)) is not None:
                self._emit(reference[0])
                self.i = reference[1]
            elif char != "<":
                self._emit(char)
                self.i += 1
            elif self.source.startswith("</", self.i):
                self._end_tag()
            else:
                self._start_tag()
        if self.open_tags:
            name = self.open_tags[-1].name
            raise MarkupError(f'Can\'t find end tag corresponding to start tag "{name}"')
        self.entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
        return "".join(self.chunks), self.entities

    def _at(self, position: int) -> str:
        return f"at byte offset {len(self.source[:position].encode())}"

    def _emit(self, text: str) -> None:
        self.chunks.append(text)
        self.offset += _utf16_length(text)

    def _skip_spaces(self) -> None:
        while self.i < self.size and self.source[self.i].isspace():
            self.i += 1

    def _read_until(self, stops: str) -> str:
        start = self.i
        while self.i < self.size and not self.source[self.i].isspace():
            if self.source[self.i] in stops:
                break
            self.i += 1
        return self.source[start : self.i]

    def _end_tag(self) -> None:
        tag_start = self.i
        self.i += 2
        name = self._read_until(">").lower()
        self._skip_spaces()
        if self.i >= self.size or self.source[self.i] != ">":
            raise MarkupError(f"Unclosed end tag {self._at(tag_start)}")
        self.i += 1
        if not self.open_tags:
            raise MarkupError(f"Unexpected end tag {self._at(tag_start)}")
        tag = self.open_tags.pop()
        if name and name != tag.name:
            raise MarkupError(
                f'Unmatched end tag {self._at(tag_start)}, expected "</{tag.name}>",'
                f' found "</{name}>"'
            )
        _close_tag(tag, self.offset, "".join(self.chunks[tag.text_index :]), self.entities)

    def _start_tag(self) -> None:
        tag_start = self.i
        self.i += 1
        name = self._read_until(">").lower()
        if self.i >= self.size:
            raise MarkupError(f"Unclosed start tag {self._at(tag_start)}")
        if name not in _HTML_TAGS:
            raise MarkupError(f'Unsupported start tag "{name}" {self._at(tag_start)}')
        attributes: dict[str, str] = {}
        while not self._tag_closed(name, tag_start):
            attribute = self._read_until("=>/\"'").lower()
            if not attribute:
                raise MarkupError(f'Empty attribute name in the tag "{name}" {self._at(tag_start)}')
            self._skip_spaces()
            self._require_more(name, tag_start)
            value = ""
            if self.source[self.i] == "=":
                self.i += 1
                self._skip_spaces()
                self._require_more(name, tag_start)
                value = self._attribute_value(name, tag_start)
            attributes.setdefault(attribute, value)
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise MarkupError(f'Tag "span" must have class "tg-spoiler" {self._at(tag_start)}')
        self.open_tags.append(_OpenTag(name, attributes, self.offset, len(self.chunks), tag_start))

    def _tag_closed(self, name: str, tag_start: int) -> bool:
        self._skip_spaces()
        self._require_more(name, tag_start)
        if self.source[self.i] == ">":
            self.i += 1
            return True
        return False

    def _require_more(self, name: str, tag_start: int) -> None:
        if self.i >= self.size:
            raise MarkupError(f'Unclosed start tag "{name}" {self._at(tag_start)}')

    def _attribute_value(self, name: str, tag_start: int) -> str:
        quote = self.source[self.i]
        if quote not in "\"'":
            start = self.i
            while self.i < self.size and self.source[self.i].isascii():
                if not (self.source[self.i].isalnum() or self.source[self.i] in ".-"):
                    break
                self.i += 1
            self._require_more(name, tag_start)
            if not self.source[self.i].isspace() and self.source[self.i] != ">":
                raise MarkupError(f"Unexpected end of name token {self._at(self.i)}")
            return self.source[start : self.i].lower()
        self.i += 1
        value: list[str] = []
        while self.i < self.size and self.source[self.i] != quote:
            reference = None
            if self.source[self.i] == "&":
                reference = _decode_reference(self.source, self.i)
            if reference is not None:
                value.append(reference[0])
                self.i = reference[1]
            else:
                value.append(self.source[self.i])
                self.i += 1
        self._require_more(name, tag_start)
        self.i += 1
        return "".join(value)


def _close_tag(tag: _OpenTag, offset: int, inner: str, entities: list[dict[str, Any]]) -> None:
    length = offset - tag.offset
    if length <= 0:
        return
    entity: dict[str, Any] = {"offset": tag.offset, "length": length}
    if tag.name in _SIMPLE_ENTITIES:
        entity["type"] = _SIMPLE_ENTITIES[tag.name]
    elif tag.name == "a":
        url = (tag.attributes.get("href") or inner).strip()
        if not url:
            return
        entity.update(type="text_link", url=url)
    elif tag.name == "tg-emoji":
        emoji_id = tag.attributes.get("emoji-id", "")
        if not emoji_id.isdigit():
            raise MarkupError("Invalid custom emoji identifier specified")
        entity.update(type="custom_emoji", custom_emoji_id=emoji_id)
    elif tag.name == "blockquote":
        expandable = "expandable" in tag.attributes
        entity["type"] = "expandable_blockquote" if expandable else "blockquote"
    elif tag.name == "code":
        entity["type"] = "code"
        language = tag.attributes.get("class", "")
        if language.startswith("language-"):
            entity["language"] = language.removeprefix("language-")
    else:  # pre: <pre><code class="language-x">...</code></pre> is one pre entity
        entity["type"] = "pre"
        last = entities[-1] if entities else None
        if (
            last is not None
            and last["type"] == "code"
            and (last["offset"], last["length"]) == (tag.offset, length)
        ):
            entities.pop()
            if "language" in last:
                entity["language"] = last["language"]
    entities.append(entity)


# -- running it by hand -------------------------------------------------------------------------

DEFAULT_PORT = 8081
DEFAULT_TOKEN = "123456:TEST-TOKEN"  # noqa: S105 - the fake's own token, not a secret
WATCH_INTERVAL_S = 0.05


def describe_event(event: dict[str, Any], *, with_chat: bool) -> str:
    """Word one bot event for a terminal: who did what to which message, then its text."""
    where = f"[chat {event['chat_id']}] " if with_chat else ""
    number = event["message_id"]
    head = {
        "sent": f"{where}bot, message {number}:",
        "edited": f"{where}bot edited message {number}:",
        "deleted": f"{where}bot deleted message {number}",
    }[event["kind"]]
    lines = [head, *(f"  {line}" for line in str(event["text"]).splitlines())]
    for row in event["buttons"]:
        lines.append("  " + "  ".join(f"[{button['text']}]" for button in row))
    return "\n".join(lines)


def describe_message(message: dict[str, Any]) -> str:
    """Word one message of ``chat_view`` for a terminal: sender, number, text, buttons."""
    sender = "bot" if message["from"] == "bot" else f"user {message['user_id']}"
    edited = " (edited)" if message["edited"] else ""
    lines = [f"{sender}, message {message['message_id']}{edited}:"]
    lines += [f"  {line}" for line in str(message["text"]).splitlines()]
    for row in message["buttons"]:
        lines.append("  " + "  ".join(f"[{button['text']}]" for button in row))
    return "\n".join(lines)


def _watch(
    fake: FakeTelegram, chat_id: int | None, stop: threading.Event, out: threading.Lock
) -> None:
    """Print every bot message and edit (in one chat, or all) as it happens."""
    after = 0
    while not stop.wait(WATCH_INTERVAL_S):
        events, after = fake.bot_events(after)
        for event in events:
            if chat_id is None or event["chat_id"] == chat_id:
                with out:
                    print(describe_event(event, with_chat=chat_id is None), flush=True)


def _act(fake: FakeTelegram, user_id: int, line: str) -> str | None:
    """Push one typed line as the user; ``!press MESSAGE_ID BUTTON`` presses a button."""
    if not line.startswith("!"):
        fake.say(user_id, line)
        return None
    verb, _, rest = line[1:].partition(" ")
    number, _, button = rest.strip().partition(" ")
    if verb != "press" or not number.isdigit() or not button.strip():
        return "fake: lines starting with ! are: !press MESSAGE_ID BUTTON TEXT"
    try:
        fake.press(user_id, int(number), button=button.strip())
    except ValueError as error:
        return f"fake: {error}"
    return None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake in the foreground until Ctrl-C; with ``--as`` type as that Telegram user."""
    parser = argparse.ArgumentParser(
        description="A local fake Telegram Bot API server (nothing reaches Telegram)."
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default 8081")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help=f"default {DEFAULT_TOKEN}")
    parser.add_argument("--username", default="portpatrol_test_bot", help="the bot's @username")
    parser.add_argument(
        "--as",
        dest="as_user",
        type=int,
        metavar="USER_ID",
        help="read lines from stdin and send each as a message from this Telegram user id; "
        "!press MESSAGE_ID BUTTON presses a button; only this user's chat is shown",
    )
    arguments = parser.parse_args(argv)
    # Update ids only grow on Telegram, and a bot remembers the ones it handled (portpatrol for
    # a day, in Redis): numbering from the clock keeps a restarted fake from reusing them.
    fake = FakeTelegram(
        arguments.token,
        arguments.username,
        port=arguments.port,
        first_update_id=int(time.time() * 1000),
    )
    try:
        fake.start()
    except OSError as error:
        print(
            f"fake_telegram: cannot listen on 127.0.0.1:{arguments.port}: {error}", file=sys.stderr
        )
        return 1
    root = fake.base_url.removesuffix("/bot")
    example_user = arguments.as_user or 3000
    print(
        f"Fake Telegram Bot API on {root} (Ctrl-C stops it)\n"
        f"  TELEGRAM_API_BASE_URL={fake.base_url}\n"
        f"  TELEGRAM_BOT_TOKEN={fake.token}\n"
        f"Act as user {example_user}:\n"
        f'  curl -s {root}/_fake/say -d \'{{"user_id": {example_user}, "text": "/start"}}\'\n'
        f"  curl -s '{root}/_fake/chat/{example_user}?format=text'\n"
        f"  curl -s {root}/_fake/press -d "
        f'\'{{"user_id": {example_user}, "message_id": 5, "button": "Scan again"}}\'',
        flush=True,
    )
    # SIGTERM and a closed terminal end it as cleanly as Ctrl-C; SIGINT too when started in the
    # background, where the shell leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    out = threading.Lock()
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(fake, arguments.as_user, stop, out), name="watch", daemon=True
    )
    watcher.start()
    try:
        if arguments.as_user is not None:
            print(
                f"Type messages as Telegram user {arguments.as_user}; each line is sent.",
                flush=True,
            )
            for line in sys.stdin:
                text = line.strip()
                if not text:
                    continue
                if not sys.stdin.isatty():
                    with out:
                        print(f"you: {text}", flush=True)
                problem = _act(fake, arguments.as_user, text)
                if problem:
                    with out:
                        print(problem, flush=True)
            print("(end of input: still serving; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        watcher.join(1)
        fake.stop()
    print("fake Telegram stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
