"""Chat commands: parse the text, check the caller's role, call the scan side, word the answer.

The same commands serve the console, Telegram and Slack; adapters only translate.
A stack trace never reaches a chat: expected refusals become REFUSED replies, anything else a
short apology (and a log line with the details).
Imports: ``bot.core``, ``workers`` value-object modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from bot.core.messages import MAX_COMMAND_LENGTH, Inbound, Reply, ReplyKind
from bot.core.render import describe_age
from bot.core.service import (
    AdminOps,
    AuditEntry,
    AuditTrail,
    CheckLinkIssuer,
    ScanQueue,
    WatchBook,
)
from workers.models import Role, utc_now
from workers.policy import DEFAULT_SCOPE, NetworkEntry, PolicyRefused
from workers.tickets import JobView, ScanRefused, Ticket, TicketState

log = structlog.get_logger(__name__)

HELP_EVERYONE = """\
portpatrol checks which ports of an internet connection are open and says what that means.
Commands:
  /scan TARGET [PROFILE]  scan one IP address or hostname (profiles: {profiles})
  /status [JOB]           where a scan stands (default: your latest)
  /history [TARGET]       past scans (home users: of their own connection)
  /watch TARGET [daily|weekly]  rescan regularly; you hear back only when something changed
  /unwatch TARGET | /watches    stop a watch | list yours
  /profiles               what each scan profile checks
  /help                   this text"""

HELP_USER = """\
As a home user you can scan the connection you verified as yours:
  /check                  get a one-time link; open it from the connection you want checked
  /forget                 delete your verified connection and its stored results"""

HELP_AGENT = """\
As an agent you can scan addresses in the allowlist (ask an admin to add a range).
  /allow list [SCOPE]     what may be scanned
  /optout list            what is never scanned: its owners asked not to be"""

START = """\
portpatrol checks which ports of your internet connection are open, explains what that means \
and tells you whom to call about it, with a message you can send them.
It scans only what it may: your own connection (after /check) or, for support agents, \
addresses their provider allows. It stores your verified address for 30 days and scan results \
for 30 days; /forget deletes them at once."""

COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", "what this bot does and what it stores"),
    ("help", "the commands"),
    ("check", "verify the connection you are on, then scan it"),
    ("scan", "scan an address: /scan TARGET [PROFILE]"),
    ("status", "where your latest scan stands, or /status JOB"),
    ("history", "past scans"),
    ("watch", "rescan regularly, report changes: /watch TARGET [daily|weekly]"),
    ("unwatch", "stop watching an address"),
    ("watches", "list your watches"),
    ("forget", "delete your verified address, results and watches"),
    ("profiles", "what each scan profile checks"),
    ("allow", "admins: manage the allowlist"),
    ("role", "admins: manage roles"),
    ("optout", "admins: addresses never to scan"),
    ("audit", "admins: who scanned what, when, and why"),
)
"""Command names and one-line descriptions, for platforms that show a command menu."""

HELP_ADMIN = """\
Admin commands:
  /allow add NETWORK [--lab] [--scope S] [NOTE]   allow a range (--scope: a named group such as
                                      customers; --lab: special-purpose space, e.g. 127.0.0.0/8)
  /allow remove NETWORK | /allow list [SCOPE]
  /optout add NETWORK [NOTE] | /optout remove NETWORK | /optout list
                                      never scan a range (agents see the NOTE in refusals)
  /role grant PLATFORM:USER agent|admin | /role revoke PLATFORM:USER | /role list
  /audit [SINCE] [--user PLATFORM:USER] [--target X] [--limit N]   the audit trail, newest first
                                      (SINCE: 30m, 2h, 1d, 2w or an ISO date)"""

AUDIT_USAGE = "Usage: /audit [SINCE] [--user PLATFORM:USER] [--target X] [--limit N]"
AUDIT_CHAT_LIMIT = 20
"""Events /audit shows unless asked for more."""
AUDIT_CHAT_MAX = 50
"""The most /audit shows in a chat (the CLI has no such cap)."""
SINCE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """Parse a time window start: ``30m``, ``2h``, ``1d``, ``2w`` ago, or an ISO-8601 date/time.

    An ISO time without a zone is UTC. Raises ValueError with a one-line reason.
    """
    value = text.strip()
    relative = re.fullmatch(r"([0-9]{1,6})([mhdw])", value.lower())
    try:
        if relative is not None:
            amount = int(relative.group(1))
            if amount > 0:
                return now - timedelta(seconds=amount * SINCE_UNITS[relative.group(2)])
        elif value[:1].isdigit():
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise ValueError(
        f"{value[:40]!r} is not a time: use 30m, 2h, 1d, 2w or an ISO date such as 2024-05-01"
    )


@dataclass(frozen=True)
class AuditFilters:
    """What /audit was asked for."""

    since: datetime | None = None
    user: str | None = None
    target: str | None = None
    limit: int = AUDIT_CHAT_LIMIT


def parse_audit_arguments(arguments: Sequence[str], now: datetime) -> AuditFilters:
    """Parse ``[SINCE] [--since S] [--user U] [--target X] [--limit N]``; ValueError if wrong."""
    options: dict[str, str] = {}
    bare: list[str] = []
    words = iter(arguments)
    for word in words:
        # Phones turn a typed "--" into a dash: "—user" means "--user".
        name = re.sub(r"^[\u2013\u2014]", "--", word).lower()
        if name in ("--since", "--user", "--target", "--limit"):
            value = next(words, None)
            if value is None:
                raise ValueError(f"{name} needs a value")
            options[name] = value
        elif name.startswith("--"):
            raise ValueError(f"unknown option {word[:32]}")
        else:
            bare.append(word)
    if bare:
        if len(bare) > 1 or "--since" in options:
            raise ValueError("give one time window")
        options["--since"] = bare[0]
    limit = AUDIT_CHAT_LIMIT
    if "--limit" in options:
        if not options["--limit"].isascii() or not options["--limit"].isdigit():
            raise ValueError("--limit is a number")
        limit = min(max(int(options["--limit"]), 1), AUDIT_CHAT_MAX)
    since = options.get("--since")
    return AuditFilters(
        since=parse_since(since, now) if since is not None else None,
        user=options.get("--user"),
        target=options.get("--target"),
        limit=limit,
    )


def printable(text: str, limit: int) -> str:
    """Text typed by anyone, made safe to show: control characters become "?", long text is cut."""
    cleaned = "".join(char if char.isprintable() else "?" for char in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def audit_line(event: AuditEntry) -> str:
    """One audit event as a line of chat text."""
    line = f"{event.at:%Y-%m-%d %H:%M} {printable(event.actor, 64)} {event.action}"
    if event.target:
        line += f" {printable(event.target, 64)}"
    line += f" → {event.decision}"
    if event.reason:
        line += f" ({printable(event.reason, 120)})"
    if event.job_id:
        line += f" [job {printable(event.job_id, 64)}]"
    return line


def _reply(text: str, kind: ReplyKind = ReplyKind.TEXT) -> list[Reply]:
    return [Reply(kind=kind, text=text)]


def describe_entry(entry: NetworkEntry) -> str:
    """One allow or opt-out entry as a chat line: network, tags, note, who added it and when."""
    tags = " [lab]" if entry.lab else ""
    if entry.scope != DEFAULT_SCOPE:
        tags += f" [scope {entry.scope}]"
    return (
        f"{entry.network}{tags} — {entry.note or 'no note'} "
        f"(by {entry.added_by}, {entry.added_at:%Y-%m-%d})"
    )


def allow_options(words: Sequence[str]) -> tuple[bool, str, str] | None:
    """Split ``/allow add``'s words after NETWORK into (lab, scope, note); None if malformed."""
    lab, scope, note = False, DEFAULT_SCOPE, []
    pending = iter(words)
    for word in pending:
        if word == "--lab":
            lab = True
        elif word == "--scope":
            scope = next(pending, "")
            if not scope:
                return None
        elif word.startswith("--scope="):
            scope = word.removeprefix("--scope=")
        else:
            note.append(word)
    return lab, scope, " ".join(note)


