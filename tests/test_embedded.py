"""Tests for workers.embedded: the zero-config private redis-server, started for real."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path

import pytest
import redis

from workers.embedded import SOCKET_NAME, EmbeddedRedis, EmbeddedRedisUnavailable


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short private directory (unix socket paths are limited to about 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="pp", dir="/tmp"))
    yield directory
    socket_path = directory / SOCKET_NAME
    if socket_path.exists():
        # A test that failed half-way may leave its server behind: shut it down.
        with (
            suppress(redis.RedisError),
            closing(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2)) as client,
        ):
            client.shutdown(nosave=True)
    shutil.rmtree(directory, ignore_errors=True)


def connect(url: str) -> redis.Redis:
    """A client for the embedded server's URL."""
    return redis.Redis.from_url(url, socket_timeout=5)


def started(embedded: EmbeddedRedis) -> subprocess.Popen[bytes]:
    """Return the server process this instance started."""
    assert embedded.process is not None
    return embedded.process


def test_start_returns_a_private_unix_socket_url(state_dir: Path) -> None:
    """start() runs redis-server on a 0700 unix socket in the state dir, with no TCP listener."""
    embedded = EmbeddedRedis(state_dir)
    url = embedded.start()
    try:
        assert url == f"unix://{state_dir / SOCKET_NAME}"
        with closing(connect(url)) as client:
            assert client.ping() is True
            assert client.config_get("port") == {"port": "0"}
            assert client.info("server")["process_id"] == started(embedded).pid
        mode = (state_dir / SOCKET_NAME).stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o700
    finally:
        embedded.stop()


def test_second_instance_reuses_the_running_server(state_dir: Path) -> None:
    """A second EmbeddedRedis on the same directory reuses the running server, starting none."""
    first = EmbeddedRedis(state_dir)
    url = first.start()
    try:
        second = EmbeddedRedis(state_dir)
        assert second.start() == url
        assert second.process is None
        second.stop()
        with closing(connect(url)) as client:
            assert client.info("server")["process_id"] == started(first).pid
    finally:
        first.stop()


def test_stop_shuts_the_server_down_when_we_are_the_only_client(state_dir: Path) -> None:
    """With no other client connected, stop() ends the server it started."""
    embedded = EmbeddedRedis(state_dir)
    url = embedded.start()
    process = started(embedded)
    with closing(connect(url)) as client:
        client.set("k", "v")
    embedded.stop()
    assert process.returncode is not None
    assert embedded.process is None
    with (
        closing(redis.Redis.from_url(url, socket_timeout=1)) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()


def test_stop_leaves_the_server_running_for_another_client(state_dir: Path) -> None:
    """While another client (a console in another terminal) is connected, stop() leaves it up."""
    embedded = EmbeddedRedis(state_dir)
    url = embedded.start()
    process = started(embedded)
    with closing(connect(url)) as other:
        assert other.ping() is True
        embedded.stop()
        assert process.poll() is None
        assert other.ping() is True
        with suppress(redis.ConnectionError):
            other.shutdown(nosave=True)
    assert process.wait(timeout=10) == 0


def test_data_persists_across_stop_and_start(state_dir: Path) -> None:
    """Allow entries and reports survive a restart: the server keeps an append-only file."""
    first = EmbeddedRedis(state_dir)
    with closing(connect(first.start())) as client:
        client.hset("pp:allow", "127.0.0.0/8", '{"lab": true}')
    first.stop()
    second = EmbeddedRedis(state_dir)
    try:
        with closing(connect(second.start())) as client:
            assert client.hget("pp:allow", "127.0.0.0/8") == b'{"lab": true}'
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert second.process is not None  # a new server: the data came from its file
    finally:
        second.stop()


@pytest.mark.parametrize("leftover", ["socket", "file"])
def test_stale_socket_is_replaced(state_dir: Path, leftover: str) -> None:
    """A socket left by a crashed server (or a stray file) does not stop a fresh server starting."""
    if leftover == "socket":
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(state_dir / SOCKET_NAME))
    else:
        (state_dir / SOCKET_NAME).write_text("not a socket", encoding="utf-8")
    embedded = EmbeddedRedis(state_dir)
    try:
        with closing(connect(embedded.start())) as client:
            assert client.ping() is True
    finally:
        embedded.stop()


def test_state_dir_is_created_private(state_dir: Path) -> None:
    """A missing state directory is created, readable only by its owner."""
    nested = state_dir / "s"
    embedded = EmbeddedRedis(nested)
    try:
        embedded.start()
        assert stat.S_IMODE(nested.stat().st_mode) == 0o700
    finally:
        embedded.stop()


@pytest.mark.parametrize("binary", ["no-such-redis-server", "/nonexistent/redis-server"])
def test_missing_binary_says_what_to_install(state_dir: Path, binary: str) -> None:
    """Without the binary, start() raises EmbeddedRedisUnavailable naming the package to install."""
    embedded = EmbeddedRedis(state_dir, binary=binary)
    with pytest.raises(EmbeddedRedisUnavailable) as failure:
        embedded.start()
    assert "apt-get install redis-server" in str(failure.value)
    assert "REDIS_URL" in str(failure.value)
    assert embedded.process is None
    assert not (state_dir / SOCKET_NAME).exists()


def test_server_that_dies_at_start_is_reported(state_dir: Path) -> None:
    """A binary that exits at once gives EmbeddedRedisUnavailable pointing at the log file."""
    fake = state_dir / "fake-redis-server"
    fake.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    fake.chmod(0o700)
    embedded = EmbeddedRedis(state_dir / "state", binary=str(fake))
    with pytest.raises(EmbeddedRedisUnavailable) as failure:
        embedded.start()
    assert "did not start" in str(failure.value)
    assert str(state_dir / "state" / "redis.log") in str(failure.value)
    assert embedded.process is None


def test_stop_without_start_does_nothing(state_dir: Path) -> None:
    """stop() on an instance that started nothing leaves a running server alone."""
    owner = EmbeddedRedis(state_dir)
    url = owner.start()
    try:
        EmbeddedRedis(state_dir).stop()
        with closing(connect(url)) as client:
            assert client.ping() is True
    finally:
        owner.stop()
