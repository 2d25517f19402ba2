"""Telegram acknowledgement latency: from an update to the bot's first reply (issue 3, point 3).

Run by hand, not by the tests::

    .venv/bin/python bench/telegram_ack.py [--updates 100] [--users 20] [--rounds 1] [--samples F]

It starts everything it needs and removes it again, also on Ctrl-C or SIGTERM:

- a throwaway ``redis-server`` on a free loopback port (never the system one);
- the fake Telegram Bot API (``tests/fake_telegram.py``) on a free port in this process; the bot's
  ``TELEGRAM_API_BASE_URL`` always points at it, so nothing ever reaches Telegram;
- the bot itself as a separate ``portpatrol telegram`` process (``python -m bot telegram``, long
  polling), exactly as deployed, with ``REDIS_URL`` set so that it starts no worker of its own.

**No worker runs and nothing is ever scanned**: the benchmark measures the first reply only, so
the scan jobs stay queued in the throwaway Redis and vanish with it. The script checks at the
end that no worker registered and no job started. The targets are addresses in one lab /24 of
loopback space (``127.77.<round>.0/24``, a ``--lab`` allow entry for exactly that /24) so that
every request is a new job: no dedupe, no cached answer. The 20 users are granted the agent
role; the agent and target rates and the queue size are set generously so no request is refused.

Each round pushes all updates at once (``/scan 127.77.R.N`` from user 5001…5020 in turn) and
takes, per update, the time from its push to the arrival at the fake of the bot's first
``sendMessage`` in that user's chat naming that address (both clocks are this process's
``time.monotonic``). A warm-up of a few scans from another agent, one at a time, is not
counted; its latencies are printed as the idle floor. The bot's CPU time per round (from
``/proc``) is printed too: it shows whether the bot was waiting or working.
Imports: stdlib, redis, rq, ``bot`` and ``workers``, the fake from ``tests/`` and the process
helpers of ``bench/overhead.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake Bot API lives with the tests

import redis  # noqa: E402
from fake_telegram import Call, FakeTelegram  # noqa: E402 - needs the path above
from overhead import (  # noqa: E402 - the sibling benchmark's process helpers
    BenchError,
    _exited,
    free_port,
    machine_lines,
    redis_server,
    stop_session,
    tail,
)
from rq import Worker  # noqa: E402
from rq.registry import StartedJobRegistry  # noqa: E402

from bot.settings import Settings  # noqa: E402
from bot.wiring import runtime  # noqa: E402
from workers.models import Requester, Role  # noqa: E402
from workers.queue import scan_queue  # noqa: E402

TARGET_P99_MS = 250.0
GENEROUS_RATE = "1000000/hour"
FIRST_USER = 5001
WARMUP_USER = 4999
WARMUP_SCANS = 6
START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 120.0
ADDRESS = re.compile(r"127\.77\.(\d+)\.(\d+)(?!\d)")


@dataclass(frozen=True)
class Sample:
    """One update: who sent it, what it asked for, and when it went out and was answered."""

    user_id: int
    address: str
    pushed_at: float
    replied_at: float | None = None
    reply: str = ""

    @property
    def latency_ms(self) -> float:
        """Milliseconds from push to the first reply (the caller checks that there was one)."""
        assert self.replied_at is not None
        return (self.replied_at - self.pushed_at) * 1000


def versions() -> str:
    """Versions of the libraries on the measured path."""
    names = ["python-telegram-bot", "httpx", "aiohttp", "rq", "redis"]
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


def percentile(values: Sequence[float], share: float) -> float:
    """Return the ``share`` quantile (0 to 1) of ``values`` with linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextlib.contextmanager
def bot_process(env: dict[str, str], directory: Path, fake: FakeTelegram) -> Iterator[int]:
    """Run ``portpatrol telegram`` against the fake until the block ends; yield its pid."""
    log = directory / "bot.log"
    before = len(fake.calls("setMyCommands"))
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "telegram"],
            env=env,
            cwd=directory,  # no stray .env from the caller's directory
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        # Running = commands registered and the first long poll under way after them.
        while not _polling(fake, before):
            if _exited(process.pid) or time.monotonic() > deadline:
                raise BenchError(f"the bot did not start:\n{tail(log)}")
            time.sleep(0.05)
        yield process.pid
    finally:
        stop_session(process)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _polling(fake: FakeTelegram, before: int) -> bool:
    calls = fake.calls()
    registered = [index for index, call in enumerate(calls) if call.method == "setMyCommands"]
    if len(registered) <= before:
        return False
    return any(call.method == "getUpdates" for call in calls[registered[-1] :])


