"""Watches: rescans of one address on rq's own scheduler, announced only when something changed.

``WatchService.add`` applies the same checks as ``ScanService.submit_scan`` (role, profile,
policy, request-rate limits, all audited) and schedules the first run with ``enqueue_in``; each
run (``run_watch``, in the worker) re-checks policy and the per-target limit, scans through
``execute_scan`` without announcing, tells the chat that asked only when the report differs
from the previous one, and schedules the next run. There is no timer loop of our own: rq's
scheduler (``Worker.work(with_scheduler=True)``) moves due runs onto the queue.
Key layout: ``pp:watch:<id>`` → the watch (JSON); ``pp:watches:<platform>:<user>`` → set of the
user's watch ids; ``pp:watchnext:<id>`` → id of the one scheduled rq job allowed to run it.
Imports: redis, rq, limits, and the ``workers`` modules it composes (``workers.queue`` does not
import this module at run time, so there is no import cycle).
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import redis
import structlog
from pydantic import Field
from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.rate_limit import RateLimit
from rq.serializers import JSONSerializer

from workers.audit import AuditLog
from workers.connection import as_text
from workers.events import subscribe
from workers.jobs import ScanFailed, WorkerContext, execute_scan
from workers.models import (
    EventKind,
    Frozen,
    JobEvent,
    Requester,
    Role,
    ScanRequest,
    UtcDatetime,
    utc_now,
)
from workers.nmap_scan import ProfileBook
from workers.policy import PolicyRefused, recheck
from workers.queue import RATE_LIMIT_PREFIX, admit, charge
from workers.ratelimit import RateLimited, RequestLimiter
from workers.store import PolicyStore
from workers.targets import Resolver, TargetRefused, parse_literal
from workers.tickets import ScanRefused

log = structlog.get_logger(__name__)

WATCH_PREFIX = "pp:watch:"
USER_WATCHES_PREFIX = "pp:watches:"
NEXT_RUN_PREFIX = "pp:watchnext:"
RUN_FUNCTION = "workers.watches.run_watch"
WATCH_PROFILE = "quick"
MAX_WATCHES_PER_USER = 20
"""A watch costs a scan per interval for as long as it lives: keep one person's share bounded."""
DEFAULT_INTERVALS: Mapping[str, timedelta] = {
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
}
RUN_RESULT_TTL_S = 7 * 24 * 3600


class Watch(Frozen):
    """One standing rescan: who asked, the pinned address, how often, and where to tell them."""

    watch_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    requester: Requester
    target: str = Field(max_length=256, description="the target as typed")
    address: str = Field(description="canonical IP address, pinned when the watch was added")
    profile: str = WATCH_PROFILE
    interval: str = Field(max_length=32, description="the interval's name: daily, weekly")
    interval_s: int = Field(ge=1, description="seconds between runs; the worker reads this")
    reply_to: dict[str, Any]
    created_at: UtcDatetime


def delete_job(connection: redis.Redis, job_id: str) -> None:
    """Delete an rq job (and take it off the scheduled registry) if it still exists."""
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(job_id, connection=connection, serializer=JSONSerializer).delete()


class WatchStore:
    """Stores watches and the scheduled rq job of each (see the module's key layout)."""

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection

    def save(self, watch: Watch) -> None:
        """Store a watch and index it under its requester."""
        with self._redis.pipeline() as pipe:
            pipe.set(f"{WATCH_PREFIX}{watch.watch_id}", watch.model_dump_json())
            pipe.sadd(f"{USER_WATCHES_PREFIX}{watch.requester}", watch.watch_id)
            pipe.execute()

    def get(self, watch_id: str) -> Watch | None:
        """Return a watch, or None when it is gone (or unreadable: anyone can write to Redis)."""
        raw = self._redis.get(f"{WATCH_PREFIX}{watch_id}")
        if raw is None:
            return None
        try:
            return Watch.model_validate_json(raw)
        except ValueError:
            return None

    def of(self, requester: Requester) -> list[Watch]:
        """Return the requester's watches, oldest first."""
        ids = sorted(
            as_text(raw) for raw in self._redis.smembers(f"{USER_WATCHES_PREFIX}{requester}")
        )
        found = [watch for watch_id in ids if (watch := self.get(watch_id)) is not None]
        return sorted(found, key=lambda watch: watch.created_at)

    def set_next(self, watch_id: str, job_id: str) -> None:
        """Record the one scheduled job that may run this watch next."""
        self._redis.set(f"{NEXT_RUN_PREFIX}{watch_id}", job_id)

    def next_job(self, watch_id: str) -> str | None:
        """Return the id of the scheduled job that may run this watch next."""
        raw = self._redis.get(f"{NEXT_RUN_PREFIX}{watch_id}")
        return as_text(raw) if raw is not None else None

    def delete(self, watch: Watch) -> None:
        """Delete a watch and cancel its scheduled run."""
        next_job = self.next_job(watch.watch_id)
        with self._redis.pipeline() as pipe:
            pipe.delete(f"{WATCH_PREFIX}{watch.watch_id}", f"{NEXT_RUN_PREFIX}{watch.watch_id}")
            pipe.srem(f"{USER_WATCHES_PREFIX}{watch.requester}", watch.watch_id)
            pipe.execute()
        if next_job is not None:
            # A run that still fires finds the watch gone and does nothing; deleting the job
            # just keeps the scheduled registry tidy.
            delete_job(self._redis, next_job)

    def forget(self, requester: Requester) -> int:
        """Delete every watch of the requester; return how many there were."""
        watches = self.of(requester)
        for watch in watches:
            self.delete(watch)
        self._redis.delete(f"{USER_WATCHES_PREFIX}{requester}")
        return len(watches)