def ticket_reply(ticket: Ticket) -> Reply:
    """Word the immediate answer to an accepted scan."""
    if ticket.state is TicketState.CACHED and ticket.report is not None:
        age = describe_age(ticket.age_s or 0)
        return Reply(
            kind=ReplyKind.REPORT,
            text=f"{ticket.address} was scanned {age} ({ticket.profile}); here is that result.",
            job_id=ticket.job_id,
            report=ticket.report,
        )
    if ticket.held:
        where = "waiting for another scan of the same address to finish"
    elif ticket.position is not None:
        where = f"position {ticket.position} in the queue"
    else:
        where = "starting now"
    if ticket.state is TicketState.JOINED:
        text = (
            f"A {ticket.profile} scan of {ticket.address} is already under way "
            f"(job {ticket.job_id}, {where}); you will get its result here."
        )
    else:
        text = (
            f"Queued a {ticket.profile} scan of {ticket.address} as job {ticket.job_id} "
            f"({where}). The result will appear here."
        )
    return Reply(kind=ReplyKind.ACCEPTED, text=text, job_id=ticket.job_id, final=False)


def status_reply(view: JobView) -> Reply:
    """Word the answer to /status."""
    if view.report is not None:
        return Reply(
            kind=ReplyKind.REPORT,
            text=f"Job {view.job_id} finished.",
            job_id=view.job_id,
            report=view.report,
        )
    text = f"Job {view.job_id}: {view.profile} scan of {view.address} is {view.state}"
    if view.position is not None:
        text += f" (position {view.position} in the queue)"
    if view.reason:
        text += f": {view.reason}"
    return Reply(kind=ReplyKind.TEXT, text=text + ".", job_id=view.job_id)


