"""The interactive console: a prompt that takes the bots' commands and prints their answers.

Job updates (scanning…, the result) are printed as they arrive, from a background thread that
pumps the session's event feed. At the end of piped input the console waits for the scans it
started, so ``echo "/scan …" | portpatrol console`` prints the result.
Imports: ``bot.console.session``, ``bot.core``, ``bot.wiring``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from bot.console.session import ConsoleSession
from bot.core.messages import Reply, ReplyKind
from bot.core.render import render_reply
from bot.wiring import Runtime
from workers.models import Requester

PROMPT = "portpatrol> "
QUIT = {"/quit", "/exit", "quit", "exit"}
DRAIN_TIMEOUT_S = 600.0


def run_repl(
    rt: Runtime,
    requester: Requester,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> None:
    """Read commands until EOF or /quit; print replies and job updates."""
    source = stdin or sys.stdin
    out = stdout or sys.stdout
    lock = threading.Lock()
    interactive = source.isatty()
    outstanding: set[str] = set()

    def show(reply: Reply) -> None:
        if reply.job_id is not None:
            if reply.kind is ReplyKind.ACCEPTED:
                outstanding.add(reply.job_id)
            elif reply.kind in (ReplyKind.REPORT, ReplyKind.FAILED):
                outstanding.discard(reply.job_id)
        with lock:
            out.write(render_reply(reply) + "\n")
            if interactive and reply.kind in (
                ReplyKind.PROGRESS,
                ReplyKind.REPORT,
                ReplyKind.FAILED,
            ):
                out.write(PROMPT)
            out.flush()

    session = ConsoleSession(rt.router(), rt.connection, rt.events, requester, on_reply=show)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            if not session.pump():
                stop.wait(1.0)

    pumper = threading.Thread(target=pump, name="console-events", daemon=True)
    pumper.start()
    out.write(
        f"portpatrol console — you are {requester} ({rt.service.role_of(requester).value}). "
        "Type /help, or /quit to leave.\n"
    )
    try:
        while True:
            if interactive:
                with lock:
                    out.write(PROMPT)
                    out.flush()
            line = source.readline()
            if not line:
                break
            text = line.strip()
            if text.lower() in QUIT:
                break
            if text:
                session.say(text)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while outstanding and time.monotonic() < deadline and not interactive:
            time.sleep(0.1)
    except KeyboardInterrupt:
        out.write("\n")
    finally:
        stop.set()
        pumper.join(timeout=2)
        session.close()
