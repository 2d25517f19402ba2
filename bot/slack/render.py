"""Slack Block Kit rendering of replies and reports: escaped, inert and within Slack's limits.

Slack's mrkdwn treats ``&``, ``<`` and ``>`` as control characters (``<!channel>``, ``<@U123>``,
``<https://evil.example|click>``), so everything that came from the scanned host, the user or a
data file goes through ``escape``: ``printable`` first, then exactly the three replacements Slack
documents. Scanned strings shown in tables sit in code spans or code blocks, where ``*bold*`` and
``_italic_`` stay inert; a backtick in the data is shown as a look-alike (U+02CB) there, so data
can never close the span or block it sits in; elsewhere only a fence (three backticks) in the
data is shown that way, so it cannot open a code block either. Every mrkdwn text object is
``verbatim``: Slack then neither turns bare URLs into links nor parses bare ``@here``. We emit no
links and no mentions at all.

Block Kit rejects a message that breaks its limits, so every part of a report is bounded by
construction: fields are capped as sent (entities included), each part gets a fixed number of
blocks, and what does not fit is named in a note ("… and 460 more findings"). Lengths are
measured in UTF-16 code units, which never undercounts Slack's character count.
Pure functions: no slack_sdk. Imports: ``bot.core``, ``workers.models``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.core.messages import Reply, ReplyKind
from bot.core.render import (
    FIRST_SCAN,
    MAX_FIELD,
    MAX_LISTED,
    changes_lead,
    fixed_ports,
    not_seen_label,
    printable,
)
from workers.models import Finding, PortChange, Risk, ScanReport, ServiceChange

MAX_BLOCKS = 50
"""Slack's cap on blocks in one message."""
SECTION_LIMIT = 3000
"""Slack's cap on a section's (and any mrkdwn text object's) text."""
HEADER_LIMIT = 150
"""Slack's cap on a header block's plain text."""
BUTTON_TEXT_LIMIT = 75
"""Slack's cap on a button's label."""
BUTTON_VALUE_LIMIT = 2000
"""Slack's cap on a button's value."""
CONTEXT_ELEMENTS = 10
"""Slack's cap on the elements of one context block."""
FALLBACK_LIMIT = 3000
"""Our cap on the notification fallback ``text`` (Slack truncates at 40,000; short reads better)."""
MAX_MESSAGE_LINES = 100
"""Lines of the ready-to-send provider message shown; a longer one is cut with a note."""

# Blocks each part of a report may use. With two for the lead text (a section and its cut note)
# and one each for the header, context, changes, "fixed" news, notes, ports, the two dividers,
# the "more findings" note, the contact section, the "more lines" note and the buttons, a report
# needs at most 14 + 6 + 12 + 4 = 36 blocks: well under MAX_BLOCKS.
TABLE_SECTIONS = 6
DETAIL_SECTIONS = 12
MESSAGE_SECTIONS = 4
TEXT_SECTIONS = 10
"""Sections a text reply (help, status, allowlist) may use before it is cut with a note."""

ELLIPSIS = "…"
FENCE = "```"
_CUT_NOTICE = "… cut here: the rest is too long for a chat."
_EMPTY_NOTICE = "(empty reply)"
_TABLE_TITLE = "*Findings*"
_PREFIXES = {ReplyKind.REFUSED: "*Refused:* ", ReplyKind.FAILED: "*Scan failed:* "}
_FALLBACK_PREFIXES = {ReplyKind.REFUSED: "Refused: ", ReplyKind.FAILED: "Scan failed: "}
# An entity we emitted, or one character: the units an escaped text may be cut between.
_TOKEN = re.compile(r"&(?:amp|lt|gt);|.", re.DOTALL)
# Job ids we mint: anything else (read back from a tampered store) gets no buttons.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Header text is plain_text, which Slack never parses, but how it treats entities there is not
# documented: show look-alikes instead, so neither markup nor entities reach the header.
# (fullwidth ampersand, single angle quotation marks).
_PLAIN_LOOKALIKES = str.maketrans({"&": "\uff06", "<": "\u2039", ">": "\u203a"})
# A backtick would close the code span or block that scanned text sits in.
# (U+02CB, modifier letter grave accent).
_CODE_LOOKALIKES = str.maketrans({"`": "\u02cb"})
_BROKEN_FENCE = FENCE.translate(_CODE_LOOKALIKES)

