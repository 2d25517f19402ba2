"""End-to-end overhead of a `quick` scan: the whole pipeline versus bare nmap (issue 2, point 4).

Run by hand, not by the tests::

    .venv/bin/python bench/overhead.py [--runs N]

It starts everything it needs and removes it again, also on Ctrl-C or SIGTERM: a throwaway
``redis-server`` on a free port (never the system one), a separate ``portpatrol worker``
process (``python -m bot worker``) on that Redis, and the simulated VoIP adapter
(``bot.lab.voip_adapter``) on a free loopback address with a lab allow entry for exactly that
/32. Nothing else is ever scanned.

Each pipeline run is timed from ``ScanService.submit_scan`` (console-style reply address) to the
moment the console session (``ConsoleSession`` over a ``GroupFeed``) has delivered the
``finished`` event; each bare run is the same argv from ``workers.nmap_scan.build_command``
(same profile, address, max rate and privilege) run with ``subprocess``. Runs alternate
(pipeline, bare, pipeline, bare, …) so drift affects both sides alike; the dedupe window is 0 and
the request-rate limits are generous, so every pipeline run really scans.
Imports: stdlib, redis, rq, ``bot`` and ``workers`` (a benchmark may use every layer).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import redis
from rq import Worker

from bot.console.session import ConsoleSession
from bot.core.messages import ReplyKind
from bot.lab import LabHost, free_loopback_address, voip_adapter
from bot.observability import configure_logging
from bot.settings import Settings
from bot.wiring import Runtime, runtime
from workers.models import Requester
from workers.nmap_scan import ProfileBook, ScanProfile, build_command, is_privileged, parse_xml
from workers.queue import WAITING_STATES, scan_queue
from workers.tickets import TicketState

PROFILE = "quick"
TARGET_OVERHEAD_MS = 50.0
GENEROUS_RATE = "100000/hour"
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
SETTLE_TIMEOUT_S = 30.0


class BenchError(Exception):
    """The benchmark could not measure what it set out to measure."""


@dataclass(frozen=True)
class PipelineRun:
    """One scan through the whole pipeline, with where its time went (seconds)."""

    job_id: str
    total_s: float
    submit_s: float
    pickup_s: float
    nmap_s: float
    report_s: float
    publish_s: float
    delivery_s: float
    open_ports: frozenset[tuple[int, str]]


@dataclass(frozen=True)
class BareRun:
    """One bare nmap run with the same arguments."""

    total_s: float
    open_ports: frozenset[tuple[int, str]]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def first_line(argv: Sequence[str]) -> str:
    """Return the first line a version command prints, or a note that it could not run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or "unknown"


