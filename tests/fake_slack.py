"""A local stand-in for the Slack Web API and response URLs, close enough for slack_sdk and bolt.

Tests point ``SLACK_API_BASE_URL`` (slack_sdk's ``base_url``) at ``FakeSlack.base_url`` so no test
ever reaches Slack. The fake is a real aiohttp server on 127.0.0.1, run in a background thread
with its own event loop, so sync tests and the product's own asyncio loop can both talk to it.
It records every call (with its headers), keeps every channel message, thread reply and
ephemeral the bot sent, and answers the way Slack does where tests depend on it: ``invalid_auth``
for a wrong bot token, ``no_text``, ``invalid_blocks`` for Block Kit limits (50 blocks, 3000
characters per section text, ...), ``message_not_found`` for ``chat.update`` of an unknown
``ts``, a five-use limit on each response URL, and injected failures such as a 429 with
``Retry-After``.

Requests go the other way too: ``sign``, ``slash_command_body`` and ``block_action_body`` build
what Slack sends *into* the app (form bodies and the v0 signature headers), and
``FakeSlack.button_click_body`` builds the click on a button of a message the bot posted.

Imports only the standard library and aiohttp; it knows nothing about portpatrol.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

# Block Kit limits (docs.slack.dev/reference/block-kit): the ones a scan report can run into.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID_LENGTH = 255
MAX_URL_LENGTH = 3000
MAX_MARKDOWN_BLOCK_TEXT = 12000
MAX_MESSAGE_TEXT = 40000
# Slack lets an app use a response_url up to five times within 30 minutes.
RESPONSE_URL_USES = 5

_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
# Form values of these keys are JSON (Slack's "JSON-based array ... as a URL-encoded string").
# Every other form value stays a string: a ts like "1700000000.000100" must not become a float.
_JSON_PARAMETERS = frozenset({"blocks", "attachments", "metadata"})
_BOOLEAN_PARAMETERS = frozenset(
    {
        "as_user",
        "delete_original",
        "link_names",
        "mrkdwn",
        "reply_broadcast",
        "replace_original",
        "unfurl_links",
        "unfurl_media",
    }
)
_FAILURE_ERRORS = {429: "ratelimited", 200: "internal_error"}
_FIRST_TS_SECONDS = 1_700_000_000


@dataclass(frozen=True)
class Call:
    """One request the app made: method, decoded parameters, arrival time, outcome, headers.

    ``method`` is the Web API method ("chat.postMessage") or "response_url" for a post to a
    response URL. ``result`` is the whole body the fake answered with: a dict for Web API
    methods (``{"ok": false, "error": ...}`` included), the plain text for response URLs.
    """

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the request arrived
    status: int = 200  # HTTP status the fake answered with
    result: Any = None
    headers: dict[str, str] = field(default_factory=dict)  # request headers, Authorization too
    url: str = ""  # the full URL requested

    @property
    def ok(self) -> bool:
        """Whether Slack would count this call as a success (HTTP 200 and not ``ok: false``)."""
        if self.status != 200:
            return False
        if isinstance(self.result, dict):
            return self.result.get("ok") is True
        return True


class SlackError(Exception):
    """A Web API error answer: the ``error`` code plus any extra body fields."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """Return the JSON body Slack sends for this error."""
        return {"ok": False, "error": self.error, **self.extra}


@dataclass
class _Failure:
    status: int
    error: str
    retry_after: int | None


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    message_ts: str | None  # the message an interaction came from (block actions)
    thread_ts: str | None
    uses: int = 0
    last_posted: tuple[str, str] | None = None  # ("channel" | "ephemeral", ts) of its last post


class FakeSlack:
    """A fake Slack Web API on a free loopback port, run in its own thread and event loop."""

    def __init__(
        self,
        bot_token: str = "xoxb-test-token",  # noqa: S107 - the fake's own token, not a secret
        team_id: str = "T0TEST",
        bot_user_id: str = "UBOT",
        *,
        bot_id: str = "B0BOT",
        port: int = 0,
    ) -> None:
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.port = port  # 0: a free port, chosen at start
        self.base_url = ""
        self.root_url = ""
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._channels: dict[str, dict[str, dict[str, Any]]] = {}
        self._ephemerals: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._ts_counter = itertools.count(1)
        self._url_counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.delete": self._delete,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving on 127.0.0.1 and ``port`` (a free one by default); sets ``base_url``."""
        if self._loop is not None:
            raise RuntimeError("FakeSlack is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="fake-slack", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/api/"

    def stop(self) -> None:
        """Close the server, its loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeSlack:
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
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_route("*", "/response/{url_id}", self._handle_response_url)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A fixed port must be reusable at once after a run (connections in TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._runner, self._socket = runner, sock
        await web.SockSite(runner, sock).start()
        port: int = sock.getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- what tests use ----------------------------------------------------------------------

    def response_url(
        self,
        channel: str,
        user: str,
        *,
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Mint a response URL on the fake, as Slack puts in a slash command or interaction.

        ``message_ts`` names the message a button click came from: ``replace_original`` and
        ``delete_original`` then act on it. Without it (a slash command) they act on the last
        message posted through this URL.
        """
        if not self.root_url:
            raise RuntimeError("start FakeSlack before minting response URLs")
        url_id = f"{next(self._url_counter)}-{secrets.token_hex(6)}"
        with self._lock:
            self._response_urls[url_id] = _ResponseUrl(channel, user, message_ts, thread_ts)
        return f"{self.root_url}/response/{url_id}"

    def calls(self, method: str | None = None) -> list[Call]:
        """Return recorded calls in order (failed ones too), optionally of one method."""
        with self._lock:
            calls = list(self._calls)
        if method is None:
            return calls
        return [call for call in calls if call.method == method]

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
        error: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (or "response_url") fail.

        429 answers ``{"ok": false, "error": "ratelimited"}`` with a ``Retry-After`` header
        (unless ``retry_after`` is None); 200 answers ``{"ok": false, "error": error}`` (default
        "internal_error"); any other status (500, 503) answers that status with ``error``
        (default "fatal_error"). Nothing is stored for a failed call.
        """
        code = error or _FAILURE_ERRORS.get(status, "fatal_error")
        failure = _Failure(status, code, retry_after if status == 429 else None)
        with self._lock:
            self._failures.setdefault(method, []).extend([failure] * times)

    def messages(self, channel: str) -> dict[str, dict[str, Any]]:
        """Return every message the bot has in a channel now (thread replies too), by ts.

        Each is ``{"ts", "text", "blocks", "thread_ts", "unfurl_links", "unfurl_media",
        "edited", "source"}``; ``thread_ts`` is None outside threads, ``blocks`` [] without
        blocks, ``edited`` counts ``chat.update``s and replacements, ``source`` is the method
        that posted it ("chat.postMessage" or "response_url"). Deleted messages are gone.
        """
        with self._lock:
            return copy.deepcopy(self._channels.get(channel, {}))

    def ephemerals(self, channel: str, user: str) -> list[dict[str, Any]]:
        """Return the ephemeral messages one user was shown in a channel, oldest first.

        Both ``chat.postEphemeral`` and ephemeral response URL posts count; the dicts have the
        same keys as ``messages`` (``source`` says which), replaced ones show their latest text.
        """
        with self._lock:
            return copy.deepcopy(self._ephemerals.get((channel, user), []))

    def button_click_body(
        self,
        *,
        user_id: str,
        channel: str,
        ts: str,
        action_id: str | None = None,
        text: str | None = None,
    ) -> bytes:
        """Build the block_actions body of a user clicking a button on a bot message.

        The button is found by ``action_id`` or by its visible ``text``; like a real client,
        only a button on the message now can be clicked, else ValueError names the buttons
        there. The payload carries the message as stored and a fresh response URL for it.
        """
        with self._lock:
            message = copy.deepcopy(self._channels.get(channel, {}).get(ts))
        if message is None:
            raise ValueError(f"the bot has no message {ts} in channel {channel}")
        buttons = list(_buttons(message["blocks"]))
        for block_id, button in buttons:
            if button.get("action_id") == action_id or (
                action_id is None and button["text"].get("text") == text
            ):
                return block_action_body(
                    user_id=user_id,
                    action_id=str(button.get("action_id", "")),
                    value=str(button.get("value", "")),
                    channel_id=channel,
                    message_ts=ts,
                    response_url=self.response_url(
                        channel, user_id, message_ts=ts, thread_ts=message["thread_ts"]
                    ),
                    team_id=self.team_id,
                    block_id=block_id,
                    button_text=button["text"].get("text", ""),
                    thread_ts=message["thread_ts"],
                    message=self._message_json(message),
                )
        shown = (
            ", ".join(f"{b['text'].get('text')!r} ({b.get('action_id')})" for _, b in buttons)
            or "none"
        )
        raise ValueError(f"message {ts} has no such button; its buttons: {shown}")

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        method = request.match_info["method"]
        headers = dict(request.headers)
        status = 200
        response_headers: dict[str, str] = {}
        try:
            params = await _read_params(request)
        except ValueError:
            params, body = {}, SlackError("invalid_json").body()
        else:
            token = params.pop("token", None) or _bearer_token(headers)
            if not token:
                body = SlackError("not_authed").body()
            elif token != self.bot_token:
                body = SlackError("invalid_auth").body()
            elif (failure := self._take_failure(method)) is not None:
                status = failure.status
                body = SlackError(failure.error).body()
                if failure.retry_after is not None:
                    response_headers["Retry-After"] = str(failure.retry_after)
            else:
                body = self._dispatch(method, params)
        self._record(Call(method, params, arrived, status, body, headers, str(request.url)))
        return web.json_response(body, status=status, headers=response_headers)

    def _dispatch(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            return {"ok": True}
        try:
            return handler(params)
        except SlackError as error:
            return error.body()
        except Exception as exc:  # a bug in the fake: say so instead of a bare 500
            return SlackError("fake_slack_error", detail=repr(exc)).body()

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        headers = dict(request.headers)
        url_id = request.match_info["url_id"]
        failure: _Failure | None = None
        try:
            params = await _read_params(request)
        except ValueError:
            params, status, text = {}, 400, "invalid_payload"
        else:
            failure = self._take_failure("response_url")
            if failure is not None:
                status, text = failure.status, failure.error
            else:
                status, text = self._respond(url_id, params)
        self._record(Call("response_url", params, arrived, status, text, headers, str(request.url)))
        response_headers = {}
        if failure is not None and failure.retry_after is not None:
            response_headers["Retry-After"] = str(failure.retry_after)
        return web.Response(text=text, status=status, headers=response_headers)

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(method)
            return queue.pop(0) if queue else None

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    # -- methods (run on the server's loop; state changes hold the lock) ------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://portpatrol-test.slack.com/",
            "team": "PortPatrol Test",
            "user": "portpatrol",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        text, blocks = _content(params)
        with self._lock:
            ts = self._next_ts()
            message = {
                "ts": ts,
                "text": text,
                "blocks": blocks,
                "thread_ts": _optional_str(params.get("thread_ts")),
                "unfurl_links": params.get("unfurl_links"),
                "unfurl_media": params.get("unfurl_media"),
                "edited": 0,
                "source": "chat.postMessage",
            }
            self._channels.setdefault(channel, {})[ts] = message
            result = {"ok": True, "channel": channel, "ts": ts}
            result["message"] = self._message_json(message)
        return _with_text_warning(result, params)

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        ts = _optional_str(params.get("ts"))
        if ts is None:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["ts missing"]})
        text, blocks = _content(params)
        with self._lock:
            message = self._channels.get(channel, {}).get(ts)
            if message is None:
                raise SlackError("message_not_found")
            # Slack keeps what an update leaves out: no blocks keeps the old blocks.
            if "text" in params:
                message["text"] = text
            if "blocks" in params:
                message["blocks"] = blocks
            message["edited"] += 1
            result = {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "text": message["text"],
                "message": self._message_json(message),
            }
        return _with_text_warning(result, params)

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        user = _optional_str(params.get("user"))
        if user is None:
            raise SlackError("user_not_in_channel")
        text, blocks = _content(params)
        with self._lock:
            ts = self._next_ts()
            self._ephemerals.setdefault((channel, user), []).append(
                {
                    "ts": ts,
                    "text": text,
                    "blocks": blocks,
                    "thread_ts": _optional_str(params.get("thread_ts")),
                    "unfurl_links": None,
                    "unfurl_media": None,
                    "edited": 0,
                    "source": "chat.postEphemeral",
                }
            )
        return _with_text_warning({"ok": True, "message_ts": ts}, params)

    def _delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        ts = _optional_str(params.get("ts")) or ""
        with self._lock:
            if self._channels.get(channel, {}).pop(ts, None) is None:
                raise SlackError("message_not_found")
        return {"ok": True, "channel": channel, "ts": ts}

    def _respond(self, url_id: str, params: dict[str, Any]) -> tuple[int, str]:
        """Apply one response URL post the way Slack does; return HTTP status and body text."""
        with self._lock:
            target = self._response_urls.get(url_id)
            if target is None:
                return 404, "no_service"
            if target.uses >= RESPONSE_URL_USES:
                return 404, "used_url"
            if params.get("delete_original") is True:
                target.uses += 1
                return self._delete_original(target)
            try:
                text, blocks = _content(params)
            except SlackError as error:
                return 400, error.error
            target.uses += 1
            if params.get("replace_original") is True:
                replaced = self._replace_original(target, params, text, blocks)
                if replaced is not None:
                    return replaced
            ts = self._next_ts()
            message = {
                "ts": ts,
                "text": text,
                "blocks": blocks,
                "thread_ts": _optional_str(params.get("thread_ts")) or target.thread_ts,
                "unfurl_links": params.get("unfurl_links"),
                "unfurl_media": params.get("unfurl_media"),
                "edited": 0,
                "source": "response_url",
            }
            if params.get("response_type") == "in_channel":
                self._channels.setdefault(target.channel, {})[ts] = message
                target.last_posted = ("channel", ts)
            else:
                self._ephemerals.setdefault((target.channel, target.user), []).append(message)
                target.last_posted = ("ephemeral", ts)
        return 200, "ok"

    def _original(self, target: _ResponseUrl) -> dict[str, Any] | None:
        if target.message_ts is not None:
            return self._channels.get(target.channel, {}).get(target.message_ts)
        if target.last_posted is None:
            return None
        where, ts = target.last_posted
        if where == "channel":
            return self._channels.get(target.channel, {}).get(ts)
        for message in self._ephemerals.get((target.channel, target.user), []):
            if message["ts"] == ts:
                return message
        return None

    def _replace_original(
        self, target: _ResponseUrl, params: dict[str, Any], text: str, blocks: list[Any]
    ) -> tuple[int, str] | None:
        original = self._original(target)
        if original is None:
            if target.message_ts is not None:
                return 404, "message_not_found"
            return None  # a slash command's first reply: nothing to replace, post it
        original["text"] = text
        original["blocks"] = blocks if "blocks" in params else []
        original["edited"] += 1
        return 200, "ok"

    def _delete_original(self, target: _ResponseUrl) -> tuple[int, str]:
        original = self._original(target)
        if original is None:
            return 404, "message_not_found"
        for messages in self._channels.values():
            if messages.get(original["ts"]) is original:
                del messages[original["ts"]]
        for ephemerals in self._ephemerals.values():
            if original in ephemerals:
                ephemerals.remove(original)
        return 200, "ok"

    def _next_ts(self) -> str:
        micros = next(self._ts_counter) * 100
        return f"{_FIRST_TS_SECONDS + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _message_json(self, message: dict[str, Any]) -> dict[str, Any]:
        """Return a stored message as Slack shows it in API answers and payloads."""
        shown: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "team": self.team_id,
            "text": message["text"],
            "ts": message["ts"],
        }
        if message["blocks"]:
            shown["blocks"] = copy.deepcopy(message["blocks"])
        if message["thread_ts"] is not None:
            shown["thread_ts"] = message["thread_ts"]
        if message["edited"]:
            shown["edited"] = {"user": self.bot_user_id, "ts": message["ts"]}
        return shown


# -- building what Slack sends into the app ----------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int | str | None = None) -> dict[str, str]:
    """Return the headers Slack signs a request with (v0 HMAC-SHA256 of ``v0:ts:body``)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def slash_command_body(
    *,
    command: str = "/scan",
    text: str,
    user_id: str,
    team_id: str = "T0TEST",
    channel_id: str = "C0CHAN",
    response_url: str,
    trigger_id: str = "123.456",
    thread_ts: str | None = None,
    user_name: str | None = None,
    channel_name: str = "support",
) -> bytes:
    """Build a slash command body, form-encoded in the order Slack sends its fields."""
    fields = [
        ("token", "fake-verification-token"),
        ("team_id", team_id),
        ("team_domain", "portpatrol-test"),
        ("channel_id", channel_id),
        ("channel_name", channel_name),
        ("user_id", user_id),
        ("user_name", user_name or user_id.lower()),
        ("command", command),
        ("text", text),
        ("api_app_id", "A0TEST"),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger_id),
    ]
    if thread_ts is not None:
        # Not in Slack's documented slash command fields: present only when a test asks for it.
        fields.append(("thread_ts", thread_ts))
    return urlencode(fields).encode()


