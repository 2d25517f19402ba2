"""Slack acknowledgement latency: signed /scan commands to the HTTP ack and the first chat message.

Issue 4, acceptance point 2. Run by hand, not by the tests::

    .venv/bin/python bench/slack_ack.py [--commands 100] [--users 20] [--rounds 1] [--samples F]

It starts everything it needs and removes it again, also on Ctrl-C or SIGTERM:

- a throwaway ``redis-server`` on a free loopback port (never the system one);
- the fake Slack Web API (``tests/fake_slack.py``) on a free port in this process; the app's
  ``SLACK_API_BASE_URL`` always points at it and ``SLACK_APP_TOKEN`` is removed from its
  environment (no Socket Mode), so nothing ever reaches Slack;
- the app itself as a separate ``portpatrol slack`` process (``python -m bot slack``, HTTP mode
  on a free port of 127.0.0.1), exactly as deployed, with ``REDIS_URL`` set so that it starts no
  worker of its own.

**No worker runs and nothing is ever scanned**: both figures end before a worker would be
needed (the ack, and the channel message that says the job is queued), so the jobs stay queued
in the throwaway Redis and vanish with it. The script checks at the end that no worker
registered and no job started. The targets are addresses in one lab /24 of loopback space per
round (``127.77.<round>.0/24``, a lab allow entry for exactly that /24) so every command is a
new job: no dedupe, no cached answer. The users are granted the agent role; the agent, user and
target rates and the queue size are generous so that nothing is refused.

Each round sends all commands at once from one asyncio loop (aiohttp, one connection per
request in flight), each signed exactly as Slack signs it, from user ``UBENCH01``… in turn, each
user in a channel of their own. Per command it takes (a) the HTTP ack time, from just before
the request is sent to the end of the response body, and (b) the time from the same start to
the arrival at the fake of the first ``chat.postMessage`` in that user's channel naming that
address: the job's own message (both on this process's ``time.monotonic``). An ack that is not
"Queued …" (no queue position) is still timed, and counted in a warning. A few uncounted
warm-up commands, one at a time, come first; their figures are printed as the idle floor. The
app's CPU time per round (from ``/proc``) is printed too: it shows whether the app was waiting
or working; so is this process's (load client and fake), which runs on the other core.
Imports: stdlib, aiohttp, redis, rq, ``bot`` and ``workers``, the fake from ``tests/`` and the
process helpers of ``bench/overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake Web API lives with the tests

import aiohttp  # noqa: E402
import redis  # noqa: E402
from fake_slack import Call, FakeSlack, sign, slash_command_body  # noqa: E402 - path above
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
TEAM = "T0TEST"
WARMUP_USER = "UBENCHWARM"
WARMUP_COMMANDS = 6
START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
JOB_ID = re.compile(r"as job ([A-Za-z0-9_-]+)")
ADDRESS = re.compile(r"127\.77\.\d+\.\d+(?!\d)")


@dataclass(frozen=True)
class Sample:
    """One command: who sent it, what for, when it went out, was acked and reached the channel."""

    user: str
    channel: str
    address: str
    sent_at: float
    acked_at: float
    status: int
    ack_text: str
    job_id: str | None
    posted_at: float | None = None

    @property
    def ack_ms(self) -> float:
        """Milliseconds from sending the request to the end of the response."""
        return (self.acked_at - self.sent_at) * 1000

    @property
    def post_ms(self) -> float:
        """Milliseconds from sending the request to the first chat message (checked present)."""
        assert self.posted_at is not None
        return (self.posted_at - self.sent_at) * 1000


def user_id(index: int) -> str:
    """Slack user id of the ``index``-th (0-based) bench agent."""
    return f"UBENCH{index + 1:02d}"


def channel_of(user: str) -> str:
    """Each user asks in a channel of their own, so channel messages map back to one user."""
    return "C" + user.removeprefix("U")


def versions() -> str:
    """Versions of the libraries on the measured path."""
    names = ["slack_bolt", "slack_sdk", "aiohttp", "rq", "redis"]
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


def code_version() -> str:
    """The commit measured, and whether the work tree differs from it."""
    git = shutil.which("git")
    if git is None:
        return "unknown (git is not installed)"
    try:
        head = subprocess.run(
            [git, "-C", str(ROOT), "log", "-1", "--format=%h %cI"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def call_counts(calls: Sequence[Call]) -> str:
    """Say which Web API methods the app called, how often, and how many failed."""
    counts: dict[str, list[int]] = {}
    for call in calls:
        tally = counts.setdefault(call.method, [0, 0])
        tally[0] += 1
        tally[1] += 0 if call.ok else 1
    return ", ".join(
        f"{method} {total}" + (f" ({failed} failed)" if failed else "")
        for method, (total, failed) in sorted(counts.items())
    )


def percentile(values: Sequence[float], share: float) -> float:
    """Return the ``share`` quantile (0 to 1) of ``values`` with linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthy(port: int) -> bool:
    """Whether the app's web server answers /healthz."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@contextlib.contextmanager
def app_process(env: dict[str, str], directory: Path, port: int) -> Iterator[int]:
    """Run ``portpatrol slack`` (HTTP mode) against the fake until the block ends; yield its pid."""
    log = directory / "app.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "slack", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=directory,  # no stray .env from the caller's directory
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(port):
            if _exited(process.pid) or time.monotonic() > deadline:
                raise BenchError(f"the Slack app did not start:\n{tail(log)}")
            time.sleep(0.05)
        yield process.pid
    finally:
        stop_session(process)


@dataclass(frozen=True)
class Planned:
    """A command ready to send: its user, channel, target address and signed form body."""

    user: str
    channel: str
    address: str
    body: bytes


def plan(fake: FakeSlack, users: Sequence[str], addresses: Sequence[str]) -> list[Planned]:
    """Build one form body per address (users in turn), each with its own response URL."""
    planned = []
    for index, address in enumerate(addresses):
        user = users[index % len(users)]
        channel = channel_of(user)
        body = slash_command_body(
            text=address,
            user_id=user,
            team_id=TEAM,
            channel_id=channel,
            response_url=fake.response_url(channel, user),
            trigger_id=f"{time.time_ns()}.{secrets.token_hex(8)}",  # unique: no replay dedupe
        )
        planned.append(Planned(user, channel, address, body))
    return planned


async def send(
    session: aiohttp.ClientSession, url: str, secret: str, command: Planned, start: asyncio.Event
) -> Sample:
    """Wait for the start signal, send one signed command and time its acknowledgement."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(secret, command.body)}
    await start.wait()
    sent = time.monotonic()
    async with session.post(url, data=command.body, headers=headers) as response:
        text = await response.text()
        acked = time.monotonic()
        status = response.status
    ack_text = ""
    with contextlib.suppress(ValueError, AttributeError):
        ack_text = str(json.loads(text).get("text", ""))
    match = JOB_ID.search(ack_text)
    return Sample(
        command.user,
        command.channel,
        command.address,
        sent,
        acked,
        status,
        ack_text or text[:200],
        match.group(1) if match else None,
    )


