"""Tests for bot.telegram.render: escaped, well-formed Telegram HTML that fits Telegram's limit."""

from __future__ import annotations

import html
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_render import HOSTILE, HUGE, hostile_report, make_report

from bot.core.messages import Reply, ReplyKind
from bot.core.render import printable
from bot.telegram.render import MAX_MESSAGES, MESSAGE_LIMIT, escape, render_reply, split_html
from workers.models import (
    Contact,
    Finding,
    Guidance,
    OpenPort,
    Risk,
    Role,
    ScanReport,
    Severity,
)

ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "s", "code", "pre", "a", "blockquote", "tg-spoiler"}
ALLOWED_ENTITIES = {"lt", "gt", "amp", "quot"}
# Telegram allows no formatting inside <code>, and only <code> inside <pre>.
ALLOWED_INSIDE = {"pre": {"code"}, "code": set()}
EVIL_LINK = '<a href="https://evil.example">login</a>'
TELEGRAM_HOSTILE = [
    EVIL_LINK,
    "</code><b>",
    "</pre>",
    "&amp; &lt;b&gt; & &#60;",
    "<!channel> <@U012AB>",
    "<tg-spoiler>hidden</tg-spoiler>",
    "<pre><code class='language-x'>",
    "quote \" apostrophe ' and <br/>",
    "emoji 😀" * 2000,
    *HOSTILE,
]
AUDIENCES = [Role.USER, Role.AGENT, Role.ADMIN]


def utf16_length(text: str) -> int:
    """Return the length Telegram measures: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class TelegramHtml(HTMLParser):
    """Collects the visible text of one message and every way it breaks Telegram's HTML rules."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open_tags: list[str] = []
        self.visible: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record an opening tag, refusing tags and attributes Telegram does not support."""
        if tag not in ALLOWED_TAGS:
            self.errors.append(f"unsupported tag <{tag}>")
        if attrs and not (tag == "a" and [name for name, _ in attrs] == ["href"]):
            self.errors.append(f"unexpected attributes on <{tag}>: {attrs}")
        if self.open_tags and tag not in ALLOWED_INSIDE.get(self.open_tags[-1], ALLOWED_TAGS):
            self.errors.append(f"<{tag}> inside <{self.open_tags[-1]}>")
        self.open_tags.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Refuse self-closing tags: Telegram has none."""
        self.errors.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        """Match a closing tag against the innermost open one."""
        if not self.open_tags or self.open_tags[-1] != tag:
            self.errors.append(f"</{tag}> does not close {self.open_tags}")
        else:
            self.open_tags.pop()

    def handle_data(self, data: str) -> None:
        """Keep visible text; a raw <, > or & in it means something escaped escaping."""
        if any(char in data for char in "<>&"):
            self.errors.append(f"raw markup character in {data[:80]!r}")
        self.visible.append(data)

    def handle_entityref(self, name: str) -> None:
        """Accept only the named entities Telegram knows."""
        if name not in ALLOWED_ENTITIES:
            self.errors.append(f"unsupported entity &{name};")
        self.visible.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        """Accept numeric entities, which Telegram supports."""
        self.visible.append(html.unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        """Refuse comments."""
        self.errors.append(f"comment {data[:80]!r}")

    def handle_decl(self, decl: str) -> None:
        """Refuse declarations such as <!channel>."""
        self.errors.append(f"declaration {decl[:80]!r}")

    def unknown_decl(self, data: str) -> None:
        """Refuse CDATA and other declarations."""
        self.errors.append(f"declaration {data[:80]!r}")

    def handle_pi(self, data: str) -> None:
        """Refuse processing instructions."""
        self.errors.append(f"processing instruction {data[:80]!r}")


def visible_text(chunk: str) -> str:
    """Return a message's visible text, failing if it is not well-formed Telegram HTML."""
    parser = TelegramHtml()
    parser.feed(chunk)
    parser.close()
    assert not parser.errors, (parser.errors, chunk[:500])
    assert not parser.open_tags, (f"unclosed {parser.open_tags}", chunk[-500:])
    return "".join(parser.visible)


def check_messages(chunks: Sequence[str], limit: int = MESSAGE_LIMIT) -> str:
    """Assert every message is well-formed, non-empty and within the limit; return all text."""
    assert chunks
    texts = []
    for chunk in chunks:
        assert utf16_length(chunk) <= limit
        text = visible_text(chunk)
        assert text.strip(), chunk
        texts.append(text)
    return "\n".join(texts)


def report_reply(report: ScanReport, text: str = "") -> Reply:
    """Wrap a report in a final REPORT reply."""
    return Reply(kind=ReplyKind.REPORT, text=text, report=report)


def finding(index: int, **changes: Any) -> Finding:
    """Build a realistic finding for port ``1000 + index``; fields can be replaced."""
    fields: dict[str, Any] = {
        "port": 1000 + index,
        "protocol": "tcp",
        "service": "telnet",
        "product": "BusyBox telnetd",
        "version": "1.36",
        "severity": Severity.HIGH,
        "title": f"Finding number {index} is open",
        "why": "Something answers here that sends passwords as plain text across the internet.",
        "advice": "Ask your provider to close it or replace the device, and change its password.",
    }
    fields.update(changes)
    return Finding(**fields)


# escape ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lingo VoIP", "Lingo VoIP"),
        (EVIL_LINK, "&lt;a href=&quot;https://evil.example&quot;&gt;login&lt;/a&gt;"),
        ("</code><b>", "&lt;/code&gt;&lt;b&gt;"),
        ("&amp;", "&amp;amp;"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("\x1b[31mred\x00", "\\x1b[31mred\\x00"),
        ("a\rb\nc", "a\\x0db\\x0ac"),
        ("\u202egpj.exe", "\\u202egpj.exe"),
        ("it's", "it&#x27;s"),
    ],
)
def test_escape_makes_markup_and_controls_inert(text: str, expected: str) -> None:
    """Markup, entities, control characters and bidi overrides come out as visible text."""
    assert escape(text) == expected


