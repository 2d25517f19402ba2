"""The ``portpatrol`` command: demo, console, scan, worker, and the admin commands.

Settings are read here, once, and passed on. Exit status: 0 on success; 1 when a scan failed;
2 when a request was refused or the input is wrong; 3 when no worker answered in time.
The CLI acts as the local operator: an admin (allow, role, audit, forget), audited as
``cli:<os user>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn

import redis
import structlog
import typer
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from bot.console.session import ConsoleSession
from bot.core.commands import parse_since, printable
from bot.core.messages import Reply, ReplyKind
from bot.core.render import render_report
from bot.observability import configure_logging
from bot.settings import Settings, SettingsError, load_settings
from bot.wiring import Runtime, run_worker, runtime, state_dir_note
from workers.audit import AuditEvent
from workers.datafile import DataFileError
from workers.embedded import EmbeddedRedisUnavailable
from workers.models import Requester, Role, utc_now
from workers.policy import DEFAULT_SCOPE, NetworkEntry, PolicyRefused
from workers.store import parse_principal
from workers.tickets import ScanRefused, TicketState

log = structlog.get_logger(__name__)

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_NO_WORKER = 3

app = typer.Typer(
    help="portpatrol: on-demand port scans with a risk summary people can act on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
allow_app = typer.Typer(
    help="Admin: manage the allowlist (who may be scanned).", no_args_is_help=True
)
role_app = typer.Typer(
    help="Admin: give platform:user_id the role agent or admin.", no_args_is_help=True
)
optout_app = typer.Typer(
    help="Admin: the opt-out list (ranges whose owners asked not to be scanned; always refused).",
    no_args_is_help=True,
)
app.add_typer(allow_app, name="allow")
app.add_typer(role_app, name="role")
app.add_typer(optout_app, name="optout")


def fail(message: str, code: int) -> NoReturn:
    """Print a one-line reason on stderr and exit with ``code``."""
    typer.echo(f"portpatrol: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    """Load settings, or exit listing every problem."""
    try:
        return load_settings()
    except SettingsError as error:
        fail(str(error), EXIT_REFUSED)


class _Session:
    """Opens a runtime for one command, turning start-up problems into one-line errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> Runtime:
        note = state_dir_note(self.settings)
        if note:
            typer.echo(note, err=True)
        self._context = runtime(self.settings)
        try:
            return self._context.__enter__()
        except (EmbeddedRedisUnavailable, DataFileError) as error:
            fail(str(error), EXIT_FAILED)
        except redis.ConnectionError as error:
            fail(f"cannot reach Redis: {error}", EXIT_FAILED)

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)  # type: ignore[arg-type]


def wait_for_scan(
    rt: Runtime,
    session: ConsoleSession,
    job_id: str,
    *,
    pickup_timeout: float,
    total_timeout: float,
    progress: bool = True,
) -> Reply:
    """Pump job events until the scan's final reply; give up if no worker starts it in time."""
    started = False
    start = time.monotonic()
    while True:
        for reply in session.replies():
            if reply.job_id != job_id:
                continue
            if reply.kind is ReplyKind.PROGRESS and not started:
                started = True
                if progress:
                    typer.echo(f"scanning {job_id}…", err=True)
            if reply.kind in (ReplyKind.REPORT, ReplyKind.FAILED):
                return reply
        elapsed = time.monotonic() - start
        if not started and elapsed > pickup_timeout:
            _cancel(rt, job_id)
            fail(
                f"no worker picked up job {job_id} within {pickup_timeout:.0f} s "
                "(is `portpatrol worker` running against the same REDIS_URL?); "
                "the job was cancelled",
                EXIT_NO_WORKER,
            )
        if elapsed > total_timeout:
            fail(f"job {job_id} did not finish within {total_timeout:.0f} s", EXIT_NO_WORKER)
        if not session.pump():
            time.sleep(0.2)


def _cancel(rt: Runtime, job_id: str) -> None:
    with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
        Job.fetch(job_id, connection=rt.connection, serializer=JSONSerializer).cancel()


