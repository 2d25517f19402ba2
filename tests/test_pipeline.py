"""End to end: console chat → ScanService → rq → a real worker process → real nmap → chat.

Every target is a lab host this module starts on a loopback address of its own; the report is
checked field by field against the document in DESIGN.md, as it travels in the event stream.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from harness import HOSTILE_TELNET, Chat, WorkerProcess, open_chat

from bot.core.messages import Reply, ReplyKind
from bot.core.render import render_reply
from bot.lab import LabHost, LabService, voip_adapter
from bot.wiring import Runtime
from workers.events import STREAM_KEY
from workers.jobs import reverse_dns_resolver
from workers.models import REPORT_SCHEMA, Requester

pytestmark = pytest.mark.nmap

HOME_USER = Requester(platform="telegram", user="4242")
PRIVILEGE_CASES = [False, True] if os.geteuid() == 0 else [False]
"""The adapter on 2323/2121/8080 always; on 23/21/80 too when the tests may bind them."""

HOSTILE_BANNER = b'\x1b[2J<a href="https://evil.example">login</a>\r\n</code><b><!channel>'


def installed_nmap_version() -> str:
    """Return the version of the nmap on PATH, as `nmap --version` prints it."""
    binary = shutil.which("nmap")
    assert binary is not None
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"Nmap version (\S+)", output)
    assert found is not None, output
    return found.group(1)


def finished_document(client: redis.Redis, job_id: str) -> dict[str, Any]:
    """Return the report document carried by the job's finished event, parsed from its JSON."""
    for _id, fields in client.xrange(STREAM_KEY):
        if fields[b"job_id"].decode() == job_id and fields[b"kind"] == b"finished":
            data = json.loads(fields[b"data"])
            assert isinstance(data["report"], dict)
            return data["report"]
    raise AssertionError(f"no finished event for job {job_id}")


def utc_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp and insist it is in UTC."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None
    assert moment.utcoffset() == UTC.utcoffset(None)
    return moment


def job_replies(chat: Chat, job_id: str) -> list[Reply]:
    """Every reply the chat got about one job, in order."""
    return [reply for reply in chat.replies() if reply.job_id == job_id]


def scan_through_chat(chat: Chat, target: str) -> tuple[str, Reply]:
    """Ask for a scan in the chat; return the job id and its final reply."""
    [accepted] = chat.say(f"/scan {target}")
    assert accepted.kind is ReplyKind.ACCEPTED, accepted.text
    assert accepted.job_id is not None
    return accepted.job_id, chat.result(accepted.job_id, timeout=120)


