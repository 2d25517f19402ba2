"""The rq entry point: ``run_scan(payload)`` decodes, delegates to ``execute_scan``, encodes.

The worker trusts nothing in the payload beyond its shape: anyone who can write to Redis can
enqueue, so the address is parsed again and policy is re-checked here before nmap starts.
``configure()`` is called once by the worker's entry point with everything the job needs; this
module never reads the environment.
Imports: rq (current job only), and the ``workers`` modules it composes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
import structlog
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from workers.audit import AuditLog
from workers.events import EventLog
from workers.guidance import ProviderDirectory
from workers.models import (
    EventKind,
    JobEvent,
    OpenPort,
    Role,
    ScanReport,
    ScanRequest,
    overall_risk,
    utc_now,
)
from workers.nmap_scan import NmapFailed, NmapScanner, ProfileBook, die_with_parent
from workers.policy import PolicyRefused, recheck
from workers.reports import ReportStore, diff_reports
from workers.risk import RuleSet
from workers.store import PolicyStore
from workers.targets import TargetRefused, parse_literal

log = structlog.get_logger(__name__)

ReverseResolver = Callable[[str], str | None]


@dataclass(frozen=True)
class WorkerContext:
    """Everything a scan job needs, built once by the worker's entry point."""

    connection: redis.Redis
    policy: PolicyStore
    scanner: NmapScanner
    profiles: ProfileBook
    rules: RuleSet
    providers: ProviderDirectory
    events: EventLog
    reports: ReportStore
    audit: AuditLog
    reverse_dns: ReverseResolver
    clock: Callable[[], datetime] = utc_now


class _Context:
    current: WorkerContext | None = None


def configure(context: WorkerContext) -> None:
    """Install the context that ``run_scan`` uses (once per worker process)."""
    _Context.current = context


def run_scan(payload: dict[str, Any]) -> dict[str, Any]:
    """rq job: scan one pinned address and return the report document."""
    context = _Context.current
    if context is None:
        raise RuntimeError("workers.jobs.configure() was not called in this worker")
    # rq runs each job in a forked "horse": if the worker above it is killed outright, the horse
    # (and with it nmap, which has the same setting) must not live on as an orphan.
    die_with_parent()
    request = ScanRequest.model_validate(payload)
    job = get_current_job()
    final_attempt = job is None or not job.retries_left
    try:
        report = execute_scan(request, context)
    except ScanFailed as failure:
        if failure.final:
            # Retrying cannot change a refusal: end the job here instead of raising into rq.
            _fail(context, request, failure.reason, final_attempt=True)
            return {"error": failure.reason}
        _fail(context, request, failure.reason, final_attempt=final_attempt)
        raise
    except JobTimeoutException:
        # rq's death penalty raises this in the job; the scanner already killed nmap.
        _fail(
            context, request, "the scan took too long and was stopped", final_attempt=final_attempt
        )
        raise
    except Exception:
        log.exception("scan crashed", job_id=request.job_id)
        _fail(context, request, "the scan failed unexpectedly", final_attempt=final_attempt)
        raise
    return report.to_document()