class CommandRouter:
    """Turns one inbound chat message into replies."""

    def __init__(
        self,
        scans: ScanQueue,
        admin: AdminOps,
        *,
        profiles: Sequence[str],
        check_links: CheckLinkIssuer | None = None,
        audit: AuditTrail | None = None,
        watches: WatchBook | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.scans = scans
        self.watches = watches
        self.admin = admin
        self.profiles = list(profiles)
        self.check_links = check_links
        self.audit = audit
        self.clock = clock
        self._commands: dict[str, Callable[[Inbound, list[str]], list[Reply]]] = {
            "start": self._start,
            "help": self._help,
            "check": self._check,
            "history": self._history,
            "forget": self._forget,
            "scan": self._scan,
            "status": self._status,
            "profiles": self._profiles,
            "allow": self._allow,
            "role": self._role,
            "optout": self._optout,
            "audit": self._audit,
            "watch": self._watch,
            "unwatch": self._unwatch,
            "watches": self._watches,
        }

    @property
    def command_names(self) -> list[str]:
        """The commands this router understands."""
        return list(self._commands)

    def handle(self, inbound: Inbound) -> list[Reply]:
        """Answer one message; never raises for bad input."""
        text = inbound.text.strip()
        if len(text) > MAX_COMMAND_LENGTH:
            return _reply("That message is too long to be a command.", ReplyKind.REFUSED)
        if not text.startswith("/"):
            return _reply("Commands start with /. Try /help.")
        name, *arguments = text[1:].split()
        handler = self._commands.get(name.lower())
        if handler is None:
            return _reply(f"Unknown command /{name[:32]}. Try /help.")
        try:
            return handler(inbound, arguments)
        except (ScanRefused, PolicyRefused) as refusal:
            return _reply(refusal.reason, ReplyKind.REFUSED)
        except Exception:
            log.exception("command failed", command=name[:32], actor=str(inbound.requester))
            return _reply(
                "Something went wrong on our side; the request was not carried out. "
                "Please try again in a minute.",
                ReplyKind.FAILED,
            )

    def _help(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        role = self.scans.role_of(inbound.requester)
        parts = [HELP_EVERYONE.format(profiles=", ".join(self.profiles))]
        parts.append(HELP_USER if role is Role.USER else HELP_AGENT)
        if role is Role.ADMIN:
            parts.append(HELP_ADMIN)
        return _reply("\n\n".join(parts))

    def _start(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        return [Reply(kind=ReplyKind.TEXT, text=START), *self._help(inbound, arguments)]

    def _check(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if self.check_links is None:
            return _reply(
                "/check is not available here: the operator has not set PORTPATROL_PUBLIC_URL.",
                ReplyKind.REFUSED,
            )
        link = self.check_links(inbound.requester, inbound.reply_to.to_payload())
        return _reply(
            "Open this link from the connection you want checked (not over mobile data "
            "if you mean your home line). It works once, within 10 minutes:\n" + link
        )

    def _history(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if len(arguments) > 1:
            return _reply("Usage: /history [TARGET]")
        reports = self.scans.history(inbound.requester, arguments[0] if arguments else None)
        if not reports:
            return _reply("No stored scans (results are kept for 30 days).")
        lines = [
            f"{report.finished_at:%Y-%m-%d %H:%M} UTC  {report.address}  {report.profile}  "
            f"risk {report.risk.value}  (job {report.job_id})"
            for report in reports
        ]
        return _reply("Past scans, newest first:\n" + "\n".join(lines))

    def _forget(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        return _reply(self.scans.forget(inbound.requester))

    def _profiles(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        return _reply("Scan profiles: " + ", ".join(self.profiles) + " (default: quick).")

    def _scan(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if not arguments:
            return _reply("Usage: /scan TARGET [PROFILE], for example /scan 198.51.100.7")
        if len(arguments) > 2:
            return _reply("One target per request: /scan TARGET [PROFILE]", ReplyKind.REFUSED)
        target = arguments[0]
        profile = arguments[1].lower() if len(arguments) == 2 else "quick"
        ticket = self.scans.submit_scan(
            inbound.requester, target, profile, inbound.reply_to.to_payload()
        )
        return [ticket_reply(ticket)]

    def _status(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if len(arguments) > 1:
            return _reply("Usage: /status [JOB] (the job id from the scan's first reply)")
        job_id = arguments[0] if arguments else self.scans.last_job(inbound.requester)
        if job_id is None:
            return _reply("You have not asked for a scan yet. Usage: /status [JOB]")
        view = self.scans.status(job_id)
        role = self.scans.role_of(inbound.requester)
        if view is None or (role is Role.USER and view.requested_by != str(inbound.requester)):
            return _reply(f"No job {job_id[:32]} is known (results are kept for 30 days).")
        return [status_reply(view)]

    def _allow(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        actor = inbound.requester
        action = arguments[0].lower() if arguments else ""
        if action == "list" and len(arguments) <= 2:
            scope = arguments[1] if len(arguments) == 2 else None
            entries = self.admin.allow_entries(actor, scope)
            if not entries:
                return _reply(
                    "The allowlist is empty."
                    if scope is None
                    else f"No allow entries in scope {scope}."
                )
            header = "Allowlist:" if scope is None else f"Allowlist, scope {scope}:"
            return _reply(header + "\n" + "\n".join(describe_entry(entry) for entry in entries))
        options = allow_options(arguments[2:]) if action == "add" and len(arguments) >= 2 else None
        if options is not None:
            lab, scope, note = options
            change = self.admin.add_allow(actor, arguments[1], note=note, lab=lab, scope=scope)
            entry, old = change.entry, change.replaced
            text = f"Allowed {entry.network}{' (lab)' if entry.lab else ''}"
            if entry.scope != DEFAULT_SCOPE:
                text += f" in scope {entry.scope}"
            if old is not None:
                # One entry per network: say what was overwritten, a scope move included.
                text += (
                    f". It replaces the entry in scope {old.scope}"
                    f"{' (lab)' if old.lab else ''}: {old.note or 'no note'} "
                    f"(by {old.added_by}, {old.added_at:%Y-%m-%d})"
                )
            return _reply(text + ".")
        if action == "remove" and len(arguments) == 2:
            removed = self.admin.disallow(actor, arguments[1])
            return _reply(f"Removed {removed} from the allowlist.")
        return _reply(
            "Usage: /allow add NETWORK [--lab] [--scope SCOPE] [NOTE] | /allow remove NETWORK | "
            "/allow list [SCOPE]"
        )

    def _optout(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        actor = inbound.requester
        action = arguments[0].lower() if arguments else ""
        if action == "list" and len(arguments) == 1:
            entries = self.admin.opt_out_entries(actor)
            if not entries:
                return _reply("The opt-out list is empty.")
            lines = [describe_entry(entry) for entry in entries]
            return _reply("Opt-out list (never scanned):\n" + "\n".join(lines))
        if action == "add" and len(arguments) >= 2:
            change = self.admin.opt_out(actor, arguments[1], note=" ".join(arguments[2:]))
            text = f"Opted out {change.entry.network}: it is refused for everyone from now on"
            if change.replaced is not None:
                text += f" (replaces the earlier opt-out: {change.replaced.note or 'no note'})"
            return _reply(text + ".")
        if action == "remove" and len(arguments) == 2:
            removed = self.admin.remove_opt_out(actor, arguments[1])
            return _reply(f"Removed {removed} from the opt-out list.")
        return _reply("Usage: /optout add NETWORK [NOTE] | /optout remove NETWORK | /optout list")

    def _role(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        actor = inbound.requester
        action = arguments[0].lower() if arguments else ""
        if action == "list":
            roles = self.admin.roles(actor)
            lines = [f"{who}: {role.value}" for who, role in sorted(roles.items())]
            return _reply("Roles:\n" + ("\n".join(lines) if lines else "(none)"))
        if action == "grant" and len(arguments) == 3:
            try:
                role = Role(arguments[2].lower())
            except ValueError:
                return _reply("The role is agent or admin.", ReplyKind.REFUSED)
            who = self.admin.grant(actor, arguments[1], role)
            return _reply(f"{who} is now {role.value}.")
        if action == "revoke" and len(arguments) == 2:
            who = self.admin.revoke(actor, arguments[1])
            return _reply(f"{who} no longer has a granted role.")
        return _reply(
            "Usage: /role grant PLATFORM:USER agent|admin | /role revoke PLATFORM:USER | /role list"
        )

    def _audit(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if self.audit is None:
            return _reply("/audit is not available here.", ReplyKind.REFUSED)
        actor = inbound.requester
        if self.scans.role_of(actor) is not Role.ADMIN:
            self.audit.record(
                actor=str(actor), action="audit_read", decision="refused", reason="not an admin"
            )
            return _reply("Only admins can read the audit trail.", ReplyKind.REFUSED)
        try:
            filters = parse_audit_arguments(arguments, self.clock())
        except ValueError as error:
            return _reply(f"{error}.\n{AUDIT_USAGE}", ReplyKind.REFUSED)
        events = self.audit.query(
            since=filters.since, user=filters.user, target=filters.target, limit=filters.limit
        )
        if not events:
            return _reply("No audit events match.")
        lines = [audit_line(event) for event in events]
        return _reply(
            f"Audit trail, newest first (times UTC, {len(lines)} shown):\n" + "\n".join(lines)
        )

    def _watch_book(self) -> WatchBook:
        if self.watches is None:
            raise ScanRefused("watches are not available here", "unavailable")
        return self.watches

    def _watch(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if not 1 <= len(arguments) <= 2:
            return _reply("Usage: /watch TARGET [daily|weekly]")
        interval = arguments[1].lower() if len(arguments) == 2 else "daily"
        watch = self._watch_book().add(
            inbound.requester, arguments[0], interval, inbound.reply_to.to_payload()
        )
        return _reply(
            f"Watching {watch.address} {watch.interval} (watch {watch.watch_id}). You will hear "
            "from me here only when something changed; /unwatch "
            f"{printable(watch.target, 64)} stops it."
        )

    def _unwatch(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if len(arguments) != 1:
            return _reply("Usage: /unwatch TARGET (see /watches)")
        watch = self._watch_book().remove(inbound.requester, arguments[0])
        return _reply(f"Stopped watching {watch.address}.")

    def _watches(self, inbound: Inbound, arguments: list[str]) -> list[Reply]:
        if arguments:
            return _reply("Usage: /watches")
        watches = self._watch_book().watches_of(inbound.requester)
        if not watches:
            return _reply("You watch nothing. /watch TARGET [daily|weekly] starts a watch.")
        lines = [
            f"{printable(watch.target, 64)} ({watch.address}) {watch.interval}, "
            f"since {watch.created_at:%Y-%m-%d} (watch {watch.watch_id})"
            for watch in watches
        ]
        return _reply("Your watches:\n" + "\n".join(lines))