Block = dict[str, Any]


@dataclass(frozen=True)
class SlackMessage:
    """One Slack message: Block Kit ``blocks`` and the escaped plain ``text`` fallback."""

    text: str
    blocks: list[Block]


def _printable(text: str, limit: int) -> str:
    # printable() only ever lengthens what it keeps, so its first limit + 1 characters decide
    # the result: slicing first keeps a 100 KB banner from being scanned again for every field.
    return printable(text[: limit + 1], limit)


def _escape_markup(text: str) -> str:
    # Only these three, as Slack documents: it decodes no other entity, so escaping quotes
    # (as html.escape does) would show "&#x27;" in the chat.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape(text: str, limit: int = MAX_FIELD) -> str:
    """Return text as inert Slack mrkdwn: controls shown as escapes, capped, ``&<>`` escaped."""
    return _escape_markup(_printable(text, limit))


def _units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut(text: str, limit: int) -> str:
    """Cut escaped text to at most ``limit`` units between entities, ending in "…"."""
    if _units(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    budget = limit - _units(ELLIPSIS)
    for match in _TOKEN.finditer(text):
        size = _units(match.group())
        if used + size > budget:
            break
        kept.append(match.group())
        used += size
    return "".join(kept) + ELLIPSIS


def _field(text: str, limit: int) -> str:
    """Escape text and cap it at ``limit`` both as shown and as sent (entities included)."""
    # A fence in a note or a title would turn the rest of its section into a code block, and
    # every fence is then one of ours: our code blocks can be told from data and always close.
    return _cut(escape(text, limit).replace(FENCE, _BROKEN_FENCE), limit)


def _code(text: str, limit: int) -> str:
    """Escape text for a code span or block: as ``_field``, with backticks shown as U+02CB."""
    return _field(text.translate(_CODE_LOOKALIKES), limit)


def _span(text: str, limit: int) -> str:
    """Return text as an inline code span, or nothing when it is empty."""
    code = _code(text, limit)
    return f"`{code}`" if code else ""


def _bold(text: str) -> str:
    return f"*{text}*" if text.strip() else text


def _plain(text: str, limit: int) -> str:
    return _cut(_printable(text, limit).translate(_PLAIN_LOOKALIKES), limit)


# blocks ---------------------------------------------------------------------------------------


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(texts: Sequence[str]) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text) for text in texts[:CONTEXT_ELEMENTS]]}


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": _plain(text, HEADER_LIMIT)}}


def _divider() -> Block:
    return {"type": "divider"}


def _button(label: str, action_id: str, value: str) -> Block:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label[:BUTTON_TEXT_LIMIT]},
        "action_id": action_id,
        "value": value[:BUTTON_VALUE_LIMIT],
    }


def _actions(job_id: str) -> Block:
    return {
        "type": "actions",
        "elements": [
            _button("Scan again", "scan_again", job_id),
            _button("Full scan", "full_scan", job_id),
        ],
    }


# packing --------------------------------------------------------------------------------------


def _groups(pieces: Sequence[str], separator: str, budget: int) -> list[list[str]]:
    """Group pieces, in order, so each group joined with ``separator`` fits ``budget`` units."""
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    gap = _units(separator)
    for raw in pieces:
        piece = _cut(raw, budget)
        size = _units(piece)
        if current and used + gap + size > budget:
            groups.append(current)
            current = []
        used = used + gap + size if current else size
        current.append(piece)
    if current:
        groups.append(current)
    return groups


def _texts(groups: Sequence[Sequence[str]], separator: str) -> list[str]:
    # Slack refuses an empty or blank text object, and a leading blank line looks broken.
    joined = (separator.join(group).strip("\n") for group in groups)
    return [text for text in joined if text.strip()]


def _fitting(pieces: Sequence[str], separator: str, budget: int, sections: int) -> int:
    """Return how many leading pieces fit in ``sections`` groups of ``budget`` units."""
    return sum(len(group) for group in _groups(pieces, separator, budget)[:sections])


