"""The fake Slack Web API works with the real slack_sdk and slack_bolt over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from fake_slack import (
    FakeSlack,
    block_action_body,
    find_block_problems,
    sign,
    slash_command_body,
)
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

SECRET = "fake-signing-secret"  # noqa: S105 - a test signing secret, not a real one
CHANNEL = "C0CHAN"
AGENT = "UAGENT"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*open* 23/tcp telnet"}}
BUTTONS = {
    "type": "actions",
    "block_id": "scan-actions",
    "elements": [
        {
            "type": "button",
            "action_id": "scan_again",
            "text": {"type": "plain_text", "text": "Scan again"},
            "value": "127.0.0.23",
        },
        {
            "type": "button",
            "action_id": "full_scan",
            "text": {"type": "plain_text", "text": "Full scan"},
            "value": "127.0.0.23",
        },
    ],
}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A running fake Slack Web API, stopped after the test."""
    with FakeSlack() as server:
        yield server


def client_for(fake: FakeSlack, token: str | None = None) -> AsyncWebClient:
    """A real slack_sdk AsyncWebClient pointed at the fake."""
    return AsyncWebClient(token=token or fake.bot_token, base_url=fake.base_url)


def test_auth_test_reports_the_bot_identity(fake: FakeSlack) -> None:
    """auth.test answers the bot's ids and records the bearer token it was called with."""

    async def scenario() -> dict[str, Any]:
        response = await client_for(fake).auth_test()
        return dict(response.data)  # type: ignore[arg-type]

    answer = asyncio.run(scenario())
    assert answer["ok"] is True
    assert (answer["user_id"], answer["team_id"], answer["bot_id"]) == ("UBOT", "T0TEST", "B0BOT")
    assert answer["url"].startswith("https://")
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert fake.base_url.endswith("/api/")
    (call,) = fake.calls("auth.test")
    assert call.ok
    assert call.headers["Authorization"] == "Bearer xoxb-test-token"


def test_wrong_token_is_invalid_auth(fake: FakeSlack) -> None:
    """A token other than the fake's gets Slack's invalid_auth, which slack_sdk raises."""

    async def scenario() -> None:
        await client_for(fake, "xoxb-wrong").chat_postMessage(channel=CHANNEL, text="hello")

    with pytest.raises(SlackApiError) as raised:
        asyncio.run(scenario())
    assert raised.value.response["error"] == "invalid_auth"
    (call,) = fake.calls("chat.postMessage")
    assert not call.ok
    assert fake.messages(CHANNEL) == {}


def test_post_update_and_ephemeral_keep_the_channel_state(fake: FakeSlack) -> None:
    """postMessage assigns increasing ts, honours thread_ts; update and postEphemeral apply."""

    async def scenario() -> tuple[str, str, str]:
        client = client_for(fake)
        first = await client.chat_postMessage(
            channel=CHANNEL, text="Queued", blocks=[SECTION], unfurl_links=False, unfurl_media=False
        )
        reply = await client.chat_postMessage(
            channel=CHANNEL, text="in thread", thread_ts="1699999999.000001"
        )
        assert first["channel"] == CHANNEL
        assert first["message"]["blocks"] == [SECTION]
        assert reply["message"]["thread_ts"] == "1699999999.000001"
        updated = await client.chat_update(
            channel=CHANNEL, ts=first["ts"], text="Done", blocks=[SECTION, BUTTONS]
        )
        assert updated["ts"] == first["ts"]
        assert updated["text"] == "Done"
        ephemeral = await client.chat_postEphemeral(channel=CHANNEL, user=AGENT, text="Queued: 1")
        with pytest.raises(SlackApiError, match="message_not_found"):
            await client.chat_update(channel=CHANNEL, ts="1.000000", text="nope")
        doomed = await client.chat_postMessage(channel=CHANNEL, text="to delete")
        await client.chat_delete(channel=CHANNEL, ts=doomed["ts"])
        return first["ts"], reply["ts"], ephemeral["message_ts"]

    first_ts, reply_ts, ephemeral_ts = asyncio.run(scenario())
    assert first_ts == "1700000000.000100"
    assert float(first_ts) < float(reply_ts) < float(ephemeral_ts)
    messages = fake.messages(CHANNEL)
    assert list(messages) == [first_ts, reply_ts]
    assert messages[first_ts]["text"] == "Done"
    assert messages[first_ts]["blocks"] == [SECTION, BUTTONS]
    assert messages[first_ts]["edited"] == 1
    assert messages[first_ts]["thread_ts"] is None
    assert (messages[first_ts]["unfurl_links"], messages[first_ts]["unfurl_media"]) == (
        False,
        False,
    )
    assert messages[reply_ts]["thread_ts"] == "1699999999.000001"
    assert [e["text"] for e in fake.ephemerals(CHANNEL, AGENT)] == ["Queued: 1"]
    assert fake.ephemerals(CHANNEL, "USOMEONE") == []
    assert [call.ok for call in fake.calls("chat.update")] == [True, False]
    assert fake.calls("chat.update")[1].result["error"] == "message_not_found"