def scan_and_wait(
    rt: Runtime,
    target: str,
    profile: str,
    *,
    pickup_timeout: float,
    progress: bool = True,
    own_worker: bool = False,
) -> Reply:
    """Submit one scan as the operator and wait for its result (progress on stderr).

    With ``own_worker`` a worker process is started once the job is queued (embedded mode),
    so a refused request answers at once.
    """
    session = ConsoleSession(rt.router(), rt.connection, rt.events, rt.operator)
    try:
        try:
            ticket = rt.service.submit_scan(
                rt.operator, target, profile, session.address.to_payload()
            )
        except ScanRefused as refusal:
            fail(f"refused: {refusal.reason}", EXIT_REFUSED)
        if ticket.state is TicketState.CACHED and ticket.report is not None:
            if progress:
                typer.echo(
                    f"using the result of job {ticket.job_id} ({ticket.age_s} s old)", err=True
                )
            return Reply(kind=ReplyKind.REPORT, text="", job_id=ticket.job_id, report=ticket.report)
        if progress:
            where = (
                "waiting for another scan of the same address"
                if ticket.held
                else f"position {ticket.position}"
                if ticket.position is not None
                else "starting"
            )
            typer.echo(f"{ticket.state.value} as job {ticket.job_id} ({where})", err=True)
        if own_worker:
            rt.start_worker()
        scan_profile = rt.profiles.get(ticket.profile)
        total = (scan_profile.job_timeout_s if scan_profile else 600) + 60
        return wait_for_scan(
            rt,
            session,
            ticket.job_id,
            pickup_timeout=pickup_timeout,
            total_timeout=total,
            progress=progress,
        )
    finally:
        session.close()


@app.command()
def scan(
    target: Annotated[str, typer.Argument(help="One IPv4/IPv6 address or hostname.")],
    profile: Annotated[
        str, typer.Option(help="Scan profile: quick, standard, full, voip.")
    ] = "quick",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report document (JSON).")
    ] = False,
    pickup_timeout: Annotated[
        float, typer.Option(help="Give up if no worker starts the scan within this many seconds.")
    ] = 30.0,
) -> None:
    """Scan one target through the same queue and policy as the bots."""
    settings = settings_or_exit()
    configure_logging(level="WARNING")
    with _Session(settings) as rt:
        reply = scan_and_wait(
            rt, target, profile, pickup_timeout=pickup_timeout, own_worker=rt.embedded
        )
    if reply.kind is ReplyKind.FAILED or reply.report is None:
        fail(f"scan failed: {reply.text}", EXIT_FAILED)
    if as_json:
        typer.echo(json.dumps(reply.report.to_document(), indent=2))
    else:
        typer.echo(render_report(reply.report))


@app.command()
def demo(
    address: Annotated[
        str, typer.Option(help="Loopback address for the simulated adapter.")
    ] = "127.0.0.23",
) -> None:
    """Scan a simulated VoIP adapter on loopback through the whole pipeline; print the summary."""
    from bot.lab import free_loopback_address, voip_adapter  # noqa: PLC0415 - demo-only code

    settings = settings_or_exit()
    configure_logging(level="WARNING")
    try:
        adapter = voip_adapter(address)
        adapter.start()
    except OSError:
        adapter = voip_adapter(free_loopback_address())
        adapter.start()
    except ValueError as error:
        fail(str(error), EXIT_REFUSED)
    network = f"{adapter.address}/32"
    try:
        with _Session(settings) as rt:
            typer.echo(
                f"Simulated VoIP adapter listening on {adapter.address} "
                f"(ports {', '.join(f'{name} {port}' for name, port in adapter.ports.items())})",
                err=True,
            )
            existing = {entry.network for entry in rt.store.allow_entries()}
            if network not in existing:
                rt.admin.allow(rt.operator, network, lab=True, note="portpatrol demo (temporary)")
            try:
                reply = scan_and_wait(
                    rt, adapter.address, "quick", pickup_timeout=60, own_worker=True
                )
            finally:
                if network not in existing:
                    rt.admin.disallow(rt.operator, network)
    finally:
        adapter.stop()
    if reply.report is None:
        fail(f"the demo scan failed: {reply.text}", EXIT_FAILED)
    typer.echo("")
    typer.echo(render_report(reply.report))


@app.command()
def console(
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as", help="Act as PLATFORM:USER_ID instead of the local operator (to try roles)."
        ),
    ] = None,
) -> None:
    """A local chat session with the bot's commands; embedded queue and worker by default."""
    from bot.console.repl import run_repl  # noqa: PLC0415 - only this command needs it

    settings = settings_or_exit()
    configure_logging(level="WARNING")
    requester: Requester | None = None
    if as_user is not None:
        from workers.store import parse_principal  # noqa: PLC0415

        try:
            requester = parse_principal(as_user)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    with _Session(settings) as rt:
        if rt.embedded:
            typer.echo("Starting a scan worker…", err=True)
            rt.start_worker()
        run_repl(rt, requester or rt.operator)


