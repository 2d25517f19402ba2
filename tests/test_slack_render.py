"""Tests for bot.slack.render: inert Slack mrkdwn in Block Kit that stays within Slack's limits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_render import HOSTILE, HUGE, hostile_report, make_report, unsafe

from bot.core.messages import Reply, ReplyKind
from bot.core.render import printable
from bot.slack.render import (
    BUTTON_TEXT_LIMIT,
    BUTTON_VALUE_LIMIT,
    CONTEXT_ELEMENTS,
    FALLBACK_LIMIT,
    HEADER_LIMIT,
    MAX_BLOCKS,
    SECTION_LIMIT,
    TEXT_SECTIONS,
    SlackMessage,
    escape,
    render_reply,
)
from workers.models import Contact, Finding, Guidance, OpenPort, Risk, ScanReport, Severity

EVIL_LINK = "<https://evil.example|click>"
SLACK_HOSTILE = [
    "<!channel>",
    "<!here>",
    "<!everyone> <!subteam^S123>",
    "<@U123>",
    "<#C123>",
    EVIL_LINK,
    "&lt;!channel&gt; &amp; &",
    "```",
    "`code` ```block``` ````",
    "*bold* _italic_ ~strike~ > quote",
    "@here @channel https://evil.example",
    "emoji 😀" * 2000,
    "".join(["<!channel>", "<@U123>", EVIL_LINK, "```", "\x1b[31m", "\x00", "\r", "\u202e"]),
    *HOSTILE,
]
ENTITY = re.compile(r"&(?:amp|lt|gt);")
FENCE = "```"
BOOLEANS = [True, False]


def units(text: str) -> int:
    """Return a text's length in UTF-16 code units, the strictest count Slack could apply."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def unescape(text: str) -> str:
    """Undo Slack's three escapes, as Slack does when it shows the text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def strings(node: Any) -> Iterator[str]:
    """Yield every string in a block tree, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def check_text(text_object: dict[str, Any], kind: str, limit: int) -> str:
    """Assert one text object is of the kind expected, non-blank and within the limit."""
    assert text_object["type"] == kind
    text = text_object["text"]
    assert isinstance(text, str)
    assert text.strip(), text_object
    assert units(text) <= limit
    if kind == "mrkdwn":
        # Without verbatim, Slack would turn bare URLs into links and parse bare @here.
        assert set(text_object) == {"type", "text", "verbatim"}
        assert text_object["verbatim"] is True
        # Every fence is ours: a code block opens at the start of a line, holds no other fence
        # and closes at the very end, so data can neither open nor close one.
        fences = text.count(FENCE)
        assert fences in (0, 2), text[:300]
        if fences:
            assert text.endswith(FENCE)
            assert text.startswith(FENCE) or "\n" + FENCE in text
    else:
        assert set(text_object) == {"type", "text"}
    return text


def check_message(message: SlackMessage) -> str:
    """Assert a message is JSON-ready and within every Block Kit limit; return all its text."""
    payload = {"text": message.text, "blocks": message.blocks}
    assert json.loads(json.dumps(payload)) == payload
    assert 1 <= len(message.blocks) <= MAX_BLOCKS
    assert message.text.strip()
    assert units(message.text) <= FALLBACK_LIMIT
    texts = [message.text]
    for block in message.blocks:
        kind = block["type"]
        if kind == "section":
            assert set(block) == {"type", "text"}
            texts.append(check_text(block["text"], "mrkdwn", SECTION_LIMIT))
        elif kind == "header":
            assert set(block) == {"type", "text"}
            texts.append(check_text(block["text"], "plain_text", HEADER_LIMIT))
        elif kind == "context":
            assert set(block) == {"type", "elements"}
            assert 1 <= len(block["elements"]) <= CONTEXT_ELEMENTS
            texts += [check_text(item, "mrkdwn", SECTION_LIMIT) for item in block["elements"]]
        elif kind == "actions":
            assert set(block) == {"type", "elements"}
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                assert set(button) == {"type", "text", "action_id", "value"}
                assert button["type"] == "button"
                texts.append(check_text(button["text"], "plain_text", BUTTON_TEXT_LIMIT))
                assert 1 <= len(button["action_id"]) <= 255
                assert 1 <= len(button["value"]) <= BUTTON_VALUE_LIMIT
        else:
            assert block == {"type": "divider"}
    return "\n".join(texts)


def check_inert(message: SlackMessage) -> None:
    """Assert no string in the message holds markup, a raw ``&`` or a control character."""
    for text in [message.text, *strings(message.blocks)]:
        # We emit no links, mentions or dates, so no < or > may appear at all.
        assert "<" not in text, text[:300]
        assert ">" not in text, text[:300]
        assert "&" not in ENTITY.sub("", text), text[:300]
        assert not unsafe(text), text[:300]