def first_replies(calls: list[Call], after: int) -> dict[tuple[int, str], tuple[float, str]]:
    """Map (chat, address) to the arrival time and text of the first sendMessage naming it."""
    found: dict[tuple[int, str], tuple[float, str]] = {}
    for call in calls[after:]:
        if call.method != "sendMessage" or call.status != 200:
            continue
        text = str(call.params.get("text", ""))
        match = ADDRESS.search(text)
        if match is None:
            continue
        key = (int(call.params["chat_id"]), match.group(0))
        found.setdefault(key, (call.at, text))
    return found


def run_round(
    fake: FakeTelegram, round_number: int, updates: int, users: int
) -> tuple[list[Sample], float]:
    """Push ``updates`` /scan messages at once and wait for every first reply."""
    after = len(fake.calls())
    planned = [
        (FIRST_USER + index % users, f"127.77.{round_number}.{index + 1}")
        for index in range(updates)
    ]
    built = [
        (user, address, fake.message_update(user_id=user, text=f"/scan {address}"))
        for user, address in planned
    ]
    pushed: list[Sample] = []
    started = time.monotonic()
    for user, address, update in built:
        pushed.append(Sample(user, address, time.monotonic()))
        fake.push_update(update)
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while True:
        replies = first_replies(fake.calls(), after)
        if all((sample.user_id, sample.address) in replies for sample in pushed):
            break
        if time.monotonic() > deadline:
            missing = [s for s in pushed if (s.user_id, s.address) not in replies]
            raise BenchError(f"{len(missing)} update(s) got no reply in {REPLY_TIMEOUT_S:.0f} s")
        time.sleep(0.02)
    samples = [
        Sample(
            sample.user_id,
            sample.address,
            sample.pushed_at,
            *replies[(sample.user_id, sample.address)],
        )
        for sample in pushed
    ]
    last = max(sample.replied_at or 0.0 for sample in samples)
    return samples, (last - started) * 1000


def _answered(calls: list[Call], *, address: str, after: int) -> bool:
    return (WARMUP_USER, address) in first_replies(calls, after)


def warm_up(fake: FakeTelegram) -> list[float]:
    """Uncounted scans, one at a time, so connections get warm; return their latencies (ms).

    One update on an idle bot is the floor under every figure of the burst.
    """
    latencies: list[float] = []
    for index in range(WARMUP_SCANS):
        address = f"127.77.0.{250 - index}"
        after = len(fake.calls())
        update = fake.message_update(user_id=WARMUP_USER, text=f"/scan {address}")
        pushed = time.monotonic()
        fake.push_update(update)
        calls = fake.wait_for(partial(_answered, address=address, after=after), REPLY_TIMEOUT_S)
        latencies.append((first_replies(calls, after)[(WARMUP_USER, address)][0] - pushed) * 1000)
        time.sleep(0.2)
    return latencies


def report(samples: list[Sample], spans: list[float]) -> list[str]:
    """Format the figures: percentiles of push → first reply, and the verdict."""
    latencies = [sample.latency_ms for sample in samples]
    refused = [sample for sample in samples if "Queued" not in sample.reply]
    p99 = percentile(latencies, 0.99)
    lines = [
        f"{'':28}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'min':>9}{'mean':>9}   (ms)",
        f"{'update → first reply':28}"
        + "".join(
            f"{value:9.1f}"
            for value in (
                percentile(latencies, 0.5),
                percentile(latencies, 0.9),
                p99,
                max(latencies),
                min(latencies),
                statistics.fmean(latencies),
            )
        ),
        "",
        f"samples:          {len(samples)} ({len(spans)} round(s) of {len(samples) // len(spans)})",
        "burst span:       "
        + ", ".join(f"{span:.0f}" for span in spans)
        + " ms (first push → last first reply, per round)",
        f"target:           p99 < {TARGET_P99_MS:.0f} ms: "
        + ("met" if p99 < TARGET_P99_MS else "NOT met"),
    ]
    if refused:
        lines.append(
            f"WARNING: {len(refused)} first replies were not 'Queued': {refused[0].reply!r}"
        )
    return lines


def nothing_scanned(url: str) -> str:
    """Check that no worker ran and no job ever started; say how many jobs were left queued."""
    connection = redis.Redis.from_url(url)
    try:
        queue = scan_queue(connection)
        if Worker.count(queue=queue) or StartedJobRegistry(queue=queue).count:
            raise BenchError("a worker or a started job was found: something may have scanned")
        return f"{queue.count} jobs left queued, no worker, no job started (nothing scanned)"
    finally:
        connection.close()