def test_escape_caps_before_escaping() -> None:
    """The cap applies to the visible text, so an entity is never cut in half."""
    result = escape("&" * HUGE, 10)
    assert result == "&amp;" * 9 + "…"


@given(st.text(), st.integers(min_value=1, max_value=300))
@hypothesis_settings(max_examples=200, deadline=None)
def test_escape_round_trips_to_printable(text: str, limit: int) -> None:
    """For any text, escape() is well-formed and shows exactly what printable() shows."""
    result = escape(text, limit)
    assert visible_text(result) == printable(text, limit)


# report content by audience -------------------------------------------------------------------


def test_home_user_gets_plain_language() -> None:
    """Home users see the finding as a bold title with what it means and what to do, no table."""
    chunks = render_reply(report_reply(make_report()), audience=Role.USER)
    text = "\n".join(chunks)
    lines = text.splitlines()
    assert lines[0] == "<b>Risk: CRITICAL</b> — 127.0.0.23 (<code>adapter.lab.invalid</code>)"
    assert "<b>Telnet is open</b> (port 23)" in lines
    assert "What it means: Telnet sends passwords in clear text." in lines
    assert "What to do: Ask your provider for a replacement adapter." in lines
    assert "<pre>SEVERITY" not in text
    assert "profile quick" not in text
    check_messages(chunks)


@pytest.mark.parametrize("audience", [Role.AGENT, Role.ADMIN])
def test_agents_get_the_technical_table(audience: Role) -> None:
    """Agents and admins see a padded findings table in <pre> and why/advice per finding."""
    chunks = render_reply(report_reply(make_report()), audience=audience)
    text = "\n".join(chunks)
    assert "<pre>SEVERITY  PORT    SERVICE  PRODUCT/VERSION\n" in text
    assert "CRITICAL  23/tcp  telnet   Lingo VoIP config telnetd 1.0</pre>" in text
    assert "Why: Telnet sends passwords in clear text." in text
    assert "Scanned 2026-03-04 05:06 UTC in 4.5 s; host up" in text
    assert ", profile quick" in text
    assert "What it means" not in text
    check_messages(chunks)


