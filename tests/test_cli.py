"""The ``portpatrol`` command in its own processes: help, acceptance point 3, admin, failures.

Embedded-mode tests give each command a private state directory under /tmp (unix socket paths
are short) and check afterwards that no redis-server or worker from it is left running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from harness import RecordingNmap, free_port
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bot.lab import LabHost, LabService
from bot.wiring import Runtime, local_operator
from workers.models import ScanReport
from workers.queue import scan_queue

PORTPATROL = Path(sys.executable).with_name("portpatrol")
STATE_NOTE = "portpatrol keeps its local state in"
TELNET_PORT = 23 if os.geteuid() == 0 else 2323

Run = Callable[..., subprocess.CompletedProcess[str]]


def base_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: ours without portpatrol, Redis or chat settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PORTPATROL_", "REDIS_", "TELEGRAM_", "SLACK_"))
    }
    env["PORTPATROL_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def processes_using(directory: Path) -> list[int]:
    """Return live processes whose command line or environment names the directory."""
    needle = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (
                needle in (entry / "cmdline").read_bytes()
                or needle in (entry / "environ").read_bytes()
            )
        except OSError:
            continue
        if seen and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short private state directory; fails the test if a process from it outlives it."""
    directory = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    yield directory
    leftovers = processes_using(directory)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)
    assert leftovers == [], f"processes left running from {directory}: {leftovers}"


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run ``portpatrol ARGS`` in a new process (from an empty directory: no stray .env)."""

    def run_cli(
        *args: str, env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PORTPATROL), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run_cli


def reason_lines(stderr: str) -> list[str]:
    """Return stderr's lines without the one-time note saying where the state lives."""
    return [line for line in stderr.splitlines() if not line.startswith(STATE_NOTE)]


HELP_CASES = [
    ((), ["demo", "console", "scan", "worker", "allow", "role", "telegram", "slack"]),
    (("telegram",), ["--webhook", "--host", "--port"]),
    (("slack",), ["--host", "--port"]),
    (("demo",), ["--address"]),
    (("console",), ["--as"]),
    (("scan",), ["TARGET", "--profile", "--json", "--pickup-timeout"]),
    (("worker",), ["--burst", "--quiet"]),
    (("allow",), ["add", "remove", "list"]),
    (("allow", "add"), ["NETWORK", "--note", "--lab"]),
    (("allow", "remove"), ["NETWORK"]),
    (("allow", "list"), ["List the allowlist"]),
    (("role",), ["grant", "revoke", "list"]),
    (("role", "grant"), ["PRINCIPAL", "ROLE"]),
    (("role", "revoke"), ["PRINCIPAL"]),
    (("role", "list"), ["List everyone with a role"]),
]


@pytest.mark.parametrize(
    ("command", "names"), HELP_CASES, ids=[" ".join(case[0]) or "app" for case in HELP_CASES]
)
def test_help_exits_zero_and_names_the_options(
    run: Run, tmp_path: Path, command: tuple[str, ...], names: list[str]
) -> None:
    """`--help` of the app and of every command exits 0 and names its options and arguments."""
    result = run(*command, "--help", env=base_env(tmp_path / "unused-state"))
    assert result.returncode == 0, result.stderr
    assert "Usage: portpatrol" in result.stdout
    for name in names:
        assert name in result.stdout.upper() if name.isupper() else name in result.stdout
    assert not (tmp_path / "unused-state").exists()