@pytest.mark.parametrize("privileged", PRIVILEGE_CASES, ids=lambda p: f"privileged={p}")
def test_voip_adapter_report_matches_the_document_schema(  # noqa: PLR0917 - pytest passes fixtures by name
    rt: Runtime,
    chat: Chat,
    worker: WorkerProcess,
    redis_client: redis.Redis,
    lab_address: str,
    privileged: bool,
) -> None:
    """The simulated adapter goes ACCEPTED → Scanning → REPORT, and the report holds every field."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="pipeline test")
    adapter = voip_adapter(lab_address, privileged=privileged)
    with adapter:
        ports = adapter.ports
        job_id, final = scan_through_chat(chat, lab_address)

    kinds = [(reply.kind, reply.text) for reply in job_replies(chat, job_id)]
    assert [kind for kind, _ in kinds] == [ReplyKind.ACCEPTED, ReplyKind.PROGRESS, ReplyKind.REPORT]
    assert kinds[0][1].startswith(f"Queued a quick scan of {lab_address} as job {job_id}")
    assert kinds[1][1].startswith("Scanning")
    assert final.kind is ReplyKind.REPORT

    document = finished_document(redis_client, job_id)
    assert set(document) == {
        "schema", "job_id", "target", "address", "hostname", "profile", "requested_by",
        "started_at", "finished_at", "host_state", "complete", "notes", "risk", "findings",
        "open_ports", "guidance", "nmap", "changes",
    }  # fmt: skip
    assert document["changes"] is None  # the first scan of this lab address
    assert document["schema"] == REPORT_SCHEMA == "portpatrol.report/1"
    assert document["job_id"] == job_id
    assert document["target"] == lab_address
    assert document["address"] == lab_address
    # The worker asks the system's reverse DNS, as in production; a lab address has no name
    # on most machines, but whatever the system says is what the report must carry.
    assert document["hostname"] == reverse_dns_resolver(socket.gethostbyaddr)(lab_address)
    assert document["profile"] == "quick"
    assert document["requested_by"] == {"platform": "cli", "user": "tester"}
    assert utc_timestamp(document["started_at"]) <= utc_timestamp(document["finished_at"])
    assert document["host_state"] == "up"
    assert document["complete"] is True
    assert document["notes"] == []
    assert document["risk"] == "critical"

    quick = rt.profiles.get("quick")
    assert quick is not None
    assert isinstance(quick.tcp_ports, list)
    # Only the adapter's ports that the quick profile checks can show up (2121 may not be one).
    checked = {name: port for name, port in ports.items() if port in quick.tcp_ports}
    assert "telnet" in checked
    assert "http" in checked
    assert document["open_ports"] == [
        {"port": port, "protocol": "tcp", "service": name}
        for name, port in sorted(checked.items(), key=lambda item: item[1])
    ]
    findings = {finding["port"]: finding for finding in document["findings"]}
    assert set(findings) == set(checked.values())
    assert document["findings"][0]["port"] == ports["telnet"]  # worst first
    telnet = findings[ports["telnet"]]
    assert (telnet["protocol"], telnet["service"], telnet["severity"]) == (
        "tcp",
        "telnet",
        "critical",
    )
    assert "Lingo" in telnet["product"]
    assert telnet["title"]
    assert "telnet" in telnet["why"].lower()
    assert telnet["advice"]
    for finding in document["findings"]:
        assert set(finding) >= {
            "port", "protocol", "service", "product", "version", "severity", "title", "why",
            "advice",
        }  # fmt: skip
        assert finding["why"]
        assert finding["advice"]
    assert findings[ports["http"]]["severity"] in ("high", "medium")
    if "ftp" in checked:
        assert findings[ports["ftp"]]["severity"] == "high"

    guidance = document["guidance"]
    assert guidance["provider"] == "Lingo"
    assert guidance["matched_by"] == "banner"
    assert guidance["contact"]["phone"].startswith("1-888-546-4699")
    assert f"{ports['telnet']}/tcp" in guidance["message"]
    assert lab_address in guidance["message"]

    nmap = document["nmap"]
    assert nmap["version"] == installed_nmap_version()
    assert nmap["command"].endswith(f" -- {lab_address}")
    assert nmap["command"].startswith("nmap -n ")
    assert "--max-rate" in nmap["command"]
    assert "--host-timeout" in nmap["command"]
    # The scan type follows the worker's privilege (root here means SYN), not the adapter's ports.
    assert ("-sS" if os.geteuid() == 0 else "-sT") in nmap["command"].split()
    assert isinstance(nmap["elapsed_s"], float)
    assert nmap["elapsed_s"] > 0

    assert final.report is not None
    assert final.report.to_document() == document
    rendered = render_reply(final)
    assert rendered.startswith(f"Risk: CRITICAL — {lab_address}")
    assert "1-888-546-4699" in rendered


def test_hostile_banners_render_as_inert_text(
    rt: Runtime, chat: Chat, worker: WorkerProcess, lab_address: str
) -> None:
    """Escape sequences and markup sent by a scanned service never reach the terminal raw."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="pipeline test")
    services = [
        LabService("raw", 8443, HOSTILE_BANNER, "raw"),
        LabService("telnet", 2323, HOSTILE_TELNET, "telnet"),
    ]
    with LabHost(lab_address, services):
        _job_id, final = scan_through_chat(chat, lab_address)
    assert final.kind is ReplyKind.REPORT
    assert final.report is not None
    assert {port.port for port in final.report.open_ports} == {2323, 8443}
    [telnet] = [finding for finding in final.report.findings if finding.port == 2323]
    assert telnet.product == "DD-WRT telnetd"
    assert "<!channel>" in telnet.version  # the markup did reach the report...
    rendered = render_reply(final)
    assert "DD-WRT telnetd" in rendered  # ...and is shown as text
    for character in ("\x1b", "\r", "\x07", "\x00"):
        assert character not in rendered
    assert all(line.isprintable() for line in rendered.splitlines())


def test_host_with_nothing_open_reports_risk_none_and_says_so(
    rt: Runtime, chat: Chat, worker: WorkerProcess, lab_address: str
) -> None:
    """A lab address with nothing listening is up, complete, risk none, and the text says so."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="pipeline test")
    _job_id, final = scan_through_chat(chat, lab_address)
    assert final.kind is ReplyKind.REPORT
    report = final.report
    assert report is not None
    assert report.risk.value == "none"
    assert report.open_ports == []
    assert report.findings == []
    assert report.complete is True
    assert report.host_state == "up"
    rendered = render_reply(final)
    assert rendered.startswith(f"Risk: NONE — {lab_address}")
    assert "No open ports found among the ports this profile checks." in rendered
    assert "Whom to contact" not in rendered


def test_home_user_scan_is_stored_cached_and_private(
    rt: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """A home user's scan is stored, shown by /status to them only, and answers a repeat request."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="pipeline test")
    rt.store.bind_address(HOME_USER, lab_address)
    home = open_chat(rt, HOME_USER)
    stranger = open_chat(rt, Requester(platform="telegram", user="777"))
    try:
        smtp = LabService("smtp", 8080, b"220 mail.lab.invalid ESMTP Postfix", "smtp")
        with LabHost(lab_address, [smtp]):
            job_id, final = scan_through_chat(home, lab_address)
        assert final.kind is ReplyKind.REPORT
        assert final.report is not None
        assert final.report.requested_by == HOME_USER
        assert [(port.port, port.service) for port in final.report.open_ports] == [(8080, "smtp")]
        assert final.report.risk.value == "medium"

        assert rt.reports.get(job_id) == final.report
        [status] = home.say(f"/status {job_id}")
        assert status.kind is ReplyKind.REPORT
        assert status.report == final.report
        [other] = stranger.say(f"/status {job_id}")
        assert other.kind is ReplyKind.TEXT
        assert other.report is None
        assert other.text.startswith(f"No job {job_id} is known")

        # Nothing listens any more: a repeat inside the dedupe window must come from the store.
        [again] = home.say(f"/scan {lab_address}")
        assert again.kind is ReplyKind.REPORT
        assert again.job_id == job_id
        assert again.report == final.report
        assert re.fullmatch(
            re.escape(lab_address)
            + r" was scanned \d+ seconds ago \(quick\); here is that result\.",
            again.text,
        )
        assert rt.service.queue.count == 0
    finally:
        home.session.close()
        stranger.session.close()
