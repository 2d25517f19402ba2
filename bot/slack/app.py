"""The Slack front end: slack-bolt requests in, Block Kit messages out.

Translation only: a slash command or button becomes an ``Inbound`` for the core router; a core
``Reply`` becomes Block Kit (``bot.slack.render``). Every command is acknowledged inside
Slack's three seconds with an ephemeral answer (the queue position); the result is posted to
the channel and that message is updated as the job moves. Requests are verified before bolt
sees them (a malformed signature or timestamp is a 401, never a 500), and a retried or
replayed command never queues a second scan.
Imports: slack-bolt, slack-sdk, ``bot.core``, ``bot.slack.render``, ``bot.web``, ``bot.wiring``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import socket
import threading
import time
from typing import Any

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.delivery import Delivery, run_delivery
from bot.core.messages import Inbound, Reply, ReplyAddress, ReplyKind
from bot.core.service import DeliveryFailed, DeliveryGivenUp
from bot.slack.render import SlackMessage, render_reply
from bot.web import WebServer
from bot.wiring import Runtime
from workers.events import GroupFeed, MessageIndex
from workers.models import Requester, Role

log = structlog.get_logger(__name__)

PLATFORM = "slack"
GROUP = "slack"
SEEN_PREFIX = "pp:slack:seen:"
SEEN_TTL_S = 10 * 60
MAX_SKEW_S = 5 * 60
ACK_BUDGET_S = 2.0
"""How long a command may work before it must acknowledge (Slack allows three seconds)."""
SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
PERMANENT_ERRORS = {"channel_not_found", "not_in_channel", "is_archived", "account_inactive"}

SUBCOMMANDS = {
    "status": "/status",
    "history": "/history",
    "help": "/help",
    "profiles": "/profiles",
    "watch": "/watch",
    "unwatch": "/unwatch",
    "watches": "/watches",
}
ADMIN_SUBCOMMANDS = {"allow": "/allow", "role": "/role", "optout": "/optout", "audit": "/audit"}


def verify_request(
    secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None
) -> bool:
    """Check Slack's request signature (v0) and timestamp age; any malformed header is False."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
        return False
    if not (signature.isascii() and SIGNATURE.fullmatch(signature)):
        return False
    basestring = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def command_text(command: str, text: str) -> str:
    """Translate ``/scan …`` and ``/scan-admin …`` into the core's commands."""
    words = text.split()
    first = words[0].lower() if words else ""
    rest = " ".join(words[1:])
    if command == "/scan-admin":
        target = ADMIN_SUBCOMMANDS.get(first)
        if target is None:
            return "/help"
        return f"{target} {rest}".strip()
    if first in SUBCOMMANDS:
        return f"{SUBCOMMANDS[first]} {rest}".strip()
    if not words:
        return "/scan"
    return f"/scan {text.strip()}"


class SlackReplySink:
    """Posts and updates Slack messages (retries: slack_sdk's handlers, 429 Retry-After)."""

    def __init__(self, rt: Runtime, client: AsyncWebClient) -> None:
        self.rt = rt
        self.client = client
        self.messages = MessageIndex(rt.connection)
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Deliver from the delivery thread by running on the app's event loop."""
        if self.loop is None:
            raise DeliveryFailed("the Slack app is not running")
        future = asyncio.run_coroutine_threadsafe(self.send_async(address, reply), self.loop)
        future.result(timeout=300)

    async def send_async(
        self, address: ReplyAddress, reply: Reply, *, new_message: bool = False
    ) -> None:
        """Post the reply to the channel, or update the job's message there."""
        role = await asyncio.to_thread(self._role, address)
        message = render_reply(reply, agent=role is not Role.USER)
        known: str | None = None
        if reply.job_id is not None and not new_message:
            known = await asyncio.to_thread(self.messages.lookup, reply.job_id, address.recipient)
        try:
            if known is not None:
                await self.client.chat_update(
                    channel=address.chat,
                    ts=known,
                    text=message.text,
                    blocks=message.blocks,
                    parse="none",
                )
                return
            answer = await self.client.chat_postMessage(
                channel=address.chat,
                thread_ts=address.thread,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
                parse="none",
            )
        except SlackApiError as error:
            code = str(error.response.get("error", ""))
            if code in PERMANENT_ERRORS:
                # The bot cannot post there (not invited, archived): retrying cannot help.
                # Delivery counts it as done and audits it as a delivery failure.
                log.warning("slack refused the channel for good", channel=address.chat, error=code)
                raise DeliveryGivenUp(f"Slack refused the channel for good: {code}") from error
            raise DeliveryFailed(f"Slack refused the message: {code}") from error
        except SlackClientError as error:
            raise DeliveryFailed(f"Slack unreachable: {error}") from error
        timestamp = answer.get("ts")
        if reply.job_id is not None and isinstance(timestamp, str):
            await asyncio.to_thread(
                self.messages.remember, reply.job_id, address.recipient, timestamp
            )

    def _role(self, address: ReplyAddress) -> Role:
        if not address.user:
            return Role.USER
        return self.rt.service.role_of(Requester(platform=PLATFORM, user=address.user))


