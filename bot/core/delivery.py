"""Delivery: job events → replies → the platform, acknowledged only once the platform has them.

An event is acknowledged after every subscriber on this platform got it; a failure leaves it
pending so it is retried (and re-claimed after a restart). A message the platform refuses for
good (``DeliveryGivenUp``) counts as delivered and goes to the audit hook the adapter passed in.
Progress replies are edits of the first message on platforms that can edit, so a repeated
progress delivery is harmless.
Imports: ``bot.core``, ``workers.models``.
"""

from __future__ import annotations

import threading

import structlog

from bot.core.messages import Reply, ReplyAddress, ReplyKind
from bot.core.service import DeliveryAudit, DeliveryFailed, DeliveryGivenUp, EventFeed, ReplySink
from workers.models import EventKind, JobEvent, ScanReport

log = structlog.get_logger(__name__)


def reply_for_event(event: JobEvent) -> Reply | None:
    """Word a job event for the chat, or None when the event needs no message."""
    if event.kind is EventKind.STARTED:
        return Reply(
            kind=ReplyKind.PROGRESS, text="Scanning now…", job_id=event.job_id, final=False
        )
    if event.kind is EventKind.PRELIMINARY:
        return Reply(
            kind=ReplyKind.PROGRESS,
            text="Preliminary result, confirming services…",
            job_id=event.job_id,
            final=False,
        )
    if event.kind is EventKind.FINISHED:
        document = event.data.get("report")
        try:
            report = ScanReport.from_document(document) if isinstance(document, dict) else None
        except ValueError:
            # A stream entry anyone with Redis access could write: raising here would leave it
            # pending and fail every later delivery run on the same event.
            report = None
        if report is None:
            return Reply(
                kind=ReplyKind.FAILED, text="The result could not be read.", job_id=event.job_id
            )
        return Reply(kind=ReplyKind.REPORT, text="", job_id=event.job_id, report=report)
    if event.kind is EventKind.FAILED:
        reason = str(event.data.get("reason", "the scan failed"))[:500]
        return Reply(kind=ReplyKind.FAILED, text=reason, job_id=event.job_id)
    return None


class Delivery:
    """Moves job events from a feed to one platform's sink."""

    def __init__(
        self,
        feed: EventFeed,
        sink: ReplySink,
        *,
        platform: str,
        chat: str | None = None,
        on_given_up: DeliveryAudit | None = None,
    ) -> None:
        self.feed = feed
        self.sink = sink
        self.platform = platform
        self.chat = chat
        """Only this chat's addresses (a console session sees every event, answers only its own)."""
        self.on_given_up = on_given_up
        """Told about each message the platform refused for good (the audit trail)."""

    def run_once(self) -> bool:
        """Deliver what the feed has now; return False if a delivery failed (back off, retry)."""
        for event in self.feed.fetch():
            if not self.deliver(event):
                self.feed.retry_later()
                return False
            self.feed.ack(event)
        return True

    def deliver(self, event: JobEvent) -> bool:
        """Send one event to every subscriber on this platform; False if any send failed."""
        reply = reply_for_event(event)
        if reply is None:
            return True
        addresses = [
            address
            for payload in self.feed.subscribers(event.job_id)
            if (address := ReplyAddress.from_payload(payload)) is not None
            and address.platform == self.platform
            and (self.chat is None or address.chat == self.chat)
        ]
        for address in addresses:
            # A restart between "sent" and "acknowledged" must not show the result twice: each
            # recipient is marked as soon as the platform accepted its message.
            recipient = address.recipient
            if self.feed.was_delivered(event, recipient):
                continue
            try:
                self.sink.send(address, reply)
            except DeliveryGivenUp as given_up:
                # Nobody can read it there: retrying cannot help. It is audited before it is
                # marked, so a crash in between audits it twice rather than never.
                log.warning("delivery given up", job_id=event.job_id, reason=str(given_up)[:200])
                if self.on_given_up is not None:
                    self.on_given_up(address, event.job_id, str(given_up))
            except DeliveryFailed as failure:
                log.warning("delivery failed, will retry", job_id=event.job_id, reason=str(failure))
                return False
            self.feed.mark_delivered(event, recipient)
        return True


def run_delivery(delivery: Delivery, stop: threading.Event, *, max_backoff_s: float = 60) -> None:
    """Deliver until ``stop`` is set, backing off (1 s doubling to a minute) while failing."""
    backoff = 1.0
    failing = False
    while not stop.is_set():
        try:
            delivered = delivery.run_once()
        except Exception:  # Redis down or a bug: log once per outage, keep the loop alive
            if not failing:
                log.exception("delivery loop failed; retrying with backoff")
            delivered = False
        if delivered:
            if failing:
                log.info("delivery recovered")
            failing, backoff = False, 1.0
            continue
        failing = True
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff_s)
