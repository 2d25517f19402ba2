"""The worker trusts nothing in Redis: it re-checks every job and stops nmap when time runs out.

Jobs are put into the scan queue directly with rq, bypassing ScanService, as anyone who can
write to Redis could. The worker's ``nmap`` is the recording stand-in (or a hanging one), so
"nmap never started" and "no nmap survived" are checked on real processes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import Chat, RecordingNmap, WorkerProcess, start_worker, stop_worker
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bot.core.messages import ReplyKind
from bot.core.render import render_reply
from bot.lab import LabHost, LabService
from bot.settings import Settings
from bot.wiring import Runtime
from workers.events import STREAM_KEY, subscribe
from workers.nmap_scan import NmapFailed, NmapScanner, ProfileBook
from workers.queue import JOB_FUNCTION, QUEUE_NAME, scan_queue

FINAL_STATES = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED}


def payload_for(address: str, **changes: Any) -> dict[str, Any]:
    """A job payload as ScanService would write it, with some fields changed."""
    payload: dict[str, Any] = {
        "job_id": secrets.token_hex(8),
        "target": address,
        "address": address,
        "hostname": None,
        "profile": "quick",
        "requested_by": {"platform": "cli", "user": "tester"},
        "requested_at": datetime.now(UTC).isoformat(),
    }
    payload.update(changes)
    return payload


def enqueue(rt: Runtime, payload: dict[str, Any], *, job_timeout: int = 60) -> str:
    """Put a job straight into the scan queue (JSON serializer), as a Redis writer could."""
    job_id = str(payload.get("job_id") or secrets.token_hex(8))
    scan_queue(rt.connection).enqueue(JOB_FUNCTION, payload, job_id=job_id, job_timeout=job_timeout)
    return job_id


def wait_for_job(client: redis.Redis, job_id: str, timeout: float = 30) -> Job:
    """Wait until the worker is done with a job; return it."""
    deadline = time.monotonic() + timeout
    while True:
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        if job.get_status() in FINAL_STATES:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.get_status()}"
        time.sleep(0.05)


def job_events(client: redis.Redis, job_id: str) -> list[dict[str, str]]:
    """Return the job's entries in the event stream."""
    entries = [
        {key.decode(): value.decode() for key, value in fields.items()}
        for _id, fields in client.xrange(STREAM_KEY)
    ]
    return [entry for entry in entries if entry["job_id"] == job_id]


def failed_reason(client: redis.Redis, job_id: str) -> str:
    """Return the reason of the job's single failed event."""
    [failed] = [entry for entry in job_events(client, job_id) if entry["kind"] == "failed"]
    return str(json.loads(failed["data"])["reason"])


def alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def processes_mentioning(text: str) -> list[int]:
    """Return live processes whose command line contains text."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class WorkerPayloadCase:
    """A job payload the worker must not run, and the reason it must give where it can read it."""

    name: str
    build: Callable[[], dict[str, Any]]
    reason: str | None
    """The failed event's reason; None when the payload does not even parse (an rq failure)."""


def _without(field: str) -> dict[str, Any]:
    payload = payload_for("127.0.0.1")
    del payload[field]
    return payload


NOT_CANONICAL = "the job's address is not a canonical IP address"

WORKER_CASES = [
    WorkerPayloadCase(
        "public address not in the allowlist, claimed by a configured admin",
        lambda: payload_for("8.8.8.8", requested_by={"platform": "telegram", "user": "1000"}),
        "refused at the worker: 8.8.8.8 is not in the allowlist",
    ),
    WorkerPayloadCase(
        "IPv4-mapped loopback (the lab entry covers IPv4 only)",
        lambda: payload_for("::ffff:7f00:1"),
        "refused at the worker: ::ffff:7f00:1 is special-purpose space",
    ),
    WorkerPayloadCase(
        "opted-out address",
        lambda: payload_for("127.0.5.5"),
        "refused at the worker: 127.0.5.5 is on the opt-out list",
    ),
    WorkerPayloadCase("-oN", lambda: payload_for("127.0.0.1 -oN /tmp/x"), NOT_CANONICAL),
    WorkerPayloadCase("leading option", lambda: payload_for("-oNx"), NOT_CANONICAL),
    WorkerPayloadCase("127.1", lambda: payload_for("127.1"), NOT_CANONICAL),
    WorkerPayloadCase("2130706433", lambda: payload_for("2130706433"), NOT_CANONICAL),
    WorkerPayloadCase("::ffff:127.0.0.1", lambda: payload_for("::ffff:127.0.0.1"), NOT_CANONICAL),
    WorkerPayloadCase("hostname", lambda: payload_for("localhost.localdomain"), NOT_CANONICAL),
    WorkerPayloadCase("a CIDR", lambda: payload_for("127.0.0.0/8"), NOT_CANONICAL),
    WorkerPayloadCase(
        "unknown profile",
        lambda: payload_for("127.0.0.1", profile="aggressive"),
        "unknown profile 'aggressive'",
    ),
    WorkerPayloadCase(
        "extra field with nmap arguments",
        lambda: payload_for("127.0.0.1", nmap_arguments="-oN /tmp/x --script=x"),
        None,
    ),
    WorkerPayloadCase("missing address", lambda: _without("address"), None),
    WorkerPayloadCase("missing requester", lambda: _without("requested_by"), None),
    WorkerPayloadCase("not a scan request", lambda: {"job_id": "x", "argv": ["-oN", "x"]}, None),
]  # fmt: skip