@pytest.mark.parametrize("audience", AUDIENCES)
def test_guidance_names_contact_and_quotes_the_message(audience: Role) -> None:
    """Both audiences get whom to contact, the tips and the message in a copyable <pre> block."""
    text = "\n".join(render_reply(report_reply(make_report()), audience=audience))
    lines = text.splitlines()
    assert (
        "Whom to contact: <b>Lingo</b> — phone <code>+1 555 0100</code>, "
        "<code>https://lab.invalid/support</code>"
    ) in lines
    assert "• Call during business hours." in lines
    assert "Message to send them:\n<pre>Hello,\nmy adapter exposes telnet.</pre>" in text
    assert "<a" not in text


def test_lead_text_comes_first() -> None:
    """A report reply's text (such as the age of a cached result) leads the first message."""
    reply = report_reply(make_report(), text="was scanned 3 minutes ago")
    chunks = render_reply(reply, audience=Role.USER)
    assert chunks[0].startswith("was scanned 3 minutes ago\n<b>Risk: CRITICAL</b>")


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize(
    ("risk", "shown"),
    [(Risk.NONE, False), (Risk.LOW, True), (Risk.HIGH, True), (Risk.CRITICAL, True)],
)
def test_whom_to_contact_hidden_when_risk_is_none(audience: Role, risk: Risk, shown: bool) -> None:
    """With no risk there is no one to call: the contact section appears only for real risk."""
    text = "\n".join(render_reply(report_reply(make_report(risk=risk)), audience=audience))
    assert ("Whom to contact" in text) is shown
    assert ("Message to send them:" in text) is shown


@pytest.mark.parametrize("audience", AUDIENCES)
def test_no_open_ports_wording_follows_the_plain_renderer(audience: Role) -> None:
    """A complete clean scan says no open ports were found; an incomplete one says it is partial."""
    clean = make_report(risk=Risk.NONE, findings=[], open_ports=[], guidance=None)
    text = "\n".join(render_reply(report_reply(clean), audience=audience))
    assert "No open ports found among the ports this profile checks." in text
    assert "incomplete" not in text.lower()
    partial = make_report(
        risk=Risk.NONE,
        findings=[],
        open_ports=[],
        guidance=None,
        complete=False,
        notes=["host timed out: results are partial"],
    )
    chunks = render_reply(report_reply(partial), audience=audience)
    text = "\n".join(chunks)
    assert "not a clean bill" in text
    assert "incomplete" in text.lower()
    assert "Note: host timed out: results are partial" in text
    check_messages(chunks)


def test_blank_guidance_message_is_left_out() -> None:
    """A provider without a message template gets no empty "message to send" block."""
    guidance = Guidance(provider="Lab", matched_by="default", contact=Contact(), message=" \n ")
    text = "\n".join(render_reply(report_reply(make_report(guidance=guidance)), audience=Role.USER))
    assert "Whom to contact: <b>Lab</b>" in text
    assert "Message to send them" not in text
    assert "<pre>" not in text


# other reply kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [
        (ReplyKind.REFUSED, "<b>Refused:</b> "),
        (ReplyKind.FAILED, "<b>Scan failed:</b> "),
        (ReplyKind.TEXT, ""),
        (ReplyKind.ACCEPTED, ""),
        (ReplyKind.PROGRESS, ""),
    ],
)
def test_reply_kinds_get_their_prefix_and_escaped_lines(kind: ReplyKind, prefix: str) -> None:
    """Refusals and failures get a bold prefix; every kind keeps its lines and escapes them."""
    reply = Reply(kind=kind, text=f"bad {EVIL_LINK}\x1b[31m\nsecond </pre> line")
    chunks = render_reply(reply, audience=Role.USER)
    assert chunks == [
        prefix + "bad &lt;a href=&quot;https://evil.example&quot;&gt;login&lt;/a&gt;\\x1b[31m\n"
        "second &lt;/pre&gt; line"
    ]
    check_messages(chunks)