def _listed(
    pieces: Sequence[str], total: int, what: str, budget: int, separator: str = "\n"
) -> str:
    """Join as many pieces as fit one text of ``budget`` units, naming the ``total`` left out."""
    for kept in range(len(pieces), -1, -1):
        more = [f"… and {total - kept} more {what}".rstrip()] if total > kept else []
        groups = _groups([*pieces[:kept], *more], separator, budget)
        if len(groups) <= 1:
            return "".join(_texts(groups, separator))
    return ""  # pragma: no cover - kept == 0 leaves one short line, which always fits


def _code_sections(rows: Sequence[str], title: str, sections: int) -> tuple[list[str], int]:
    """Put rows in code blocks, one closed block per section, the first headed by ``title``."""
    budget = SECTION_LIMIT - _units(title) - 1 - 2 * len(FENCE)
    groups = _groups(rows, "\n", budget)[:sections]
    texts = [FENCE + "\n".join(group) + FENCE for group in groups]
    if texts:
        texts[0] = f"{title}\n{texts[0]}"
    return texts, sum(len(group) for group in groups)


def _line_sections(lines: Sequence[str], sections: int) -> list[Block]:
    """Put lines in at most ``sections`` sections; a cut says so in a closing context block."""
    groups = _groups(lines, "\n", SECTION_LIMIT)
    blocks = [_section(text) for text in _texts(groups[:sections], "\n")]
    if len(groups) > sections:
        blocks.append(_context([_CUT_NOTICE]))
    return blocks


def _reply_lines(reply: Reply, limit: int) -> list[str]:
    # Each line holds at least one unit plus its newline: more lines than this never fit.
    raw = reply.text.splitlines()[: TEXT_SECTIONS * SECTION_LIMIT]
    lines = [_field(line, limit) for line in raw]
    prefix = _PREFIXES.get(reply.kind)
    if prefix is not None:
        lines = [(prefix + (lines[0] if lines else "")).rstrip(), *lines[1:]]
    return lines


# reports --------------------------------------------------------------------------------------


def _when(report: ScanReport) -> str:
    return report.finished_at.strftime("%Y-%m-%d %H:%M UTC")


def _facts(report: ScanReport, agent: bool) -> list[str]:
    # Reports are read back from Redis, which anyone with access to it can write: even the
    # fields our worker fills from its own data (address, profile, protocol) are escaped.
    facts: list[str] = []
    if report.guidance is not None:
        facts.append("Provider: " + _bold(_field(report.guidance.provider, 100)))
    if report.hostname:
        facts.append("Host: " + _span(report.hostname, 100))
    if agent:
        facts.append("Profile: " + (_span(report.profile, 32) or "?"))
        facts.append(
            f"Scanned {_when(report)} in {report.nmap.elapsed_s:.1f} s; "
            f"host {_field(report.host_state, 16)}"
        )
        facts.append("complete" if report.complete else "*INCOMPLETE*")
    else:
        facts.append(f"Scanned {_when(report)}")
        facts.append("complete" if report.complete else "*incomplete: the results are partial*")
    return facts


def _change_port(port: PortChange) -> str:
    return _span(
        f"{port.port}/{_printable(port.protocol, 8)} {_printable(port.service, 40) or '?'}", 60
    )


def _change_service(change: ServiceChange) -> str:
    return (
        _span(f"{change.port}/{_printable(change.protocol, 8)}", 20)
        + f" {_span(change.before, 100) or '?'} → {_span(change.after, 100) or '?'}"
    )


def _changes(report: ScanReport) -> list[Block]:
    """Return what changed since the previous scan: one section, plus one for fixed ports."""
    changes = report.changes
    if changes is None:
        return [_section(FIRST_SCAN)]
    lead = changes_lead(report, changes)
    if changes.nothing_changed:
        return [_section(lead)]
    categories = [
        ("new", [_change_port(port) for port in changes.opened]),
        ("closed", [_change_port(port) for port in changes.closed]),
        ("changed", [_change_service(change) for change in changes.changed]),
        (not_seen_label(report, changes), [_change_port(port) for port in changes.not_seen]),
    ]
    present = [(label, items) for label, items in categories if items]
    head = _bold(lead)
    # Each part gets an equal share of the section, so the whole always fits SECTION_LIMIT.
    share = (SECTION_LIMIT - _units(head) - 1) // len(present)
    parts = []
    for label, items in present:
        lead_in = f"{label}: "
        budget = share - _units(lead_in) - 2
        parts.append(lead_in + _listed(items[:MAX_LISTED], len(items), "", budget, ", "))
    blocks = [_section(f"{head} " + "; ".join(parts))]
    fixed = fixed_ports(changes)
    if fixed:
        news = [
            f"*Good news:* {_change_port(port)} is now closed — fixed."
            for port in fixed[:MAX_LISTED]
        ]
        more = "closed ports that had serious findings"
        blocks.append(_section(_listed(news, len(fixed), more, SECTION_LIMIT)))
    return blocks


