"""History and diff: what changed since the previous scan of the same address and profile.

Pure tests for ``workers.reports.diff_reports`` and the three renderers, tests of
``ReportStore.previous`` on the test Redis, and one end-to-end run through the console chat, a
real ``portpatrol worker`` and real nmap against a lab host whose services are stopped and
started again between scans.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
import redis
from harness import Chat, WorkerProcess, open_chat
from test_render import FINISHED, HOSTILE, HUGE, hostile_report, make_report, unsafe
from test_slack_render import SLACK_HOSTILE, check_inert, check_message, sections
from test_telegram_render import TELEGRAM_HOSTILE, check_messages

from bot.core.messages import Reply, ReplyKind
from bot.core.render import FIRST_SCAN, describe_age, render_report
from bot.core.render import render_reply as render_plain
from bot.lab import LabHost, LabService
from bot.settings import Settings
from bot.slack.render import render_reply as render_slack
from bot.telegram.render import MAX_MESSAGES
from bot.telegram.render import render_reply as render_telegram
from bot.wiring import Runtime, runtime
from workers.models import (
    REPORT_SCHEMA,
    Finding,
    OpenPort,
    PortChange,
    ReportChanges,
    Requester,
    Role,
    ScanReport,
    ServiceChange,
    Severity,
    overall_risk,
)
from workers.reports import HISTORY_LENGTH, ReportStore, diff_reports

THREE_DAYS_EARLIER = FINISHED - timedelta(days=3)
Port = tuple[int, str, Severity, str, str]
"""An open port as (number, service, severity, product, version); protocol tcp."""


def scan(
    job_id: str,
    ports: Sequence[Port],
    *,
    udp: Sequence[Port] = (),
    command: str = "nmap -n -Pn -sT -p T:21,22,23,80 -sV --version-light -oX - -- 127.0.0.23",
    **fields: Any,
) -> ScanReport:
    """Build a report of ``ports`` (tcp) and ``udp``, one finding per port, as the worker does."""
    observed = [(*port, "tcp") for port in ports] + [(*port, "udp") for port in udp]
    findings = [
        Finding(
            port=number,
            protocol=protocol,
            service=service,
            product=product,
            version=version,
            severity=severity,
            title=f"{service} is open",
            why="why",
            advice="advice",
        )
        for number, service, severity, product, version, protocol in observed
    ]
    findings.sort(key=lambda finding: (-finding.severity.rank, finding.port))
    open_ports = [
        OpenPort(port=number, protocol=protocol, service=service)
        for number, service, _, _, _, protocol in observed
    ]
    base = make_report(job_id=job_id, findings=findings, open_ports=open_ports)
    return base.model_copy(
        update={
            "risk": overall_risk(findings),
            "nmap": base.nmap.model_copy(update={"command": command}),
            **fields,
        }
    )


FTP: Port = (21, "ftp", Severity.HIGH, "vsftpd", "2.3.4")
SSH_OLD: Port = (22, "ssh", Severity.LOW, "OpenSSH", "8.9")
SSH_NEW: Port = (22, "ssh", Severity.LOW, "OpenSSH", "9.6")
TELNET: Port = (23, "telnet", Severity.CRITICAL, "BusyBox telnetd", "")
HTTP: Port = (80, "http", Severity.MEDIUM, "thttpd", "2.29")
SIP: Port = (5060, "sip", Severity.INFO, "", "")


def earlier(job_id: str, ports: Sequence[Port], **fields: Any) -> ScanReport:
    """A report of ``ports`` that finished three days before the default report."""
    return scan(
        job_id,
        ports,
        started_at=THREE_DAYS_EARLIER - timedelta(seconds=5),
        finished_at=THREE_DAYS_EARLIER,
        **fields,
    )


def change(
    number: int, service: str, severity: Severity | None, protocol: str = "tcp"
) -> PortChange:
    """A PortChange, for comparing with what diff_reports returns."""
    return PortChange(port=number, protocol=protocol, service=service, severity=severity)


def with_changes(report: ScanReport, **fields: Any) -> ScanReport:
    """Return the report carrying a change summary against a scan three days earlier."""
    changes = ReportChanges(
        previous_job_id="job-0", previous_finished_at=THREE_DAYS_EARLIER, **fields
    )
    return report.model_copy(update={"changes": changes})


# diff_reports ---------------------------------------------------------------------------------


def test_diff_lists_opened_closed_and_changed_ports() -> None:
    """A port only in the new scan is opened, one only in the old is closed, one redone changed."""
    previous = earlier("job-0", [FTP, SSH_OLD, HTTP])
    current = scan("job-1", [SSH_NEW, TELNET, HTTP])
    changes = diff_reports(previous, current)
    assert changes.previous_job_id == "job-0"
    assert changes.previous_finished_at == THREE_DAYS_EARLIER
    assert changes.previous_complete is True
    assert changes.opened == [change(23, "telnet", Severity.CRITICAL)]
    assert changes.closed == [change(21, "ftp", Severity.HIGH)]
    assert changes.changed == [
        ServiceChange(port=22, protocol="tcp", before="ssh OpenSSH 8.9", after="ssh OpenSSH 9.6")
    ]
    assert changes.not_seen == []
    assert not changes.nothing_changed


def test_identical_scans_have_nothing_changed() -> None:
    """The same ports with the same services give empty lists and ``nothing_changed``."""
    changes = diff_reports(earlier("job-0", [FTP, TELNET]), scan("job-1", [FTP, TELNET]))
    assert (changes.opened, changes.closed, changes.changed, changes.not_seen) == ([], [], [], [])
    assert changes.nothing_changed


@pytest.mark.parametrize(
    ("previous_fields", "current_fields", "previous_complete"),
    [
        ({"complete": False}, {}, False),
        ({}, {"complete": False}, True),
        ({"complete": False}, {"complete": False}, False),
        ({}, {"host_state": "down"}, True),
        ({"host_state": "unknown"}, {}, False),
    ],
    ids=["previous-incomplete", "current-incomplete", "both-incomplete", "host-down", "unknown"],
)
def test_incomplete_scan_never_claims_a_port_closed(
    previous_fields: dict[str, Any], current_fields: dict[str, Any], previous_complete: bool
) -> None:
    """With either scan incomplete (or the host not up), a vanished port is not_seen, not closed."""
    previous = earlier("job-0", [FTP, TELNET], **previous_fields)
    current = scan("job-1", [FTP, HTTP], **current_fields)
    changes = diff_reports(previous, current)
    assert changes.closed == []
    assert changes.not_seen == [change(23, "telnet", Severity.CRITICAL)]
    assert changes.opened == [change(80, "http", Severity.MEDIUM)]
    assert changes.previous_complete is previous_complete


def test_udp_port_is_not_closed_by_a_scan_that_skipped_udp() -> None:
    """A UDP port seen by a privileged worker is not_seen when the next one could not scan UDP."""
    previous = earlier("job-0", [FTP], udp=[SIP], command="nmap -sS -sU -p T:21,U:5060")
    current = scan("job-1", [FTP], command="nmap -sT -p T:21")
    changes = diff_reports(previous, current)
    assert changes.closed == []
    assert changes.not_seen == [change(5060, "sip", Severity.INFO, "udp")]


def test_udp_port_is_not_new_when_the_previous_scan_skipped_udp() -> None:
    """A UDP port is not "new" when the previous scan never looked at UDP."""
    previous = earlier("job-0", [FTP], command="nmap -sT -p T:21")
    current = scan("job-1", [FTP], udp=[SIP], command="nmap -sS -sU -p T:21,U:5060")
    assert diff_reports(previous, current).nothing_changed


def test_udp_ports_compare_when_both_scans_covered_udp() -> None:
    """With UDP scanned both times, a UDP port that went away is closed like a TCP one."""
    previous = earlier("job-0", [FTP], udp=[SIP], command="nmap -sS -sU -p T:21,U:5060")
    current = scan("job-1", [FTP], command="nmap -sS -sU -p T:21,U:5060")
    assert diff_reports(previous, current).closed == [change(5060, "sip", Severity.INFO, "udp")]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_service_strings_are_kept_as_data(value: str) -> None:
    """Banner text lands in the diff unchanged (renderers escape it) and round-trips as JSON."""
    hostile: Port = (8080, value, Severity.HIGH, value, value)
    plain: Port = (8080, "http", Severity.HIGH, "", "")
    previous = earlier("job-0", [plain, (9000, value, Severity.LOW, "", "")])
    current = scan("job-1", [hostile, (9001, value, Severity.LOW, "", "")])
    changes = diff_reports(previous, current)
    assert changes.changed == [
        ServiceChange(port=8080, protocol="tcp", before="http", after=f"{value} {value} {value}")
    ]
    assert changes.opened == [change(9001, value, Severity.LOW)]
    assert changes.closed == [change(9000, value, Severity.LOW)]
    report = current.model_copy(update={"changes": changes})
    document = json.loads(json.dumps(report.to_document()))
    assert ScanReport.from_document(document) == report


def test_changes_travel_in_the_report_document() -> None:
    """The document keeps its schema and gains ``changes`` in the documented shape."""
    previous = earlier("job-0", [FTP, SSH_OLD])
    current = scan("job-1", [SSH_NEW, TELNET])
    report = current.model_copy(update={"changes": diff_reports(previous, current)})
    document = report.to_document()
    assert document["schema"] == REPORT_SCHEMA == "portpatrol.report/1"
    assert document["changes"] == {
        "previous_job_id": "job-0",
        "previous_finished_at": "2026-03-01T05:06:12Z",
        "previous_complete": True,
        "opened": [{"port": 23, "protocol": "tcp", "service": "telnet", "severity": "critical"}],
        "closed": [{"port": 21, "protocol": "tcp", "service": "ftp", "severity": "high"}],
        "changed": [
            {"port": 22, "protocol": "tcp", "before": "ssh OpenSSH 8.9", "after": "ssh OpenSSH 9.6"}
        ],
        "not_seen": [],
    }
    assert ScanReport.from_document(document) == report


def test_a_document_without_changes_still_parses() -> None:
    """Reports stored before this field existed read back with ``changes`` None."""
    document = make_report().to_document()
    del document["changes"]
    assert ScanReport.from_document(document).changes is None


# ReportStore.previous -------------------------------------------------------------------------


@pytest.fixture
def reports(redis_client: redis.Redis) -> ReportStore:
    """A report store on the (flushed) test Redis."""
    return ReportStore(redis_client)


def at(report: ScanReport, address: str, profile: str = "quick") -> ScanReport:
    """Return the report moved to another address and profile."""
    return report.model_copy(update={"address": address, "target": address, "profile": profile})


@pytest.mark.parametrize("address", ["127.0.0.23", "::1", "2001:db8::5"])
def test_previous_is_the_newest_report_of_the_same_address_and_profile(
    reports: ReportStore, address: str
) -> None:
    """Another profile or another address is never the baseline; IPv6 addresses work alike."""
    oldest = at(earlier("job-a", [FTP]), address)
    standard = at(earlier("job-b", [FTP, TELNET]), address, "standard")
    newest = at(earlier("job-c", [TELNET]), address)
    elsewhere = at(earlier("job-d", [HTTP]), "127.0.0.99")
    for report in (oldest, standard, newest, elsewhere):
        reports.save(report)
    assert reports.previous(address, "quick") == newest
    assert reports.previous(address, "standard") == standard
    assert reports.previous(address, "full") is None
    assert reports.previous("127.0.0.98", "quick") is None


def test_first_scan_has_no_previous_report(reports: ReportStore) -> None:
    """An address never scanned has no baseline: its first report carries no changes."""
    assert reports.previous("2001:db8::7", "quick") is None


def test_previous_skips_the_asking_job_and_unreadable_reports(
    reports: ReportStore, redis_client: redis.Redis
) -> None:
    """A retried job never compares with itself, and junk written to Redis is no baseline."""
    first, second, third = (earlier(job, [FTP]) for job in ("job-a", "job-b", "job-c"))
    for report in (first, second, third):
        reports.save(report)
    assert reports.previous("127.0.0.23", "quick", excluding="job-c") == second
    redis_client.set("pp:report:job-b", b"\xff{not json")
    assert reports.previous("127.0.0.23", "quick", excluding="job-c") == first
    redis_client.set("pp:report:job-a", json.dumps({"schema": "evil/9"}))
    assert reports.previous("127.0.0.23", "quick", excluding="job-c") is None


def test_previous_looks_only_within_the_kept_history(reports: ReportStore) -> None:
    """A report pushed out of the last HISTORY_LENGTH by other profiles is no longer compared."""
    reports.save(earlier("job-quick", [FTP]))
    for index in range(HISTORY_LENGTH - 1):
        reports.save(at(earlier(f"job-s{index}", [FTP]), "127.0.0.23", "standard"))
    assert reports.previous("127.0.0.23", "quick") is not None
    reports.save(at(earlier("job-last", [FTP]), "127.0.0.23", "standard"))
    assert reports.previous("127.0.0.23", "quick") is None


# plain text -----------------------------------------------------------------------------------


def test_plain_summary_sits_right_under_the_header() -> None:
    """The change line follows the risk and scan lines, before notes and open ports."""
    report = with_changes(
        make_report(notes=["UDP skipped"]),
        opened=[change(23, "telnet", Severity.CRITICAL)],
        closed=[change(21, "ftp", Severity.MEDIUM)],
    )
    lines = render_report(report).splitlines()
    assert lines[2] == "Since the scan 3 days ago: new: 23/tcp telnet; closed: 21/tcp ftp"
    assert lines[3] == "Note: UDP skipped"
    assert "fixed" not in render_report(report)


def test_plain_closed_serious_port_is_good_news() -> None:
    """A closed port that had a critical or high finding is called fixed; a medium one is not."""
    report = with_changes(
        make_report(),
        closed=[change(21, "ftp", Severity.MEDIUM), change(23, "telnet", Severity.CRITICAL)],
        changed=[ServiceChange(port=80, protocol="tcp", before="http a 1", after="http a 2")],
    )
    lines = render_report(report).splitlines()
    assert lines[2] == (
        "Since the scan 3 days ago: closed: 21/tcp ftp, 23/tcp telnet; "
        "changed: 80/tcp http a 1 → http a 2"
    )
    assert lines[3] == "Good news: 23/tcp telnet is now closed — fixed."
    assert "21/tcp ftp is now closed" not in render_report(report)


def test_plain_no_change_and_first_scan() -> None:
    """Nothing changed says so with the age; no earlier report says this is the first scan."""
    unchanged = with_changes(make_report()).model_copy(
        update={"finished_at": THREE_DAYS_EARLIER + timedelta(hours=2)}
    )
    assert render_report(unchanged).splitlines()[2] == "No change since the scan 2 hours ago."
    assert render_report(make_report()).splitlines()[2] == FIRST_SCAN
    assert "first scan of this address" in FIRST_SCAN.lower()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"complete": False}, "this scan was incomplete"),
        ({"host_state": "down"}, "this scan got no answer from the host"),
    ],
)
def test_plain_incomplete_scan_says_so_instead_of_closed(
    fields: dict[str, Any], reason: str
) -> None:
    """Ports missing from an incomplete scan are "not seen", with the reason, never "closed"."""
    report = with_changes(make_report(**fields), not_seen=[change(23, "telnet", Severity.CRITICAL)])
    text = render_report(report)
    assert (
        "Since the scan 3 days ago: not seen this time, not counted as closed because "
        f"{reason}: 23/tcp telnet"
    ) in text.splitlines()
    assert "closed:" not in text
    assert "fixed" not in text


def test_plain_incomplete_previous_scan_is_named() -> None:
    """New ports after an incomplete scan come with the warning that the baseline was partial."""
    report = with_changes(
        make_report(),
        previous_complete=False,
        opened=[change(23, "telnet", Severity.CRITICAL)],
        not_seen=[change(21, "ftp", Severity.HIGH)],
    )
    assert render_report(report).splitlines()[2] == (
        "Since the scan 3 days ago (that scan was incomplete): new: 23/tcp telnet; "
        "not seen this time, not counted as closed because the previous scan was incomplete: "
        "21/tcp ftp"
    )


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0 seconds ago"),
        (45, "45 seconds ago"),
        (600, "10 minutes ago"),
        (3 * 3600, "3 hours ago"),
        (47 * 3600, "47 hours ago"),
        (3 * 86400, "3 days ago"),
        (400 * 86400, "400 days ago"),
    ],
)
def test_ages_read_naturally(seconds: int, words: str) -> None:
    """Ages go from seconds to minutes, hours and days."""
    assert describe_age(seconds) == words


def test_plain_skewed_clocks_do_not_give_a_negative_age() -> None:
    """A previous report stamped after this one (clock skew between workers) reads as 0 seconds."""
    report = with_changes(make_report()).model_copy(
        update={"finished_at": THREE_DAYS_EARLIER - timedelta(minutes=5)}
    )
    assert render_report(report).splitlines()[2] == "No change since the scan 0 seconds ago."


def huge_changes(report: ScanReport, value: str = "http") -> ScanReport:
    """Return the report with thousands of opened, closed, changed and fixed ports."""
    ports = [change(number, value, Severity.HIGH) for number in range(3000)]
    changed = [
        ServiceChange(port=number, protocol="tcp", before=value, after=value)
        for number in range(1000)
    ]
    return with_changes(report, opened=ports, closed=ports, changed=changed, not_seen=ports[:500])


def test_plain_huge_change_lists_are_capped() -> None:
    """Thousands of changed ports list forty of each and say how many more there are."""
    text = render_report(huge_changes(make_report()))
    summary = text.splitlines()[2]
    assert "new: 0/tcp http, 1/tcp http" in summary
    assert "39/tcp http and 2960 more; closed:" in summary
    assert "and 960 more" in summary
    assert "and 460 more" in summary
    assert "  … and 2960 more closed ports that had serious findings" in text.splitlines()
    assert len(text.splitlines()) < 120


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_plain_hostile_changes_stay_inert_and_bounded(value: str) -> None:
    """Escapes, CR, bidi and 100 KB strings in the change summary render as bounded text."""
    report = with_changes(
        hostile_report(value),
        opened=[PortChange(port=1, protocol=value, service=value, severity=Severity.HIGH)],
        closed=[PortChange(port=2, protocol=value, service=value, severity=Severity.CRITICAL)],
        changed=[ServiceChange(port=3, protocol=value, before=value, after=value)],
        not_seen=[PortChange(port=4, protocol=value, service=value)],
    )
    text = render_plain(Reply(kind=ReplyKind.REPORT, text="", report=report))
    assert not unsafe(text)
    assert len(text) < 14_000
    assert "is now closed — fixed." in text


# Telegram -------------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", [Role.USER, Role.AGENT])
def test_telegram_summary_and_good_news(audience: Role) -> None:
    """Both audiences get the summary under the header and the good news, in valid HTML."""
    report = with_changes(
        make_report(),
        opened=[change(23, "telnet", Severity.CRITICAL)],
        closed=[change(21, "ftp", Severity.HIGH)],
    )
    chunks = render_telegram(
        Reply(kind=ReplyKind.REPORT, text="", report=report), audience=audience
    )
    check_messages(chunks)
    lines = "\n".join(chunks).splitlines()
    assert lines[1].startswith("Scanned ")
    assert lines[2] == "<b>Since the scan 3 days ago:</b> new: 23/tcp telnet; closed: 21/tcp ftp"
    assert lines[3] == "<b>Good news:</b> 21/tcp ftp is now closed — fixed."


def test_telegram_no_change_and_first_scan() -> None:
    """The no-change and first-scan sentences read as in the plain renderer."""
    unchanged = with_changes(make_report())
    text = "\n".join(
        render_telegram(Reply(kind=ReplyKind.REPORT, text="", report=unchanged), audience=Role.USER)
    )
    assert text.splitlines()[2] == "No change since the scan 3 days ago."
    first = "\n".join(
        render_telegram(
            Reply(kind=ReplyKind.REPORT, text="", report=make_report()), audience=Role.USER
        )
    )
    assert first.splitlines()[2] == FIRST_SCAN


@pytest.mark.parametrize("audience", [Role.USER, Role.AGENT])
@pytest.mark.parametrize("value", TELEGRAM_HOSTILE, ids=range(len(TELEGRAM_HOSTILE)))
def test_telegram_hostile_changes_stay_escaped(value: str, audience: Role) -> None:
    """Links, tags, entities and huge strings in changed services show as text in valid HTML."""
    report = with_changes(
        make_report(),
        opened=[PortChange(port=1, protocol="tcp", service=value, severity=Severity.HIGH)],
        closed=[PortChange(port=2, protocol=value, service=value, severity=Severity.CRITICAL)],
        changed=[ServiceChange(port=3, protocol="tcp", before=value, after=value)],
        not_seen=[PortChange(port=4, protocol="tcp", service=value)],
    )
    chunks = render_telegram(
        Reply(kind=ReplyKind.REPORT, text="", report=report), audience=audience
    )
    text = check_messages(chunks)
    assert "<a" not in "".join(chunks)
    assert "is now closed — fixed." in text


@pytest.mark.parametrize("value", ["http", "<b>&amp;" * HUGE])
def test_telegram_huge_change_lists_fit(value: str) -> None:
    """Thousands of changes still fit MAX_MESSAGES messages within Telegram's limit."""
    report = huge_changes(make_report(), value)
    chunks = render_telegram(
        Reply(kind=ReplyKind.REPORT, text="", report=report), audience=Role.AGENT
    )
    assert len(chunks) <= MAX_MESSAGES
    text = check_messages(chunks)
    assert "Since the scan 3 days ago:" in text


