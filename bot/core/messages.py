"""Platform-neutral messages: what came in, where to answer, and what to say.

Imports: ``workers.models``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from workers.models import Frozen, Requester, ScanReport

MAX_COMMAND_LENGTH = 2000
"""Longer inbound text is refused before parsing: no command needs more."""


class ReplyAddress(Frozen):
    """Where answers for one request go; opaque to the scan side, which just stores it."""

    platform: str = Field(min_length=1, max_length=32)
    chat: str = Field(min_length=1, max_length=128)
    thread: str | None = Field(default=None, max_length=128)
    message: str | None = Field(default=None, max_length=128)
    user: str | None = Field(default=None, max_length=128)

    @property
    def recipient(self) -> str:
        """A stable key for this recipient (platform, chat, thread)."""
        return ":".join((self.platform, self.chat, self.thread or ""))

    def to_payload(self) -> dict[str, Any]:
        """Return the JSON form stored beside a job."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ReplyAddress | None:
        """Parse a stored address; None when it is not one of ours."""
        try:
            return cls.model_validate(payload)
        except ValueError:
            return None


class Inbound(Frozen):
    """One chat message addressed to the bot."""

    requester: Requester
    text: str
    reply_to: ReplyAddress


class ReplyKind(StrEnum):
    """What a reply is, so each platform can present it its own way."""

    TEXT = "text"
    """Help, status and admin answers."""
    ACCEPTED = "accepted"
    """A scan was queued (or joined): job id and queue position."""
    PROGRESS = "progress"
    """The job moved on (started, preliminary)."""
    REPORT = "report"
    """The result."""
    REFUSED = "refused"
    """A request that will not be done, with the reason."""
    FAILED = "failed"
    """A scan that ended without a result, with the reason."""


class Reply(Frozen):
    """One answer; ``text`` is plain text in the core's wording, never markup."""

    kind: ReplyKind
    text: str
    job_id: str | None = None
    report: ScanReport | None = None
    final: bool = True
    """False while more updates of the same job will follow (edit rather than re-post)."""