def sections(message: SlackMessage) -> list[str]:
    """Return the text of every section block."""
    return [block["text"]["text"] for block in message.blocks if block["type"] == "section"]


def contexts(message: SlackMessage) -> list[str]:
    """Return the text of every context element."""
    return [
        element["text"]
        for block in message.blocks
        if block["type"] == "context"
        for element in block["elements"]
    ]


def report_reply(report: ScanReport, text: str = "", job_id: str | None = "job-1") -> Reply:
    """Wrap a report in a final REPORT reply."""
    return Reply(kind=ReplyKind.REPORT, text=text, report=report, job_id=job_id)


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
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123> <#C123>", "&lt;@U123&gt; &lt;#C123&gt;"),
        (EVIL_LINK, "&lt;https://evil.example|click&gt;"),
        ("&lt;", "&amp;lt;"),
        ('it\'s "quoted"', 'it\'s "quoted"'),
        ("*bold* `code`", "*bold* `code`"),
        ("\x1b[31mred\x00", "\\x1b[31mred\\x00"),
        ("a\rb\nc", "a\\x0db\\x0ac"),
        ("\u202egpj.exe", "\\u202egpj.exe"),
    ],
)
def test_escape_makes_markup_and_controls_inert(text: str, expected: str) -> None:
    """Slack's three control characters are escaped, nothing else is, and controls show as text."""
    assert escape(text) == expected


def test_escape_caps_before_escaping() -> None:
    """The cap applies to the visible text, so an entity is never cut in half."""
    assert escape("<" * HUGE, 10) == "&lt;" * 9 + "…"


@given(st.text(), st.integers(min_value=1, max_value=300))
@hypothesis_settings(max_examples=200, deadline=None)
def test_escape_round_trips_to_printable(text: str, limit: int) -> None:
    """For any text, escape() holds no raw markup and shows exactly what printable() shows."""
    result = escape(text, limit)
    assert "<" not in result
    assert ">" not in result
    assert "&" not in ENTITY.sub("", result)
    assert unescape(result) == printable(text, limit)


# report content -------------------------------------------------------------------------------


def test_agent_report_has_header_context_table_and_buttons() -> None:
    """An agent's report leads with the risk header and facts, then the padded findings table."""
    message = render_reply(report_reply(make_report(notes=["UDP skipped"])))
    check_message(message)
    assert message.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Risk: CRITICAL — 127.0.0.23"},
    }
    assert contexts(message)[:5] == [
        "Provider: *Lingo*",
        "Host: `adapter.lab.invalid`",
        "Profile: `quick`",
        "Scanned 2026-03-04 05:06 UTC in 4.5 s; host up",
        "complete",
    ]
    texts = sections(message)
    assert "Note: UDP skipped" in texts
    assert "Open ports: `23/tcp telnet`" in texts
    assert (
        "*Findings*\n```SEVERITY  PORT    SERVICE  PRODUCT/VERSION\n"
        "CRITICAL  23/tcp  telnet   Lingo VoIP config telnetd 1.0```"
    ) in texts
    assert (
        "*Why it matters*\n*Telnet is open* — `23/tcp`\n"
        "Why: Telnet sends passwords in clear text.\n"
        "What to do: Ask your provider for a replacement adapter."
    ) in texts
    assert message.blocks[-1] == {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Scan again"},
                "action_id": "scan_again",
                "value": "job-1",
            },
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Full scan"},
                "action_id": "full_scan",
                "value": "job-1",
            },
        ],
    }


def test_home_user_gets_plain_language() -> None:
    """With agent=False the finding reads as what it means and what to do, with no table."""
    message = render_reply(report_reply(make_report()), agent=False)
    check_message(message)
    texts = sections(message)
    assert (
        "*Why it matters*\n*Telnet is open* (port 23)\n"
        "What it means: Telnet sends passwords in clear text.\n"
        "What to do: Ask your provider for a replacement adapter."
    ) in texts
    assert not any(FENCE + "SEVERITY" in text for text in texts)
    assert not any("Profile" in text for text in contexts(message))


@pytest.mark.parametrize("agent", BOOLEANS)
def test_guidance_names_contact_and_quotes_the_message(agent: bool) -> None:
    """Whom to contact, the tips, and the ready-to-send message in a copyable code block."""
    texts = sections(render_reply(report_reply(make_report()), agent=agent))
    assert (
        "Whom to contact: *Lingo* — phone `+1 555 0100`, `https://lab.invalid/support`\n"
        "• Call during business hours."
    ) in texts
    assert "Message to send them:\n```Hello,\nmy adapter exposes telnet.```" in texts