# Slack ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", [True, False])
def test_slack_summary_follows_the_header(agent: bool) -> None:
    """The summary section comes right after the header and its facts, then the good news."""
    report = with_changes(
        make_report(),
        opened=[change(23, "telnet", Severity.CRITICAL)],
        closed=[change(21, "ftp", Severity.HIGH)],
        changed=[ServiceChange(port=22, protocol="tcp", before="ssh a", after="ssh b")],
    )
    message = render_slack(Reply(kind=ReplyKind.REPORT, text="", report=report), agent=agent)
    check_message(message)
    check_inert(message)
    assert [block["type"] for block in message.blocks[:4]] == [
        "header", "context", "section", "section",
    ]  # fmt: skip
    assert sections(message)[:2] == [
        "*Since the scan 3 days ago:* new: `23/tcp telnet`; closed: `21/tcp ftp`; "
        "changed: `22/tcp` `ssh a` → `ssh b`",
        "*Good news:* `21/tcp ftp` is now closed — fixed.",
    ]


def test_slack_no_change_and_first_scan() -> None:
    """The no-change and first-scan sentences read as in the plain renderer."""
    unchanged = render_slack(
        Reply(kind=ReplyKind.REPORT, text="", report=with_changes(make_report()))
    )
    assert sections(unchanged)[0] == "No change since the scan 3 days ago."
    first = render_slack(Reply(kind=ReplyKind.REPORT, text="", report=make_report()))
    assert sections(first)[0] == FIRST_SCAN


