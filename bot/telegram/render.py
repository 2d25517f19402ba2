"""Telegram HTML rendering of replies and reports: escaped, well-formed, split to fit.

Telegram's HTML parse mode turns ``<b>``, ``<pre>``, ``<a href>`` and a few more tags into
formatting, so everything that came from the scanned host, the user or a data file goes through
``escape`` (``printable`` first, then HTML escaping): a banner such as
``<a href="https://evil.example">login</a>`` shows as text. Every line built here opens and closes
its own tags, which lets ``split_html`` cut a long reply between lines without breaking markup.
Pure functions: no python-telegram-bot. Imports: ``bot.core``, ``workers.models``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

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
from workers.models import Finding, PortChange, Risk, Role, ScanReport, ServiceChange

MESSAGE_LIMIT = 4096
"""Telegram's cap on one message's text, in UTF-16 code units after entity parsing."""
MAX_MESSAGES = 8
"""A reply never becomes more messages than this: fewer items are listed until it fits."""
MAX_MESSAGE_LINES = 100
"""Lines of the ready-to-send provider message shown; a longer one is cut with a note."""

ELLIPSIS = "…"
_CUT_NOTICE = "… cut here: the rest is too long for a chat."
_EMPTY_NOTICE = "(empty reply)"
# Each step lists fewer findings, ports and notes; the first rendering that fits is sent.
_LISTED_STEPS = (MAX_LISTED, 20, 10, 5, 2, 1)
_PREFIXES = {
    ReplyKind.REFUSED: "<b>Refused:</b> ",
    ReplyKind.FAILED: "<b>Scan failed:</b> ",
}
# A whole tag, an entity, or one character: the units a long line may be cut between.
_TOKEN = re.compile(r"<[^<>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);|.", re.DOTALL)
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^<>]*>\Z")
_ANY_TAG = re.compile(r"<[^<>]*>")


def _printable(text: str, limit: int) -> str:
    # printable() only ever lengthens what it keeps, so its first limit + 1 characters decide
    # the result: slicing first keeps a 100 KB banner from being scanned again for every field.
    return printable(text[: limit + 1], limit)


def escape(text: str, limit: int = MAX_FIELD) -> str:
    """Return text as inert Telegram HTML: controls shown as escapes, capped, markup escaped."""
    return html.escape(_printable(text, limit), quote=True)


def _units(text: str) -> int:
    # Telegram counts UTF-16 code units: a character outside the BMP (an emoji) counts twice.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _is_blank(line: str) -> bool:
    # Telegram refuses a message with no visible text, so "<pre> </pre>" counts as blank too.
    return not _ANY_TAG.sub("", line).strip()


def _closing(open_tags: Sequence[str]) -> str:
    return "".join(f"</{name}>" for name in reversed(open_tags))


def _cut(line: str, limit: int) -> str:
    """Cut one over-long HTML line between tags and entities, close what it opened, end in "…"."""
    kept: list[str] = []
    used = 0
    open_tags: list[str] = []
    closing = 0
    budget = limit - _units(ELLIPSIS)
    for match in _TOKEN.finditer(line):
        token = match.group()
        tags, tags_closing = open_tags, closing
        tag = _TAG.match(token) if token.startswith("<") else None
        if tag is not None:
            name = tag.group(2).lower()
            if not tag.group(1):
                tags, tags_closing = [*open_tags, name], closing + len(name) + 3
            elif open_tags and open_tags[-1] == name:
                tags, tags_closing = open_tags[:-1], closing - len(name) - 3
        size = _units(token)
        if used + size + tags_closing > budget:
            break
        kept.append(token)
        used += size
        open_tags, closing = tags, tags_closing
    return "".join(kept) + ELLIPSIS + _closing(open_tags)


def _fit(line: str, limit: int) -> str:
    if _units(line) <= limit:
        return line
    return "" if _is_blank(line) else _cut(line, limit)


def split_html(lines: Sequence[str], limit: int = MESSAGE_LIMIT) -> list[str]:
    """Join self-contained HTML lines with newlines into messages of at most ``limit`` units.

    A message ends only between two lines, so a line that opens a tag must close it (a line may
    hold newlines of its own, as a ``<pre>`` block does). A line longer than the limit is cut
    between tags and entities and ends in "…". Lines with no visible text at the start or end of a
    message are dropped: Telegram refuses an empty message, and a leading gap looks broken.
    """
    if limit < _units(ELLIPSIS):
        raise ValueError(f"limit must be at least {_units(ELLIPSIS)}")
    chunks: list[str] = []
    current: list[str] = []
    used = 0

    def flush() -> None:
        while current and _is_blank(current[-1]):
            current.pop()
        if current:
            chunks.append("\n".join(current))
        current.clear()

    for raw in lines:
        line = _fit(raw, limit)
        size = _units(line)
        if current and used + 1 + size > limit:
            flush()
        if not current:
            if _is_blank(line):
                continue
            used = size
        else:
            used += 1 + size
        current.append(line)
    flush()
    return chunks


def _pack(pieces: Sequence[str], separator: str, budget: int) -> list[str]:
    """Join escaped pieces with a separator into lines of at most ``budget`` units each."""
    packed: list[str] = []
    current: list[str] = []
    used = 0
    gap = _units(separator)
    for piece in pieces:
        size = _units(piece)
        if current and used + gap + size > budget:
            packed.append(separator.join(current) + separator.rstrip())
            current, used = [], 0
        used += size + (gap if current else 0)
        current.append(piece)
    if current:
        packed.append(separator.join(current))
    return packed


def _pre_blocks(rows: Sequence[str], budget: int) -> list[str]:
    """Group escaped rows into ``<pre>`` blocks of at most ``budget`` units, each one closed."""
    wrapper = _units("<pre></pre>")
    return [f"<pre>{block}</pre>" for block in _pack(rows, "\n", budget - wrapper)]


def _more(count: int, listed: int, what: str) -> list[str]:
    return [f"… and {count - listed} more {what}"] if count > listed else []


def _when(report: ScanReport) -> str:
    return report.finished_at.strftime("%Y-%m-%d %H:%M UTC")


def _port_label(finding: Finding) -> str:
    if finding.protocol == "tcp":
        return f"port {finding.port}"
    return f"port {finding.port}/{escape(finding.protocol, 8)}"


def _change_port(port: PortChange) -> str:
    return f"{port.port}/{escape(port.protocol, 8)} {escape(port.service, 40) or '?'}"


def _change_service(change: ServiceChange) -> str:
    return (
        f"{change.port}/{escape(change.protocol, 8)} "
        f"{escape(change.before, 100) or '?'} → {escape(change.after, 100) or '?'}"
    )


def _changes(report: ScanReport, listed: int, limit: int) -> list[str]:
    """Return the summary of what changed since the previous scan, packed into short lines."""
    changes = report.changes
    if changes is None:
        return [html.escape(FIRST_SCAN)]
    lead = html.escape(changes_lead(report, changes))
    if changes.nothing_changed:
        return [lead]
    categories = [
        ("new", [_change_port(port) for port in changes.opened]),
        ("closed", [_change_port(port) for port in changes.closed]),
        ("changed", [_change_service(change) for change in changes.changed]),
        (not_seen_label(report, changes), [_change_port(port) for port in changes.not_seen]),
    ]
    groups: list[list[str]] = []
    for label, items in categories:
        if not items:
            continue
        shown = items[:listed]
        if len(items) > listed:
            shown[-1] += f" and {len(items) - listed} more"
        shown[0] = f"{html.escape(label)}: {shown[0]}"
        groups.append(_pack(shown, ", ", limit // 4))
    line = f"<b>{lead}</b> " + "; ".join(group[0] for group in groups)
    # One line when it is short, as the plain renderer has it; a long list gets a line per part.
    if all(len(group) == 1 for group in groups) and _units(line) <= limit // 4:
        lines = [line]
    else:
        lines = [f"<b>{lead}</b>", *(text for group in groups for text in group)]
    fixed = fixed_ports(changes)
    lines += [
        f"<b>Good news:</b> {_change_port(port)} is now closed — fixed." for port in fixed[:listed]
    ]
    return lines + _more(len(fixed), listed, "closed ports that had serious findings")


def _head(report: ScanReport, audience: Role, listed: int, limit: int) -> list[str]:
    # Reports are read back from Redis, which anyone with access to it can write: even the
    # fields our worker fills from its own data (address, profile, protocol) are escaped.
    # The hostname sits in <code> so that Telegram does not turn a hostile rDNS name into a link.
    name = f" (<code>{escape(report.hostname, 100)}</code>)" if report.hostname else ""
    technical = audience is not Role.USER
    profile = f", profile {escape(report.profile, 32)}" if technical else ""
    lines = [
        f"<b>Risk: {report.risk.value.upper()}</b> — {escape(report.address, 45)}{name}{profile}"
    ]
    if technical:
        lines.append(
            f"Scanned {_when(report)} in {report.nmap.elapsed_s:.1f} s; host "
            f"{escape(report.host_state, 16)}" + ("" if report.complete else "; <b>INCOMPLETE</b>")
        )
    else:
        lines.append(
            f"Scanned {_when(report)}"
            + ("" if report.complete else "; <b>incomplete: the results are partial</b>")
        )
    lines += _changes(report, listed, limit)
    lines += [f"Note: {escape(note, 300)}" for note in report.notes[:listed]]
    lines += _more(len(report.notes), listed, "notes")
    if not report.open_ports:
        if report.complete:
            lines.append("No open ports found among the ports this profile checks.")
        else:
            lines.append(
                "No open ports seen, but the scan did not complete: this is not a clean bill."
            )
        return lines
    ports = [
        f"{port.port}/{escape(port.protocol, 8)} {escape(port.service, 40) or '?'}"
        for port in report.open_ports[:listed]
    ]
    if len(report.open_ports) > listed:
        ports[-1] += f" and {len(report.open_ports) - listed} more"
    ports[0] = "Open ports: " + ports[0]
    # Ports go on as many lines as they need, so a host answering everywhere splits cleanly.
    return lines + _pack(ports, ", ", limit // 4)


def _user_findings(findings: Sequence[Finding], listed: int) -> list[str]:
    lines: list[str] = []
    for finding in findings[:listed]:
        lines += [
            "",
            f"<b>{escape(finding.title, 300)}</b> ({_port_label(finding)})",
            f"What it means: {escape(finding.why, 1000)}",
            f"What to do: {escape(finding.advice, 1000)}",
        ]
    return lines + _more(len(findings), listed, "findings")


def _table_rows(findings: Sequence[Finding]) -> list[str]:
    """Return the findings table as escaped rows, columns padded on the visible text."""
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
    return [
        html.escape(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
            + ("  " + row[3] if row[3] else ""),
            quote=True,
        ).rstrip()
        for row in cells
    ]


def _agent_findings(findings: Sequence[Finding], listed: int, limit: int) -> list[str]:
    shown = findings[:listed]
    lines = ["", "<b>Findings</b>", *_pre_blocks(_table_rows(shown), limit)]
    lines += _more(len(findings), listed, "findings (the JSON report has them all)")
    for finding in shown:
        lines += [
            "",
            f"<b>{finding.port}/{escape(finding.protocol, 8)}</b> {escape(finding.title, 300)}",
            f"Why: {escape(finding.why, 1000)}",
            f"What to do: {escape(finding.advice, 1000)}",
        ]
    return lines


def _guidance(report: ScanReport, listed: int, limit: int) -> list[str]:
    guidance = report.guidance
    # With nothing worth raising, "whom to contact" would only send people on a pointless call.
    if guidance is None or report.risk is Risk.NONE:
        return []
    contact = guidance.contact
    # Contact details come from a data file: shown in <code>, as text Telegram will not linkify.
    ways = [
        f"phone <code>{escape(contact.phone, 60)}</code>" if contact.phone else "",
        f"<code>{escape(contact.url, 200)}</code>" if contact.url else "",
        f"<code>{escape(contact.email, 100)}</code>" if contact.email else "",
    ]
    reach = ", ".join(way for way in ways if way)
    lines = [
        "",
        f"Whom to contact: <b>{escape(guidance.provider, 100)}</b>"
        + (f" — {reach}" if reach else ""),
    ]
    lines += [f"• {escape(item, 500)}" for item in guidance.advice[:listed]]
    lines += _more(len(guidance.advice), listed, "tips")
    if not guidance.message.strip():
        return lines
    message = guidance.message.splitlines()
    # A blank line inside the message stays a line: one space keeps it in its <pre> block.
    rows = [escape(line, 500) or " " for line in message[:MAX_MESSAGE_LINES]]
    lines.append("Message to send them:")
    # One <pre> block per group of lines, so a message longer than one chat message still
    # arrives as closed, copyable blocks.
    lines += _pre_blocks(rows, limit)
    if len(message) > MAX_MESSAGE_LINES:
        lines.append(f"… and {len(message) - MAX_MESSAGE_LINES} more lines")
    return lines


def _report_lines(report: ScanReport, audience: Role, listed: int, limit: int) -> list[str]:
    lines = _head(report, audience, listed, limit)
    if report.findings:
        if audience is Role.USER:
            lines += _user_findings(report.findings, listed)
        else:
            lines += _agent_findings(report.findings, listed, limit)
    return lines + _guidance(report, listed, limit)


def _reply_lines(reply: Reply, audience: Role, listed: int, limit: int) -> list[str]:
    lines = [escape(line, 2000) for line in reply.text.splitlines()]
    prefix = _PREFIXES.get(reply.kind)
    if prefix is not None:
        lines = [(prefix + (lines[0] if lines else "")).rstrip(), *lines[1:]]
    if reply.report is not None:
        lines += _report_lines(reply.report, audience, listed, limit)
    return lines


def _leading(lines: Sequence[str], limit: int) -> list[str]:
    """Return the lines that could still be shown: more than MAX_MESSAGES messages can hold."""
    # Two neighbouring messages always hold more than one limit between them, so this many units
    # always fill more than MAX_MESSAGES messages; the rest would be cut anyway.
    budget = 2 * (MAX_MESSAGES + 1) * limit
    taken: list[str] = []
    used = 0
    for line in lines:
        if used > budget:
            break
        taken.append(line)
        used += min(_units(line), limit) + 1
    return taken


def render_reply(reply: Reply, *, audience: Role, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Render a reply as one or more Telegram HTML messages, each within ``limit`` UTF-16 units.

    Home users (``Role.USER``) get plain language; agents and admins get the technical table.
    A report too long for ``MAX_MESSAGES`` messages lists fewer items until it fits; whatever
    still does not fit is cut, and the last message says so.
    """
    chunks: list[str] = []
    steps = _LISTED_STEPS if reply.report is not None else _LISTED_STEPS[:1]
    for listed in steps:
        lines = _reply_lines(reply, audience, listed, limit)
        shown = _leading(lines, limit)
        chunks = split_html(shown, limit)
        if len(shown) == len(lines) and len(chunks) <= MAX_MESSAGES:
            return chunks or split_html([escape(_EMPTY_NOTICE)], limit)
    notice = split_html([escape(_CUT_NOTICE)], limit)
    return chunks[: MAX_MESSAGES - len(notice)] + notice