@pytest.mark.parametrize("text", ["", "\n\n", "   "])
def test_empty_reply_still_gives_one_message(text: str) -> None:
    """Telegram refuses an empty message, so an empty reply renders as a short placeholder."""
    chunks = render_reply(Reply(kind=ReplyKind.TEXT, text=text), audience=Role.USER)
    assert len(chunks) == 1
    check_messages(chunks)


def test_long_text_reply_splits_on_line_boundaries() -> None:
    """A text reply longer than one message arrives as several, each line whole and in order."""
    lines = [f"line {number}: " + "é" * 100 for number in range(200)]
    chunks = render_reply(Reply(kind=ReplyKind.TEXT, text="\n".join(lines)), audience=Role.AGENT)
    assert 1 < len(chunks) <= MAX_MESSAGES
    assert "\n".join(chunks) == "\n".join(lines)
    check_messages(chunks)


def test_huge_text_reply_is_capped_at_max_messages() -> None:
    """Even a reply of megabytes becomes at most MAX_MESSAGES messages, ending in a cut note."""
    text = "\n".join(["&<>" * 700] * 2000)
    chunks = render_reply(Reply(kind=ReplyKind.TEXT, text=text), audience=Role.USER)
    assert len(chunks) == MAX_MESSAGES
    assert "too long for a chat" in chunks[-1]
    check_messages(chunks)


# hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("value", TELEGRAM_HOSTILE, ids=range(len(TELEGRAM_HOSTILE)))
def test_hostile_report_renders_as_inert_text(value: str, audience: Role) -> None:
    """Markup, entities, escapes, bidi and 100 KB strings in any field never become markup."""
    report = hostile_report(value)
    chunks = render_reply(report_reply(report, text=value), audience=audience)
    joined = "\n".join(chunks)
    visible = check_messages(chunks)
    assert '<a href="https://evil' not in joined
    assert "<!channel>" not in joined
    assert "<tg-spoiler>" not in joined
    assert "\x1b" not in joined
    assert "\x00" not in joined
    assert "\r" not in joined
    assert "\u202e" not in joined
    assert len(chunks) <= MAX_MESSAGES
    for item in report.findings:
        assert printable(item.title)[:40] in visible


def test_hostile_banner_shows_as_text_in_the_agent_table() -> None:
    """A banner carrying a link and a closing tag shows escaped inside the <pre> table."""
    banner = finding(1, product=EVIL_LINK, version="</code><b>", service="</pre>")
    report = make_report(findings=[banner])
    text = "\n".join(render_reply(report_reply(report), audience=Role.AGENT))
    assert (
        "&lt;/pre&gt;   &lt;a href=&quot;https://evil.example&quot;&gt;login&lt;/a&gt; "
        "&lt;/code&gt;&lt;b&gt;"
    ) in text
    check_messages(render_reply(report_reply(report), audience=Role.AGENT))


def test_hostile_guidance_message_stays_inside_its_pre_block() -> None:
    """A provider message that tries to close its <pre> block and open a link stays text."""
    message = f"Hello </pre>{EVIL_LINK}<pre>\n&amp; <!channel>\n</code><b>bold"
    guidance = Guidance(provider=EVIL_LINK, matched_by="banner", contact=Contact(), message=message)
    chunks = render_reply(report_reply(make_report(guidance=guidance)), audience=Role.USER)
    visible = check_messages(chunks)
    assert f"Hello </pre>{EVIL_LINK}<pre>\n&amp; <!channel>\n</code><b>bold" in visible
    assert f"Whom to contact: {EVIL_LINK}" in visible


def test_contact_details_are_never_links() -> None:
    """A provider's URL and email appear as <code> text, never as an <a> Telegram would follow."""
    contact = Contact(phone="+1 555", url="https://evil.example/x?a=1&b=2", email="a@evil.example")
    guidance = Guidance(provider="P", matched_by="default", contact=contact, message="hi")
    text = "\n".join(render_reply(report_reply(make_report(guidance=guidance)), audience=Role.USER))
    assert "<code>https://evil.example/x?a=1&amp;b=2</code>" in text
    assert "<code>a@evil.example</code>" in text
    assert "<a" not in text


