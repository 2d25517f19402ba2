"""Tests for bot.core.render: terminal-safe text and the plain-text report."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bot.core.messages import Reply, ReplyKind
from bot.core.render import MAX_FIELD, printable, render_reply, render_report
from workers.models import (
    Contact,
    Finding,
    Guidance,
    NmapInfo,
    OpenPort,
    Requester,
    Risk,
    ScanReport,
    Severity,
)

UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
HUGE = 100_000
STARTED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
FINISHED = datetime(2026, 3, 4, 5, 6, 12, tzinfo=UTC)

HOSTILE = [
    "\x1b[2J\x1b[31mRED\x1b[0m",
    "carriage\rreturn overwrites",
    "nul\x00byte",
    "bell\x07 and backspace\x08\x08",
    "c1 csi \x9b31m and nel \x85",
    "bidi \u202egpj.exe\u202c and rlm \u200f",
    "line\u2028separator\u2029paragraph",
    "zero\u200bwidth\ufeffbom",
    "osc \x1b]0;pwned title\x07",
    "<b>markup</b> <script>alert(1)</script> *bold* <!channel>",
    "-oX /tmp/pwn --script=evil",
    "x" * HUGE,
    ("\x1b[31m" * 10_000)[:HUGE],
]


def unsafe(text: str) -> list[str]:
    """Return every character of text a terminal could act on (newlines excepted)."""
    return [
        char for char in text if char != "\n" and unicodedata.category(char) in UNSAFE_CATEGORIES
    ]


def make_report(**changes: Any) -> ScanReport:
    """Build a report with one critical telnet finding and guidance; fields can be replaced."""
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "target": "127.0.0.23",
        "address": "127.0.0.23",
        "hostname": "adapter.lab.invalid",
        "profile": "quick",
        "requested_by": Requester(platform="console", user="tester"),
        "started_at": STARTED,
        "finished_at": FINISHED,
        "host_state": "up",
        "complete": True,
        "notes": [],
        "risk": Risk.CRITICAL,
        "findings": [
            Finding(
                port=23,
                protocol="tcp",
                service="telnet",
                product="Lingo VoIP config telnetd",
                version="1.0",
                severity=Severity.CRITICAL,
                title="Telnet is open",
                why="Telnet sends passwords in clear text.",
                advice="Ask your provider for a replacement adapter.",
            )
        ],
        "open_ports": [OpenPort(port=23, protocol="tcp", service="telnet")],
        "guidance": Guidance(
            provider="Lingo",
            matched_by="banner",
            contact=Contact(phone="+1 555 0100", url="https://lab.invalid/support"),
            message="Hello,\nmy adapter exposes telnet.",
            advice=["Call during business hours."],
        ),
        "nmap": NmapInfo(version="7.93", command="nmap -n", elapsed_s=4.5),
    }
    fields.update(changes)
    return ScanReport(**fields)


# printable ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lingo VoIP config telnetd", "Lingo VoIP config telnetd"),
        ("Zürich 東京 café", "Zürich 東京 café"),
        ("<b>markup</b> stays text", "<b>markup</b> stays text"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\rb", "a\\x0db"),
        ("a\nb", "a\\x0ab"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("nel\x85", "nel\\x85"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("tab\there", "tab here"),
        ("\u202egpj.exe", "\\u202egpj.exe"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("\ufeffbom", "\\ufeffbom"),
        ("zw\u200bsp", "zw\\u200bsp"),
        ("\ud800", "\\ud800"),
        ("\ue000", "\\ue000"),
        ("", ""),
    ],
)
def test_printable_escapes_controls(text: str, expected: str) -> None:
    """C0/C1 controls, ANSI escapes, bidi and other format characters are shown as escapes."""
    assert printable(text) == expected


@pytest.mark.parametrize(
    ("length", "limit", "expected_length"),
    [(10, 10, 10), (11, 10, 10), (MAX_FIELD, MAX_FIELD, MAX_FIELD), (HUGE, MAX_FIELD, MAX_FIELD)],
)
def test_printable_caps_length(length: int, limit: int, expected_length: int) -> None:
    """Text longer than the limit is cut to exactly the limit, ending in an ellipsis."""
    result = printable("y" * length, limit)
    assert len(result) == expected_length
    assert result.endswith("…") is (length > limit)


def test_printable_caps_after_escaping() -> None:
    """The cap applies to the escaped text, so escapes cannot blow past the limit."""
    result = printable("\x1b" * 1000, 50)
    assert len(result) == 50
    assert "\x1b" not in result


@given(st.text(), st.integers(min_value=1, max_value=500))
@hypothesis_settings(max_examples=300, deadline=None)
def test_printable_never_lets_a_control_through(text: str, limit: int) -> None:
    """For any text, printable() emits no control/format character and never exceeds its limit."""
    result = printable(text, limit)
    assert len(result) <= limit
    assert not unsafe(result)
    assert "\n" not in result


# render_report --------------------------------------------------------------------------------


def test_report_shows_risk_findings_and_contact() -> None:
    """A critical report names the risk, the open port, the finding and whom to contact."""
    text = render_report(make_report())
    lines = text.splitlines()
    assert lines[0] == "Risk: CRITICAL — 127.0.0.23 (adapter.lab.invalid), profile quick"
    assert lines[1] == "Scanned 2026-03-04 05:06 UTC in 4.5 s; host up"
    assert "Open ports: 23/tcp telnet" in lines
    assert "  CRITICAL 23/tcp telnet (Lingo VoIP config telnetd 1.0)" in lines
    assert "Whom to contact: Lingo — phone +1 555 0100, https://lab.invalid/support" in lines
    assert "  | my adapter exposes telnet." in lines


def test_complete_report_without_open_ports_says_so() -> None:
    """A complete scan with nothing open says no open ports were found."""
    text = render_report(make_report(risk=Risk.NONE, findings=[], open_ports=[], guidance=None))
    assert "No open ports found among the ports this profile checks." in text
    assert "INCOMPLETE" not in text
    assert "clean bill" not in text


def test_incomplete_report_is_not_a_clean_bill() -> None:
    """An incomplete scan with nothing seen warns that this is not a clean bill."""
    report = make_report(
        risk=Risk.NONE,
        findings=[],
        open_ports=[],
        guidance=None,
        complete=False,
        notes=["host timed out: results are partial, closed-looking ports may be open"],
    )
    text = render_report(report)
    assert text.splitlines()[1].endswith("; INCOMPLETE")
    assert "not a clean bill" in text
    assert "No open ports found" not in text
    assert "Note: host timed out: results are partial" in text


@pytest.mark.parametrize(
    ("risk", "shown"),
    [
        (Risk.NONE, False),
        (Risk.LOW, True),
        (Risk.MEDIUM, True),
        (Risk.HIGH, True),
        (Risk.CRITICAL, True),
    ],
)
def test_whom_to_contact_hidden_when_risk_is_none(risk: Risk, shown: bool) -> None:
    """With no risk there is no one to call: the contact section appears only for real risk."""
    text = render_report(make_report(risk=risk))
    assert ("Whom to contact" in text) is shown
    assert ("Message to send them:" in text) is shown


def hostile_report(value: str) -> ScanReport:
    """A report whose every free-text field, including the guidance, carries value."""
    return make_report(
        target=value[:256],
        address=value,
        hostname=value,
        profile=value,
        notes=[value, value],
        findings=[
            Finding(
                port=23,
                protocol=value,
                service=value,
                product=value,
                version=value,
                severity=Severity.CRITICAL,
                title=value,
                why=value,
                advice=value,
                rule=value,
            )
        ],
        open_ports=[OpenPort(port=23, protocol=value, service=value)],
        guidance=Guidance(
            provider=value,
            matched_by="banner",
            contact=Contact(phone=value, url=value, email=value, hours=value),
            message=value,
            advice=[value],
        ),
        nmap=NmapInfo(version=value, command=value, elapsed_s=1.0),
    )


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_report_never_emits_a_control_and_stays_bounded(value: str) -> None:
    """Escapes, CR, NUL, bidi and 100 KB strings in any field render as bounded, inert text."""
    text = render_report(hostile_report(value))
    assert not unsafe(text)
    assert len(text) < 12_000
    assert len(text.splitlines()) < 60


def test_guidance_message_lines_are_each_escaped() -> None:
    """Each line of the provider message is quoted and escaped on its own."""
    guidance = Guidance(
        provider="Lab",
        matched_by="default",
        contact=Contact(),
        message="first\x1b[31m\r\nsecond\u202e",
        advice=[],
    )
    lines = render_report(make_report(guidance=guidance)).splitlines()
    assert "Whom to contact: Lab" in lines
    assert "  | first\\x1b[31m" in lines
    assert "  | second\\u202e" in lines


@given(
    st.text(max_size=400),
    st.text(max_size=400),
    st.text(max_size=400),
    st.text(max_size=400),
)
@hypothesis_settings(max_examples=100, deadline=None)
def test_any_report_text_renders_without_controls(
    hostname: str, product: str, note: str, message: str
) -> None:
    """Whatever text the host, the notes or the guidance hold, the rendering has no raw control."""
    finding = Finding(
        port=21,
        protocol="tcp",
        service=product,
        product=product,
        severity=Severity.HIGH,
        title=product,
        why=note,
        advice=message,
    )
    guidance = Guidance(
        provider=product, matched_by="banner", contact=Contact(url=note), message=message
    )
    report = make_report(
        hostname=hostname or None,
        notes=[note],
        risk=Risk.HIGH,
        findings=[finding],
        guidance=guidance,
    )
    assert not unsafe(render_report(report))


# render_reply ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [(ReplyKind.REFUSED, "Refused: "), (ReplyKind.FAILED, "Scan failed: "), (ReplyKind.TEXT, "")],
)
def test_render_reply_prefixes_and_escapes(kind: ReplyKind, prefix: str) -> None:
    """Replies get their kind's prefix and each line is escaped and capped."""
    text = render_reply(Reply(kind=kind, text="bad \x1b[31mthing\nsecond\x00" + "z" * HUGE))
    first, second = text.split("\n")
    assert first == prefix + "bad \\x1b[31mthing"
    assert second.startswith("second\\x00zz")
    assert len(second) == 2000
    assert not unsafe(text)


def test_render_reply_with_report_appends_the_report() -> None:
    """A report reply renders as the report, preceded by any text."""
    report = make_report()
    assert render_reply(Reply(kind=ReplyKind.REPORT, text="", report=report)) == render_report(
        report
    )
    with_text = render_reply(Reply(kind=ReplyKind.REPORT, text="Result:", report=report))
    assert with_text == "Result:\n" + render_report(report)