def block_action_body(
    *,
    user_id: str,
    action_id: str,
    value: str,
    channel_id: str,
    message_ts: str,
    response_url: str,
    team_id: str = "T0TEST",
    block_id: str = "actions",
    button_text: str = "",
    thread_ts: str | None = None,
    message: dict[str, Any] | None = None,
) -> bytes:
    """Build the ``payload=<json>`` form body of a button click (a block_actions interaction)."""
    shown = message or {"type": "message", "text": "", "ts": message_ts}
    if thread_ts is not None:
        shown = {**shown, "thread_ts": thread_ts}
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {
            "id": user_id,
            "username": user_id.lower(),
            "name": user_id.lower(),
            "team_id": team_id,
        },
        "api_app_id": "A0TEST",
        "token": "fake-verification-token",
        "container": container,
        "trigger_id": "123.456",
        "team": {"id": team_id, "domain": "portpatrol-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "support"},
        "message": shown,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text or action_id, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


# -- Block Kit checks --------------------------------------------------------------------------


def find_block_problems(blocks: Any) -> list[str]:
    """Return Slack's complaints about a message's blocks ([] when Slack would accept them).

    Each problem reads like Slack's: a message and a JSON pointer, e.g. "must be less than 3001
    characters [json-pointer:/blocks/3/text/text]". Only limits and shapes a report can trip
    over are checked; it is no full Block Kit schema.
    """
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            problems.append(f"unsupported type [json-pointer:{where}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= MAX_ID_LENGTH:
                problems.append(f"invalid block_id [json-pointer:{where}/block_id]")
            elif block_id in block_ids:
                problems.append(f"duplicate block_id [json-pointer:{where}/block_id]")
            else:
                block_ids.add(block_id)
        problems.extend(_block_shape_problems(block, where))
    return problems


def _block_shape_problems(block: dict[str, Any], where: str) -> Iterator[str]:
    check = _SHAPE_CHECKS.get(block["type"])
    if check is not None:
        yield from check(block, where)


def _section_problems(block: dict[str, Any], where: str) -> Iterator[str]:
    if "text" not in block and "fields" not in block:
        yield f"must provide text or fields [json-pointer:{where}]"
    if "text" in block:
        yield from _text_problems(block["text"], f"{where}/text", MAX_SECTION_TEXT)
    if "fields" in block:
        fields = block["fields"]
        if not isinstance(fields, list) or not 0 < len(fields) <= MAX_SECTION_FIELDS:
            yield f"must hold 1 to {MAX_SECTION_FIELDS} items [json-pointer:{where}/fields]"
        else:
            for number, item in enumerate(fields):
                yield from _text_problems(item, f"{where}/fields/{number}", MAX_FIELD_TEXT)
    accessory = block.get("accessory")
    if isinstance(accessory, dict) and accessory.get("type") == "button":
        yield from _button_problems(accessory, f"{where}/accessory")


def _header_problems(block: dict[str, Any], where: str) -> Iterator[str]:
    yield from _text_problems(block.get("text"), f"{where}/text", MAX_HEADER_TEXT, plain_only=True)


def _context_problems(block: dict[str, Any], where: str) -> Iterator[str]:
    yield from _elements_problems(block, where, MAX_CONTEXT_ELEMENTS)
    for number, element in enumerate(block.get("elements") or []):
        if isinstance(element, dict) and element.get("type") in ("plain_text", "mrkdwn"):
            yield from _text_problems(element, f"{where}/elements/{number}", MAX_SECTION_TEXT)


def _actions_problems(block: dict[str, Any], where: str) -> Iterator[str]:
    yield from _elements_problems(block, where, MAX_ACTIONS_ELEMENTS)
    action_ids: set[str] = set()
    for number, element in enumerate(block.get("elements") or []):
        if not isinstance(element, dict):
            continue
        action_id = element.get("action_id")
        if isinstance(action_id, str):
            if action_id in action_ids:
                yield f"duplicate action_id [json-pointer:{where}/elements/{number}/action_id]"
            action_ids.add(action_id)
        if element.get("type") == "button":
            yield from _button_problems(element, f"{where}/elements/{number}")


def _markdown_problems(block: dict[str, Any], where: str) -> Iterator[str]:
    text = block.get("text")
    if not isinstance(text, str) or not 0 < len(text) <= MAX_MARKDOWN_BLOCK_TEXT:
        yield f"must be 1 to {MAX_MARKDOWN_BLOCK_TEXT} characters [json-pointer:{where}/text]"


_SHAPE_CHECKS: dict[str, Callable[[dict[str, Any], str], Iterator[str]]] = {
    "section": _section_problems,
    "header": _header_problems,
    "context": _context_problems,
    "actions": _actions_problems,
    "markdown": _markdown_problems,
}


def _elements_problems(block: dict[str, Any], where: str, most: int) -> Iterator[str]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= most:
        yield f"must hold 1 to {most} items [json-pointer:{where}/elements]"


def _text_problems(text: Any, where: str, most: int, *, plain_only: bool = False) -> Iterator[str]:
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(text, dict) or text.get("type") not in kinds:
        yield f"must be a {' or '.join(kinds)} text object [json-pointer:{where}/type]"
        return
    value = text.get("text")
    if not isinstance(value, str) or not value:
        yield f"must be more than 0 characters [json-pointer:{where}/text]"
    elif len(value) > most:
        yield f"must be less than {most + 1} characters [json-pointer:{where}/text]"


def _button_problems(button: dict[str, Any], where: str) -> Iterator[str]:
    yield from _text_problems(button.get("text"), f"{where}/text", MAX_BUTTON_TEXT, plain_only=True)
    for key, most in (("action_id", MAX_ID_LENGTH), ("value", MAX_BUTTON_VALUE)):
        value = button.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > most):
            yield f"must be less than {most + 1} characters [json-pointer:{where}/{key}]"
    url = button.get("url")
    if url is not None and (not isinstance(url, str) or len(url) > MAX_URL_LENGTH):
        yield f"must be less than {MAX_URL_LENGTH + 1} characters [json-pointer:{where}/url]"
    if button.get("style") not in (None, "primary", "danger"):
        yield f"must be primary or danger [json-pointer:{where}/style]"


def _buttons(blocks: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (block_id, button) for every button of a message, in reading order."""
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        # Slack gives a block without block_id a generated one; a stable stand-in here.
        block_id = str(block.get("block_id") or f"block-{index}")
        candidates = [block.get("accessory")]
        if block.get("type") == "actions":
            candidates = list(block.get("elements") or [])
        for element in candidates:
            if (
                isinstance(element, dict)
                and element.get("type") == "button"
                and isinstance(element.get("text"), dict)
            ):
                yield block_id, element


# -- request decoding --------------------------------------------------------------------------


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Decode query string plus a JSON or form-encoded body into one dict."""
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
        for key, value in body.items():
            # Some clients send blocks as a JSON string even inside a JSON body; Slack takes it.
            params[key] = _decode_value(key, value) if isinstance(value, str) else value
        return params
    form = await request.post()
    for key, value in form.items():
        params[key] = _decode_value(key, str(value))
    return params


def _decode_value(key: str, value: str) -> Any:
    if key in _JSON_PARAMETERS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if key in _BOOLEAN_PARAMETERS and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    return value


def _bearer_token(headers: dict[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _require_channel(params: dict[str, Any]) -> str:
    channel = _optional_str(params.get("channel"))
    if channel is None:
        raise SlackError("channel_not_found")
    return channel


def _content(params: dict[str, Any]) -> tuple[str, list[Any]]:
    """Return a message's text and blocks, or raise the SlackError Slack would answer."""
    text = params.get("text")
    blocks = params.get("blocks")
    has_text = isinstance(text, str) and text.strip() != ""
    if not has_text and not blocks and not params.get("attachments"):
        raise SlackError("no_text")
    if blocks is not None:
        problems = find_block_problems(blocks)
        if problems:
            raise SlackError(
                "invalid_blocks",
                errors=problems,
                response_metadata={"messages": [f"[ERROR] {problem}" for problem in problems]},
            )
    if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
        raise SlackError("msg_too_long")
    return (text if isinstance(text, str) else ""), (blocks or [])


def _with_text_warning(result: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Add the warning Slack gives a message with blocks but no ``text`` fallback."""
    text = params.get("text")
    if not (isinstance(text, str) and text.strip()) and "blocks" in params:
        result["warning"] = "missing_text_or_fallback_or_attachments"
        result["response_metadata"] = {"warnings": ["missing_text_or_fallback_or_attachments"]}
    return result


def _describe_timeout(timeout: float, calls: list[Call]) -> str:
    lines = [f"condition not met within {timeout} s; calls so far ({len(calls)}):"]
    for call in calls:
        params = {k: v for k, v in call.params.items() if k != "blocks"}
        shown = json.dumps(params, default=str)[:300]
        lines.append(f"  {call.method} -> {call.status} {json.dumps(call.result)[:120]} {shown}")
    return "\n".join(lines)
