"""Composition root: settings → Redis, stores, scan service, worker context, chat core.

The only place that knows which implementation serves which protocol. With ``REDIS_URL`` unset
it starts the private Redis (``workers.embedded``) and, where asked, a worker process of our
own, so the demo and the console run the same code path as production with zero config.
Imports: everything; nothing imports it but entry points and tests.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import structlog
from limits.storage import RedisStorage
from rq import Worker
from rq.serializers import JSONSerializer

from bot.core.commands import CommandRouter
from bot.core.messages import ReplyAddress
from bot.core.service import CheckLinkIssuer
from bot.settings import Settings
from workers.admin import Administration
from workers.audit import AuditLog
from workers.connection import connect
from workers.embedded import EmbeddedRedis
from workers.events import EventLog
from workers.guidance import ProviderDirectory
from workers.jobs import WorkerContext, configure, reverse_dns_resolver
from workers.models import Requester
from workers.nmap_scan import NmapScanner, ProfileBook
from workers.queue import ScanService, ServiceConfig, scan_queue
from workers.ratelimit import RateLimits, RequestLimiter
from workers.reports import ReportStore
from workers.risk import RuleSet
from workers.store import PolicyStore
from workers.targets import system_resolver
from workers.verify import CheckLinks
from workers.watches import (
    DEFAULT_INTERVALS,
    WatchRunner,
    WatchService,
    WatchStore,
)
from workers.watches import configure as configure_watches

log = structlog.get_logger(__name__)

WORKER_START_TIMEOUT_S = 30.0


def local_operator() -> Requester:
    """The person at this terminal: the CLI acts as an admin, audited as ``cli:<os user>``."""
    try:
        return Requester(platform="cli", user=getpass.getuser())
    except (KeyError, OSError, ValueError):
        # No name, or one that is not a plain identifier: the uid still says who it was.
        return Requester(platform="cli", user=f"uid{os.getuid()}")


def limits_uri(url: str) -> str:
    """Translate a redis-py URL into the form the ``limits`` package expects."""
    if url.startswith("unix://"):
        return "redis+unix://" + url.removeprefix("unix://")
    return url


@dataclass
class Runtime:
    """Everything the chat side and the CLI use, wired to one Redis."""

    settings: Settings
    redis_url: str
    connection: redis.Redis
    operator: Requester
    store: PolicyStore
    admin: Administration
    audit: AuditLog
    events: EventLog
    reports: ReportStore
    profiles: ProfileBook
    service: ScanService
    watches: WatchService
    embedded: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def router(self) -> CommandRouter:
        """Return the chat command router over this runtime."""
        issuer: CheckLinkIssuer | None = None
        if self.settings.public_url:
            links = CheckLinks(self.connection)
            base = self.settings.public_url.rstrip("/")

            def issuer(requester: Requester, reply_to: dict[str, Any]) -> str:
                return f"{base}/check/{links.issue(requester, reply_to)}"

        return CommandRouter(
            self.service,
            self.admin,
            profiles=sorted(self.profiles.profiles),
            check_links=issuer,
            audit=self.audit,
            watches=self.watches,
        )

    def record_delivery_failure(
        self, address: ReplyAddress, job_id: str | None, reason: str
    ) -> None:
        """Audit a message a platform refused for good (``delivery_failed``), never its text."""
        self.audit.record(
            actor=f"{address.platform}:{address.user}" if address.user else address.platform,
            action="deliver",
            decision="delivery_failed",
            reason=reason,
            job_id=job_id or "",
            platform=address.platform,
            chat=address.chat,
        )

    def start_worker(self) -> None:
        """Start a ``portpatrol worker`` process of our own on this Redis (embedded mode)."""
        env = {**os.environ, "REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1"}
        # The worker shares our settings through the environment, like any production worker;
        # its log goes to the state directory so it does not interleave with our output.
        state_dir = Path(self.settings.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (state_dir / "worker.log").open("ab") as worker_log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", "worker", "--quiet"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=worker_log,
                stderr=worker_log,
                start_new_session=True,
            )
        self.processes.append(process)
        queue = scan_queue(self.connection)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if Worker.count(queue=queue) > 0:
                return
            if process.poll() is not None:
                raise RuntimeError(f"the scan worker exited at start (status {process.returncode})")
            time.sleep(0.05)
        raise RuntimeError("the scan worker did not start within 30 s")

    def close(self) -> None:
        """Stop processes this runtime started."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        self.connection.close()


def request_limiter(settings: Settings, connection: redis.Redis, redis_url: str) -> RequestLimiter:
    """The request-rate limits on Redis (every limiter on one Redis shares the counts)."""
    return RequestLimiter(
        RedisStorage(limits_uri(redis_url), connection_pool=connection.connection_pool),
        RateLimits(user=settings.user_rate, agent=settings.agent_rate, target=settings.target_rate),
    )