def test_lead_text_comes_first() -> None:
    """A report reply's text (such as the age of a cached result) leads the message."""
    message = render_reply(report_reply(make_report(), text="was scanned 3 minutes ago"))
    assert sections(message)[0] == "was scanned 3 minutes ago"
    assert message.blocks[1]["type"] == "header"


def test_fallback_text_summarises_the_report() -> None:
    """The notification text names the risk, the address and the worst finding."""
    report = make_report(findings=[finding(0), finding(1)])
    message = render_reply(report_reply(report, text="was scanned 3 minutes ago"))
    assert message.text == (
        "was scanned 3 minutes ago\nRisk: CRITICAL — 127.0.0.23: Finding number 0 is open "
        "and 1 more findings"
    )


@pytest.mark.parametrize("agent", BOOLEANS)
@pytest.mark.parametrize(
    ("risk", "shown"),
    [(Risk.NONE, False), (Risk.LOW, True), (Risk.HIGH, True), (Risk.CRITICAL, True)],
)
def test_whom_to_contact_hidden_when_risk_is_none(agent: bool, risk: Risk, shown: bool) -> None:
    """With no risk there is no one to call: the contact section appears only for real risk."""
    text = check_message(render_reply(report_reply(make_report(risk=risk)), agent=agent))
    assert ("Whom to contact" in text) is shown
    assert ("Message to send them:" in text) is shown


@pytest.mark.parametrize("agent", BOOLEANS)
def test_no_open_ports_wording_follows_the_plain_renderer(agent: bool) -> None:
    """A complete clean scan says no open ports were found; an incomplete one says it is partial."""
    clean = make_report(risk=Risk.NONE, findings=[], open_ports=[], guidance=None)
    text = check_message(render_reply(report_reply(clean), agent=agent))
    assert "No open ports found among the ports this profile checks." in text
    assert "incomplete" not in text.lower()
    partial = clean.model_copy(
        update={"complete": False, "notes": ["host timed out: results are partial"]}
    )
    message = render_reply(report_reply(partial), agent=agent)
    text = check_message(message)
    assert "not a clean bill" in text
    assert "incomplete" in " ".join(contexts(message)).lower()
    assert "Note: host timed out: results are partial" in sections(message)


def test_blank_guidance_message_is_left_out() -> None:
    """A provider without a message template gets no empty "message to send" block."""
    guidance = Guidance(provider="Lab", matched_by="default", contact=Contact(), message=" \n ")
    message = render_reply(report_reply(make_report(guidance=guidance)))
    text = check_message(message)
    assert "Whom to contact: *Lab*" in sections(message)
    assert "Message to send them" not in text


def test_contact_details_are_code_never_links() -> None:
    """A provider's URL and email appear as code spans, never as links Slack would follow."""
    contact = Contact(phone="+1 555", url="https://evil.example/x?a=1&b=2", email="a@evil.example")
    guidance = Guidance(provider="P", matched_by="default", contact=contact, message="hi")
    message = render_reply(report_reply(make_report(guidance=guidance)))
    assert (
        "Whom to contact: *P* — phone `+1 555`, `https://evil.example/x?a=1&amp;b=2`, "
        "`a@evil.example`"
    ) in sections(message)
    check_inert(message)


# buttons --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "job_buttons"),
    [(None, True), ("job-1", False), ("<!channel>", True), ("x" * 65, True), ("", True)],
)
def test_buttons_only_for_a_job_id_we_minted(job_id: str | None, job_buttons: bool) -> None:
    """No buttons without a job id, when turned off, or for an id we could not have minted."""
    message = render_reply(report_reply(make_report(), job_id=job_id), job_buttons=job_buttons)
    check_message(message)
    check_inert(message)
    assert all(block["type"] != "actions" for block in message.blocks)


@pytest.mark.parametrize(
    "kind", [ReplyKind.ACCEPTED, ReplyKind.PROGRESS, ReplyKind.FAILED, ReplyKind.TEXT]
)
def test_replies_without_a_report_get_no_buttons(kind: ReplyKind) -> None:
    """Only a finished report offers "Scan again" and "Full scan"."""
    message = render_reply(Reply(kind=kind, text="Queued: position 2", job_id="job-1"))
    assert all(block["type"] != "actions" for block in message.blocks)