def measure(updates: int, users: int, rounds: int, dump: Path | None = None) -> int:
    """Set everything up, run the rounds, print the figures; clean up."""
    binary = shutil.which("redis-server")
    if not binary:
        raise BenchError("redis-server is not installed (apt-get install redis-server)")
    print("portpatrol Telegram acknowledgement latency: update → first reply (issue 3)")
    machine = [line for line in machine_lines(binary) if not line.startswith("nmap:")]
    print("\n".join(machine))
    print(f"libraries: {versions()}")

    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pp-ack-")))
        url = stack.enter_context(redis_server(binary, directory))
        fake = stack.enter_context(FakeTelegram())
        web_port = free_port()
        values = {
            "REDIS_URL": url,
            "PORTPATROL_STATE_DIR": str(directory / "state"),
            "PORTPATROL_AGENT_RATE": GENEROUS_RATE,
            "PORTPATROL_USER_RATE": GENEROUS_RATE,
            "PORTPATROL_TARGET_RATE": GENEROUS_RATE,
            "PORTPATROL_QUEUE_MAX": str(1_000_000),
            "PORTPATROL_WEB_HOST": "127.0.0.1",
            "PORTPATROL_WEB_PORT": str(web_port),
            "PORTPATROL_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        }
        settings = Settings.model_validate(values)
        with runtime(settings, operator=Requester(platform="cli", user="bench")) as rt:
            for user in [WARMUP_USER, *range(FIRST_USER, FIRST_USER + users)]:
                rt.admin.grant(rt.operator, f"telegram:{user}", Role.AGENT)
            for round_number in range(rounds + 1):  # round 0 holds the warm-up addresses
                rt.admin.allow(
                    rt.operator,
                    f"127.77.{round_number}.0/24",
                    lab=True,
                    note="bench/telegram_ack.py: never scanned, no worker runs",
                )
        env = {
            **{
                key: value for key, value in os.environ.items() if not key.startswith("PORTPATROL_")
            },
            **values,
            # Always the fake: the benchmark must never reach the real Telegram.
            "TELEGRAM_API_BASE_URL": fake.base_url,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "PTB_TIMEDELTA": "true",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("TELEGRAM_WEBHOOK_SECRET", None)
        print(
            f"setup:     portpatrol telegram (subprocess, long polling) → fake Bot API "
            f"{fake.base_url}; redis {url}; no worker"
        )
        print(
            f"load:      {rounds} round(s) of {updates} /scan updates from {users} agents, pushed "
            f"at once; targets in 127.77.R.0/24 (lab); {WARMUP_SCANS} warm-up scans not counted"
        )
        bot_pid = stack.enter_context(bot_process(env, directory, fake))
        single = warm_up(fake)
        print(
            "idle bot:  one update at a time → first reply: "
            + ", ".join(f"{value:.1f}" for value in single)
            + " ms (warm-up, not counted)",
            flush=True,
        )
        samples: list[Sample] = []
        spans: list[float] = []
        cpu_ms: list[float] = []
        for round_number in range(1, rounds + 1):
            cpu_before = cpu_seconds(bot_pid)
            got, span = run_round(fake, round_number, updates, users)
            cpu_ms.append((cpu_seconds(bot_pid) - cpu_before) * 1000)
            samples += got
            spans.append(span)
            latencies = [sample.latency_ms for sample in got]
            print(
                f"round {round_number}: p50 {percentile(latencies, 0.5):6.1f} ms   "
                f"p99 {percentile(latencies, 0.99):6.1f} ms   span {span:6.1f} ms   "
                f"bot CPU {cpu_ms[-1]:6.0f} ms",
                flush=True,
            )
            time.sleep(1)
        print()
        print("\n".join(report(samples, spans)))
        print(
            f"bot CPU:          {statistics.median(cpu_ms) / updates:.1f} ms per update "
            f"(median round: {statistics.median(cpu_ms):.0f} ms of CPU in a "
            f"{statistics.median(spans):.0f} ms span; 10 ms clock ticks)"
        )
        if dump is not None:
            dump.write_text(json.dumps([dataclasses.asdict(sample) for sample in samples]))
        print(f"check:            {nothing_scanned(url)}")
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup, like Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the benchmark; 130 on Ctrl-C, 1 when it could not measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--updates", type=int, default=100, help="updates per round (100)")
    parser.add_argument("--users", type=int, default=20, help="distinct agents sending them (20)")
    parser.add_argument("--rounds", type=int, default=1, help="bursts, 1 s apart (1)")
    parser.add_argument(
        "--samples",
        type=Path,
        help="also write every sample (user, address, push and reply time.monotonic) as JSON",
    )
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.updates <= 240 or arguments.users < 1 or not 1 <= arguments.rounds <= 200:
        parser.error("--updates must be 1 to 240, --users at least 1, --rounds 1 to 200")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        return measure(arguments.updates, arguments.users, arguments.rounds, arguments.samples)
    except KeyboardInterrupt:
        print("\ninterrupted: bot, fake Bot API and redis-server stopped", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