def machine_lines(redis_server: str) -> list[str]:
    """Describe the machine and tool versions the figures were taken on."""
    usable = len(os.sched_getaffinity(0))
    return [
        f"date:      {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"cpu:       {cpu_model()}, {os.cpu_count()} cores ({usable} usable)",
        f"kernel:    {platform.system()} {platform.release()}",
        f"python:    {platform.python_version()} ({sys.executable})",
        f"nmap:      {first_line(['nmap', '--version'])}",
        f"redis:     {first_line([redis_server, '--version'])}",
    ]


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its pid and group stay reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_session(process: subprocess.Popen[bytes], *, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a child started in its own session: SIGTERM, wait, then SIGKILL whatever is left.

    The group is killed before the leader is reaped, so its id cannot have been reused: only
    processes this script started (the worker's work horse and scheduler) are ever signalled.
    """
    if not _exited(process.pid):
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        deadline = time.monotonic() + grace_s
        while not _exited(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def redis_server(binary: str, directory: Path) -> Iterator[str]:
    """Run a throwaway redis-server on a free loopback port; yield its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches only this script; it stops the server itself
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or _exited(process.pid):
                    raise BenchError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        stop_session(process)


@contextlib.contextmanager
def worker_process(settings: Settings, connection: redis.Redis, log: Path) -> Iterator[None]:
    """Run ``portpatrol worker`` in its own process on the bench Redis until the block ends."""
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "PORTPATROL_STATE_DIR": str(settings.state_dir),
        "PORTPATROL_NMAP_MAX_RATE": str(settings.nmap_max_rate),
        "PYTHONUNBUFFERED": "1",
    }
    # Both sides must use the packaged profiles, or "the same arguments" would not hold.
    env.pop("PORTPATROL_PROFILES_FILE", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            env=env,
            cwd=log.parent,  # no stray .env from the caller's directory
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        queue = scan_queue(connection)
        deadline = time.monotonic() + START_TIMEOUT_S
        while Worker.count(queue=queue) == 0:
            if _exited(process.pid) or time.monotonic() > deadline:
                raise BenchError(f"the worker did not start:\n{tail(log)}")
            time.sleep(0.05)
        yield
    finally:
        stop_session(process)


def tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_until_idle(connection: redis.Redis, job_id: str | None) -> None:
    """Wait until the previous job is fully done and the worker is back at its queue.

    A pipeline run must start on an idle worker, or it would also time the previous job's
    bookkeeping (result storage, rate-limit slot release) that follows its ``finished`` event.
    """
    queue = scan_queue(connection)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        workers = Worker.all(queue=queue)
        busy = [worker for worker in workers if worker.get_state() != "idle"]
        job = queue.fetch_job(job_id) if job_id is not None else None
        if workers and not busy and (job is None or job.get_status() not in WAITING_STATES):
            return
        time.sleep(0.02)
    raise BenchError("the worker did not become idle")


def stream_ms(event_id: bytes | str) -> float:
    """Return a Redis Stream id's timestamp in seconds since the epoch."""
    text = event_id.decode() if isinstance(event_id, bytes) else event_id
    return int(text.split("-", 1)[0]) / 1000


def finished_event_time(rt: Runtime, after: str, job_id: str) -> float:
    """Return when the job's ``finished`` event was appended (from its stream id)."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = rt.connection.xrange(  # type: ignore[assignment]
        rt.events.key, min=f"({after}"
    )
    for entry_id, fields in reversed(entries):
        if fields.get(b"job_id") == job_id.encode() and fields.get(b"kind") == b"finished":
            return stream_ms(entry_id)
    raise BenchError(f"no finished event for job {job_id} in the stream")


def run_pipeline(rt: Runtime, session: ConsoleSession, address: str, timeout: float) -> PipelineRun:
    """Submit one quick scan as a console chat would and wait for its delivered report."""
    before = rt.events.last_id()
    wall_start = time.time()
    start = time.perf_counter()
    ticket = rt.service.submit_scan(rt.operator, address, PROFILE, session.address.to_payload())
    submitted = time.perf_counter()
    if ticket.state is not TicketState.QUEUED:
        raise BenchError(f"expected a new scan, got {ticket.state.value}: dedupe is not off")
    reply = session.wait_for_result(ticket.job_id, timeout=timeout)
    done = time.perf_counter()
    if reply is None:
        raise BenchError(f"job {ticket.job_id} did not finish within {timeout:.0f} s")
    if reply.kind is not ReplyKind.REPORT or reply.report is None:
        raise BenchError(f"job {ticket.job_id} failed: {reply.text}")
    report = reply.report
    published = finished_event_time(rt, before, ticket.job_id)
    submitted_wall = wall_start + (submitted - start)
    done_wall = wall_start + (done - start)
    started_at = report.started_at.timestamp()
    finished_at = report.finished_at.timestamp()
    return PipelineRun(
        job_id=ticket.job_id,
        total_s=done - start,
        submit_s=submitted - start,
        pickup_s=started_at - submitted_wall,
        nmap_s=report.nmap.elapsed_s,
        report_s=finished_at - started_at - report.nmap.elapsed_s,
        publish_s=published - finished_at,
        delivery_s=done_wall - published,
        open_ports=frozenset((item.port, item.protocol) for item in report.open_ports),
    )


def run_bare(argv: list[str], address: str, timeout: float) -> BareRun:
    """Run nmap with the pipeline's exact argv; parse afterwards, outside the timing."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode == -signal.SIGINT:
        raise KeyboardInterrupt  # Ctrl-C reached nmap (same process group) before us
    if done.returncode != 0:
        raise BenchError(f"bare nmap failed (exit {done.returncode}): {done.stderr[:200]!r}")
    result = parse_xml(done.stdout.decode("utf-8", "replace"), address)
    return BareRun(
        total_s=elapsed,
        open_ports=frozenset((item.port, item.protocol) for item in result.observations),
    )


def summary(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Return median, p90, min and max of samples in seconds, as milliseconds."""
    ms = [value * 1000 for value in values]
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
    return statistics.median(ms), p90, min(ms), max(ms)


def median_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Return a distribution-free interval for the median (order statistics) and its coverage.

    The widest symmetric pair of order statistics whose coverage is still at least 95 %; with
    fewer than 6 values no such pair exists and the range is returned with its own coverage.
    """
    ordered = sorted(values)
    count = len(ordered)
    below = 0.0
    rank = 0
    while True:
        tail = below + math.comb(count, rank) / 2**count
        if tail > 0.025 or rank + 1 > count // 2:
            break
        below, rank = tail, rank + 1
    rank = max(rank, 1)
    coverage = 1 - 2 * sum(math.comb(count, i) for i in range(rank)) / 2**count
    return ordered[rank - 1], ordered[count - rank], coverage


def report_lines(
    pipeline: list[PipelineRun], bare: list[BareRun], mismatches: int
) -> tuple[list[str], float]:
    """Format the figures table and the breakdown; return them and the median overhead (ms)."""
    rows = [
        ("pipeline (submit → delivered)", [run.total_s for run in pipeline]),
        ("bare nmap (same argv)", [run.total_s for run in bare]),
        ("paired difference", [p.total_s - b.total_s for p, b in zip(pipeline, bare, strict=True)]),
    ]
    lines = [f"{'':32}{'median':>10}{'p90':>10}{'min':>10}{'max':>10}   (ms)"]
    for name, values in rows:
        median, p90, low, high = summary(values)
        lines.append(f"{name:32}{median:10.1f}{p90:10.1f}{low:10.1f}{high:10.1f}")
    differences = [(p.total_s - b.total_s) * 1000 for p, b in zip(pipeline, bare, strict=True)]
    low_ci, high_ci, coverage = median_interval(differences)
    pipeline_median = statistics.median(run.total_s for run in pipeline) * 1000
    bare_median = statistics.median(run.total_s for run in bare) * 1000
    overhead = pipeline_median - bare_median
    verdict = "met" if overhead < TARGET_OVERHEAD_MS else "NOT met"
    lines += [
        "",
        f"median overhead:  {overhead:.1f} ms (median pipeline - median bare)",
        f"paired:           median {statistics.median(differences):.1f} ms, "
        f"{coverage:.0%} interval [{low_ci:.1f}, {high_ci:.1f}] ms (order statistics, "
        f"n={len(differences)})",
        "                  (nmap's own run-to-run spread sets the width; more --runs narrow it)",
        f"ratio:            {pipeline_median / bare_median:.4f} (median pipeline / median bare)",
        f"target:           median overhead < {TARGET_OVERHEAD_MS:.0f} ms: {verdict}",
    ]
    if mismatches:
        lines.append(f"WARNING: {mismatches} pipeline run(s) found other open ports than bare nmap")
    parts = [
        ("submit (policy, limits, audit, queued event, enqueue)", "submit_s"),
        ("queue → job running (dequeue, fork, decode, re-check)", "pickup_s"),
        ("nmap in the worker (spawn, run, parse)", "nmap_s"),
        ("rules, reverse DNS, guidance", "report_s"),
        ("store report + finished event", "publish_s"),
        ("finished event → delivered to the console", "delivery_s"),
    ]
    lines += ["", "where the pipeline's time goes (median of each part; ms clock resolution on "]
    lines += ["the event stream ids, so parts next to an event are ±1 ms):"]
    outside = 0.0
    for name, attribute in parts:
        median = statistics.median(getattr(run, attribute) for run in pipeline) * 1000
        lines.append(f"  {name:56}{median:9.1f} ms")
        outside += median if attribute != "nmap_s" else 0.0
    lines.append(f"  {'sum of the parts outside nmap':56}{outside:9.1f} ms")
    return lines, overhead


def measure(runs: int, warmup: int, max_rate: int) -> int:
    """Set everything up, interleave pipeline and bare runs, print the figures; clean up."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (apt-get install redis-server)")
    if shutil.which("nmap") is None:
        raise BenchError("nmap is not installed (apt-get install nmap)")
    profile: ScanProfile | None = ProfileBook.load().get(PROFILE)
    if profile is None:
        raise BenchError(f"the packaged profiles have no {PROFILE!r} profile")
    privileged = is_privileged()
    timeout = float(profile.job_timeout_s + 60)
    print("portpatrol end-to-end overhead: quick profile, whole pipeline vs bare nmap (issue 2)")
    print("\n".join(machine_lines(binary)))

    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pp-bench-")))
        url = stack.enter_context(redis_server(binary, directory))
        address = free_loopback_address()
        lab: LabHost = stack.enter_context(voip_adapter(address, privileged=privileged))
        settings = Settings.model_validate(
            {
                "REDIS_URL": url,
                "PORTPATROL_STATE_DIR": str(directory / "state"),
                "PORTPATROL_DEDUPE_MINUTES": 0,
                "PORTPATROL_USER_RATE": GENEROUS_RATE,
                "PORTPATROL_AGENT_RATE": GENEROUS_RATE,
                "PORTPATROL_TARGET_RATE": GENEROUS_RATE,
                "PORTPATROL_NMAP_MAX_RATE": max_rate,
            }
        )
        rt = stack.enter_context(
            runtime(settings, operator=Requester(platform="cli", user="bench"))
        )
        rt.admin.allow(rt.operator, f"{address}/32", lab=True, note="bench/overhead.py lab")
        stack.enter_context(worker_process(settings, rt.connection, directory / "worker.log"))
        session = ConsoleSession(rt.router(), rt.connection, rt.events, rt.operator)
        stack.callback(_close_session, session)

        argv, _ = build_command(
            profile, ipaddress.ip_address(address), max_rate=max_rate, privileged=privileged
        )
        services = ", ".join(f"{name} {port}/tcp" for name, port in lab.ports.items())
        print(f"target:    simulated VoIP adapter on {address} ({services})")
        print(f"nmap argv: {' '.join(argv)}")
        print(
            f"runs:      {runs} pipeline + {runs} bare, alternating, after {warmup} warm-up "
            "pair(s) not counted; dedupe off, rate limits generous"
        )
        if runs < 20:
            print(f"note:      {runs} runs is fewer than the 20 issue 2 asks for")
        print()

        pipeline, bare, mismatches = interleave(
            rt, session, address, argv, runs=runs, warmup=warmup, timeout=timeout
        )
        lines, _ = report_lines(pipeline, bare, mismatches)
        print()
        print("\n".join(lines))
    return 0


def interleave(
    rt: Runtime,
    session: ConsoleSession,
    address: str,
    argv: list[str],
    *,
    runs: int,
    warmup: int,
    timeout: float,
) -> tuple[list[PipelineRun], list[BareRun], int]:
    """Alternate pipeline and bare runs; return the counted runs and how many disagreed."""
    pipeline: list[PipelineRun] = []
    bare: list[BareRun] = []
    mismatches = 0
    last_job: str | None = None
    for index in range(warmup + runs):
        wait_until_idle(rt.connection, last_job)
        piped = run_pipeline(rt, session, address, timeout)
        last_job = piped.job_id
        plain = run_bare(argv, address, timeout)
        counted = index >= warmup
        label = f"run {index - warmup + 1:>3}" if counted else "warm-up"
        print(
            f"{label}: pipeline {piped.total_s * 1000:8.1f} ms   "
            f"bare {plain.total_s * 1000:8.1f} ms   "
            f"diff {(piped.total_s - plain.total_s) * 1000:+7.1f} ms",
            flush=True,
        )
        if not counted:
            continue
        if piped.open_ports != plain.open_ports:
            mismatches += 1
        pipeline.append(piped)
        bare.append(plain)
    return pipeline, bare, mismatches


def _close_session(session: ConsoleSession) -> None:
    with contextlib.suppress(redis.RedisError):
        session.close()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup, like Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the benchmark; 130 on Ctrl-C, 1 when it could not measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="counted runs per side (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted pairs first (default 1)")
    parser.add_argument(
        "--max-rate", type=int, default=300, help="nmap --max-rate for both sides (default 300)"
    )
    arguments = parser.parse_args(argv)
    if arguments.runs < 2 or arguments.warmup < 0 or arguments.max_rate < 1:
        parser.error("--runs must be at least 2, --warmup at least 0, --max-rate at least 1")
    # Also when started in the background, where the shell leaves SIGINT ignored: Ctrl-C or
    # kill -INT must reach the cleanup, and so must SIGTERM and a closed terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    configure_logging(level="WARNING")  # the per-scan info lines would break up the table
    try:
        return measure(arguments.runs, arguments.warmup, arguments.max_rate)
    except KeyboardInterrupt:
        print("\ninterrupted: lab host, worker and redis-server stopped", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