async def send_all(url: str, secret: str, commands: Sequence[Planned]) -> list[Sample]:
    """Send every command at once (each on its own connection) and collect the acks."""
    connector = aiohttp.TCPConnector(limit=0)  # no client-side cap on connections in flight
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = asyncio.Event()
        tasks = [asyncio.create_task(send(session, url, secret, item, start)) for item in commands]
        await asyncio.sleep(0)  # every task is now waiting for the signal
        start.set()
        return list(await asyncio.gather(*tasks))


def first_posts(calls: list[Call], after: int) -> dict[tuple[str, str], float]:
    """Map (channel, address) to the arrival time of the first chat.postMessage naming it."""
    found: dict[tuple[str, str], float] = {}
    for call in calls[after:]:
        if call.method != "chat.postMessage" or not call.ok:
            continue
        text = str(call.params.get("text", "")) + json.dumps(call.params.get("blocks", []))
        channel = str(call.params.get("channel", ""))
        for address in set(ADDRESS.findall(text)):
            found.setdefault((channel, address), call.at)
    return found


def run_round(
    fake: FakeSlack, url: str, secret: str, commands: Sequence[Planned]
) -> tuple[list[Sample], float]:
    """Send ``commands`` at once; wait for each one's first chat message; return the span too."""
    after = len(fake.calls())
    acked = asyncio.run(send_all(url, secret, commands))
    bad = [sample for sample in acked if sample.status != 200]
    if bad:
        raise BenchError(
            f"{len(bad)} command(s) were not acknowledged; first: HTTP {bad[0].status} "
            f"{bad[0].ack_text[:200]!r}"
        )
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while True:
        posts = first_posts(fake.calls(), after)
        if all((sample.channel, sample.address) in posts for sample in acked):
            break
        if time.monotonic() > deadline:
            missing = [s for s in acked if (s.channel, s.address) not in posts]
            raise BenchError(f"{len(missing)} command(s) got no channel message in time")
        time.sleep(0.02)
    samples = [
        dataclasses.replace(sample, posted_at=posts[(sample.channel, sample.address)])
        for sample in acked
    ]
    first_sent = min(sample.sent_at for sample in samples)
    last = max(sample.posted_at or 0.0 for sample in samples)
    return samples, (last - first_sent) * 1000