# size limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", AUDIENCES)
def test_huge_reports_give_a_bounded_number_of_messages(audience: Role) -> None:
    """2000 open ports and 500 findings fit in MAX_MESSAGES messages that say what is left out."""
    report = make_report(
        findings=[finding(index) for index in range(500)],
        open_ports=[OpenPort(port=port, protocol="tcp", service="http") for port in range(2000)],
    )
    chunks = render_reply(report_reply(report), audience=audience)
    assert len(chunks) <= MAX_MESSAGES <= 10
    visible = check_messages(chunks)
    assert "more findings" in visible
    assert " more" in visible.split("Open ports:")[1].split("\n\n")[0]
    assert "Finding number 0 is open" in visible
    assert "Whom to contact" in visible


@pytest.mark.parametrize("audience", AUDIENCES)
def test_huge_hostile_reports_stay_bounded(audience: Role) -> None:
    """500 findings whose every field is 100 KB of markup still fit in MAX_MESSAGES messages."""
    value = ("<b>&" * HUGE)[:HUGE]
    hostile = hostile_report(value)
    report = hostile.model_copy(
        update={
            "findings": hostile.findings * 500,
            "open_ports": hostile.open_ports * 2000,
            "notes": [value] * 500,
        }
    )
    chunks = render_reply(report_reply(report), audience=audience)
    assert len(chunks) <= MAX_MESSAGES
    check_messages(chunks)


def test_long_message_to_provider_splits_into_closed_pre_blocks() -> None:
    """A provider message longer than a chat message arrives as several closed <pre> blocks."""
    message_lines = [f"{number:03} " + "😀 & <tag> " * 10 for number in range(60)]
    guidance = Guidance(
        provider="Lingo", matched_by="banner", contact=Contact(), message="\n".join(message_lines)
    )
    chunks = render_reply(report_reply(make_report(guidance=guidance)), audience=Role.USER)
    assert len(chunks) > 1
    visible = check_messages(chunks)
    assert all(line in visible for line in message_lines)
    assert sum(chunk.count("<pre>") for chunk in chunks) > 1
    # Python counts each emoji once, Telegram twice: the UTF-16 measure is the one that binds.
    assert max(utf16_length(chunk) for chunk in chunks) > max(len(chunk) for chunk in chunks)


@pytest.mark.parametrize("limit", [40, 100, 300, 1000])
@pytest.mark.parametrize("audience", AUDIENCES)
def test_any_limit_is_respected(limit: int, audience: Role) -> None:
    """With a smaller limit than Telegram's every message still fits and stays well-formed."""
    report = hostile_report(EVIL_LINK * 50)
    chunks = render_reply(report_reply(report), audience=audience, limit=limit)
    assert len(chunks) <= MAX_MESSAGES
    check_messages(chunks, limit)


# split_html -----------------------------------------------------------------------------------


def test_split_html_packs_lines_and_never_splits_one() -> None:
    """Lines are joined with newlines and a message ends only at a line boundary."""
    lines = ["<b>one</b>", "two", "<pre>three\nfour</pre>", "five"]
    assert split_html(lines, 100) == ["<b>one</b>\ntwo\n<pre>three\nfour</pre>\nfive"]
    assert split_html(lines, 22) == ["<b>one</b>\ntwo", "<pre>three\nfour</pre>", "five"]


def test_split_html_drops_blank_lines_at_message_edges() -> None:
    """No message starts or ends with a blank line, and no message is blank."""
    assert split_html(["", "a", "", "", "b", "<pre> </pre>", ""], 3) == ["a", "b"]
    assert split_html(["", " ", "<b></b>"]) == []


