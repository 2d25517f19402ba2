"""Value objects shared by the scan side and the chat side: requests, observations, reports.

Everything here is frozen and round-trips through JSON (``model_dump(mode="json")`` /
``model_validate``), because these objects travel through Redis as rq job payloads, stream
events and stored reports. This module imports nothing from the rest of the project.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

REPORT_SCHEMA = "portpatrol.report/1"


def _require_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class Frozen(BaseModel):
    """Base for value objects: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Severity(StrEnum):
    """How bad a finding is; ordered from worst to harmless."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Return a sort key: higher is worse."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.CRITICAL: 4,
    Severity.HIGH: 3,
    Severity.MEDIUM: 2,
    Severity.LOW: 1,
    Severity.INFO: 0,
}


class Risk(StrEnum):
    """Overall risk of a host: the worst finding, or ``none``."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NONE = "none"


class Role(StrEnum):
    """What a caller may do: home users scan their own line, agents the allowlist."""

    USER = "user"
    AGENT = "agent"
    ADMIN = "admin"


class Requester(Frozen):
    """Who asked: a platform and that platform's stable user id (never a display name)."""

    platform: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")
    user: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")

    def __str__(self) -> str:
        return f"{self.platform}:{self.user}"


class ScanRequest(Frozen):
    """One accepted scan: the job payload a worker receives."""

    job_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    target: str = Field(max_length=256, description="the target as typed")
    address: str = Field(description="canonical IP address string from ipaddress")
    hostname: str | None = None
    profile: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    requested_by: Requester
    requested_at: UtcDatetime


class PortState(StrEnum):
    """nmap's port states that matter to us."""

    OPEN = "open"
    OPEN_FILTERED = "open|filtered"


class Observation(Frozen):
    """One open port as nmap saw it."""

    port: int = Field(ge=0, le=65535)
    protocol: Literal["tcp", "udp", "sctp"]
    state: str = "open"
    service: str = ""
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    tunnel: str = ""


class OpenPort(Frozen):
    """The short form of an open port in a report."""

    port: int
    protocol: str
    service: str


class Finding(Frozen):
    """A risk rule applied to one open port."""

    port: int
    protocol: str
    service: str
    product: str = ""
    version: str = ""
    severity: Severity
    title: str
    why: str
    advice: str
    rule: str = Field(default="", description="id of the rule that matched")


class Contact(Frozen):
    """How to reach a provider's support."""

    phone: str | None = None
    url: str | None = None
    email: str | None = None
    hours: str | None = None


class Guidance(Frozen):
    """Whom to contact about the findings, and a ready-to-send message."""

    provider: str
    matched_by: Literal["banner", "rdns", "cidr", "asn", "default"]
    contact: Contact
    message: str
    advice: list[str] = Field(default_factory=list)


class NmapInfo(Frozen):
    """Which nmap ran, how, and for how long."""

    version: str = ""
    command: str = ""
    elapsed_s: float = 0.0


class PortChange(Frozen):
    """An open port that appeared or went away between two scans of one address and profile."""

    port: int
    protocol: str
    service: str
    severity: Severity | None = Field(
        default=None, description="worst finding on the port in the scan that saw it open"
    )


class ServiceChange(Frozen):
    """A port open in both scans whose "service product version" differs between them."""

    port: int
    protocol: str
    before: str
    after: str


class ReportChanges(Frozen):
    """What changed since the newest earlier report of the same address and profile.

    A port seen open before but not now counts as ``closed`` only when both scans completed
    with the host up; otherwise it is listed in ``not_seen`` and never claimed closed.
    """

    previous_job_id: str
    previous_finished_at: UtcDatetime
    previous_complete: bool = Field(
        default=True, description="the previous scan completed and found the host up"
    )
    opened: list[PortChange] = Field(default_factory=list)
    closed: list[PortChange] = Field(default_factory=list)
    changed: list[ServiceChange] = Field(default_factory=list)
    not_seen: list[PortChange] = Field(default_factory=list)

    @property
    def nothing_changed(self) -> bool:
        """Return whether the two scans saw the same open ports with the same services."""
        return not (self.opened or self.closed or self.changed or self.not_seen)


class ScanReport(Frozen):
    """The report document (``portpatrol.report/1``): what a scan found and what to do."""

    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    job_id: str
    target: str
    address: str
    hostname: str | None = None
    profile: str
    requested_by: Requester
    started_at: UtcDatetime
    finished_at: UtcDatetime
    host_state: Literal["up", "down", "unknown"]
    complete: bool
    notes: list[str] = Field(default_factory=list)
    risk: Risk
    findings: list[Finding] = Field(default_factory=list)
    open_ports: list[OpenPort] = Field(default_factory=list)
    guidance: Guidance | None = None
    nmap: NmapInfo = Field(default_factory=NmapInfo)
    changes: ReportChanges | None = Field(
        default=None, description="None: no earlier report of this address and profile kept"
    )

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_document(self) -> dict[str, Any]:
        """Return the JSON-ready report document."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ScanReport:
        """Parse a report document, checking its schema."""
        if document.get("schema") != REPORT_SCHEMA:
            raise ValueError(f"not a {REPORT_SCHEMA} document")
        return cls.model_validate(document)


class EventKind(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    STARTED = "started"
    PRELIMINARY = "preliminary"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """Return whether no further event follows this one for the same job."""
        return self in (EventKind.FINISHED, EventKind.FAILED)


class JobEvent(Frozen):
    """One step of one job; ``data`` holds the report document, a reason or a position."""

    job_id: str
    kind: EventKind
    at: UtcDatetime
    data: dict[str, Any] = Field(default_factory=dict)
    event_id: str = ""

    @classmethod
    def make(
        cls, job_id: str, kind: EventKind, at: datetime | None = None, **data: Any
    ) -> JobEvent:
        """Build an event stamped now (or at ``at``)."""
        return cls(job_id=job_id, kind=kind, at=at or utc_now(), data=data)


def overall_risk(findings: list[Finding]) -> Risk:
    """Return the worst finding's severity as a risk level (``none`` without findings).

    Informational findings (expected services) do not raise the risk above ``none``.
    """
    worst = max((finding.severity for finding in findings), key=lambda s: s.rank, default=None)
    if worst is None or worst is Severity.INFO:
        return Risk.NONE
    return Risk(worst.value)