def test_acceptance_refused_then_allowed_lab_scan_in_new_processes(
    run: Run, state_dir: Path, recording_nmap: RecordingNmap, lab_address: str
) -> None:
    """Acceptance 3: 127.0.0.1 refused, no nmap; after `allow add --lab` telnet rates critical."""
    env = base_env(state_dir)
    with_stand_in = {**env, "PATH": f"{recording_nmap.directory}{os.pathsep}{env['PATH']}"}
    refused = run("scan", "127.0.0.1", env=with_stand_in)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert f"{STATE_NOTE} {state_dir}" in refused.stderr  # said on first use
    [reason] = reason_lines(refused.stderr)
    assert reason.startswith("portpatrol: refused: 127.0.0.1 is special-purpose space")
    assert recording_nmap.calls() == []

    added = run("allow", "add", "127.0.0.0/8", "--lab", "--note", "test", env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout == "allowed 127.0.0.0/8 (lab)\n"
    assert STATE_NOTE not in added.stderr  # only on first use

    telnet = LabService("telnet", TELNET_PORT, b"\r\nBusyBox v1.31.1 router login: ", "telnet")
    with LabHost(lab_address, [telnet]):
        scanned = run("scan", lab_address, "--json", env=env)
    assert scanned.returncode == 0, scanned.stderr
    document = json.loads(scanned.stdout)
    report = ScanReport.from_document(document)
    assert document["risk"] == "critical"
    assert report.address == lab_address
    assert report.requested_by == local_operator()
    assert [(port.port, port.service) for port in report.open_ports] == [(TELNET_PORT, "telnet")]
    assert report.findings[0].severity.value == "critical"
    assert "scanning" in scanned.stderr

    listed = run("allow", "list", env=env)
    assert listed.returncode == 0
    [entry] = listed.stdout.splitlines()
    network, scope, lab, added_by, _when, note = entry.split("\t")
    assert (network, scope, lab, added_by, note) == (
        "127.0.0.0/8",
        "default",
        "lab",
        str(local_operator()),
        "test",
    )


def test_roles_are_granted_listed_and_revoked_across_processes(run: Run, state_dir: Path) -> None:
    """`role grant`, `role list` and `role revoke` change and show the persisted roles."""
    env = base_env(state_dir)
    granted = run("role", "grant", "slack:U1", "agent", env=env)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout == "slack:U1 is now agent\n"
    listed = run("role", "list", env=env)
    assert listed.returncode == 0
    assert "slack:U1\tagent" in listed.stdout.splitlines()
    assert f"{local_operator()}\tadmin" in listed.stdout.splitlines()
    revoked = run("role", "revoke", "slack:U1", env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == "slack:U1 no longer has a granted role\n"
    after = run("role", "list", env=env)
    assert "slack:U1\tagent" not in after.stdout.splitlines()
    again = run("role", "revoke", "slack:U1", env=env)
    assert again.returncode == 2
    assert reason_lines(again.stderr) == ["portpatrol: slack:U1 has no granted role"]


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("0.0.0.0/0", "portpatrol: 0.0.0.0/0 is too wide"),
        ("abc", "portpatrol: not a network"),
        ("10.0.0.1/8", "portpatrol: not a network"),
        ("1.2.3.4,5.6.7.8", "portpatrol: not a network"),
    ],
)
def test_allow_add_refuses_bad_networks_with_one_line(
    run: Run, state_dir: Path, network: str, expected: str
) -> None:
    """`allow add` with a bad network exits 2 with a one-line reason and changes nothing."""
    env = base_env(state_dir)
    result = run("allow", "add", network, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    [reason] = reason_lines(result.stderr)
    assert reason.startswith(expected)
    assert run("allow", "list", env=env).stdout == "the allowlist is empty\n"


def test_scan_without_a_worker_gives_up_and_cancels_the_job(  # noqa: PLR0917 - pytest passes fixtures by name
    run: Run,
    rt: Runtime,
    redis_url: str,
    redis_client: redis.Redis,
    lab_address: str,
    tmp_path: Path,
) -> None:
    """With REDIS_URL set and no worker, `scan` exits 3 naming `portpatrol worker` and cancels."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="no worker test")
    env = base_env(tmp_path / "state", REDIS_URL=redis_url)
    result = run("scan", lab_address, "--pickup-timeout", "2", env=env)
    assert result.returncode == 3
    assert result.stdout == ""
    reason = result.stderr.strip().splitlines()[-1]
    assert "`portpatrol worker`" in reason
    assert "the job was cancelled" in reason
    found = re.search(r"no worker picked up job (\w+) within 2 s", reason)
    assert found is not None, reason
    job = Job.fetch(found.group(1), connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.CANCELED
    assert scan_queue(redis_client).count == 0
    assert not (tmp_path / "state").exists()  # a shared Redis needs no local state


@pytest.mark.nmap
def test_demo_prints_critical_telnet_and_whom_to_call(run: Run, state_dir: Path) -> None:
    """`portpatrol demo` exits 0 with a summary rating telnet critical and naming Lingo's number."""
    env = base_env(state_dir)
    result = run("demo", env=env)
    assert result.returncode == 0, result.stderr
    assert "Risk: CRITICAL" in result.stdout
    assert re.search(r"CRITICAL +\d+/tcp telnet", result.stdout)
    assert "Whom to contact: Lingo" in result.stdout
    assert "1-888-546-4699" in result.stdout
    assert "Message to send them:" in result.stdout
    assert run("allow", "list", env=env).stdout == "the allowlist is empty\n"


def test_invalid_settings_fail_listing_every_problem(run: Run, state_dir: Path) -> None:
    """Invalid settings stop the CLI before any work, with one line per problem."""
    env = base_env(state_dir, PORTPATROL_NMAP_MAX_RATE="0", PORTPATROL_QUEUE_MAX="0")
    result = run("allow", "list", env=env)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "invalid settings" in result.stderr
    assert "PORTPATROL_NMAP_MAX_RATE" in result.stderr
    assert "PORTPATROL_QUEUE_MAX" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(state_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "extra", "expected_code", "expected"),
    [
        ("telegram", {"TELEGRAM_BOT_TOKEN": ""}, 2, "TELEGRAM_BOT_TOKEN is not set"),
        ("telegram", {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "s"}, 2, None),
        ("slack", {"SLACK_BOT_TOKEN": "xoxb-1"}, 2, "SLACK_SIGNING_SECRET must be set"),
        ("telegram", {"TELEGRAM_WEBHOOK_SECRET": "bad secret!"}, 2, "TELEGRAM_WEBHOOK_SECRET"),
    ],
)
def test_chat_front_ends_refuse_to_start_without_their_settings(  # noqa: PLR0917 - fixtures
    run: Run,
    state_dir: Path,
    command: str,
    extra: dict[str, str],
    expected_code: int,
    expected: str | None,
) -> None:
    """`telegram` and `slack` stop at once, with one clear reason, when settings are missing."""
    args = [command, "--webhook"] if expected is None else [command]
    result = run(*args, env=base_env(state_dir, **extra), timeout=60)
    assert result.returncode == expected_code
    reason = "\n".join(reason_lines(result.stderr))
    assert "Traceback" not in result.stderr
    assert (expected or "--webhook needs PORTPATROL_PUBLIC_URL") in reason


def test_telegram_says_when_the_bot_api_cannot_be_reached(run: Run, state_dir: Path) -> None:
    """An unreachable Bot API is one line on stderr with the URL, never the token."""
    closed = f"http://127.0.0.1:{free_port()}/bot"
    env = base_env(
        state_dir,
        TELEGRAM_BOT_TOKEN="123456:SECRET-TOKEN-VALUE",  # noqa: S106 - a fake token to look for
        TELEGRAM_API_BASE_URL=closed,
        PORTPATROL_WEB_PORT=str(free_port()),
    )
    result = run("telegram", env=env, timeout=90)
    assert result.returncode == 1
    assert f"cannot reach the Bot API at {closed}" in result.stderr
    assert "SECRET-TOKEN-VALUE" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