def schedule_run(queue: Queue, store: WatchStore, watch: Watch, *, job_timeout: int) -> str:
    """Put the watch's next run on rq's scheduler, one interval from now; return its job id."""
    job_id = f"watch-{watch.watch_id}-{secrets.token_hex(4)}"
    # Recorded first: the run checks it is the recorded one, so an orphan chain dies out.
    store.set_next(watch.watch_id, job_id)
    queue.enqueue_in(
        timedelta(seconds=watch.interval_s),
        RUN_FUNCTION,
        watch.watch_id,
        job_id=job_id,
        job_timeout=job_timeout,
        result_ttl=RUN_RESULT_TTL_S,
        failure_ttl=RUN_RESULT_TTL_S,
        # The same key as ScanService's jobs: a watch run never overlaps a scan of the address.
        rate_limit=RateLimit(key=f"{RATE_LIMIT_PREFIX}{watch.address}", concurrency=1),
        description=f"watch {watch.watch_id}: {watch.address} ({watch.interval})",
    )
    return job_id


class WatchService:
    """Adds, lists and removes watches: the same policy, limits and audit as a scan request."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        store: WatchStore,
        queue: Queue,
        policy: PolicyStore,
        limiter: RequestLimiter,
        profiles: ProfileBook,
        resolve: Resolver,
        audit: AuditLog,
        intervals: Mapping[str, timedelta] = DEFAULT_INTERVALS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._redis = connection
        self.store = store
        self.queue = queue
        self.policy = policy
        self.limiter = limiter
        self.profiles = profiles
        self.resolve = resolve
        self.audit = audit
        self.intervals = dict(intervals)
        self.clock = clock

    def add(
        self,
        requester: Requester,
        target_text: str,
        interval_name: str = "daily",
        reply_to: Mapping[str, Any] | None = None,
    ) -> Watch:
        """Watch an address for the requester, or raise ScanRefused with a reason (audited)."""
        try:
            watch, basis = self._add(requester, target_text, interval_name, reply_to or {})
        except ScanRefused as refusal:
            self.audit.record(
                actor=str(requester),
                action="watch_add",
                target=target_text,
                decision="refused",
                reason=refusal.reason,
                code=refusal.code,
                interval=interval_name[:32],
            )
            raise
        self.audit.record(
            actor=str(requester),
            action="watch_add",
            target=target_text,
            decision="accepted",
            reason=basis,
            watch=watch.watch_id,
            address=watch.address,
            interval=watch.interval,
        )
        log.info("watch added", watch=watch.watch_id, actor=str(requester))
        return watch

    def _add(
        self,
        requester: Requester,
        target_text: str,
        interval_name: str,
        reply_to: Mapping[str, Any],
    ) -> tuple[Watch, str]:
        interval = self.intervals.get(interval_name.lower())
        if interval is None:
            names = ", ".join(sorted(self.intervals))
            raise ScanRefused(f"unknown interval; choose one of: {names}", "interval")
        admission = admit(
            self.policy,
            self.profiles,
            self.resolve,
            requester=requester,
            target_text=target_text,
            profile_name=WATCH_PROFILE,
        )
        target, profile, decision = admission.target, admission.profile, admission.decision
        existing = self.store.of(requester)
        if any(watch.address == target.canonical for watch in existing):
            raise ScanRefused(
                f"you already watch {target.canonical}; /unwatch it first to change the interval",
                "duplicate",
            )
        if len(existing) >= MAX_WATCHES_PER_USER:
            raise ScanRefused(
                f"you have {len(existing)} watches, the most one person may have", "too_many"
            )
        charge(self.limiter, requester, admission.role, target.canonical)
        watch = Watch(
            watch_id=secrets.token_hex(6),
            requester=requester,
            target=target_text,
            address=target.canonical,
            profile=profile.name,
            interval=interval_name.lower(),
            interval_s=max(1, math.ceil(interval.total_seconds())),
            reply_to=dict(reply_to),
            created_at=self.clock(),
        )
        self.store.save(watch)
        schedule_run(self.queue, self.store, watch, job_timeout=profile.job_timeout_s + 60)
        return watch, decision.basis

    def remove(self, requester: Requester, target_text: str) -> Watch:
        """Stop the requester's watch of an address (as typed or canonical); audited."""
        watch = self._find(requester, target_text)
        if watch is None:
            self.audit.record(
                actor=str(requester),
                action="watch_remove",
                target=target_text,
                decision="refused",
                reason="no such watch",
            )
            raise ScanRefused(f"you do not watch {target_text[:64]}; see /watches", "no_watch")
        self.store.delete(watch)
        self.audit.record(
            actor=str(requester),
            action="watch_remove",
            target=target_text,
            decision="done",
            watch=watch.watch_id,
        )
        return watch

    def _find(self, requester: Requester, target_text: str) -> Watch | None:
        for watch in self.store.of(requester):
            if target_text in (watch.target, watch.address, watch.watch_id):
                return watch
        return None

    def watches_of(self, requester: Requester) -> list[Watch]:
        """Return the requester's watches, oldest first."""
        return self.store.of(requester)


