"""The Telegram front end: python-telegram-bot updates in, HTML messages out.

Translation only: an update becomes an ``Inbound`` for the core router, a core ``Reply`` becomes
HTML (``bot.telegram.render``) sent or edited through the Bot API. Identity is the numeric
Telegram user id, never a name. In groups the bot answers only commands addressed to it
(``/scan@thisbot``). An update id is handled once even when Telegram delivers it twice.
Job updates arrive through the event stream (consumer group ``telegram``) on a delivery thread;
the first message of a job is edited as it moves (queued → scanning → result).
Imports: python-telegram-bot, ``bot.core``, ``bot.telegram.render``, ``bot.web``, ``bot.wiring``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import structlog
from aiohttp import web
from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.core.commands import COMMANDS
from bot.core.delivery import Delivery, run_delivery
from bot.core.messages import Inbound, Reply, ReplyAddress, ReplyKind
from bot.core.service import DeliveryFailed, DeliveryGivenUp
from bot.telegram.render import render_reply
from bot.web import WebServer
from bot.wiring import Runtime
from workers.events import GroupFeed, MessageIndex
from workers.models import Requester, Role

log = structlog.get_logger(__name__)

PLATFORM = "telegram"
GROUP = "telegram"
UPDATE_PREFIX = "pp:tg:update:"
UPDATE_TTL_S = 24 * 3600
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
MAX_ATTEMPTS = 5
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
T = TypeVar("T")


def retry_seconds(error: RetryAfter) -> float:
    """Return how long Telegram asked us to wait (PTB 22 warns on the int form; accept both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value: int | timedelta = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def command_text(message: Message, bot_username: str) -> str | None:
    """Return the text the core should see, or None when the message is not for us.

    In private chats every text counts; in groups only a command naming this bot. The
    ``@botname`` suffix is removed so the core sees ``/scan 198.51.100.7``.
    """
    text = message.text or ""
    private = message.chat.type == "private"
    if not text.startswith("/"):
        return text if private else None
    head, _, rest = text.partition(" ")
    command, _, addressee = head.partition("@")
    if addressee and addressee.lower() != bot_username.lower():
        return None
    if not addressee and not private:
        return None
    return f"{command} {rest}".strip()


def keyboard(reply: Reply, role: Role) -> InlineKeyboardMarkup | None:
    """Buttons under a result: scan again, and for agents a full scan."""
    if reply.kind is not ReplyKind.REPORT or reply.job_id is None:
        return None
    buttons = [InlineKeyboardButton("Scan again", callback_data=f"again:{reply.job_id}")]
    if role in (Role.AGENT, Role.ADMIN):
        buttons.append(InlineKeyboardButton("Full scan", callback_data=f"full:{reply.job_id}"))
    return InlineKeyboardMarkup([buttons])


class TelegramReplySink:
    """Sends and edits Telegram messages, with retries that respect Telegram's flood control."""

    def __init__(self, rt: Runtime, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        self.rt = rt
        self.application = application
        self.messages = MessageIndex(rt.connection)
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Deliver from the delivery thread by running on the bot's event loop."""
        if self.loop is None:
            raise DeliveryFailed("the bot is not running")
        future = asyncio.run_coroutine_threadsafe(self.send_async(address, reply), self.loop)
        # DeliveryGivenUp (blocked by the user, removed from the chat) goes on to Delivery,
        # which counts the message as done and audits it.
        future.result(timeout=300)

    async def send_async(
        self, address: ReplyAddress, reply: Reply, *, new_message: bool = False
    ) -> None:
        """Render the reply for the recipient's role and send it, editing the job's message.

        ``new_message`` is for answers to a command (/status, a cached result): they are new
        messages, never edits of the job's own message further up the chat.
        """
        role = Role.USER
        if address.user:
            role = await asyncio.to_thread(
                self.rt.service.role_of, Requester(platform=PLATFORM, user=address.user)
            )
        chunks = render_reply(reply, audience=role)
        markup = keyboard(reply, role)
        chat_id = int(address.chat)
        thread_id = int(address.thread) if address.thread else None
        known: str | None = None
        if reply.job_id is not None and not new_message:
            known = await asyncio.to_thread(self.messages.lookup, reply.job_id, address.recipient)
        if (
            known is not None
            and len(chunks) == 1
            and await self._edit(chat_id, int(known), chunks[0], markup)
        ):
            return
        if known is not None and reply.kind in (ReplyKind.REPORT, ReplyKind.FAILED):
            # The result is longer than one message: the progress message points below it.
            await self._edit(chat_id, int(known), "Done: the result follows.", None)
        first: Message | None = None
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            sent: Message = await self.call_api(
                partial(
                    self.application.bot.send_message,
                    chat_id=chat_id,
                    text=chunk,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=NO_PREVIEW,
                    message_thread_id=thread_id,
                    reply_markup=markup if last else None,
                )
            )
            first = first or sent
        if first is not None and reply.job_id is not None and not reply.final and known is None:
            await asyncio.to_thread(
                self.messages.remember, reply.job_id, address.recipient, str(first.message_id)
            )

    async def _edit(
        self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> bool:
        """Edit a message; False when it no longer exists (then a new one is sent)."""
        try:
            await self.call_api(
                partial(
                    self.application.bot.edit_message_text,
                    chat_id=chat_id,
                    message_id=message_id,
                    text=text,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=NO_PREVIEW,
                    reply_markup=markup,
                )
            )
        except BadRequest as error:
            if "not modified" in str(error).lower():
                return True
            log.info("edit refused, sending a new message", reason=str(error)[:200])
            return False
        return True

    async def call_api(self, make: Callable[[], Awaitable[T]]) -> T:
        """Call the Bot API, waiting out 429s and retrying network errors with backoff."""
        delay = 1.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await make()
            except RetryAfter as error:
                wait = retry_seconds(error)
                log.warning("telegram flood control", retry_after_s=wait, attempt=attempt)
                await asyncio.sleep(wait)
            except Forbidden as error:
                # The user blocked the bot or left the chat: retrying cannot help.
                raise DeliveryGivenUp(str(error)) from error
            except (TimedOut, NetworkError) as error:
                if isinstance(error, BadRequest):
                    raise
                log.warning("telegram unreachable", reason=str(error)[:200], attempt=attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        raise DeliveryFailed(f"Telegram did not accept the message after {MAX_ATTEMPTS} attempts")


class TelegramBot:
    """Wires python-telegram-bot to the core: handlers, command menu, delivery, webhook."""

    def __init__(
        self,
        rt: Runtime,
        *,
        token: str,
        base_url: str,
        webhook_secret: str | None = None,
        consumer: str | None = None,
    ) -> None:
        self.rt = rt
        self.router = rt.router()
        self.webhook_secret = webhook_secret
        self.application = (
            ApplicationBuilder().token(token).base_url(base_url).concurrent_updates(8).build()
        )
        self.application.add_handler(MessageHandler(filters.TEXT, self.on_message))
        self.application.add_handler(CallbackQueryHandler(self.on_button))
        self.sink = TelegramReplySink(rt, self.application)
        # A stable consumer name: after a restart this process finds its own unacknowledged
        # events at once instead of waiting for them to go stale.
        self.consumer = consumer or f"{socket.gethostname()}"
        self.bot_username = ""
        self._stop = threading.Event()
        self._delivery_thread: threading.Thread | None = None

    # Handlers ---------------------------------------------------------------------------------

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message: translate, let the core answer, send the replies."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None or user.is_bot:
            return
        text = command_text(message, self.bot_username)
        if text is None or not await self._first_time(update.update_id):
            return
        address = ReplyAddress(
            platform=PLATFORM,
            chat=str(message.chat_id),
            thread=str(message.message_thread_id) if message.is_topic_message else None,
            user=str(user.id),
        )
        inbound = Inbound(
            requester=Requester(platform=PLATFORM, user=str(user.id)), text=text, reply_to=address
        )
        await self._answer(inbound)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button under a result: scan the same address again (or fully)."""
        query: CallbackQuery | None = update.callback_query
        if query is None or query.from_user is None:
            return
        await self.sink.call_api(query.answer)
        if not await self._first_time(update.update_id):
            return
        action, _, job_id = (query.data or "").partition(":")
        view = await asyncio.to_thread(self.rt.service.status, job_id)
        message = query.message
        if view is None or action not in ("again", "full") or not isinstance(message, Message):
            return
        profile = "full" if action == "full" else view.profile
        address = ReplyAddress(
            platform=PLATFORM, chat=str(message.chat_id), user=str(query.from_user.id)
        )
        inbound = Inbound(
            requester=Requester(platform=PLATFORM, user=str(query.from_user.id)),
            text=f"/scan {view.address} {profile}",
            reply_to=address,
        )
        await self._answer(inbound)

    async def _answer(self, inbound: Inbound) -> None:
        replies = await asyncio.to_thread(self.router.handle, inbound)
        for reply in replies:
            try:
                await self.sink.send_async(inbound.reply_to, reply, new_message=True)
            except DeliveryGivenUp as given_up:
                log.info("chat unreachable for good", chat=inbound.reply_to.chat)
                await asyncio.to_thread(
                    self.rt.record_delivery_failure, inbound.reply_to, reply.job_id, str(given_up)
                )

    async def _first_time(self, update_id: int) -> bool:
        """Claim an update id; False if it was handled before (Telegram re-delivers)."""
        claimed = await asyncio.to_thread(
            self.rt.connection.set, f"{UPDATE_PREFIX}{update_id}", 1, nx=True, ex=UPDATE_TTL_S
        )
        return bool(claimed)

    # Webhook ----------------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """Telegram's webhook: only requests carrying our secret token are read."""
        given = request.headers.get(SECRET_HEADER, "")
        expected = self.webhook_secret or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response({"ok": False}, status=403)
        try:
            data = json.loads(await request.read())
            update = Update.de_json(data, self.application.bot)
        except (ValueError, TypeError, KeyError):
            return web.json_response({"ok": False}, status=400)
        if update is None:
            return web.json_response({"ok": False}, status=400)
        await self.application.update_queue.put(update)
        return web.json_response({"ok": True})

    # Lifecycle --------------------------------------------------------------------------------

    async def run(
        self, web_server: WebServer, *, webhook_url: str | None, stop: asyncio.Event
    ) -> None:
        """Run until ``stop`` is set: polling or webhook, plus the delivery thread."""
        if webhook_url is not None:
            web_server.add_post("/telegram/webhook", self.webhook)
        await self.application.initialize()
        self.bot_username = self.application.bot.username
        await self.application.bot.set_my_commands(
            [BotCommand(name, description) for name, description in COMMANDS]
        )
        self.sink.loop = asyncio.get_running_loop()
        await self.application.start()
        if webhook_url is not None:
            await self.application.bot.set_webhook(
                url=webhook_url,
                secret_token=self.webhook_secret,
                allowed_updates=["message", "callback_query"],
            )
        elif self.application.updater is not None:
            await self.application.bot.delete_webhook()
            await self.application.updater.start_polling(
                allowed_updates=["message", "callback_query"], timeout=30
            )
        await web_server.start()
        self._start_delivery()
        log.info(
            "telegram bot running", username=self.bot_username, webhook=webhook_url is not None
        )
        try:
            await stop.wait()
        finally:
            self._stop.set()
            if self._delivery_thread is not None:
                await asyncio.to_thread(self._delivery_thread.join, 10)
            if self.application.updater is not None and self.application.updater.running:
                await self.application.updater.stop()
            await self.application.stop()
            await self.application.shutdown()
            await web_server.stop()

    def _start_delivery(self) -> None:
        feed = GroupFeed(
            self.rt.connection, self.rt.events, group=GROUP, consumer=self.consumer, block_ms=500
        )
        delivery = Delivery(
            feed, self.sink, platform=PLATFORM, on_given_up=self.rt.record_delivery_failure
        )
        self._delivery_thread = threading.Thread(
            target=run_delivery, args=(delivery, self._stop), name="telegram-delivery", daemon=True
        )
        self._delivery_thread.start()