@pytest.mark.nmap
def test_worker_rechecks_jobs_written_straight_into_redis(  # noqa: PLR0917 - pytest passes fixtures by name
    rt: Runtime,
    redis_client: redis.Redis,
    recording_worker: WorkerProcess,
    recording_nmap: RecordingNmap,
    lab_address: str,
    subtests: pytest.Subtests,
) -> None:
    """Jobs that bypassed ScanService never reach nmap: each fails, audited where it parses."""
    # All of loopback is a lab network, so for the malformed addresses nothing but the worker's
    # own checks stands between the job and nmap.
    rt.admin.allow(rt.operator, "127.0.0.0/8", lab=True, note="test lab")
    rt.store.opt_out("127.0.5.5/32", added_by="cli:tester", at=datetime.now(UTC), note="no")
    jobs = [(case, enqueue(rt, case.build())) for case in WORKER_CASES]
    # Positive control, queued last: the worker takes jobs in order, so once this one is done
    # every hostile job before it was handled too, and the stand-in shows it records nmap calls.
    control = enqueue(rt, payload_for(lab_address))
    wait_for_job(redis_client, control)
    [call] = recording_nmap.calls()
    assert call.endswith(f"-oX - -- {lab_address}")
    assert call.split().count(lab_address) == 1
    assert [entry["kind"] for entry in job_events(redis_client, control)] == ["started", "failed"]
    audits = rt.audit.events()
    for case, job_id in jobs:
        with subtests.test(msg=case.name):
            job = wait_for_job(redis_client, job_id)
            kinds = [entry["kind"] for entry in job_events(redis_client, job_id)]
            if case.reason is None:
                assert job.get_status() == JobStatus.FAILED
                assert kinds == []
            else:
                assert kinds == ["failed"]
                assert failed_reason(redis_client, job_id).startswith(case.reason)
                [audit] = [event for event in audits if event.job_id == job_id]
                assert (audit.action, audit.decision) == ("scan_failed", "failed")
                assert audit.reason.startswith(case.reason)


class Detonator:
    """Unpickling this runs os.mkdir: proof of code execution if anyone unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_pickled_job_is_never_unpickled(
    rt: Runtime,
    redis_client: redis.Redis,
    recording_worker: WorkerProcess,
    recording_nmap: RecordingNmap,
    tmp_path: Path,
) -> None:
    """A job pickled into the scan queue fails to load in the JSON worker and runs nothing."""
    marker = tmp_path / "unpickled"
    pickled = Queue(QUEUE_NAME, connection=redis_client)  # rq's default: pickle
    job = pickled.enqueue(JOB_FUNCTION, Detonator(marker), job_id=secrets.token_hex(8))
    raw = redis_client.hget(f"rq:job:{job.id}", "data")
    assert raw is not None
    data = zlib.decompress(raw)
    assert data.startswith(b"\x80")  # a pickle...
    assert b"mkdir" in data  # ...that makes a directory when anyone loads it
    # A JSON job after it proves the worker got past the pickled one and is still serving.
    follower = enqueue(rt, payload_for("127.0.0.1"))
    wait_for_job(redis_client, follower)
    status = redis_client.hget(f"rq:job:{job.id}", "status")
    assert status == b"failed"
    assert not marker.exists()
    assert recording_nmap.calls() == []
    assert job_events(redis_client, job.id) == []


def hanging_nmap(directory: Path) -> Path:
    """Write an ``nmap`` stand-in that records its pid and its child's, then hangs."""
    directory.mkdir()
    pids = directory / "pids"
    script = directory / "nmap"
    script.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nsleep 300 &\necho $! >> "{pids}"\nwait\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return pids