@pytest.mark.parametrize(
    ("line", "limit", "expected"),
    [
        ("<b>" + "x" * 50 + "</b>", 12, "<b>xxxx…</b>"),
        ("&amp;" * 20, 12, "&amp;&amp;…"),
        ("<pre>" + "&lt;" * 20 + "</pre>", 20, "<pre>&lt;&lt;…</pre>"),
        ("<b>bold</b> " + "y" * 50, 14, "<b>bold</b> y…"),
        ("<b>" + "x" * 50 + "</b>", 5, "…"),
        ("😀" * 50, 7, "😀😀😀…"),
    ],
)
def test_split_html_cuts_an_overlong_line_safely(line: str, limit: int, expected: str) -> None:
    """A line over the limit is cut between tags and entities, its tags closed, ending in "…"."""
    assert split_html([line], limit) == [expected]


def test_split_html_refuses_a_limit_too_small_for_anything() -> None:
    """A limit below one character cannot hold even the ellipsis."""
    with pytest.raises(ValueError, match="limit"):
        split_html(["a"], 0)


shown_text = st.text(min_size=1, max_size=30).filter(lambda text: escape(text).strip() != "")


@given(st.lists(shown_text, max_size=60), st.integers(min_value=210, max_value=2000))
@hypothesis_settings(max_examples=200, deadline=None)
def test_split_html_preserves_lines_and_order(texts: list[str], limit: int) -> None:
    """Lines that each fit come back whole, in order, with messages cut only between them."""
    lines = [escape(text) for text in texts]
    chunks = split_html(lines, limit)
    assert "\n".join(chunks) == "\n".join(lines)
    assert all(utf16_length(chunk) <= limit for chunk in chunks)


formatted_part = st.tuples(st.sampled_from(["", "b", "i", "code", "pre", "tg-spoiler"]), st.text())


@given(
    st.lists(st.lists(formatted_part, max_size=8), max_size=12),
    st.integers(min_value=1, max_value=400),
)
@hypothesis_settings(max_examples=200, deadline=None)
def test_split_html_output_is_always_well_formed(
    parts: list[list[tuple[str, str]]], limit: int
) -> None:
    """For any self-contained lines and any limit, messages are well-formed and within it."""
    lines = [
        "".join(
            f"<{tag}>{escape(text, 1000)}</{tag}>" if tag else escape(text, 1000)
            for tag, text in line
        )
        for line in parts
    ]
    chunks = split_html(lines, limit)
    for chunk in chunks:
        assert utf16_length(chunk) <= limit
        assert visible_text(chunk).strip()
    cut = [line for line in lines if utf16_length(line) > limit and visible_text(line).strip()]
    for line in cut:
        [chunk] = split_html([line], limit)
        shown = visible_text(chunk)
        assert shown.endswith("…")
        assert visible_text(line).startswith(shown[:-1])


# any report -----------------------------------------------------------------------------------

field_text = st.text(max_size=600)


@st.composite
def any_report(draw: st.DrawFn) -> ScanReport:
    """Draw a report whose host, rule, note and guidance texts are arbitrary unicode."""
    hostname, service, product, title, note, provider, message = (
        draw(field_text) for _ in range(7)
    )
    count = draw(st.integers(min_value=1, max_value=60))
    findings = [
        finding(
            index,
            protocol=service[:8] or "tcp",
            service=service,
            product=product,
            version=product,
            title=title,
            why=note,
            advice=message,
        )
        for index in range(count)
    ]
    guidance = Guidance(
        provider=provider,
        matched_by="banner",
        contact=Contact(phone=note, url=hostname, email=product),
        message=message,
        advice=[note, message],
    )
    return make_report(
        hostname=hostname or None,
        notes=[note],
        risk=Risk.HIGH,
        findings=findings,
        open_ports=[
            OpenPort(port=index, protocol=service, service=product) for index in range(count)
        ],
        guidance=guidance,
    )


@given(any_report(), field_text, st.sampled_from(AUDIENCES))
@hypothesis_settings(max_examples=150, deadline=None)
def test_any_report_renders_well_formed_and_within_the_limit(
    report: ScanReport, lead: str, audience: Role
) -> None:
    """Whatever text the host, the rules, the notes or the guidance hold, every message is valid."""
    chunks = render_reply(report_reply(report, text=lead), audience=audience)
    assert len(chunks) <= MAX_MESSAGES
    visible = check_messages(chunks)
    assert printable(report.findings[0].title)[:40] in visible