# other reply kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "prefix", "fallback_prefix"),
    [
        (ReplyKind.REFUSED, "*Refused:* ", "Refused: "),
        (ReplyKind.FAILED, "*Scan failed:* ", "Scan failed: "),
        (ReplyKind.TEXT, "", ""),
        (ReplyKind.ACCEPTED, "", ""),
        (ReplyKind.PROGRESS, "", ""),
    ],
)
def test_reply_kinds_get_their_prefix_and_escaped_lines(
    kind: ReplyKind, prefix: str, fallback_prefix: str
) -> None:
    """Refusals and failures get a bold prefix; every kind keeps its lines and escapes them."""
    message = render_reply(Reply(kind=kind, text=f"bad {EVIL_LINK}\x1b[31m\nsecond <!here> line"))
    body = "bad &lt;https://evil.example|click&gt;\\x1b[31m\nsecond &lt;!here&gt; line"
    assert message.blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": prefix + body, "verbatim": True}}
    ]
    assert message.text == fallback_prefix + body
    check_message(message)
    check_inert(message)


@pytest.mark.parametrize("text", ["", "\n\n", "   "])
def test_empty_reply_still_gives_one_block_and_a_fallback(text: str) -> None:
    """Slack refuses an empty text object, so an empty reply renders as a short placeholder."""
    message = render_reply(Reply(kind=ReplyKind.TEXT, text=text))
    assert len(message.blocks) == 1
    check_message(message)


def test_long_text_reply_is_cut_with_a_note() -> None:
    """A reply of megabytes becomes at most TEXT_SECTIONS sections and a note saying it was cut."""
    text = "\n".join(["&<>" * 700] * 2000)
    message = render_reply(Reply(kind=ReplyKind.TEXT, text=text))
    check_message(message)
    check_inert(message)
    assert len(sections(message)) == TEXT_SECTIONS
    assert contexts(message) == ["… cut here: the rest is too long for a chat."]


# hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", BOOLEANS)
@pytest.mark.parametrize("value", SLACK_HOSTILE, ids=range(len(SLACK_HOSTILE)))
def test_hostile_report_renders_as_inert_text(value: str, agent: bool) -> None:
    """Mentions, links, fences, escapes, bidi and 100 KB strings in any field stay inert text."""
    report = hostile_report(value)
    message = render_reply(report_reply(report, text=value), agent=agent)
    text = check_message(message)
    check_inert(message)
    for item in report.findings:
        assert escape(printable(item.title)[:20]) in text
    assert any(block["type"] == "actions" for block in message.blocks)


@pytest.mark.parametrize("kind", list(ReplyKind))
@pytest.mark.parametrize("value", SLACK_HOSTILE, ids=range(len(SLACK_HOSTILE)))
def test_hostile_reply_text_renders_as_inert_text(value: str, kind: ReplyKind) -> None:
    """Whatever a user typed and the core echoes back, the reply pings no one."""
    message = render_reply(Reply(kind=kind, text=value, job_id=value))
    check_message(message)
    check_inert(message)


def test_hostile_banner_stays_inside_the_table() -> None:
    """A banner carrying a mention, a link, a fence and bold markers shows as text in the table."""
    banner = finding(1, service="<!channel>", product=EVIL_LINK + " *bold*", version="```")
    message = render_reply(report_reply(make_report(findings=[banner])))
    check_message(message)
    check_inert(message)
    table = next(text for text in sections(message) if text.startswith("*Findings*"))
    assert (
        "HIGH      1001/tcp  &lt;!channel&gt;  "
        "&lt;https://evil.example|click&gt; *bold* \u02cb\u02cb\u02cb```"
    ) in table


def test_hostile_guidance_message_cannot_close_its_code_block() -> None:
    """A provider message holding fences and mentions stays inside its one code block."""
    message = "Hello ```\n<!channel> `x`\n*bold*"
    guidance = Guidance(provider=EVIL_LINK, matched_by="banner", contact=Contact(), message=message)
    rendered = render_reply(report_reply(make_report(guidance=guidance)))
    check_message(rendered)
    check_inert(rendered)
    assert (
        "Message to send them:\n```Hello \u02cb\u02cb\u02cb\n&lt;!channel&gt; \u02cbx\u02cb\n"
        "*bold*```"
    ) in sections(rendered)
    assert "Whom to contact: *&lt;https://evil.example|click&gt;*" in sections(rendered)


def test_hostile_address_shows_look_alikes_in_the_header() -> None:
    """The header is plain text: markup in a tampered address becomes look-alike characters."""
    message = render_reply(report_reply(make_report(address="<!channel>&")))
    assert message.blocks[0]["text"]["text"] == "Risk: CRITICAL — \u2039!channel\u203a\uff06"
    check_inert(message)


