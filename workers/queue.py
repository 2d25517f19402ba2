"""The one way in: ``ScanService.submit_scan`` turns a request into a ticket or a refusal.

Order of checks (each refusal is audited): parse the target → profile and role → policy
(opt-out, special-purpose, allowlist or verified address) → a fresh stored report or a running
scan of the same address and profile answers instead of a new scan → the queue cap → the
request-rate limits → enqueue one rq job (JSONSerializer; ``RateLimit`` so one address is never
scanned twice at once).
Key layout: ``pp:latest:<address>:<profile>`` → newest job id (dedupe window);
``pp:subscribers:<job_id>`` → list of opaque reply addresses (JSON) the chat side delivers to.
Imports: redis, rq, and the ``workers`` modules it composes.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
import structlog
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimit, RateLimitRegistry
from rq.serializers import JSONSerializer

from workers.audit import AuditLog
from workers.connection import as_text
from workers.events import EventLog, subscribe
from workers.models import (
    EventKind,
    JobEvent,
    Requester,
    Role,
    ScanReport,
    ScanRequest,
    utc_now,
)
from workers.nmap_scan import ProfileBook, ScanProfile
from workers.policy import Decision, PolicyRefused, decide
from workers.ratelimit import RateLimited, RequestLimiter, describe_wait
from workers.reports import ReportStore
from workers.store import PolicyStore
from workers.targets import Resolver, Target, TargetRefused, parse_target
from workers.tickets import JobView, ScanRefused, Ticket, TicketState

if TYPE_CHECKING:
    # workers.watches imports this module; the type alone does not make a cycle at run time.
    from workers.watches import WatchStore

log = structlog.get_logger(__name__)

QUEUE_NAME = "portpatrol-scans"
LATEST_PREFIX = "pp:latest:"
RATE_LIMIT_PREFIX = "pp-address-"
LAST_JOB_PREFIX = "pp:lastjob:"
LAST_JOB_TTL_S = 30 * 24 * 3600
JOB_FUNCTION = "workers.jobs.run_scan"
WAITING_STATES = {
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.DEFERRED,
    JobStatus.SCHEDULED,
    JobStatus.RATE_LIMITED,
}


@dataclass(frozen=True)
class ServiceConfig:
    """Tunables of the scan service."""

    dedupe_window: timedelta = timedelta(minutes=10)
    queue_max: int = 200
    typical_scan_s: int = 30
    result_ttl_s: int = 24 * 3600
    failure_ttl_s: int = 7 * 24 * 3600
    retries: int = 1


def scan_queue(connection: redis.Redis) -> Queue:
    """Return the scan queue, always with the JSON serializer (pickle would be code execution)."""
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer)


@dataclass(frozen=True)
class Admission:
    """A request that passed target parsing, profile and policy: what the next steps need."""

    role: Role
    target: Target
    profile: ScanProfile
    decision: Decision


def admit(
    policy: PolicyStore,
    profiles: ProfileBook,
    resolve: Resolver,
    *,
    requester: Requester,
    target_text: str,
    profile_name: str,
) -> Admission:
    """Parse the target, check the profile and the caller's role, and apply policy.

    Scans and watches admit requests the same way; every refusal is a ScanRefused.
    """
    role = policy.role_of(requester)
    try:
        target = parse_target(target_text, resolve)
    except TargetRefused as refusal:
        raise ScanRefused(refusal.reason, refusal.code) from refusal
    profile = profiles.get(profile_name)
    if profile is None:
        names = ", ".join(sorted(profiles.profiles))
        raise ScanRefused(f"unknown profile; choose one of: {names}", "profile")
    if role not in profile.roles:
        raise ScanRefused(
            f"the {profile.name} profile is for "
            + " and ".join(f"{allowed}s" for allowed in profile.roles),
            "profile_role",
        )
    try:
        decision = decide(target.address, target.resolved, policy.facts_for(requester, role))
    except PolicyRefused as refusal:
        raise ScanRefused(refusal.reason, refusal.code) from refusal
    return Admission(role=role, target=target, profile=profile, decision=decision)


def charge(limiter: RequestLimiter, requester: Requester, role: Role, address: str) -> None:
    """Count the request against the caller's and the target's limits, or refuse it."""
    try:
        limiter.hit(requester, role, address)
    except RateLimited as limited:
        raise ScanRefused(
            limited.reason, "rate_limited", retry_after_s=limited.retry_after_s
        ) from limited


def _position(job: Job) -> int | None:
    """Return the job's 1-based place in the queue, or None when it is not waiting in line."""
    index = job.get_position()
    return None if index is None else index + 1


