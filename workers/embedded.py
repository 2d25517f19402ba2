"""A private ``redis-server`` under the local state directory, for zero-config use.

With ``REDIS_URL`` unset, the demo, the console and the admin commands keep their state (allow
entries, roles, reports) in a Redis of their own: a unix socket and an append-only file in the
state directory, started on first use and reused by every later command while it runs. Nothing
listens on the network. The process that started it shuts it down on exit unless other clients
are still connected (a console in another terminal), in which case it is left for them.
Imports: stdlib, redis.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SOCKET_NAME = "redis.sock"
START_TIMEOUT_S = 10.0


class EmbeddedRedisUnavailable(Exception):
    """No private Redis could be started; the message says what to install or set."""


class EmbeddedRedis:
    """Starts (or reuses) the private redis-server in ``state_dir``."""

    def __init__(self, state_dir: Path, *, binary: str = "redis-server") -> None:
        self.state_dir = state_dir
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        """Where the server listens."""
        return self.state_dir / SOCKET_NAME

    @property
    def url(self) -> str:
        """The ``redis-py`` URL of the private server."""
        return f"unix://{self.socket_path}"

    def _alive(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            # No retries: a socket left by a crashed server refuses at once, and redis-py's
            # default retry policy would spend about four seconds on it before we start anew.
            client = redis.Redis(
                unix_socket_path=str(self.socket_path),
                socket_timeout=1,
                retry=Retry(NoBackoff(), 0),
            )
            return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self) -> str:
        """Make sure the server runs; return its URL."""
        if self._alive():
            return self.url
        # The usual install paths help only when the default name is not on PATH; a binary the
        # caller named explicitly is used or reported missing, never swapped for another one.
        fallbacks = (
            ("/usr/bin/redis-server", "/usr/sbin/redis-server")
            if self.binary == "redis-server"
            else ()
        )
        binary = shutil.which(self.binary) or next(
            (path for path in fallbacks if Path(path).exists()),
            None,
        )
        if binary is None:
            raise EmbeddedRedisUnavailable(
                "redis-server is not installed: install it (apt-get install redis-server) "
                "or set REDIS_URL to a Redis server"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.state_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.state_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._alive():
                return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop(force=True)
        raise EmbeddedRedisUnavailable(
            f"the private redis-server did not start; see {self.state_dir / 'redis.log'}"
        )

    def stop(self, *, force: bool = False) -> None:
        """Shut the server down if this process started it and nobody else is using it."""
        process, self.process = self.process, None
        if process is None:
            return
        if not force:
            try:
                # No retries: after SHUTDOWN the socket is gone, and redis-py's default retry
                # policy would spend seconds reconnecting to it.
                client = redis.Redis(
                    unix_socket_path=str(self.socket_path),
                    socket_timeout=2,
                    retry=Retry(NoBackoff(), 0),
                )
                # One connection is our own; any other is someone still working with it.
                if len(client.client_list()) > 1:
                    return
                client.shutdown()
            except redis.ConnectionError:
                pass
            except redis.RedisError:
                process.terminate()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