def _overview(report: ScanReport) -> list[Block]:
    blocks: list[Block] = []
    notes = [f"Note: {_field(note, 300)}" for note in report.notes[:MAX_LISTED]]
    if notes:
        blocks.append(_section(_listed(notes, len(report.notes), "notes", SECTION_LIMIT)))
    if not report.open_ports:
        if report.complete:
            text = "No open ports found among the ports this profile checks."
        else:
            text = "No open ports seen, but the scan did not complete: this is not a clean bill."
        return [*blocks, _section(text)]
    lead = "Open ports: "
    ports = [
        _span(
            f"{port.port}/{_printable(port.protocol, 8)} {_printable(port.service, 40) or '?'}", 60
        )
        for port in report.open_ports[:MAX_LISTED]
    ]
    listed = _listed(ports, len(report.open_ports), "", SECTION_LIMIT - _units(lead), ", ")
    return [*blocks, _section(lead + listed)]


def _port_label(finding: Finding) -> str:
    if finding.protocol == "tcp":
        return f"port {finding.port}"
    return f"port {finding.port}/{_field(finding.protocol, 8)}"


def _detail(finding: Finding, agent: bool) -> str:
    title = _bold(_field(finding.title, 150))
    if agent:
        return (
            f"{title} — {_span(f'{finding.port}/{_printable(finding.protocol, 8)}', 20)}\n"
            f"Why: {_field(finding.why, 1000)}\n"
            f"What to do: {_field(finding.advice, 1000)}"
        )
    return (
        f"{title} ({_port_label(finding)})\n"
        f"What it means: {_field(finding.why, 1000)}\n"
        f"What to do: {_field(finding.advice, 1000)}"
    )


def _table_rows(findings: Sequence[Finding]) -> list[str]:
    """Return the findings table as escaped code-block rows, columns padded on the visible text."""
    cells = [("SEVERITY", "PORT", "SERVICE", "PRODUCT/VERSION")]
    for finding in findings:
        what = " ".join(part for part in (finding.product, finding.version) if part)
        cells.append(
            (
                finding.severity.value.upper(),
                f"{finding.port}/{_printable(finding.protocol, 8)}",
                _printable(finding.service, 20) or "unknown",
                _printable(what, 60),
            )
        )
    widths = [max(len(row[column]) for row in cells) for column in range(3)]
    rows = (
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + ("  " + row[3] if row[3] else "")
        for row in cells
    )
    return [_escape_markup(row.rstrip().translate(_CODE_LOOKALIKES)) for row in rows]


def _findings(report: ScanReport, agent: bool, job_id: str | None) -> list[Block]:
    findings = report.findings
    shown = findings[:MAX_LISTED]
    details = [_detail(finding, agent) for finding in shown]
    title = "*Why it matters*"
    budget = SECTION_LIMIT - _units(title) - 1
    kept = _fitting(details, "\n\n", budget, DETAIL_SECTIONS)
    if agent:
        # The table's heading row is one more row than there are findings.
        _, rows_kept = _code_sections(_table_rows(shown), _TABLE_TITLE, TABLE_SECTIONS)
        kept = min(kept, rows_kept - 1)
    blocks: list[Block] = [_divider()]
    if agent:
        # Fewer rows can only narrow the columns, so the rows kept still fit where they did.
        table, _ = _code_sections(_table_rows(shown[:kept]), _TABLE_TITLE, TABLE_SECTIONS)
        blocks += [_section(text) for text in table]
    groups = _groups(details[:kept], "\n\n", budget)
    texts = _texts(groups, "\n\n")
    if texts:
        texts[0] = f"{title}\n{texts[0]}"
    blocks += [_section(text) for text in texts]
    if len(findings) > kept:
        job = _code(job_id or report.job_id, 64)
        where = f" (`/scan status {job}`)" if job else ""
        left = len(findings) - kept
        blocks.append(_context([f"… and {left} more findings — see the JSON report{where}"]))
    return blocks