def test_block_kit_limits_are_rejected_as_invalid_blocks(fake: FakeSlack) -> None:
    """51 blocks or a 3001-character section text fail with invalid_blocks; the limits pass."""
    long_section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    full_section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3000}}

    async def scenario() -> list[str]:
        client = client_for(fake)
        errors = []
        for blocks in ([{"type": "divider"}] * 51, [SECTION, long_section]):
            with pytest.raises(SlackApiError) as raised:
                await client.chat_postMessage(channel=CHANNEL, text="report", blocks=blocks)
            errors.append(raised.value.response["error"])
            assert raised.value.response["response_metadata"]["messages"]
        await client.chat_postMessage(
            channel=CHANNEL, text="report", blocks=[full_section] + [{"type": "divider"}] * 49
        )
        return errors

    assert asyncio.run(scenario()) == ["invalid_blocks", "invalid_blocks"]
    assert len(fake.messages(CHANNEL)) == 1
    assert find_block_problems([SECTION, long_section]) == [
        "must be less than 3001 characters [json-pointer:/blocks/1/text/text]"
    ]
    assert find_block_problems([SECTION, BUTTONS, BUTTONS]) == [
        "duplicate block_id [json-pointer:/blocks/2/block_id]"
    ]
    assert find_block_problems([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])


def test_text_or_blocks_is_required(fake: FakeSlack) -> None:
    """Neither text nor blocks fails with no_text; blocks without text get Slack's warning."""

    async def scenario() -> str:
        client = client_for(fake)
        with pytest.raises(SlackApiError, match="no_text"):
            await client.api_call("chat.postMessage", json={"channel": CHANNEL})
        # api_call, not chat_postMessage: slack_sdk itself warns (an error here) without text.
        posted = await client.api_call(
            "chat.postMessage", json={"channel": CHANNEL, "blocks": [SECTION]}
        )
        return str(posted["warning"])

    assert asyncio.run(scenario()) == "missing_text_or_fallback_or_attachments"
    (message,) = fake.messages(CHANNEL).values()
    assert (message["text"], message["blocks"]) == ("", [SECTION])


def test_form_encoded_parameters_are_decoded(fake: FakeSlack) -> None:
    """Form bodies decode blocks from JSON and booleans but keep text and ts as strings."""

    async def scenario() -> None:
        await client_for(fake).api_call(
            "chat.postMessage",
            data={
                "channel": CHANNEL,
                "text": "123",
                "thread_ts": "1699999999.000100",
                "blocks": json.dumps([SECTION]),
                "unfurl_links": "false",
            },
        )

    asyncio.run(scenario())
    (call,) = fake.calls("chat.postMessage")
    assert call.params == {
        "channel": CHANNEL,
        "text": "123",
        "thread_ts": "1699999999.000100",
        "blocks": [SECTION],
        "unfurl_links": False,
    }
    (message,) = fake.messages(CHANNEL).values()
    assert message["blocks"] == [SECTION]


def test_rate_limit_is_retried_after_retry_after(fake: FakeSlack) -> None:
    """A 429 with Retry-After is waited out by slack_sdk's rate-limit retry handler."""
    fake.fail("chat.postMessage", times=1, retry_after=1)

    async def scenario() -> str:
        client = client_for(fake)
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
        response = await client.chat_postMessage(channel=CHANNEL, text="result")
        return str(response["ts"])

    started = time.monotonic()
    ts = asyncio.run(scenario())
    assert time.monotonic() - started >= 1.0
    limited, posted = fake.calls("chat.postMessage")
    assert (limited.status, posted.status) == (429, 200)
    assert limited.result == {"ok": False, "error": "ratelimited"}
    assert posted.at - limited.at >= 1.0
    assert list(fake.messages(CHANNEL)) == [ts]


