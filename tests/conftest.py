"""Shared fixtures: a real redis-server on a free port, worker processes, lab hosts, a chat.

Nothing here fakes the scan side: tests talk to a throwaway ``redis-server`` started for the
session, run real ``portpatrol worker`` processes and real nmap against loopback lab services.
The only stand-in is ``recording_nmap``: an ``nmap`` first on PATH that records its arguments,
to prove that refused requests never start nmap.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harness import (
    Chat,
    RecordingNmap,
    WorkerProcess,
    free_port,
    open_chat,
    start_worker,
    stop_worker,
)

from bot.lab import free_loopback_address
from bot.settings import Settings
from bot.wiring import Runtime, runtime
from workers.models import Requester

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the whole test session, on a free loopback port."""
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    client.close()
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on an empty database (flushed before each test)."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Settings:
    """Settings pointing at the test Redis, with an isolated state directory."""
    return Settings.model_validate(
        {
            "REDIS_URL": redis_url,
            "PORTPATROL_STATE_DIR": str(tmp_path / "state"),
            "PORTPATROL_ADMINS": "telegram:1000,slack:UADMIN",
        }
    )


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    """The runtime the CLI and bots build, on the test Redis (operator: cli:tester, an admin)."""
    with runtime(settings, operator=Requester(platform="cli", user="tester")) as built:
        yield built


@pytest.fixture
def lab_address() -> str:
    """A loopback address no other lab host of this process uses."""
    return free_loopback_address()


@pytest.fixture
def recording_nmap(tmp_path: Path) -> RecordingNmap:
    """A directory holding a recording ``nmap`` stand-in (put it first on PATH)."""
    directory = tmp_path / "fake-bin"
    directory.mkdir()
    log = tmp_path / "nmap-calls.log"
    script = directory / "nmap"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{log}"\n'
        'echo "recording stand-in: no scan was run" >&2\n'
        "exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return RecordingNmap(directory=directory, log=log)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real ``portpatrol worker`` process running real nmap."""
    running = start_worker(settings, tmp_path)
    yield running
    stop_worker(running)


@pytest.fixture
def recording_worker(
    settings: Settings, tmp_path: Path, recording_nmap: RecordingNmap
) -> Iterator[WorkerProcess]:
    """A real worker whose PATH starts with the recording ``nmap`` stand-in."""
    running = start_worker(settings, tmp_path, path_prefix=recording_nmap.directory)
    yield running
    stop_worker(running)


@pytest.fixture
def chat(rt: Runtime) -> Iterator[Chat]:
    """A console chat as the local operator (an admin)."""
    opened = open_chat(rt, rt.operator)
    yield opened
    opened.session.close()