def started_pids(pids: Path, timeout: float = 10) -> list[int]:
    """Wait until the hanging stand-in and its child wrote their pids; return them."""
    deadline = time.monotonic() + timeout
    while not pids.exists() or len(pids.read_text().split()) < 2:
        assert time.monotonic() < deadline, "the hanging nmap stand-in never started"
        time.sleep(0.05)
    return [int(pid) for pid in pids.read_text().split()]


def wait_until_gone(pid_list: list[int], timeout: float = 10) -> list[int]:
    """Wait for the processes to end; return those still alive after the timeout."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pid_list) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pid_list if alive(pid)]


def test_scanner_kills_nmap_and_its_children_at_the_process_timeout(
    tmp_path: Path, lab_address: str
) -> None:
    """Past the process timeout, the scanner kills the whole nmap process group and says why."""
    pids = hanging_nmap(tmp_path / "hang-bin")
    scanner = NmapScanner(
        binary=str(tmp_path / "hang-bin" / "nmap"), privileged=False, process_timeout_s=1
    )
    profile = ProfileBook.load().get("quick")
    assert profile is not None
    with pytest.raises(NmapFailed) as failed:
        scanner.scan(ipaddress.ip_address(lab_address), profile)
    assert failed.value.reason == "nmap did not finish within 1 s and was stopped"
    assert wait_until_gone(started_pids(pids)) == []


@pytest.fixture
def hanging_worker(settings: Settings, tmp_path: Path) -> Iterator[tuple[WorkerProcess, Path]]:
    """A real worker whose ``nmap`` hangs forever (and records its pids)."""
    pids = hanging_nmap(tmp_path / "hang-bin")
    running = start_worker(settings, tmp_path, path_prefix=tmp_path / "hang-bin", name="hanging")
    yield running, pids
    stop_worker(running)


def test_job_timeout_stops_a_hanging_nmap(
    rt: Runtime,
    redis_client: redis.Redis,
    hanging_worker: tuple[WorkerProcess, Path],
    lab_address: str,
) -> None:
    """A job past its rq timeout fails with a clear reason and leaves no nmap process behind."""
    _worker, pids = hanging_worker
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="test lab")
    job_id = enqueue(rt, payload_for(lab_address), job_timeout=2)
    running = started_pids(pids)
    job = wait_for_job(redis_client, job_id)
    assert job.get_status() == JobStatus.FAILED
    assert failed_reason(redis_client, job_id) == "the scan took too long and was stopped"
    assert wait_until_gone(running) == []


@pytest.mark.nmap
def test_job_timeout_stops_real_nmap_against_a_slow_service(
    rt: Runtime, redis_client: redis.Redis, worker: WorkerProcess, lab_address: str
) -> None:
    """Real nmap held up by a slow lab service is killed with its job; no nmap survives."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="test lab")
    slow = LabService("telnet", 2323, b"login: ", "telnet", delay=60)
    with LabHost(lab_address, [slow]):
        job_id = enqueue(rt, payload_for(lab_address), job_timeout=3)
        deadline = time.monotonic() + 10
        while not processes_mentioning(f"-- {lab_address}"):
            assert time.monotonic() < deadline, "nmap never started"
            time.sleep(0.05)
        job = wait_for_job(redis_client, job_id)
        assert job.get_status() == JobStatus.FAILED
        assert failed_reason(redis_client, job_id) == "the scan took too long and was stopped"
        deadline = time.monotonic() + 10
        while processes_mentioning(f"-- {lab_address}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_mentioning(f"-- {lab_address}") == []


def test_worker_failure_reaches_the_chat_without_a_traceback(
    rt: Runtime,
    chat: Chat,
    redis_client: redis.Redis,
    recording_worker: WorkerProcess,
    recording_nmap: RecordingNmap,
) -> None:
    """Loopback without a lab entry is refused by the worker, audited, and told to the chat."""
    payload = payload_for("127.0.0.1", requested_by={"platform": "cli", "user": "tester"})
    subscribe(redis_client, payload["job_id"], chat.session.address.to_payload())
    job_id = enqueue(rt, payload)
    reply = chat.result(job_id, timeout=30)
    [audit] = [event for event in rt.audit.events() if event.job_id == job_id]
    assert (audit.action, audit.decision) == ("scan_failed", "failed")
    assert reply.kind is ReplyKind.FAILED
    assert reply.text.startswith("refused at the worker: 127.0.0.1 is special-purpose space")
    rendered = render_reply(reply)
    assert rendered.startswith("Scan failed: refused at the worker")
    assert "Traceback" not in rendered
    assert recording_nmap.calls() == []