# size limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", BOOLEANS)
def test_huge_reports_stay_within_fifty_blocks(agent: bool) -> None:
    """2000 open ports and 500 findings fit in 50 blocks that say what is left out."""
    report = make_report(
        findings=[finding(index) for index in range(500)],
        open_ports=[OpenPort(port=port, protocol="tcp", service="http") for port in range(2000)],
    )
    message = render_reply(report_reply(report), agent=agent)
    text = check_message(message)
    notes = [note for note in contexts(message) if "more findings" in note]
    assert len(notes) == 1
    assert notes[0].endswith("more findings — see the JSON report (`/scan status job-1`)")
    ports = next(text for text in sections(message) if text.startswith("Open ports:"))
    assert ports.endswith("… and 1960 more")
    assert "Finding number 0 is open" in text
    assert "Whom to contact" in text
    assert message.blocks[-1]["type"] == "actions"


@pytest.mark.parametrize("agent", BOOLEANS)
def test_huge_hostile_reports_stay_bounded(agent: bool) -> None:
    """500 findings whose every field is 100 KB of markup still fit Slack's limits, inert."""
    value = ("<!channel>&`" * HUGE)[:HUGE]
    hostile = hostile_report(value)
    assert hostile.guidance is not None
    guidance = hostile.guidance.model_copy(
        update={"message": "\n".join([value[:5000]] * 500), "advice": [value] * 500}
    )
    report = hostile.model_copy(
        update={
            "findings": hostile.findings * 500,
            "open_ports": hostile.open_ports * 2000,
            "notes": [value] * 500,
            "guidance": guidance,
        }
    )
    message = render_reply(report_reply(report, text="\n".join([value] * 50)), agent=agent)
    check_message(message)
    check_inert(message)
    assert any(note.startswith("… and ") for note in contexts(message))


def test_long_message_to_provider_splits_into_closed_code_blocks() -> None:
    """A provider message longer than a section arrives as several closed, copyable code blocks."""
    message_lines = [f"{number:03} " + "😀 & <tag> " * 10 for number in range(30)]
    guidance = Guidance(
        provider="Lingo", matched_by="banner", contact=Contact(), message="\n".join(message_lines)
    )
    message = render_reply(report_reply(make_report(guidance=guidance)))
    text = check_message(message)
    assert unescape(text).count("000 😀") == 1
    assert all(line in unescape(text) for line in message_lines)
    blocks = [text for text in sections(message) if text.startswith(FENCE)]
    assert blocks
    assert all(text.endswith(FENCE) for text in blocks)
    assert not any("more lines" in note for note in contexts(message))


def test_message_longer_than_its_blocks_says_how_much_is_left_out() -> None:
    """A provider message of many long lines is cut after its code blocks, with a count."""
    lines = [f"{number:04} " + "x" * 490 for number in range(100)]
    guidance = Guidance(
        provider="Lingo", matched_by="banner", contact=Contact(), message="\n".join(lines * 3)
    )
    message = render_reply(report_reply(make_report(guidance=guidance)))
    check_message(message)
    assert any(re.fullmatch(r"… and \d+ more lines", note) for note in contexts(message))


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
        address=draw(st.text(max_size=60)),
        hostname=hostname or None,
        profile=draw(st.text(max_size=40)),
        notes=[note] * draw(st.integers(min_value=0, max_value=50)),
        risk=draw(st.sampled_from(list(Risk))),
        complete=draw(st.booleans()),
        findings=findings,
        open_ports=[
            OpenPort(port=index, protocol=service, service=product) for index in range(count)
        ],
        guidance=guidance,
    )


@given(any_report(), field_text, st.booleans(), st.booleans())
@hypothesis_settings(max_examples=150, deadline=None)
def test_any_report_renders_inert_and_within_limits(
    report: ScanReport, lead: str, agent: bool, job_buttons: bool
) -> None:
    """Whatever text the host, the rules, the notes or the guidance hold, Slack would accept it."""
    message = render_reply(report_reply(report, text=lead), job_buttons=job_buttons, agent=agent)
    text = check_message(message)
    check_inert(message)
    assert escape(printable(report.findings[0].title)[:20]) in text


@given(st.sampled_from(list(ReplyKind)), st.text(), st.text(max_size=80), st.booleans())
@hypothesis_settings(max_examples=200, deadline=None)
def test_any_reply_renders_inert_and_within_limits(
    kind: ReplyKind, text: str, job_id: str, agent: bool
) -> None:
    """Any reply text, of any kind and with any job id, gives a valid message and a fallback."""
    message = render_reply(Reply(kind=kind, text=text, job_id=job_id or None), agent=agent)
    check_message(message)
    check_inert(message)