class WatchRunner:
    """Runs one watch in the worker: re-check, scan, tell the chat if it changed, reschedule."""

    def __init__(
        self, context: WorkerContext, *, store: WatchStore, queue: Queue, limit: RequestLimiter
    ) -> None:
        self.context = context
        self.store = store
        self.queue = queue
        self.limit = limit

    def run(self, watch_id: str, run_id: str | None) -> dict[str, Any]:
        """Run the watch once (unless it is gone or this job is not its scheduled run)."""
        watch = self.store.get(watch_id)
        if watch is None:
            return {"watch": watch_id, "outcome": "gone"}
        if run_id is not None and self.store.next_job(watch_id) != run_id:
            return {"watch": watch_id, "outcome": "superseded"}
        # The next run is scheduled before this one scans, so a worker that dies mid-scan does
        # not end the watch: rq keeps the scheduled job in Redis.
        self._reschedule(watch_id)
        return self._run(watch)

    def _run(self, watch: Watch) -> dict[str, Any]:
        request = ScanRequest(
            job_id=secrets.token_hex(8),
            target=watch.target,
            address=watch.address,
            profile=watch.profile,
            requested_by=watch.requester,
            requested_at=self.context.clock(),
        )
        bound = log.bind(job_id=request.job_id, watch=watch.watch_id)
        try:
            address = parse_literal(watch.address)
            if address is None:
                raise ScanFailed("the watch's address is not an IP address", final=True)
            # The role is not re-derived here (the worker's admin list can differ from the
            # CLI's): like every job, the run needs an allow entry or the verified address.
            recheck(address, self.context.policy.facts_for(watch.requester, Role.USER))
            self.limit.hit_target(watch.address)
        except (PolicyRefused, RateLimited, TargetRefused, ScanFailed) as refusal:
            reason = getattr(refusal, "reason", str(refusal))
            self._audit(watch, request, "refused", reason)
            bound.info("watch run refused", reason=reason)
            return {"watch": watch.watch_id, "outcome": "refused", "reason": reason}
        try:
            report = execute_scan(request, self.context, announce=False)
        except ScanFailed as failure:
            self._audit(watch, request, "failed", failure.reason)
            bound.warning("watch run failed", reason=failure.reason)
            return {"watch": watch.watch_id, "outcome": "failed", "reason": failure.reason}
        changes = report.changes
        if changes is None or changes.nothing_changed:
            # Silence is the point of a watch: the report is in the history all the same.
            outcome = "first" if changes is None else "unchanged"
        else:
            outcome = "changed"
            subscribe(self.context.connection, request.job_id, watch.reply_to)
            self.context.events.append(
                JobEvent.make(
                    request.job_id,
                    EventKind.FINISHED,
                    at=report.finished_at,
                    report=report.to_document(),
                )
            )
        self._audit(watch, request, outcome, "")
        bound.info("watch run finished", outcome=outcome)
        return {"watch": watch.watch_id, "outcome": outcome, "job_id": request.job_id}

    def _audit(self, watch: Watch, request: ScanRequest, decision: str, reason: str) -> None:
        self.context.audit.record(
            actor=str(watch.requester),
            action="watch_scan",
            target=watch.target,
            decision=decision,
            reason=reason,
            job_id=request.job_id,
            watch=watch.watch_id,
        )

    def _reschedule(self, watch_id: str) -> None:
        watch = self.store.get(watch_id)
        if watch is None:
            return
        profile = self.context.profiles.get(watch.profile)
        timeout = (profile.job_timeout_s if profile is not None else 600) + 60
        job_id = schedule_run(self.queue, self.store, watch, job_timeout=timeout)
        if self.store.get(watch_id) is None:
            # Removed in between: the new run must not outlive the watch.
            delete_job(self.context.connection, job_id)


class _Runner:
    current: WatchRunner | None = None


def configure(runner: WatchRunner) -> None:
    """Install the runner that ``run_watch`` uses (once per worker process)."""
    _Runner.current = runner


def run_watch(watch_id: str) -> dict[str, Any]:
    """rq job: run one watch and schedule its next run."""
    runner = _Runner.current
    if runner is None:
        raise RuntimeError("workers.watches.configure() was not called in this worker")
    job = get_current_job()
    return runner.run(str(watch_id), job.id if job is not None else None)