@pytest.mark.parametrize("value", SLACK_HOSTILE, ids=range(len(SLACK_HOSTILE)))
def test_slack_hostile_changes_stay_inert(value: str) -> None:
    """Mentions, links, fences and 100 KB strings in changed services ping no one and fit."""
    report = with_changes(
        hostile_report(value),
        opened=[PortChange(port=1, protocol=value, service=value, severity=Severity.HIGH)],
        closed=[PortChange(port=2, protocol=value, service=value, severity=Severity.CRITICAL)],
        changed=[ServiceChange(port=3, protocol=value, before=value, after=value)],
        not_seen=[PortChange(port=4, protocol=value, service=value)],
    )
    message = render_slack(Reply(kind=ReplyKind.REPORT, text="", report=report), agent=True)
    text = check_message(message)
    check_inert(message)
    assert "is now closed — fixed." in text


@pytest.mark.parametrize("value", ["http", ("<!channel>&`" * HUGE)[:HUGE]])
def test_slack_huge_change_lists_fit(value: str) -> None:
    """Thousands of changes stay within Slack's section and block limits, saying what is left."""
    report = huge_changes(make_report(findings=[], open_ports=[]), value)
    message = render_slack(Reply(kind=ReplyKind.REPORT, text="", report=report, job_id="job-1"))
    check_message(message)
    check_inert(message)
    summary = sections(message)[0]
    assert summary.startswith("*Since the scan 3 days ago:* new: ")
    assert "more; closed: " in summary
    assert "more closed ports that had serious findings" in sections(message)[1]


