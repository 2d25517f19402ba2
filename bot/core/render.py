"""Plain-text rendering of replies and reports, for the console and the CLI.

Everything that came from the scanned host or the user is passed through ``printable`` first:
a banner carrying terminal escape sequences must show as text, not repaint the operator's screen.
Imports: ``bot.core.messages``, ``workers.models``.
"""

from __future__ import annotations

import textwrap
import unicodedata
from datetime import datetime

from bot.core.messages import Reply, ReplyKind
from workers.models import (
    Finding,
    PortChange,
    ReportChanges,
    Risk,
    ScanReport,
    ServiceChange,
    Severity,
)

MAX_FIELD = 200
MAX_LISTED = 40
"""A host answering on every port must not produce a screenful per port: list this many."""
FIRST_SCAN = "First scan of this address with this profile on record: nothing to compare with yet."
FIXED_SEVERITIES = frozenset({Severity.CRITICAL, Severity.HIGH})
"""A closed port whose finding was this bad is good news, and the change summary says so."""


def _more(count: int) -> str:
    return f" and {count - MAX_LISTED} more" if count > MAX_LISTED else ""


def printable(text: str, limit: int = MAX_FIELD) -> str:
    """Return text safe for a terminal line: control characters shown as escapes, length capped."""
    out: list[str] = []
    for char in text:
        if char == "\t":
            out.append(" ")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    cleaned = "".join(out)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def describe_age(seconds: int) -> str:
    """Say how old something is in words."""
    if seconds < 90:
        return f"{seconds} seconds ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} minutes ago"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} hours ago"
    return f"{round(seconds / 86400)} days ago"


# The change summary's wording is shared by every renderer; none of it holds scanned text, so
# each renderer adds the escaped port labels itself.


def changes_lead(report: ScanReport, changes: ReportChanges) -> str:
    """Return the opening of the change summary: "Since the scan 3 days ago:" or "No change …"."""
    seconds = int((report.finished_at - changes.previous_finished_at).total_seconds())
    # Two workers' clocks may disagree by a little: a negative age reads as "0 seconds ago".
    age = describe_age(max(0, seconds))
    caveat = "" if changes.previous_complete else " (that scan was incomplete)"
    if changes.nothing_changed:
        return f"No change since the scan {age}{caveat}."
    return f"Since the scan {age}{caveat}:"


def not_seen_label(report: ScanReport, changes: ReportChanges) -> str:
    """Return the label for ports seen before but not now that are not claimed closed."""
    if not report.complete:
        reason = "this scan was incomplete"
    elif report.host_state != "up":
        reason = "this scan got no answer from the host"
    elif not changes.previous_complete:
        reason = "the previous scan was incomplete"
    else:
        reason = "this scan did not check their protocol"
    return f"not seen this time, not counted as closed because {reason}"


def fixed_ports(changes: ReportChanges) -> list[PortChange]:
    """Return the closed ports that had a critical or high finding: fixed, as far as we can see."""
    return [port for port in changes.closed if port.severity in FIXED_SEVERITIES]


def _port_label(port: PortChange) -> str:
    return f"{port.port}/{printable(port.protocol, 8)} {printable(port.service, 40) or '?'}"


def _service_label(change: ServiceChange) -> str:
    return (
        f"{change.port}/{printable(change.protocol, 8)} "
        f"{printable(change.before, 100) or '?'} → {printable(change.after, 100) or '?'}"
    )


def _listing(label: str, items: list[str]) -> str:
    return f"{label}: " + ", ".join(items[:MAX_LISTED]) + _more(len(items))