def run_until_signalled(
    settings: Settings, serve: Callable[[Runtime, asyncio.Event], Awaitable[None]]
) -> None:
    """Run a long-lived front end until SIGINT or SIGTERM (embedded mode: with its own worker)."""

    async def main(rt: Runtime) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(rt, stop)

    with _Session(settings) as rt:
        if rt.embedded:
            rt.start_worker()
        try:
            asyncio.run(main(rt))
        except OSError as error:
            fail(f"cannot serve on the web port: {error.strerror or error}", EXIT_FAILED)


@app.command()
def telegram(
    webhook: Annotated[
        bool,
        typer.Option(
            help="Serve Telegram's webhook instead of long polling (needs "
            "PORTPATROL_PUBLIC_URL and TELEGRAM_WEBHOOK_SECRET)."
        ),
    ] = False,
    host: Annotated[
        str | None, typer.Option(help="Web server address (PORTPATROL_WEB_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Web server port (PORTPATROL_WEB_PORT).")] = None,
) -> None:
    """The Telegram bot: long polling (or --webhook), plus /check links, health and metrics."""
    from telegram.error import InvalidToken, NetworkError  # noqa: PLC0415 - only needed here

    from bot.telegram.app import TelegramBot  # noqa: PLC0415
    from bot.web import WebServer  # noqa: PLC0415

    # Opt in to python-telegram-bot's timedelta retry_after now (its int form is deprecated and
    # warns on every flood-control answer).
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    settings = settings_or_exit()
    configure_logging(level="INFO", json_lines=settings.log_format == "json")
    if settings.telegram_bot_token is None:
        fail("TELEGRAM_BOT_TOKEN is not set (create a bot with @BotFather)", EXIT_REFUSED)
    webhook_url: str | None = None
    secret: str | None = None
    if webhook:
        if not settings.public_url or settings.telegram_webhook_secret is None:
            fail("--webhook needs PORTPATROL_PUBLIC_URL and TELEGRAM_WEBHOOK_SECRET", EXIT_REFUSED)
        webhook_url = settings.public_url.rstrip("/") + "/telegram/webhook"
        secret = settings.telegram_webhook_secret.get_secret_value()
    token = settings.telegram_bot_token.get_secret_value()

    async def serve(rt: Runtime, stop: asyncio.Event) -> None:
        try:
            bot = TelegramBot(
                rt, token=token, base_url=settings.telegram_api_base_url, webhook_secret=secret
            )
        except InvalidToken:
            fail("TELEGRAM_BOT_TOKEN is not a bot token (it looks like 123456:ABC-…)", EXIT_REFUSED)
        web_server = WebServer(
            rt,
            host=host or settings.web_host,
            port=settings.web_port if port is None else port,
            checks=True,
        )
        try:
            await bot.run(web_server, webhook_url=webhook_url, stop=stop)
        except InvalidToken:
            fail("Telegram refused TELEGRAM_BOT_TOKEN (check it with @BotFather)", EXIT_REFUSED)
        except NetworkError as error:
            fail(
                f"cannot reach the Bot API at {settings.telegram_api_base_url}: {error}",
                EXIT_FAILED,
            )

    run_until_signalled(settings, serve)


@app.command()
def slack(
    host: Annotated[
        str | None, typer.Option(help="Web server address (PORTPATROL_WEB_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Web server port (PORTPATROL_WEB_PORT).")] = None,
) -> None:
    """The Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on /slack/events."""
    from bot.slack.app import SlackBot  # noqa: PLC0415 - only this command needs slack-bolt
    from bot.web import WebServer  # noqa: PLC0415

    settings = settings_or_exit()
    configure_logging(level="INFO", json_lines=settings.log_format == "json")
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        fail(
            "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET must be set (see README, Slack)", EXIT_REFUSED
        )
    bot_token = settings.slack_bot_token.get_secret_value()
    signing_secret = settings.slack_signing_secret.get_secret_value()
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else None

    async def serve(rt: Runtime, stop: asyncio.Event) -> None:
        bot = SlackBot(
            rt,
            bot_token=bot_token,
            signing_secret=signing_secret,
            base_url=settings.slack_api_base_url,
            allowed_teams=settings.slack_allowed_teams,
            allowed_channels=settings.slack_allowed_channels,
        )
        web_server = WebServer(
            rt, host=host or settings.web_host, port=settings.web_port if port is None else port
        )
        await bot.run(web_server, app_token=app_token, stop=stop)

    run_until_signalled(settings, serve)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    quiet: Annotated[bool, typer.Option(help="Log warnings only.")] = False,
) -> None:
    """Run an RQ worker for the scan queue (production; needs REDIS_URL)."""
    settings = settings_or_exit()
    configure_logging(
        level="WARNING" if quiet else "INFO", json_lines=settings.log_format == "json"
    )
    if settings.redis_url is None:
        fail("REDIS_URL is not set: a worker needs the Redis the bots use", EXIT_REFUSED)
    try:
        run_worker(settings, burst=burst, quiet=quiet)
    except DataFileError as error:
        fail(str(error), EXIT_FAILED)