def test_injected_failures_without_retry_handler_reach_the_caller(fake: FakeSlack) -> None:
    """Without a retry handler a 429 raises with Retry-After readable; 200 and 500 errors too."""
    fake.fail("chat.postMessage", times=1, retry_after=7)
    fake.fail("chat.postMessage", times=1, status=200, error="channel_not_found")
    fake.fail("chat.postMessage", times=1, status=500)

    async def scenario() -> list[tuple[int, str, str | None]]:
        client = client_for(fake)
        seen = []
        for _ in range(3):
            with pytest.raises(SlackApiError) as raised:
                await client.chat_postMessage(channel=CHANNEL, text="x")
            response = raised.value.response
            seen.append(
                (response.status_code, response["error"], response.headers.get("Retry-After"))
            )
        await client.chat_postMessage(channel=CHANNEL, text="x")
        return seen

    assert asyncio.run(scenario()) == [
        (429, "ratelimited", "7"),
        (200, "channel_not_found", None),
        (500, "fatal_error", None),
    ]
    assert [call.ok for call in fake.calls()] == [False, False, False, True]


def test_response_url_posts_are_recorded_and_applied(fake: FakeSlack) -> None:
    """Ephemeral, in-channel and replacing response_url posts land; a sixth use is refused."""
    url = fake.response_url(CHANNEL, AGENT)

    async def scenario() -> list[int]:
        webhook = AsyncWebhookClient(url)
        statuses = [
            (await webhook.send(text="Queued: position 1")).status_code,
            (await webhook.send(text="Scanning", replace_original=True)).status_code,
            (await webhook.send(text="Result", response_type="in_channel")).status_code,
            (await webhook.send(text="Final", replace_original=True)).status_code,
            (await webhook.send(text="note")).status_code,
        ]
        refused = await webhook.send(text="sixth")
        assert refused.body == "used_url"
        statuses.append(refused.status_code)
        return statuses

    assert asyncio.run(scenario()) == [200, 200, 200, 200, 200, 404]
    assert [e["text"] for e in fake.ephemerals(CHANNEL, AGENT)] == ["Scanning", "note"]
    (message,) = fake.messages(CHANNEL).values()
    assert (message["text"], message["source"], message["edited"]) == ("Final", "response_url", 1)
    posts = fake.calls("response_url")
    assert [call.params["text"] for call in posts][:2] == ["Queued: position 1", "Scanning"]
    assert all(call.url == url for call in posts)


def test_button_click_body_clicks_a_button_of_a_posted_message(fake: FakeSlack) -> None:
    """A click names the stored message, its action and a response_url that replaces it."""

    async def scenario() -> str:
        posted = await client_for(fake).chat_postMessage(
            channel=CHANNEL, text="Done", blocks=[SECTION, BUTTONS], thread_ts="1699999999.000001"
        )
        return str(posted["ts"])

    ts = asyncio.run(scenario())
    body = fake.button_click_body(user_id=AGENT, channel=CHANNEL, ts=ts, text="Full scan")
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == AGENT
    assert payload["container"]["message_ts"] == ts
    assert payload["container"]["thread_ts"] == "1699999999.000001"
    assert payload["message"]["blocks"] == [SECTION, BUTTONS]
    with pytest.raises(ValueError, match="'Scan again' \\(scan_again\\)"):
        fake.button_click_body(user_id=AGENT, channel=CHANNEL, ts=ts, action_id="nope")
    (action,) = payload["actions"]
    assert (action["action_id"], action["value"], action["block_id"]) == (
        "full_scan",
        "127.0.0.23",
        "scan-actions",
    )

    async def replace() -> int:
        response = await AsyncWebhookClient(payload["response_url"]).send(
            text="Rescanning", replace_original=True
        )
        return response.status_code

    assert asyncio.run(replace()) == 200
    assert fake.messages(CHANNEL)[ts]["text"] == "Rescanning"
    assert fake.messages(CHANNEL)[ts]["blocks"] == []
    with pytest.raises(ValueError, match="buttons: none"):
        fake.button_click_body(user_id=AGENT, channel=CHANNEL, ts=ts, action_id="scan_again")
    with pytest.raises(ValueError, match="no message"):
        fake.button_click_body(user_id=AGENT, channel=CHANNEL, ts="1.0", action_id="scan_again")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"type":"event_callback","text":"caf\xc3\xa9 <!channel>"}',
        slash_command_body(
            text="127.0.0.23 quick & <b>", user_id=AGENT, response_url="http://x/r/1"
        ),
        block_action_body(
            user_id=AGENT,
            action_id="scan_again",
            value="127.0.0.23",
            channel_id=CHANNEL,
            message_ts="1700000000.000100",
            response_url="http://x/r/2",
        ),
    ],
)
def test_sign_matches_slack_sdk_signature_verifier(body: bytes) -> None:
    """sign() produces exactly the signature slack_sdk's verifier expects, and only that."""
    verifier = SignatureVerifier(SECRET)
    headers = sign(SECRET, body)
    timestamp, signature = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    assert verifier.is_valid(body, timestamp, signature)
    assert verifier.is_valid_request(body, headers)
    assert signature == verifier.generate_signature(timestamp=timestamp, body=body)
    assert not verifier.is_valid(body + b" ", timestamp, signature)
    assert not SignatureVerifier("other-secret").is_valid(body, timestamp, signature)
    stale = sign(SECRET, body, int(time.time()) - 301)
    assert not verifier.is_valid_request(body, stale)


