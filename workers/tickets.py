"""What the scan service answers: a ticket for accepted work, or a refusal with a reason.

Pure value objects (no Redis), so the chat core can depend on them without depending on rq.
Imports: ``workers.models``.
"""

from __future__ import annotations

from enum import StrEnum

from workers.models import Frozen, ScanReport


class TicketState(StrEnum):
    """How an accepted request will be answered."""

    QUEUED = "queued"
    """A new job was queued."""
    JOINED = "joined"
    """The same scan was already queued or running; the caller will get its result too."""
    CACHED = "cached"
    """A fresh stored report answers the request; nothing was queued."""


class Ticket(Frozen):
    """An accepted request: the job that answers it and where it stands."""

    job_id: str
    state: TicketState
    target: str
    address: str
    profile: str
    position: int | None = None
    """1-based place in the queue; None when not waiting in line (see ``held``)."""
    held: bool = False
    """Held back until another scan of the same address finishes (rq ``RateLimit``)."""
    report: ScanReport | None = None
    age_s: int | None = None


class ScanRefused(Exception):
    """A request that will not be scanned; ``reason`` is one line for the user."""

    def __init__(self, reason: str, code: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retry_after_s = retry_after_s


class JobView(Frozen):
    """Where a job stands, for ``/status``."""

    job_id: str
    state: str
    target: str
    address: str
    profile: str
    requested_by: str
    position: int | None = None
    report: ScanReport | None = None
    reason: str = ""