# end to end -----------------------------------------------------------------------------------

TELNET_PORT = 2323
FTP_PORT = 2121
TELNET_SERVICE = LabService("telnet", TELNET_PORT, b"\r\nBusyBox v1.31.1 router login: ", "telnet")
FTP_SERVICE = LabService("ftp", FTP_PORT, b"220 (vsFTPd 3.0.3)\r\n", "ftp")


@pytest.fixture
def undeduped(settings: Settings) -> Iterator[Runtime]:
    """A runtime that never answers from a stored report (PORTPATROL_DEDUPE_MINUTES=0)."""
    with runtime(
        settings.model_copy(update={"dedupe_minutes": 0}),
        operator=Requester(platform="cli", user="tester"),
    ) as built:
        yield built


def scan_lab(
    chat: Chat, rt: Runtime, address: str, services: Sequence[LabService], profile: str = ""
) -> tuple[ScanReport, str]:
    """Serve ``services`` on the lab address, scan it through the chat; return report and text."""
    with LabHost(address, services):
        reply = chat.scan(address, profile)
    assert reply.kind is ReplyKind.REPORT, reply.text
    assert reply.report is not None
    stored = rt.reports.get(reply.report.job_id)
    assert stored == reply.report
    return reply.report, render_plain(reply)


@pytest.mark.nmap
def test_stopping_and_starting_a_lab_service_shows_closed_then_new(
    undeduped: Runtime, worker: WorkerProcess, lab_address: str
) -> None:
    """Real worker and nmap: telnet stopped reads "closed — fixed", started again reads "new"."""
    rt = undeduped
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="history diff test")
    chat = open_chat(rt, rt.operator)
    try:
        first, text = scan_lab(chat, rt, lab_address, [TELNET_SERVICE, FTP_SERVICE])
        assert {(port.port, port.service) for port in first.open_ports} == {
            (TELNET_PORT, "telnet"),
            (FTP_PORT, "ftp"),
        }
        assert first.changes is None
        assert FIRST_SCAN in text.splitlines()

        other_profile, _ = scan_lab(chat, rt, lab_address, [FTP_SERVICE], "standard")
        assert other_profile.profile == "standard"
        assert other_profile.changes is None  # the quick scans are no baseline for it

        closed, text = scan_lab(chat, rt, lab_address, [FTP_SERVICE])
        changes = closed.changes
        assert changes is not None
        assert changes.previous_job_id == first.job_id
        assert changes.previous_finished_at == first.finished_at
        assert changes.closed == [change(TELNET_PORT, "telnet", Severity.CRITICAL)]
        assert (changes.opened, changes.changed, changes.not_seen) == ([], [], [])
        assert f"closed: {TELNET_PORT}/tcp telnet" in text
        assert f"Good news: {TELNET_PORT}/tcp telnet is now closed — fixed." in text.splitlines()

        reopened, text = scan_lab(chat, rt, lab_address, [TELNET_SERVICE, FTP_SERVICE])
        changes = reopened.changes
        assert changes is not None
        assert changes.previous_job_id == closed.job_id
        assert changes.opened == [change(TELNET_PORT, "telnet", Severity.CRITICAL)]
        assert (changes.closed, changes.changed, changes.not_seen) == ([], [], [])
        assert f"new: {TELNET_PORT}/tcp telnet" in text

        again, text = scan_lab(chat, rt, lab_address, [TELNET_SERVICE, FTP_SERVICE])
        assert again.changes is not None
        assert again.changes.nothing_changed
        assert any(line.startswith("No change since the scan ") for line in text.splitlines())
        document = rt.reports.get(again.job_id)
        assert document is not None
        assert document.to_document()["changes"]["previous_job_id"] == reopened.job_id
    finally:
        chat.session.close()