@allow_app.command("add")
def allow_add(
    network: Annotated[str, typer.Argument(help="An address or CIDR, e.g. 198.51.100.0/24.")],
    note: Annotated[str, typer.Option(help="Why this range may be scanned.")] = "",
    lab: Annotated[
        bool, typer.Option(help="Allow special-purpose space (loopback, private…) for a lab.")
    ] = False,
    scope: Annotated[
        str, typer.Option(help="The scope: a named group of ranges, e.g. customers or lab.")
    ] = DEFAULT_SCOPE,
) -> None:
    """Allow scanning a network (one entry per network: adding it again replaces it)."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            change = rt.admin.add_allow(rt.operator, network, note=note, lab=lab, scope=scope)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
        except ValueError as error:
            fail(str(error).splitlines()[0], EXIT_REFUSED)
    entry, old = change.entry, change.replaced
    typer.echo(
        f"allowed {entry.network}"
        + (" (lab)" if entry.lab else "")
        + (f" in scope {entry.scope}" if entry.scope != DEFAULT_SCOPE else "")
    )
    if old is not None:
        typer.echo(f"replaced the earlier entry: {describe_entry(old)}")


@allow_app.command("remove")
def allow_remove(network: Annotated[str, typer.Argument(help="The network to remove.")]) -> None:
    """Remove a network from the allowlist."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            removed = rt.admin.disallow(rt.operator, network)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    typer.echo(f"removed {removed}")


def describe_entry(entry: NetworkEntry) -> str:
    """One allow or opt-out entry as a tab-separated line (the `list` commands' format)."""
    return (
        f"{entry.network}\t{entry.scope}\t{'lab' if entry.lab else '-'}\t{entry.added_by}\t"
        f"{entry.added_at:%Y-%m-%d %H:%M}\t{entry.note}"
    )


@allow_app.command("list")
def allow_list(
    scope: Annotated[str | None, typer.Option(help="Only this scope.")] = None,
) -> None:
    """List the allowlist: network, scope, lab, added by, added at, note (tab-separated)."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            entries = rt.admin.allow_entries(rt.operator, scope)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    if not entries:
        typer.echo("the allowlist is empty" if scope is None else f"scope {scope} is empty")
    for entry in entries:
        typer.echo(describe_entry(entry))


@allow_app.command("export")
def allow_export(
    scope: Annotated[str | None, typer.Option(help="Only this scope.")] = None,
) -> None:
    """Print the allowlist as YAML (a list of entries) that `allow import` reads back."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            text = rt.admin.export_allow(rt.operator, scope)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    typer.echo(text, nl=False)


@allow_app.command("import")
def allow_import(
    file: Annotated[Path, typer.Argument(help="A YAML list of entries, as `allow export` prints.")],
    replace_scope: Annotated[
        bool,
        typer.Option(
            "--replace-scope",
            help="Make the file's scopes hold exactly its entries (remove the others).",
        ),
    ] = False,
) -> None:
    """Add or replace many entries at once; the whole file is checked before anything changes."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            outcome = rt.admin.import_allow(rt.operator, file, replace_scope=replace_scope)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
        except DataFileError as error:
            fail(f"nothing imported: {error}", EXIT_REFUSED)
    typer.echo(f"imported {outcome.written} entries from {file}")
    for old in outcome.replaced:
        typer.echo(f"replaced the earlier entry: {describe_entry(old)}")
    for network in outcome.removed:
        typer.echo(f"removed {network} (not in the file)")


@optout_app.command("add")
def optout_add(
    network: Annotated[str, typer.Argument(help="An address or CIDR, e.g. 203.0.113.0/24.")],
    note: Annotated[str, typer.Option(help="Why (shown to agents whose scans it refuses).")] = "",
) -> None:
    """Never scan a network: its owner asked not to be scanned (wins over any allow entry)."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            change = rt.admin.opt_out(rt.operator, network, note=note)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    typer.echo(f"opted out {change.entry.network}")
    if change.replaced is not None:
        typer.echo(f"replaced the earlier opt-out: {describe_entry(change.replaced)}")