def _change_lines(report: ScanReport) -> list[str]:
    changes = report.changes
    if changes is None:
        return [FIRST_SCAN]
    lead = changes_lead(report, changes)
    if changes.nothing_changed:
        return [lead]
    categories = [
        ("new", [_port_label(port) for port in changes.opened]),
        ("closed", [_port_label(port) for port in changes.closed]),
        ("changed", [_service_label(change) for change in changes.changed]),
        (not_seen_label(report, changes), [_port_label(port) for port in changes.not_seen]),
    ]
    parts = [_listing(label, items) for label, items in categories if items]
    lines = [f"{lead} " + "; ".join(parts)]
    fixed = fixed_ports(changes)
    lines += [
        f"Good news: {_port_label(port)} is now closed — fixed." for port in fixed[:MAX_LISTED]
    ]
    if len(fixed) > MAX_LISTED:
        lines.append(f"  …{_more(len(fixed))} closed ports that had serious findings")
    return lines


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _finding_lines(finding: Finding) -> list[str]:
    what = " ".join(part for part in (finding.product, finding.version) if part)
    head = (
        f"  {finding.severity.value.upper():<8} {finding.port}/{printable(finding.protocol, 8)} "
        f"{printable(finding.service, 40) or 'unknown'}"
        + (f" ({printable(what, 80)})" if what else "")
    )
    wrap = textwrap.TextWrapper(width=96, initial_indent="      ", subsequent_indent="      ")
    return [
        head,
        *wrap.wrap(printable(finding.title, 300)),
        *wrap.wrap("Why: " + printable(finding.why, 1000)),
        *wrap.wrap("What to do: " + printable(finding.advice, 1000)),
    ]


def render_report(report: ScanReport) -> str:
    """Render a report as plain text: risk, findings, whom to contact and what to say."""
    name = f" ({printable(report.hostname, 100)})" if report.hostname else ""
    # Reports are read back from Redis, which anyone with access to it can write: even the
    # fields our worker fills from its own data (address, profile, protocol) go through printable.
    lines = [
        f"Risk: {report.risk.value.upper()} — {printable(report.address, 45)}{name}, "
        f"profile {printable(report.profile, 32)}",
        f"Scanned {_when(report.finished_at)} in {report.nmap.elapsed_s:.1f} s; "
        f"host {report.host_state}" + ("" if report.complete else "; INCOMPLETE"),
        *_change_lines(report),
    ]
    lines += [f"Note: {printable(note, 300)}" for note in report.notes]
    if not report.open_ports:
        if report.complete:
            lines.append("No open ports found among the ports this profile checks.")
        else:
            lines.append(
                "No open ports seen, but the scan did not complete: this is not a clean bill."
            )
    else:
        ports = ", ".join(
            f"{port.port}/{printable(port.protocol, 8)} {printable(port.service, 40) or '?'}"
            for port in report.open_ports[:MAX_LISTED]
        )
        lines.append(f"Open ports: {ports}" + _more(len(report.open_ports)))
    if report.findings:
        lines.append("Findings:")
        for finding in report.findings[:MAX_LISTED]:
            lines += _finding_lines(finding)
        if len(report.findings) > MAX_LISTED:
            lines.append(f"  …{_more(len(report.findings))} (the JSON report has them all)")
    guidance = report.guidance
    # With nothing worth raising, "whom to contact" would only send people on a pointless call.
    if guidance is not None and report.risk is not Risk.NONE:
        contact = guidance.contact
        ways = [
            f"phone {printable(contact.phone, 60)}" if contact.phone else "",
            printable(contact.url, 200) if contact.url else "",
            printable(contact.email, 100) if contact.email else "",
        ]
        reach = ", ".join(way for way in ways if way)
        lines.append(
            f"Whom to contact: {printable(guidance.provider, 100)}"
            + (f" — {reach}" if reach else "")
        )
        lines += [f"  - {printable(item, 500)}" for item in guidance.advice]
        lines.append("Message to send them:")
        lines += ["  | " + printable(line, 500) for line in guidance.message.splitlines() or [""]]
    return "\n".join(lines)


def render_reply(reply: Reply) -> str:
    """Render any reply as plain text."""
    prefix = {
        ReplyKind.REFUSED: "Refused: ",
        ReplyKind.FAILED: "Scan failed: ",
    }.get(reply.kind, "")
    text = prefix + "\n".join(printable(line, 2000) for line in reply.text.splitlines())
    if reply.report is not None:
        return (text + "\n" if text else "") + render_report(reply.report)
    return text