def ephemeral(reply: Reply) -> dict[str, Any]:
    """The acknowledgement form of a reply: only the person who asked sees it."""
    message: SlackMessage = render_reply(reply, job_buttons=False)
    return {"response_type": "ephemeral", "text": message.text, "blocks": message.blocks}


class SlackBot:
    """Wires slack-bolt to the core: commands, buttons, request checks, delivery."""

    def __init__(
        self,
        rt: Runtime,
        *,
        bot_token: str,
        signing_secret: str,
        base_url: str,
        allowed_teams: frozenset[str] = frozenset(),
        allowed_channels: frozenset[str] = frozenset(),
        consumer: str | None = None,
    ) -> None:
        self.rt = rt
        self.router = rt.router()
        self.signing_secret = signing_secret
        self.allowed_teams = allowed_teams
        self.allowed_channels = allowed_channels
        self.client = AsyncWebClient(token=bot_token, base_url=base_url)
        self.client.retry_handlers.extend(
            [
                AsyncRateLimitErrorRetryHandler(max_retry_count=5),
                AsyncServerErrorRetryHandler(max_retry_count=3),
                AsyncConnectionErrorRetryHandler(max_retry_count=3),
            ]
        )
        # Bolt falls back to os.environ for what it is not given: give it everything.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret,
            name="portpatrol",
            verification_token="",
        )
        self.app.command("/scan")(self.on_command)
        self.app.command("/scan-admin")(self.on_command)
        self.app.action("scan_again")(self.on_button)
        self.app.action("full_scan")(self.on_button)
        self.sink = SlackReplySink(rt, self.client)
        self.consumer = consumer or socket.gethostname()
        self._stop = threading.Event()
        self._delivery_thread: threading.Thread | None = None

    # HTTP -------------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        """Slack's request URL: verify, then hand to bolt."""
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        if not verify_request(self.signing_secret, headers, body):
            return web.Response(status=401, text="invalid signature")
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    # Listeners --------------------------------------------------------------------------------

    async def on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        """A slash command: answer within Slack's 3 seconds, then post progress to the channel."""
        refusal = self._refusal(command.get("team_id"), command.get("channel_id"))
        user = str(command.get("user_id", ""))
        trigger = str(command.get("trigger_id", ""))
        if refusal is not None or not user:
            await ack(response_type="ephemeral", text=refusal or "Who are you?")
            return
        if not await self._first_time(f"command:{trigger or command.get('text', '')}:{user}"):
            await ack()  # a retry or replay of a command already handled
            return
        address = ReplyAddress(
            platform=PLATFORM,
            chat=str(command.get("channel_id", "")),
            thread=command.get("thread_ts") or None,
            user=user,
        )
        text = command_text(str(command.get("command", "/scan")), str(command.get("text", "")))
        await self._handle(ack, respond, address, text)

    async def on_button(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Scan again / Full scan under a result."""
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or {}).get("id", ""))
        refusal = self._refusal((body.get("team") or {}).get("id"), channel)
        actions = body.get("actions") or [{}]
        action = actions[0]
        job_id = str(action.get("value", ""))[:64]
        if refusal is not None or not user:
            await ack()
            await respond(response_type="ephemeral", text=refusal or "Who are you?")
            return
        action_key = f"action:{action.get('action_ts', '')}:{user}:{job_id}"
        if not await self._first_time(action_key):
            await ack()
            return
        view = await asyncio.to_thread(self.rt.service.status, job_id)
        if view is None:
            await ack()
            await respond(response_type="ephemeral", text="That scan is no longer known.")
            return
        profile = "full" if action.get("action_id") == "full_scan" else view.profile
        thread = (body.get("container") or {}).get("thread_ts")
        address = ReplyAddress(platform=PLATFORM, chat=channel, thread=thread, user=user)
        await self._handle(ack, respond, address, f"/scan {view.address} {profile}")

    async def _handle(
        self, ack: AsyncAck, respond: AsyncRespond, address: ReplyAddress, text: str
    ) -> None:
        inbound = Inbound(
            requester=Requester(platform=PLATFORM, user=address.user or ""),
            text=text,
            reply_to=address,
        )
        role = await asyncio.to_thread(self.rt.service.role_of, inbound.requester)
        if role is Role.USER and not text.startswith("/help"):
            await ack(
                response_type="ephemeral",
                text="portpatrol on Slack is for support agents. "
                + self._who_grants()
                + " can give you access.",
            )
            return
        work = asyncio.ensure_future(asyncio.to_thread(self.router.handle, inbound))
        try:
            replies = await asyncio.wait_for(asyncio.shield(work), ACK_BUDGET_S)
        except TimeoutError:
            await ack(response_type="ephemeral", text="Working on it…")
            replies = await work
            for reply in replies:
                await respond(**ephemeral(reply))
        else:
            first, *others = replies
            await ack(**ephemeral(first))
            for reply in others:
                await respond(**ephemeral(reply))
        for reply in replies:
            if reply.kind in (ReplyKind.ACCEPTED, ReplyKind.REPORT) and reply.job_id:
                # The channel sees the job's own message, updated as it moves.
                try:
                    await self.sink.send_async(
                        address, reply, new_message=reply.kind is ReplyKind.REPORT
                    )
                except DeliveryGivenUp as given_up:
                    await asyncio.to_thread(
                        self.rt.record_delivery_failure, address, reply.job_id, str(given_up)
                    )
                except DeliveryFailed as failure:
                    log.warning("could not post to the channel", reason=str(failure)[:200])

    def _refusal(self, team: object, channel: object) -> str | None:
        if self.allowed_teams and str(team) not in self.allowed_teams:
            return "portpatrol is not enabled for this workspace."
        if self.allowed_channels and str(channel) not in self.allowed_channels:
            return "portpatrol is not enabled in this channel; ask in a channel where it is."
        return None

    def _who_grants(self) -> str:
        admins = sorted(
            principal.removeprefix("slack:")
            for principal in self.rt.settings.admins
            if principal.startswith("slack:")
        )
        if not admins:
            return "A portpatrol admin (`portpatrol role grant slack:<your id> agent`)"
        return "An admin (" + ", ".join(f"<@{admin}>" for admin in admins[:5]) + ")"

    async def _first_time(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).hexdigest()
        claimed = await asyncio.to_thread(
            self.rt.connection.set, f"{SEEN_PREFIX}{digest}", 1, nx=True, ex=SEEN_TTL_S
        )
        return bool(claimed)

    # Lifecycle --------------------------------------------------------------------------------

    async def run(
        self, web_server: WebServer, *, app_token: str | None, stop: asyncio.Event
    ) -> None:
        """Run until ``stop``: HTTP (the web server's /slack/events) or Socket Mode."""
        socket_handler: Any = None
        if app_token is None:
            web_server.add_post("/slack/events", self.events)
        self.sink.loop = asyncio.get_running_loop()
        await web_server.start()
        if app_token is not None:
            from slack_bolt.adapter.socket_mode.aiohttp import (  # noqa: PLC0415
                AsyncSocketModeHandler,
            )

            socket_handler = AsyncSocketModeHandler(self.app, app_token)
            await socket_handler.connect_async()
        self._start_delivery()
        log.info("slack app running", socket_mode=app_token is not None)
        try:
            await stop.wait()
        finally:
            self._stop.set()
            if self._delivery_thread is not None:
                await asyncio.to_thread(self._delivery_thread.join, 10)
            if socket_handler is not None:
                await socket_handler.close_async()
            await web_server.stop()

    def _start_delivery(self) -> None:
        feed = GroupFeed(
            self.rt.connection, self.rt.events, group=GROUP, consumer=self.consumer, block_ms=500
        )
        delivery = Delivery(
            feed, self.sink, platform=PLATFORM, on_given_up=self.rt.record_delivery_failure
        )
        self._delivery_thread = threading.Thread(
            target=run_delivery, args=(delivery, self._stop), name="slack-delivery", daemon=True
        )
        self._delivery_thread.start()