@optout_app.command("remove")
def optout_remove(
    network: Annotated[str, typer.Argument(help="The network to take off the list.")],
) -> None:
    """Take a network off the opt-out list."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            removed = rt.admin.remove_opt_out(rt.operator, network)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    typer.echo(f"removed {removed} from the opt-out list")


@optout_app.command("list")
def optout_list() -> None:
    """List the opt-out list: network, scope, lab, added by, added at, note (tab-separated)."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        entries = rt.admin.opt_out_entries(rt.operator)
    if not entries:
        typer.echo("the opt-out list is empty")
    for entry in entries:
        typer.echo(describe_entry(entry))


@role_app.command("grant")
def role_grant(
    principal: Annotated[str, typer.Argument(help="platform:user_id, e.g. slack:U012AB.")],
    role: Annotated[Role, typer.Argument(help="agent or admin.")],
) -> None:
    """Give someone the role agent or admin."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            who = rt.admin.grant(rt.operator, principal, role)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    typer.echo(f"{who} is now {role.value}")


@role_app.command("revoke")
def role_revoke(
    principal: Annotated[str, typer.Argument(help="platform:user_id.")],
) -> None:
    """Take a granted role away."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        try:
            who = rt.admin.revoke(rt.operator, principal)
        except PolicyRefused as error:
            fail(error.reason, EXIT_REFUSED)
    typer.echo(f"{who} no longer has a granted role")


@role_app.command("list")
def role_list() -> None:
    """List everyone with a role."""
    settings = settings_or_exit()
    with _Session(settings) as rt:
        roles = rt.admin.roles(rt.operator)
    for who, role in sorted(roles.items()):
        typer.echo(f"{who}\t{role.value}")


AUDIT_COLUMNS = ("when", "actor", "action", "target", "decision", "reason", "job")


def audit_row(event: AuditEvent) -> tuple[str, ...]:
    """One audit event as table cells (text typed by anyone, made safe for a terminal)."""
    return (
        f"{event.at:%Y-%m-%d %H:%M:%S}",
        printable(event.actor, 64),
        printable(event.action, 32),
        printable(event.target, 48) or "-",
        printable(event.decision, 32),
        printable(event.reason, 60) or "-",
        printable(event.job_id, 32) or "-",
    )


def audit_table(events: list[AuditEvent]) -> str:
    """Audit events as an aligned table with a header (times UTC)."""
    rows = [tuple(name.upper() for name in AUDIT_COLUMNS), *(audit_row(e) for e in events)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(AUDIT_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@app.command()
def audit(
    since: Annotated[
        str | None,
        typer.Option(help="From when: 30m, 2h, 1d, 2w ago, or an ISO date/time (UTC)."),
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Only this actor: platform:user_id or any part of it.")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Only this target: an address or network (events inside it) or any part of "
            "what was typed."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document per event and line.")
    ] = False,
) -> None:
    """Admin: the audit trail, newest first (times UTC): who asked what, the decision and why."""
    settings = settings_or_exit()
    try:
        start = parse_since(since, utc_now()) if since is not None else None
    except ValueError as error:
        fail(f"--since: {error}", EXIT_REFUSED)
    # The operator at this terminal is an admin (see bot.wiring.local_operator).
    with _Session(settings) as rt:
        events = rt.audit.query(since=start, user=user, target=target, limit=limit)
    if as_json:
        for event in events:
            # json.dumps escapes control and non-ASCII characters: a typed target cannot
            # reach the terminal as an escape sequence.
            typer.echo(json.dumps(event.model_dump(mode="json"), sort_keys=True))
        return
    if not events:
        typer.echo("no audit events match")
        return
    typer.echo(audit_table(events))


@app.command()
def forget(
    principal: Annotated[str, typer.Argument(help="platform:user_id, e.g. telegram:123456.")],
) -> None:
    """Admin: delete what is stored about a user (verified address, reports, watches)."""
    settings = settings_or_exit()
    try:
        who = parse_principal(principal)
    except PolicyRefused as error:
        fail(error.reason, EXIT_REFUSED)
    with _Session(settings) as rt:
        try:
            said = rt.service.forget(who, by=rt.operator)
        except ScanRefused as refusal:
            fail(refusal.reason, EXIT_REFUSED)
    typer.echo(said)


def main() -> None:
    """Entry point of the ``portpatrol`` console script."""
    app()
