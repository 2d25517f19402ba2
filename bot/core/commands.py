"""Chat commands: parse the text, check the caller's role, call the scan side, word the answer.

The same commands serve the console, Telegram and Slack; adapters only translate.
A stack trace never reaches a chat: expected refusals become REFUSED replies, anything else a
short apology (and a log line with the details).
Imports: ``bot.core``, ``workers`` value-object modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from bot.core.messages import MAX_COMMAND_LENGTH, Inbound, Reply, ReplyKind
from bot.core.render import describe_age
from bot.core.service import AdminOps, CheckLinkIssuer, ScanQueue
from workers.models import Role
from workers.policy import PolicyRefused
from workers.tickets import JobView, ScanRefused, Ticket, TicketState

log = structlog.get_logger(__name__)

HELP_EVERYONE = """\
portpatrol checks which ports of an internet connection are open and says what that means.
Commands:
  /scan TARGET [PROFILE]  scan one IP address or hostname (profiles: {profiles})
  /status [JOB]           where a scan stands (default: your latest)
  /history [TARGET]       past scans (home users: of their own connection)
  /profiles               what each scan profile checks
  /help                   this text"""

HELP_USER = """\
As a home user you can scan the connection you verified as yours:
  /check                  get a one-time link; open it from the connection you want checked
  /forget                 delete your verified connection and its stored results"""

HELP_AGENT = """\
As an agent you can scan addresses in the allowlist (ask an admin to add a range)."""

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
    ("forget", "delete your verified address and results"),
    ("profiles", "what each scan profile checks"),
    ("allow", "admins: manage the allowlist"),
    ("role", "admins: manage roles"),
)
"""Command names and one-line descriptions, for platforms that show a command menu."""

HELP_ADMIN = """\
Admin commands:
  /allow add NETWORK [--lab] [NOTE]   allow a range (--lab: special-purpose space, e.g. 127.0.0.0/8)
  /allow remove NETWORK | /allow list
  /role grant PLATFORM:USER agent|admin | /role revoke PLATFORM:USER | /role list"""


def _reply(text: str, kind: ReplyKind = ReplyKind.TEXT) -> list[Reply]:
    return [Reply(kind=kind, text=text)]


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
    ) -> None:
        self.scans = scans
        self.admin = admin
        self.profiles = list(profiles)
        self.check_links = check_links
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
        if action == "list":
            entries = self.admin.allow_entries(actor)
            if not entries:
                return _reply("The allowlist is empty.")
            lines = [
                f"{entry.network}{' [lab]' if entry.lab else ''} — {entry.note or 'no note'} "
                f"(by {entry.added_by}, {entry.added_at:%Y-%m-%d})"
                for entry in entries
            ]
            return _reply("Allowlist:\n" + "\n".join(lines))
        if action == "add" and len(arguments) >= 2:
            rest = arguments[2:]
            lab = "--lab" in rest
            note = " ".join(word for word in rest if word != "--lab")
            entry = self.admin.allow(actor, arguments[1], note=note, lab=lab)
            return _reply(f"Allowed {entry.network}{' (lab)' if entry.lab else ''}.")
        if action == "remove" and len(arguments) == 2:
            removed = self.admin.disallow(actor, arguments[1])
            return _reply(f"Removed {removed} from the allowlist.")
        return _reply(
            "Usage: /allow add NETWORK [--lab] [NOTE] | /allow remove NETWORK | /allow list"
        )

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