class ScanService:
    """Accepts scan requests: policy, limits, dedupe, enqueue, audit."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        policy: PolicyStore,
        limiter: RequestLimiter,
        profiles: ProfileBook,
        resolve: Resolver,
        audit: AuditLog,
        events: EventLog,
        reports: ReportStore,
        config: ServiceConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        watches: WatchStore | None = None,
    ) -> None:
        self._redis = connection
        self.watches = watches
        self.queue = scan_queue(connection)
        self.policy = policy
        self.limiter = limiter
        self.profiles = profiles
        self.resolve = resolve
        self.audit = audit
        self.events = events
        self.reports = reports
        self.config = config or ServiceConfig()
        self.clock = clock

    def waiting(self) -> int:
        """Jobs waiting to run: in the queue, plus those rq's RateLimit holds back per address.

        Counting the held-back jobs touches every address with a scan under way, so it is done
        only once the queue itself is half full. Below that, the held-back jobs could reach the
        cap only if most waiting jobs were second scans of busy addresses, which the per-target
        limit bounds; the cost of counting them on every request is not worth it.
        """
        queued = int(self.queue.count)
        if queued * 2 < self.config.queue_max:
            return queued
        keys = [
            registry.rate_limited_key
            for registry in RateLimitRegistry.all(self._redis)
            if registry.key.startswith(RATE_LIMIT_PREFIX)
        ]
        # One round trip for every address with a scan under way, however many there are.
        with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcard(key)
            held = sum(int(count) for count in pipe.execute())
        return queued + held

    def role_of(self, requester: Requester) -> Role:
        """Return the caller's role."""
        return self.policy.role_of(requester)

    def submit_scan(
        self,
        requester: Requester,
        target_text: str,
        profile_name: str = "quick",
        reply_to: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """Accept one scan request and return its ticket, or raise ScanRefused with a reason."""
        try:
            ticket = self._submit(requester, target_text, profile_name, reply_to)
        except ScanRefused as refusal:
            self.audit.record(
                actor=str(requester),
                action="scan",
                target=target_text,
                decision="refused",
                reason=refusal.reason,
                code=refusal.code,
                profile=profile_name[:32],
            )
            log.info("scan refused", actor=str(requester), code=refusal.code)
            raise
        self._redis.set(f"{LAST_JOB_PREFIX}{requester}", ticket.job_id, ex=LAST_JOB_TTL_S)
        return ticket

    def last_job(self, requester: Requester) -> str | None:
        """Return the id of the caller's most recent accepted request, if any."""
        value = self._redis.get(f"{LAST_JOB_PREFIX}{requester}")
        return as_text(value) if value is not None else None

    def _submit(
        self,
        requester: Requester,
        target_text: str,
        profile_name: str,
        reply_to: Mapping[str, Any] | None,
    ) -> Ticket:
        admission = admit(
            self.policy,
            self.profiles,
            self.resolve,
            requester=requester,
            target_text=target_text,
            profile_name=profile_name,
        )
        role, target, profile, decision = (
            admission.role,
            admission.target,
            admission.profile,
            admission.decision,
        )
        address = target.canonical
        existing = self._existing(address, profile.name, reply_to)
        if existing is not None:
            self.audit.record(
                actor=str(requester),
                action="scan",
                target=target_text,
                decision=f"accepted:{existing.state.value}",
                reason=decision.basis,
                job_id=existing.job_id,
                profile=profile.name,
            )
            return existing

        waiting = self.waiting()
        if waiting >= self.config.queue_max:
            workers = max(1, Worker.count(queue=self.queue))
            wait_s = math.ceil(waiting * self.config.typical_scan_s / workers)
            raise ScanRefused(
                f"the scan queue is full ({waiting} waiting); try again in {describe_wait(wait_s)}",
                "busy",
                retry_after_s=wait_s,
            )
        charge(self.limiter, requester, role, address)

        request = ScanRequest(
            job_id=secrets.token_hex(8),
            target=target_text,
            address=address,
            hostname=target.hostname,
            profile=profile.name,
            requested_by=requester,
            requested_at=self.clock(),
        )
        ticket = self._enqueue(request, reply_to, job_timeout=profile.job_timeout_s)
        self.audit.record(
            actor=str(requester),
            action="scan",
            target=target_text,
            decision="accepted",
            reason=decision.basis,
            job_id=request.job_id,
            profile=profile.name,
            address=address,
        )
        log.info("scan queued", job_id=request.job_id, actor=str(requester), profile=profile.name)
        return ticket

    def _existing(
        self, address: str, profile: str, reply_to: Mapping[str, Any] | None
    ) -> Ticket | None:
        """Answer from a fresh report or join a scan of the same address that is under way."""
        raw = self._redis.get(f"{LATEST_PREFIX}{address}:{profile}")
        if raw is None:
            return None
        job_id = as_text(raw)
        report = self.reports.get(job_id)
        if report is not None:
            age = self.clock() - report.finished_at
            if age <= self.config.dedupe_window:
                return Ticket(
                    job_id=job_id,
                    state=TicketState.CACHED,
                    target=report.target,
                    address=address,
                    profile=profile,
                    report=report,
                    age_s=max(0, int(age.total_seconds())),
                )
            return None
        try:
            job = Job.fetch(job_id, connection=self._redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return None
        if job.get_status() not in WAITING_STATES:
            return None
        if reply_to is not None:
            subscribe(self._redis, job_id, dict(reply_to))
        return Ticket(
            job_id=job_id,
            state=TicketState.JOINED,
            target=str(job.args[0].get("target", address)) if job.args else address,
            address=address,
            profile=profile,
            position=_position(job),
            held=job.get_status() == JobStatus.RATE_LIMITED,
        )

    def _enqueue(
        self, request: ScanRequest, reply_to: Mapping[str, Any] | None, *, job_timeout: int
    ) -> Ticket:
        payload = request.model_dump(mode="json")
        if reply_to is not None:
            subscribe(self._redis, request.job_id, dict(reply_to))
        self._redis.set(
            f"{LATEST_PREFIX}{request.address}:{request.profile}",
            request.job_id,
            ex=int(self.config.dedupe_window.total_seconds()) + job_timeout,
        )
        # The queued event goes first so that no reader ever sees "started" before "queued".
        self.events.append(JobEvent.make(request.job_id, EventKind.QUEUED))
        job = self.queue.enqueue(
            JOB_FUNCTION,
            payload,
            job_id=request.job_id,
            job_timeout=job_timeout,
            result_ttl=self.config.result_ttl_s,
            failure_ttl=self.config.failure_ttl_s,
            retry=Retry(max=self.config.retries, interval=5) if self.config.retries else None,
            rate_limit=RateLimit(key=f"{RATE_LIMIT_PREFIX}{request.address}", concurrency=1),
            description=f"scan {request.address} ({request.profile})",
        )
        return Ticket(
            job_id=request.job_id,
            state=TicketState.QUEUED,
            target=request.target,
            address=request.address,
            profile=request.profile,
            position=_position(job),
            held=job.get_status() == JobStatus.RATE_LIMITED,
        )

    def status(self, job_id: str) -> JobView | None:
        """Return where a job stands, or None when it is unknown (or expired)."""
        # isalnum() alone accepts non-ASCII digits and letters (fullwidth digits), which rq refuses
        # as a job id with a ValueError.
        if not job_id or len(job_id) > 64 or not (job_id.isascii() and job_id.isalnum()):
            return None
        try:
            job = Job.fetch(job_id, connection=self._redis, serializer=JSONSerializer)
        except NoSuchJobError:
            report = self.reports.get(job_id)
            if report is None:
                return None
            return JobView(
                job_id=job_id,
                state="finished",
                target=report.target,
                address=report.address,
                profile=report.profile,
                requested_by=str(report.requested_by),
                report=report,
            )
        request = ScanRequest.model_validate(job.args[0])
        status = job.get_status()
        return JobView(
            job_id=job_id,
            state=status.value if status is not None else "unknown",
            target=request.target,
            address=request.address,
            profile=request.profile,
            requested_by=str(request.requested_by),
            position=_position(job) if status == JobStatus.QUEUED else None,
            report=self.reports.get(job_id),
            reason=str(job.meta.get("reason", "")),
        )

    def history(self, requester: Requester, target_text: str | None) -> list[ScanReport]:
        """Past reports of an address: agents name any target, home users get their own line."""
        role = self.policy.role_of(requester)
        if role is Role.USER:
            own = self.policy.verified_address(requester)
            if own is None:
                raise ScanRefused(
                    "you have no verified connection yet: use /check from it first", "no_address"
                )
            if target_text is not None and target_text != own:
                raise ScanRefused("you can see the history of your own connection only", "not_own")
            return self.reports.history(own)
        if target_text is None:
            raise ScanRefused("name the address: /history TARGET", "usage")
        try:
            target = parse_target(target_text, self.resolve)
        except TargetRefused as refusal:
            raise ScanRefused(refusal.reason, refusal.code) from refusal
        return self.reports.history(target.canonical)

    def forget(self, requester: Requester, *, by: Requester | None = None) -> str:
        """Delete the user's verified address and the reports they asked for of it.

        ``by`` is an admin doing it for them (``portpatrol forget``). The audit event keeps the
        fact of the deletion (who, for whom, how many), never the deleted address or reports.
        """
        actor = by or requester
        if by is not None and self.policy.role_of(by) is not Role.ADMIN:
            self.audit.record(
                actor=str(by),
                action="forget",
                target=str(requester),
                decision="refused",
                reason="not an admin",
            )
            raise ScanRefused(
                "only admins can delete what is stored about someone else", "not_admin"
            )
        address = self.policy.verified_address(requester)
        removed = 0
        if address is not None:
            removed = self.reports.forget(address, requester)
            self.policy.forget_address(requester)
        # The last-job pointer names one of the user's jobs: it goes too.
        self._redis.delete(f"{LAST_JOB_PREFIX}{requester}")
        # Watches are the user's too: deleted here, so /forget and `portpatrol forget` stay one
        # operation; the audit reason keeps only how many there were.
        watches = self.watches.forget(requester) if self.watches is not None else 0
        self.audit.record(
            actor=str(actor),
            action="forget",
            target=str(requester),
            decision="done",
            reason=(
                f"verified address {'removed' if address else 'none'}, {removed} reports, "
                f"{watches} watches"
            ),
        )
        watched = f" and {watches} watches" if watches else ""
        if by is not None:
            if address is None and not removed and not watches:
                return f"There was nothing stored about {requester} to delete."
            return (
                f"Deleted {requester}'s verified connection and {removed} stored scan reports"
                f"{watched}."
            )
        if address is None and not removed and not watches:
            return "There was nothing stored about you to delete."
        return f"Deleted your verified connection and {removed} stored scan reports{watched}."
