"""The one web server (aiohttp): health, metrics, the own-address check page, chat webhooks.

``/check/<token>`` shows a page with a button; only the POST uses the one-time token, so link
previews and prefetching mail scanners cannot spend it. Every page is escaped text with no
external resources and a strict Content-Security-Policy.
Imports: aiohttp, prometheus-client, ``bot.wiring``, ``workers.verify``.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.wiring import Runtime
from workers.tickets import TicketState
from workers.verify import CheckFailed, CheckLinks, client_address, complete_check

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>portpatrol: {title}</title>
<style>body{{font-family:sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;
line-height:1.5}} button{{font-size:1.1rem;padding:.6rem 1.2rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body_html: str, *, status: int = 200) -> web.Response:
    """Return a small HTML page; ``title`` is escaped here, ``body_html`` must be built escaped."""
    return web.Response(
        text=PAGE.format(title=html.escape(title), body=body_html),
        content_type="text/html",
        status=status,
        headers=PAGE_HEADERS,
    )


@dataclass
class WebServer:
    """Routes for one process; front ends add their own (webhooks) before starting."""

    rt: Runtime
    host: str
    port: int
    checks: bool = False
    """Serve /check/<token> (the Telegram process does)."""

    def __post_init__(self) -> None:
        self.app = web.Application(client_max_size=256 * 1024)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        if self.checks:
            self.links = CheckLinks(self.rt.connection)
            self.app.router.add_get("/check/{token}", self.check_form)
            self.app.router.add_post("/check/{token}", self.check_submit)
        self._runner: web.AppRunner | None = None

    def add_post(self, path: str, handler: Handler) -> None:
        """Add a POST route (a chat platform's webhook)."""
        self.app.router.add_post(path, handler)

    async def start(self) -> None:
        """Start serving."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info("web server listening", host=self.host, port=self.bound_port)

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._runner is None:
            return self.port
        for site in self._runner.sites:
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            for sock in sockets:
                return int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process answers."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: Redis answers."""
        try:
            await asyncio.to_thread(self.rt.connection.ping)
        except Exception:  # any Redis failure means "not ready", never a 500 page
            return web.json_response({"status": "redis unavailable"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics."""
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def check_form(self, request: web.Request) -> web.Response:
        """Show what will happen, with a button; opening the link spends nothing."""
        token = request.match_info["token"]
        if not await asyncio.to_thread(self.links.peek, token):
            return page(
                "Link not valid",
                "<p>This link is not valid any more: links work once and expire after 10 "
                "minutes. Ask the bot for a new one with /check.</p>",
                status=404,
            )
        return page(
            "Check this connection",
            "<p>Pressing the button records the internet address this page was opened from as "
            "yours for 30 days and starts a quick port scan of it. The result arrives in your "
            "chat with the bot.</p><p>Open this page from the connection you want checked "
            "(your home Wi-Fi, not mobile data).</p>"
            '<form method="post"><button type="submit">Check my connection</button></form>',
        )

    async def check_submit(self, request: web.Request) -> web.Response:
        """Redeem the token: bind the client address to the user and queue the scan."""
        token = request.match_info["token"]
        try:
            address = client_address(
                request.remote,
                request.headers.get("X-Forwarded-For"),
                sorted(self.rt.settings.trusted_proxies),
            )
            ticket = await asyncio.to_thread(
                complete_check, self.links, self.rt.store, self.rt.service, token, address
            )
        except CheckFailed as failure:
            return page("Not checked", f"<p>{html.escape(failure.reason)}</p>", status=400)
        what = (
            "A recent result for it is on its way to your chat."
            if ticket.state is TicketState.CACHED
            else "The scan is queued; the result will arrive in your chat in a minute or two."
        )
        return page(
            "Connection verified",
            f"<p>Your connection <b>{html.escape(address)}</b> is verified for 30 days. "
            f"{html.escape(what)}</p><p>You can close this page.</p>",
        )