def warm_up(fake: FakeSlack, url: str, secret: str) -> list[tuple[float, float]]:
    """Uncounted commands, one at a time, so connections get warm; return (ack, post) in ms.

    One command on an idle app is the floor under every figure of the burst.
    """
    floor: list[tuple[float, float]] = []
    for index in range(WARMUP_COMMANDS):
        commands = plan(fake, [WARMUP_USER], [f"127.77.0.{250 - index}"])
        [sample], _ = run_round(fake, url, secret, commands)
        floor.append((sample.ack_ms, sample.post_ms))
        time.sleep(0.2)
    return floor


def stats_row(name: str, values: Sequence[float]) -> str:
    """One line of the figures table: p50, p90, p99, max, min and mean in ms."""
    figures = (
        percentile(values, 0.5),
        percentile(values, 0.9),
        percentile(values, 0.99),
        max(values),
        min(values),
        statistics.fmean(values),
    )
    return f"{name:36}" + "".join(f"{value:9.1f}" for value in figures)


def report(samples: list[Sample], spans: list[float]) -> list[str]:
    """Format the figures: percentiles of both latencies, and the verdict on the ack's p99."""
    acks = [sample.ack_ms for sample in samples]
    posts = [sample.post_ms for sample in samples]
    p99 = percentile(acks, 0.99)
    not_queued = [sample for sample in samples if "Queued" not in sample.ack_text]
    lines = [
        f"{'':36}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'min':>9}{'mean':>9}   (ms)",
        stats_row("(a) HTTP ack (sent → response)", acks),
        stats_row("(b) first chat message (sent → post)", posts),
        "",
        f"samples:          {len(samples)} ({len(spans)} round(s) of {len(samples) // len(spans)})",
        "burst span:       "
        + ", ".join(f"{span:.0f}" for span in spans)
        + " ms (first request sent → last first chat message, per round)",
        f"target:           ack p99 < {TARGET_P99_MS:.0f} ms: "
        + ("met" if p99 < TARGET_P99_MS else "NOT met"),
    ]
    if not_queued:
        lines.append(
            f"WARNING: {len(not_queued)} acks were not 'Queued': {not_queued[0].ack_text!r}"
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


def prepare(
    url: str, directory: Path, port: int, agents: Sequence[str], rounds: int
) -> dict[str, str]:
    """Grant the agents, allow one lab /24 per round; return the app's settings as env values."""
    values = {
        "REDIS_URL": url,
        "PORTPATROL_STATE_DIR": str(directory / "state"),
        "PORTPATROL_AGENT_RATE": GENEROUS_RATE,
        "PORTPATROL_USER_RATE": GENEROUS_RATE,
        "PORTPATROL_TARGET_RATE": GENEROUS_RATE,
        "PORTPATROL_QUEUE_MAX": str(1_000_000),
        "PORTPATROL_WEB_HOST": "127.0.0.1",
        "PORTPATROL_WEB_PORT": str(port),
    }
    settings = Settings.model_validate(values)
    with runtime(settings, operator=Requester(platform="cli", user="bench")) as rt:
        for user in [WARMUP_USER, *agents]:
            rt.admin.grant(rt.operator, f"slack:{user}", Role.AGENT)
        for round_number in range(rounds + 1):  # round 0 holds the warm-up addresses
            rt.admin.allow(
                rt.operator,
                f"127.77.{round_number}.0/24",
                lab=True,
                note="bench/slack_ack.py: never scanned, no worker runs",
            )
    return values


def app_environment(values: dict[str, str], fake: FakeSlack, secret: str) -> dict[str, str]:
    """The app's environment: ours without any PORTPATROL_ or SLACK_ setting, then the bench's."""
    return {
        **{
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PORTPATROL_", "SLACK_"))  # no Socket Mode, no real token
        },
        **values,
        # Always the fake: the benchmark must never reach the real Slack.
        "SLACK_API_BASE_URL": fake.base_url,
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": secret,
        "PYTHONUNBUFFERED": "1",
    }


def run_rounds(
    fake: FakeSlack,
    url: str,
    secret: str,
    agents: Sequence[str],
    *,
    commands: int,
    rounds: int,
    app_pid: int,
) -> tuple[list[Sample], list[float], list[float]]:
    """Run the counted rounds, 1 s apart; return the samples, spans and app CPU per round (ms)."""
    samples: list[Sample] = []
    spans: list[float] = []
    cpu_ms: list[float] = []
    for round_number in range(1, rounds + 1):
        addresses = [f"127.77.{round_number}.{index + 1}" for index in range(commands)]
        planned = plan(fake, agents, addresses)
        cpu_before, own_before = cpu_seconds(app_pid), time.process_time()
        got, span = run_round(fake, url, secret, planned)
        cpu_ms.append((cpu_seconds(app_pid) - cpu_before) * 1000)
        own_ms = (time.process_time() - own_before) * 1000
        samples += got
        spans.append(span)
        acks = [sample.ack_ms for sample in got]
        posts = [sample.post_ms for sample in got]
        print(
            f"round {round_number}: ack p50 {percentile(acks, 0.5):6.1f} p99 "
            f"{percentile(acks, 0.99):6.1f} ms   post p50 {percentile(posts, 0.5):6.1f} p99 "
            f"{percentile(posts, 0.99):6.1f} ms   span {span:6.0f} ms   CPU: app "
            f"{cpu_ms[-1]:4.0f} ms, bench {own_ms:4.0f} ms",
            flush=True,
        )
        time.sleep(1)
    return samples, spans, cpu_ms


def measure(commands: int, users: int, rounds: int, dump: Path | None = None) -> int:
    """Set everything up, run the rounds, print the figures; clean up."""
    binary = shutil.which("redis-server")
    if not binary:
        raise BenchError("redis-server is not installed (apt-get install redis-server)")
    print("portpatrol Slack acknowledgement latency: signed /scan → HTTP ack, first chat message")
    print("(issue 4, acceptance point 2)")
    machine = [line for line in machine_lines(binary) if not line.startswith("nmap:")]
    print("\n".join(machine))
    print(f"libraries: {versions()}")
    print(f"code:      {code_version()}")
    agents = [user_id(index) for index in range(users)]
    secret = secrets.token_hex(16)  # this run's signing secret, shared by app and bench only

    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pp-slack-")))
        url = stack.enter_context(redis_server(binary, directory))
        fake = stack.enter_context(FakeSlack(team_id=TEAM))
        port = free_port()
        env = app_environment(prepare(url, directory, port, agents, rounds), fake, secret)
        events_url = f"http://127.0.0.1:{port}/slack/events"
        print(
            f"setup:     portpatrol slack (subprocess, HTTP mode) on {events_url} → fake Web API "
            f"{fake.base_url}; redis {url}; no worker"
        )
        print(
            f"load:      {rounds} round(s) of {commands} signed /scan commands from {users} "
            f"agents, sent at once (aiohttp, one connection each); targets in 127.77.R.0/24 "
            f"(lab); {WARMUP_COMMANDS} warm-up commands not counted"
        )
        app_pid = stack.enter_context(app_process(env, directory, port))
        floor = warm_up(fake, events_url, secret)
        print(
            "idle app:  one command at a time → ack / first chat message: "
            + ", ".join(f"{ack:.1f}/{post:.1f}" for ack, post in floor)
            + " ms (warm-up, not counted)",
            flush=True,
        )
        calls_before = len(fake.calls())
        samples, spans, cpu_ms = run_rounds(
            fake, events_url, secret, agents, commands=commands, rounds=rounds, app_pid=app_pid
        )
        print()
        print("\n".join(report(samples, spans)))
        print(
            f"app CPU:          {statistics.median(cpu_ms) / commands:.1f} ms per command "
            f"(median round: {statistics.median(cpu_ms):.0f} ms of CPU in a "
            f"{statistics.median(spans):.0f} ms span; 10 ms clock ticks)"
        )
        print(f"Web API:          {call_counts(fake.calls()[calls_before:])} (during the rounds)")
        if dump is not None:
            dump.write_text(json.dumps([dataclasses.asdict(sample) for sample in samples]))
        print(f"check:            {nothing_scanned(url)}")
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup, like Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the benchmark; 130 on Ctrl-C, 1 when it could not measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=100, help="commands per round (100)")
    parser.add_argument("--users", type=int, default=20, help="distinct agents sending them (20)")
    parser.add_argument("--rounds", type=int, default=1, help="bursts, 1 s apart (1)")
    parser.add_argument(
        "--samples",
        type=Path,
        help="also write every sample (user, address, sent/acked/posted time.monotonic) as JSON",
    )
    arguments = parser.parse_args(argv)
    if (
        not 1 <= arguments.commands <= 240
        or not 1 <= arguments.users <= 99
        or not 1 <= arguments.rounds <= 200
    ):
        parser.error("--commands must be 1 to 240, --users 1 to 99, --rounds 1 to 200")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        return measure(arguments.commands, arguments.users, arguments.rounds, arguments.samples)
    except KeyboardInterrupt:
        print("\ninterrupted: Slack app, fake Web API and redis-server stopped", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