def free_socket() -> socket.socket:
    """A listening-ready socket bound to a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve_bolt(app: AsyncApp) -> tuple[web.AppRunner, str]:
    """Serve a bolt AsyncApp through the aiohttp adapter on a tiny server; return its URL."""

    async def handle(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    server = web.Application()
    server.router.add_post("/slack/events", handle)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    sock = free_socket()
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}/slack/events"


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST a form body the way Slack does; return status and text."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        ) as response,
    ):
        return response.status, await response.text()


def run_with_bolt(
    fake: FakeSlack, scenario: Callable[[AsyncApp, str, list[str]], Awaitable[None]]
) -> list[str]:
    """Run a scenario against a bolt app (with /scan and scan_again handlers) on a live server."""
    handled: list[str] = []

    async def main() -> None:
        app = AsyncApp(
            signing_secret=SECRET,
            client=AsyncWebClient(token=fake.bot_token, base_url=fake.base_url),
        )

        @app.command("/scan")
        async def scan(ack: Any, respond: Any, command: dict[str, Any], client: Any) -> None:
            await ack(f"Queued {command['text']}")
            handled.append(f"{command['user_id']}:{command['text']}")
            await respond(text="Scanning", replace_original=True)
            await client.chat_postMessage(channel=command["channel_id"], text="Result")

        @app.action("scan_again")
        async def again(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            handled.append(f"again:{body['actions'][0]['value']}")

        runner, url = await serve_bolt(app)
        try:
            await scenario(app, url, handled)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return handled


def test_bolt_accepts_a_signed_slash_command_and_rejects_a_bad_signature(fake: FakeSlack) -> None:
    """A real bolt AsyncApp acks a signed /scan, replies through the fake, and 401s a forgery."""

    async def scenario(app: AsyncApp, url: str, handled: list[str]) -> None:
        body = slash_command_body(
            text="127.0.0.23", user_id=AGENT, response_url=fake.response_url(CHANNEL, AGENT)
        )
        forged = {**sign(SECRET, body), "X-Slack-Signature": "v0=" + "0" * 64}
        assert await post(url, body, forged) == (401, '{"error": "invalid request"}')
        status, text = await post(url, body, sign(SECRET, body))
        assert status == 200
        assert text == "Queued 127.0.0.23"  # bolt acks a bare text as text/plain
        await fake.wait_for_async(lambda calls: any(c.method == "chat.postMessage" for c in calls))

    assert run_with_bolt(fake, scenario) == [f"{AGENT}:127.0.0.23"]
    assert [call.method for call in fake.calls()] == [
        "auth.test",
        "response_url",
        "chat.postMessage",
    ]
    assert [e["text"] for e in fake.ephemerals(CHANNEL, AGENT)] == ["Scanning"]


def test_bolt_runs_an_action_handler_for_a_button_click(fake: FakeSlack) -> None:
    """A signed click on a button of a posted message reaches the bolt action handler."""

    async def scenario(app: AsyncApp, url: str, handled: list[str]) -> None:
        posted = await client_for(fake).chat_postMessage(
            channel=CHANNEL, text="Done", blocks=[SECTION, BUTTONS]
        )
        body = fake.button_click_body(
            user_id=AGENT, channel=CHANNEL, ts=posted["ts"], action_id="scan_again"
        )
        assert (await post(url, body, sign(SECRET, body)))[0] == 200
        assert handled == ["again:127.0.0.23"]

    assert run_with_bolt(fake, scenario) == ["again:127.0.0.23"]
