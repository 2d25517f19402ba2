"""A console chat session: say a command, get the replies, receive job updates as they happen.

Each session reads the event stream through a consumer group of its own (created at "now"), so
several consoles never take each other's events; the group is removed when the session ends.
Imports: ``bot.core``, ``workers.events``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

import redis

from bot.core.commands import CommandRouter
from bot.core.delivery import Delivery
from bot.core.messages import Inbound, Reply, ReplyAddress, ReplyKind
from workers.events import EventLog, GroupFeed
from workers.models import Requester

PLATFORM = "console"


class RecordingSink:
    """Keeps every delivered reply and hands it to an optional callback (the terminal)."""

    def __init__(self, on_reply: Callable[[Reply], None] | None = None) -> None:
        self.replies: list[Reply] = []
        self.on_reply = on_reply
        self._lock = threading.Lock()

    def send(self, address: ReplyAddress, reply: Reply) -> None:
        """Record (and show) one reply."""
        with self._lock:
            self.replies.append(reply)
        if self.on_reply is not None:
            self.on_reply(reply)


class ConsoleSession:
    """One person's chat with the bot on this machine."""

    def __init__(
        self,
        router: CommandRouter,
        connection: redis.Redis,
        events: EventLog,
        requester: Requester,
        *,
        on_reply: Callable[[Reply], None] | None = None,
    ) -> None:
        self.router = router
        self.requester = requester
        self.session_id = secrets.token_hex(6)
        self.address = ReplyAddress(platform=PLATFORM, chat=self.session_id)
        self.sink = RecordingSink(on_reply)
        self.feed = GroupFeed(
            connection,
            events,
            group=f"console-{self.session_id}",
            consumer="console",
            start="$",
            block_ms=200,
        )
        self.delivery = Delivery(self.feed, self.sink, platform=PLATFORM, chat=self.session_id)

    def say(self, text: str) -> list[Reply]:
        """Send one message; return the immediate replies (they are recorded too)."""
        replies = self.router.handle(
            Inbound(requester=self.requester, text=text, reply_to=self.address)
        )
        for reply in replies:
            self.sink.send(self.address, reply)
        return replies

    def pump(self) -> bool:
        """Deliver whatever job events are waiting (blocks briefly)."""
        return self.delivery.run_once()

    def replies(self) -> list[Reply]:
        """Every reply so far, in order."""
        return list(self.sink.replies)

    def wait_for_result(self, job_id: str, *, timeout: float) -> Reply | None:
        """Pump events until the job's final reply (report or failure) arrives, or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self.sink.replies:
                if reply.job_id == job_id and reply.kind in (ReplyKind.REPORT, ReplyKind.FAILED):
                    return reply
            if not self.pump():
                time.sleep(0.2)
        return None

    def close(self) -> None:
        """Remove the session's consumer group."""
        self.feed.close(destroy=True)