class ScanFailed(Exception):
    """A scan that ended without a report; ``final`` means retrying cannot help."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


def _fail(
    context: WorkerContext, request: ScanRequest, reason: str, *, final_attempt: bool
) -> None:
    job = get_current_job()
    if job is not None:
        job.meta["reason"] = reason
        job.save_meta()  # type: ignore[no-untyped-call]  # rq leaves it unannotated
    if not final_attempt:
        log.warning("scan failed, will retry", job_id=request.job_id, reason=reason)
        return
    # Audit first, announce second: whoever hears of the failure finds it in the audit trail.
    context.audit.record(
        actor=str(request.requested_by),
        action="scan_failed",
        target=request.target,
        decision="failed",
        reason=reason,
        job_id=request.job_id,
    )
    context.events.append(JobEvent.make(request.job_id, EventKind.FAILED, reason=reason))
    log.warning("scan failed", job_id=request.job_id, reason=reason)


def execute_scan(
    request: ScanRequest, context: WorkerContext, *, announce: bool = True
) -> ScanReport:
    """Re-check policy, run nmap, apply rules and guidance, diff, store and announce the report.

    ``announce=False`` leaves out the finished event: a watch run decides itself whether the
    result is worth a message (``workers.watches``).
    """
    bound = log.bind(job_id=request.job_id)
    try:
        address = parse_literal(request.address)
    except TargetRefused:
        # "127.1" or "127.0.0.1 -oN x": the parser refuses them; a crash here would be retried.
        address = None
    if address is None or str(address) != request.address:
        raise ScanFailed("the job's address is not a canonical IP address", final=True)
    profile = context.profiles.get(request.profile)
    if profile is None:
        raise ScanFailed(f"unknown profile {request.profile!r}", final=True)
    try:
        recheck(address, context.policy.facts_for(request.requested_by, Role.USER))
    except PolicyRefused as refusal:
        raise ScanFailed(f"refused at the worker: {refusal.reason}", final=True) from refusal

    started_at = context.clock()
    context.events.append(JobEvent.make(request.job_id, EventKind.STARTED, at=started_at))
    bound.info("scan started", address=request.address, profile=profile.name)
    try:
        result = context.scanner.scan(address, profile)
    except NmapFailed as failure:
        raise ScanFailed(failure.reason) from failure

    findings = context.rules.assess(result.observations)
    hostname = request.hostname or context.reverse_dns(request.address)
    finished_at = context.clock()
    guidance = context.providers.advise(
        address=request.address,
        hostname=hostname,
        observations=result.observations,
        findings=findings,
        when=finished_at,
    )
    report = ScanReport(
        job_id=request.job_id,
        target=request.target,
        address=request.address,
        hostname=hostname,
        profile=profile.name,
        requested_by=request.requested_by,
        started_at=started_at,
        finished_at=finished_at,
        host_state=result.host_state,
        complete=result.complete,
        notes=result.notes,
        risk=overall_risk(findings),
        findings=findings,
        open_ports=[
            OpenPort(port=item.port, protocol=item.protocol, service=item.service)
            for item in result.observations
        ],
        guidance=guidance,
        nmap=result.info,
    )
    # Compared before saving, so the newest kept report of this address and profile is the
    # previous scan, not this one; none kept means this is the first scan on record.
    previous = context.reports.previous(report.address, report.profile, excluding=report.job_id)
    if previous is not None:
        report = report.model_copy(update={"changes": diff_reports(previous, report)})
    context.reports.save(report)
    if announce:
        context.events.append(
            JobEvent.make(
                request.job_id, EventKind.FINISHED, at=finished_at, report=report.to_document()
            )
        )
    bound.info("scan finished", risk=report.risk.value, open_ports=len(report.open_ports))
    return report


def reverse_dns_resolver(
    lookup: Callable[[str], tuple[str, list[str], list[str]]], *, timeout: float = 2.0
) -> ReverseResolver:
    """Wrap a ``socket.gethostbyaddr``-like lookup: a PTR name, or None on failure or timeout.

    The lookup runs in a daemon thread because the resolver library cannot be cancelled; a
    slow DNS server must not hold the finished report back for more than ``timeout``.
    """

    def reverse(address: str) -> str | None:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return None
        answer: list[str] = []

        def resolve() -> None:
            with contextlib.suppress(OSError, UnicodeError):
                answer.append(lookup(address)[0])

        thread = threading.Thread(target=resolve, name="reverse-dns", daemon=True)
        thread.start()
        thread.join(timeout)
        if not answer:
            return None
        name = printable_hostname(answer[0])
        return name or None

    return reverse


def printable_hostname(name: str) -> str:
    """Keep a PTR answer only if it is a plain hostname (PTR records can hold any bytes)."""
    candidate = name.rstrip(".").lower()[:253]
    return candidate if re.fullmatch(r"[a-z0-9_.-]+", candidate) else ""