def _guidance(report: ScanReport) -> list[Block]:
    guidance = report.guidance
    # With nothing worth raising, "whom to contact" would only send people on a pointless call.
    if guidance is None or report.risk is Risk.NONE:
        return []
    contact = guidance.contact
    # Contact details come from a data file: shown as code, never as a link Slack would follow.
    ways = [
        f"phone {_span(contact.phone, 60)}" if contact.phone else "",
        _span(contact.url, 200) if contact.url else "",
        _span(contact.email, 100) if contact.email else "",
    ]
    reach = ", ".join(way for way in ways if way.strip())
    head = "Whom to contact: " + (_bold(_field(guidance.provider, 100)) or "?")
    head += f" — {reach}" if reach else ""
    tips = [f"• {_field(item, 500)}" for item in guidance.advice[:MAX_LISTED]]
    if tips:
        budget = SECTION_LIMIT - _units(head) - 1
        head += "\n" + _listed(tips, len(guidance.advice), "tips", budget)
    blocks = [_divider(), _section(head)]
    if not guidance.message.strip():
        return blocks
    lines = guidance.message.splitlines()
    # A blank line inside the message stays a line: one space keeps it in its code block.
    rows = [_code(line, 500) or " " for line in lines[:MAX_MESSAGE_LINES]]
    # One closed code block per section, so a long message still arrives as copyable blocks.
    texts, kept = _code_sections(rows, "Message to send them:", MESSAGE_SECTIONS)
    blocks += [_section(text) for text in texts]
    if len(lines) > kept:
        blocks.append(_context([f"… and {len(lines) - kept} more lines"]))
    return blocks


def _report_blocks(report: ScanReport, agent: bool, job_id: str | None) -> list[Block]:
    risk = report.risk.value.upper()
    blocks = [
        _header(f"Risk: {risk} — {_printable(report.address, 45)}"),
        _context(_facts(report, agent)),
        *_changes(report),
        *_overview(report),
    ]
    if report.findings:
        blocks += _findings(report, agent, job_id)
    return blocks + _guidance(report)


def _fallback(reply: Reply) -> str:
    """Return the notification text: the reply's lines, or a one-line summary of the report."""
    prefix = _FALLBACK_PREFIXES.get(reply.kind, "")
    lines = [_field(line, 500) for line in reply.text.splitlines()[:FALLBACK_LIMIT]]
    report = reply.report
    if report is not None:
        summary = f"Risk: {report.risk.value.upper()} — {_field(report.address, 45)}"
        if report.findings:
            summary += ": " + _field(report.findings[0].title, 200)
            if len(report.findings) > 1:
                summary += f" and {len(report.findings) - 1} more findings"
        lines.append(summary)
    text = _cut((prefix + "\n".join(lines)).strip(), FALLBACK_LIMIT)
    return text or _EMPTY_NOTICE


def render_reply(reply: Reply, *, job_buttons: bool = True, agent: bool = True) -> SlackMessage:
    """Render a reply as one Slack message: Block Kit blocks plus a plain fallback text.

    Agents get the technical table; ``agent=False`` gives a home user's plain language. A report
    with a job id we minted gets "Scan again" and "Full scan" buttons unless ``job_buttons`` is
    false. Whatever the input, the message stays within Slack's Block Kit limits.
    """
    report = reply.report
    if report is None:
        blocks = _line_sections(_reply_lines(reply, 2000), TEXT_SECTIONS)
        return SlackMessage(text=_fallback(reply), blocks=blocks or [_section(_EMPTY_NOTICE)])
    job_id = reply.job_id if reply.job_id and _JOB_ID.fullmatch(reply.job_id) else None
    blocks = _line_sections(_reply_lines(reply, 1000), 1)
    blocks += _report_blocks(report, agent, job_id)
    if job_buttons and job_id is not None:
        blocks.append(_actions(job_id))
    return SlackMessage(text=_fallback(reply), blocks=blocks)