def build_watches(
    settings: Settings,
    *,
    connection: redis.Redis,
    redis_url: str,
    store: PolicyStore,
    audit: AuditLog,
    profiles: ProfileBook,
    intervals: Mapping[str, timedelta] = DEFAULT_INTERVALS,
) -> WatchService:
    """Build the watch service (``intervals`` lets a test run watches every few seconds)."""
    return WatchService(
        connection,
        store=WatchStore(connection),
        queue=scan_queue(connection),
        policy=store,
        limiter=request_limiter(settings, connection, redis_url),
        profiles=profiles,
        resolve=system_resolver(),
        audit=audit,
        intervals=intervals,
    )


def build_service(
    settings: Settings,
    *,
    connection: redis.Redis,
    redis_url: str,
    store: PolicyStore,
    audit: AuditLog,
    events: EventLog,
    reports: ReportStore,
    profiles: ProfileBook,
) -> ScanService:
    """Build the scan service with the configured limits."""
    limiter = request_limiter(settings, connection, redis_url)
    return ScanService(
        connection,
        policy=store,
        limiter=limiter,
        profiles=profiles,
        resolve=system_resolver(),
        audit=audit,
        events=events,
        reports=reports,
        config=ServiceConfig(
            dedupe_window=timedelta(minutes=settings.dedupe_minutes),
            queue_max=settings.queue_max,
        ),
        watches=WatchStore(connection),
    )


@contextmanager
def runtime(settings: Settings, *, operator: Requester | None = None) -> Iterator[Runtime]:
    """Connect to Redis (or start the private one) and build the runtime; clean up on exit."""
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.state_dir)
        url = embedded.start()
    connection = connect(url)
    operator = operator or local_operator()
    store = PolicyStore(connection, admins=settings.admins | {str(operator)})
    audit = audit_log(settings, connection)
    events = EventLog(connection)
    reports = ReportStore(connection)
    profiles = ProfileBook.load(settings.profiles_file)
    built = Runtime(
        settings=settings,
        redis_url=url,
        connection=connection,
        operator=operator,
        store=store,
        admin=Administration(store, audit),
        audit=audit,
        events=events,
        reports=reports,
        profiles=profiles,
        service=build_service(
            settings,
            connection=connection,
            redis_url=url,
            store=store,
            audit=audit,
            events=events,
            reports=reports,
            profiles=profiles,
        ),
        watches=build_watches(
            settings,
            connection=connection,
            redis_url=url,
            store=store,
            audit=audit,
            profiles=profiles,
        ),
        embedded=embedded is not None,
    )
    try:
        # Start-up trims the trail to the configured retention; every append does from then on.
        # Silent here: commands that print their answer on stdout have no logging configured.
        audit.enforce_retention()
        yield built
    finally:
        built.close()
        if embedded is not None:
            embedded.stop()


def audit_log(settings: Settings, connection: redis.Redis) -> AuditLog:
    """The audit trail with the configured retention (``PORTPATROL_AUDIT_RETENTION_DAYS``)."""
    return AuditLog(connection, retention=timedelta(days=settings.audit_retention_days))


def worker_context(settings: Settings, connection: redis.Redis) -> WorkerContext:
    """Build what a scan job needs; data files are validated here, at start-up."""
    store = PolicyStore(connection, admins=settings.admins)
    return WorkerContext(
        connection=connection,
        policy=store,
        scanner=NmapScanner(max_rate=settings.nmap_max_rate),
        profiles=ProfileBook.load(settings.profiles_file),
        rules=RuleSet.load(settings.rules_file),
        providers=ProviderDirectory.load(settings.providers_file),
        events=EventLog(connection),
        reports=ReportStore(connection),
        audit=audit_log(settings, connection),
        reverse_dns=reverse_dns_resolver(socket.gethostbyaddr),
    )


def run_worker(settings: Settings, *, burst: bool = False, quiet: bool = False) -> None:
    """Run an rq worker for the scan queue (JSON serializer; its scheduler runs watches too)."""
    url = settings.redis_url
    if url is None:
        raise RuntimeError("REDIS_URL is not set: a production worker needs a shared Redis")
    connection = connect(url)
    context = worker_context(settings, connection)
    dropped = context.audit.enforce_retention()
    log.info("audit trail trimmed to its retention", dropped=dropped)
    configure(context)
    queue = scan_queue(connection)
    configure_watches(
        WatchRunner(
            context,
            store=WatchStore(connection),
            queue=queue,
            limit=request_limiter(settings, connection, url),
        )
    )
    worker = Worker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        name=f"portpatrol-{socket.gethostname()}-{os.getpid()}",
    )
    log.info("worker starting", queue=queue.name, pid=os.getpid())
    worker.work(burst=burst, with_scheduler=True, logging_level="WARNING" if quiet else "INFO")


def state_dir_note(settings: Settings) -> str | None:
    """Say where zero-config state lives, the first time it is created."""
    if settings.redis_url is not None:
        return None
    marker = Path(settings.state_dir) / "appendonlydir"
    if marker.exists():
        return None
    return (
        f"portpatrol keeps its local state in {settings.state_dir} "
        "(set REDIS_URL to use a shared Redis)"
    )
