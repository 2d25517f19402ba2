"""Test harness: helpers shared by the fixtures in conftest.py and the tests themselves.

Real processes only: ``start_worker`` runs ``portpatrol worker``; ``Chat`` drives the console
front end (push a message in, pop the replies out); ``RecordingNmap`` is the one stand-in, an
``nmap`` that records its arguments so tests can prove nmap never started.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bot.console.session import ConsoleSession
from bot.core.messages import Reply, ReplyKind
from bot.settings import Settings
from bot.wiring import Runtime
from workers.models import Requester

ROOT = Path(__file__).resolve().parent.parent

# DD-WRT's telnetd fingerprint copies the rest of its first line into the version nmap reports,
# so this markup reaches the report's product fields, not just the wire.
HOSTILE_TELNET = (
    b"\xff\xfd\x01\xff\xfd\x1f\xff\xfd!\xff\xfb\x01\xff\xfb\x03\r\r\n"
    b'DD-WRT v\x1b[2J\x1b]0;owned\x07<a href="https://evil.example">x</a><b><!channel>\r\n'
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RecordingNmap:
    """An ``nmap`` stand-in that records each call's arguments, one line per call."""

    directory: Path
    log: Path

    def calls(self) -> list[str]:
        """Return the recorded argument lines."""
        if not self.log.exists():
            return []
        return self.log.read_text().splitlines()


def worker_env(settings: Settings, *, path_prefix: Path | None = None) -> dict[str, str]:
    """The environment of a ``portpatrol worker`` process for these settings."""
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "PORTPATROL_STATE_DIR": str(settings.state_dir),
        "PORTPATROL_ADMINS": ",".join(sorted(settings.admins)),
        "PYTHONUNBUFFERED": "1",
    }
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class WorkerProcess:
    """A running ``portpatrol worker``."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Return what the worker printed so far."""
        return self.log.read_text(errors="replace")


def start_worker(
    settings: Settings, tmp_path: Path, *, path_prefix: Path | None = None, name: str = "worker"
) -> WorkerProcess:
    """Start a real worker process and wait until it registered with Redis."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            env=worker_env(settings, path_prefix=path_prefix),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    client = redis.Redis.from_url(settings.redis_url or "")
    deadline = time.monotonic() + 30
    while not client.smembers("rq:workers"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    client.close()
    return WorkerProcess(process=process, log=log)


def stop_worker(worker: WorkerProcess) -> None:
    """Stop a worker process (warm shutdown, then kill)."""
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


class Chat:
    """Push a message in, pop the replies out: the console front end as a test harness."""

    def __init__(self, session: ConsoleSession) -> None:
        self.session = session

    def say(self, text: str) -> list[Reply]:
        """Send a message; return the immediate replies."""
        return self.session.say(text)

    def replies(self) -> list[Reply]:
        """Every reply so far."""
        return self.session.replies()

    def result(self, job_id: str, timeout: float = 120) -> Reply:
        """Wait for the job's final reply (report or failure)."""
        reply = self.session.wait_for_result(job_id, timeout=timeout)
        assert reply is not None, f"no result for job {job_id} within {timeout} s"
        return reply

    def scan(self, target: str, profile: str = "", timeout: float = 120) -> Reply:
        """Ask for a scan that must be accepted, and return its final reply."""
        [reply] = self.say(f"/scan {target} {profile}".strip())
        assert reply.kind in (ReplyKind.ACCEPTED, ReplyKind.REPORT), reply.text
        assert reply.job_id is not None
        return self.result(reply.job_id, timeout)


def open_chat(rt: Runtime, requester: Requester) -> Chat:
    """Open a console chat for ``requester`` on the runtime."""
    return Chat(ConsoleSession(rt.router(), rt.connection, rt.events, requester))
