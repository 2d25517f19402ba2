"""Acceptance (issue 5, point 2): the admin flow tried as a new user would, from Slack.

Real parts: the Slack app over signed HTTP against the fake Slack Web API, the test Redis, a real
``portpatrol worker`` running real nmap and rq's scheduler, and loopback lab services that are
stopped between scans. The one test-only change is the watch interval: the runtime's watch
service is built with a few-seconds "daily" before the app starts, so the agent's own
``/scan watch`` from Slack is the watch that runs.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from fake_slack import FakeSlack
from harness import WorkerProcess, free_port, worker_env
from test_cli import PORTPATROL
from test_slack import ADMIN, CHANNEL, RunningApp, channel_texts, wait_channel

from bot.lab import LabHost, LabService
from bot.wiring import Runtime, build_watches
from workers.audit import AuditEvent
from workers.models import Requester

AGENT = "UAGENT2"
TELNET = LabService("telnet", 2323, b"\r\nBusyBox v1.31.1 router login: ", "telnet")
FTP = LabService("ftp", 2121, b"220 (vsFTPd 3.0.3)\r\n", "ftp")
INTERVAL = timedelta(seconds=3)


def ack_text(answer: str) -> str:
    """The text of an ephemeral acknowledgement."""
    return str(json.loads(answer)["text"])


def wait_for_history(rt: Runtime, address: str, count: int, timeout: float = 60) -> None:
    """Wait until the address has ``count`` stored reports."""
    deadline = time.monotonic() + timeout
    while len(rt.reports.history(address)) < count:
        assert time.monotonic() < deadline, f"no report {count} for {address} within {timeout} s"
        time.sleep(0.2)


def cli_audit(rt: Runtime) -> list[AuditEvent]:
    """`portpatrol audit --json` against the test Redis, oldest first."""
    done = subprocess.run(
        [str(PORTPATROL), "audit", "--json", "--limit", "500"],
        env=worker_env(rt.settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = [AuditEvent.model_validate(json.loads(line)) for line in done.stdout.splitlines()]
    return list(reversed(events))


@pytest.mark.nmap
def test_admin_adds_range_agent_scans_and_the_watch_reports_telnet_fixed(
    rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """A Slack admin allows a range and grants an agent, whose scan and watch show telnet fixed."""
    rt.watches = build_watches(
        rt.settings,
        connection=rt.connection,
        redis_url=rt.redis_url,
        store=rt.store,
        audit=rt.audit,
        profiles=rt.profiles,
        intervals={"daily": INTERVAL},
    )
    with FakeSlack() as fake:
        app = RunningApp(rt, fake, free_port()).start()
        try:
            # (1) the configured admin allows the lab address, in the "lab" scope
            _, answer, _ = app.command(
                ADMIN,
                f"allow add {lab_address}/32 --lab --scope lab walkthrough",
                command="/scan-admin",
            )
            assert f"Allowed {lab_address}/32" in ack_text(answer)
            [entry] = rt.store.allow_entries()
            assert (entry.network, entry.scope) == (f"{lab_address}/32", "lab")
            # (2) ... and makes UAGENT2 an agent
            _, granted, _ = app.command(
                ADMIN, f"role grant slack:{AGENT} agent", command="/scan-admin"
            )
            assert f"slack:{AGENT} is now agent" in ack_text(granted)

            host = LabHost(lab_address, [TELNET, FTP])
            host.start()
            try:
                # (3) the agent scans: the channel message ends with the CRITICAL telnet risk
                status, answer, _ = app.command(AGENT, lab_address)
                assert status == 200
                assert "Queued" in ack_text(answer), answer
                final = wait_channel(fake, "Risk: CRITICAL", timeout=90)
                last_line = final.splitlines()[-1]
                assert last_line.startswith(f"Risk: CRITICAL — {lab_address}"), final
                assert "telnet" in last_line.lower(), final
                wait_for_history(rt, lab_address, 1)

                # (4) the agent watches the address from Slack (interval: a few seconds here)
                _, watched, _ = app.command(AGENT, f"watch {lab_address}")
                assert ack_text(watched).startswith(f"Watching {lab_address} daily"), watched
                [watch] = rt.watches.watches_of(Requester(platform="slack", user=AGENT))
                wait_for_history(rt, lab_address, 2)  # one run while telnet is still up
            finally:
                # (5) telnet goes away; ftp stays up on the same address
                host.stop()
            with LabHost(lab_address, [FTP]):
                # (6) a watch run tells the channel telnet is closed now
                fake.wait_for(
                    lambda _calls: (
                        "is now closed — fixed"
                        in json.dumps(
                            [message["blocks"] for message in fake.messages(CHANNEL).values()],
                            ensure_ascii=False,
                        )
                    ),
                    60,
                )
        finally:
            app.stop()
    fixed = [
        message
        for message in fake.messages(CHANNEL).values()
        if "is now closed — fixed" in json.dumps(message["blocks"], ensure_ascii=False)
    ]
    assert len(fixed) == 1
    fixed_blocks = json.dumps(fixed[0]["blocks"], ensure_ascii=False)
    assert "*Good news:* `2323/tcp telnet` is now closed — fixed." in fixed_blocks
    assert "closed: `2323/tcp telnet`" in fixed_blocks
    assert len(channel_texts(fake)) == 2  # the agent's scan, then the one "fixed" message
    assert watch.reply_to == {"platform": "slack", "chat": CHANNEL, "user": AGENT}

    # (7) every step is in `portpatrol audit`, in order
    events = cli_audit(rt)
    steps: list[Callable[[AuditEvent], bool]] = [
        lambda e: (
            (e.action, e.actor, e.target, e.decision, e.detail.get("scope"))
            == ("allow_add", f"slack:{ADMIN}", f"{lab_address}/32", "done", "lab")
        ),
        lambda e: (
            (e.action, e.actor, e.target, e.decision, e.reason)
            == ("role_grant", f"slack:{ADMIN}", f"slack:{AGENT}", "done", "agent")
        ),
        lambda e: (
            (e.action, e.actor, e.target, e.decision)
            == ("scan", f"slack:{AGENT}", lab_address, "accepted")
        ),
        lambda e: (
            (e.action, e.actor, e.decision, e.detail.get("watch"))
            == ("watch_add", f"slack:{AGENT}", "accepted", watch.watch_id)
        ),
        lambda e: (
            (e.action, e.actor, e.decision, e.detail.get("watch"))
            == ("watch_scan", f"slack:{AGENT}", "changed", watch.watch_id)
        ),
    ]
    found: list[int] = []
    for step in steps:
        start = found[-1] + 1 if found else 0
        index = next((i for i in range(start, len(events)) if step(events[i])), None)
        assert index is not None, [(e.actor, e.action, e.target, e.decision) for e in events]
        found.append(index)
    assert found == sorted(found)
