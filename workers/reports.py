"""Stored scan reports: by job id, the newest per address and profile, a short history, diffs.

Key layout: ``pp:report:<job_id>`` holds the report document (JSON) for ``REPORT_TTL_S``;
``pp:history:<address>`` is a list of job ids, newest first, capped at ``HISTORY_LENGTH``.
``diff_reports`` compares a new report with the previous one of the same address and profile.
Imports: redis, structlog, ``workers.models``.
"""

from __future__ import annotations

import json

import redis
import structlog

from workers.connection import as_text
from workers.models import (
    Finding,
    OpenPort,
    PortChange,
    ReportChanges,
    Requester,
    ScanReport,
    ServiceChange,
)

log = structlog.get_logger(__name__)

REPORT_PREFIX = "pp:report:"
HISTORY_PREFIX = "pp:history:"
REPORT_TTL_S = 30 * 24 * 3600
HISTORY_LENGTH = 20


class ReportStore:
    """Saves and finds report documents."""

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection

    def save(self, report: ScanReport) -> None:
        """Store a report and put it at the head of its address's history."""
        history = f"{HISTORY_PREFIX}{report.address}"
        with self._redis.pipeline() as pipe:
            pipe.set(
                f"{REPORT_PREFIX}{report.job_id}",
                json.dumps(report.to_document(), separators=(",", ":")),
                ex=REPORT_TTL_S,
            )
            pipe.lpush(history, report.job_id)
            pipe.ltrim(history, 0, HISTORY_LENGTH - 1)
            pipe.expire(history, REPORT_TTL_S)
            pipe.execute()

    def get(self, job_id: str) -> ScanReport | None:
        """Return the stored report of a job, if it exists."""
        raw = self._redis.get(f"{REPORT_PREFIX}{job_id}")
        if raw is None:
            return None
        return ScanReport.from_document(json.loads(raw))

    def forget(self, address: str, requester: Requester) -> int:
        """Delete the reports of ``address`` that ``requester`` asked for; return how many."""
        history = f"{HISTORY_PREFIX}{address}"
        removed = 0
        for report in self.history(address):
            if report.requested_by == requester:
                with self._redis.pipeline() as pipe:
                    pipe.delete(f"{REPORT_PREFIX}{report.job_id}")
                    pipe.lrem(history, 0, report.job_id)
                    pipe.execute()
                removed += 1
        return removed

    def previous(self, address: str, profile: str, *, excluding: str = "") -> ScanReport | None:
        """Return the newest kept report of ``address`` scanned with ``profile``, if any.

        ``excluding`` names the job asking (a retried job may already be in the history).
        """
        job_ids = self._redis.lrange(f"{HISTORY_PREFIX}{address}", 0, HISTORY_LENGTH - 1)
        for raw in job_ids:
            job_id = as_text(raw)
            if job_id == excluding:
                continue
            try:
                report = self.get(job_id)
            except ValueError:
                # Anyone who can write to Redis can store junk here: a report that does not
                # parse is no baseline, and must not fail the scan that is comparing against it.
                log.warning("skipping an unreadable stored report", job_id=job_id)
                continue
            if report is not None and report.address == address and report.profile == profile:
                return report
        return None

    def history(self, address: str, *, limit: int = HISTORY_LENGTH) -> list[ScanReport]:
        """Return the stored reports of an address, newest first."""
        job_ids = self._redis.lrange(f"{HISTORY_PREFIX}{address}", 0, limit - 1)
        reports = [self.get(as_text(job_id)) for job_id in job_ids]
        return [report for report in reports if report is not None]


PortKey = tuple[int, str]


def diff_reports(previous: ScanReport, current: ScanReport) -> ReportChanges:
    """Return what changed between two reports of one address and profile, oldest first.

    Ports count as opened or closed only for protocols both scans covered. A port seen open
    before but not now is claimed ``closed`` only when both scans completed with the host up:
    a timed-out or host-down scan proves nothing about a port it did not see (``not_seen``).
    """
    before, after = _open_ports(previous), _open_ports(current)
    before_findings, after_findings = _worst_findings(previous), _worst_findings(current)
    scanned_before, scanned_now = _scanned_protocols(previous), _scanned_protocols(current)
    authoritative = _authoritative(previous) and _authoritative(current)
    opened = [
        _port_change(after[key], after_findings.get(key))
        for key in sorted(after.keys() - before.keys())
        if key[1] in scanned_before
    ]
    closed: list[PortChange] = []
    not_seen: list[PortChange] = []
    for key in sorted(before.keys() - after.keys()):
        change = _port_change(before[key], before_findings.get(key))
        if authoritative and key[1] in scanned_now:
            closed.append(change)
        else:
            not_seen.append(change)
    changed = [
        ServiceChange(port=key[0], protocol=key[1], before=was, after=now)
        for key in sorted(before.keys() & after.keys())
        if (was := _describe(before[key], before_findings.get(key)))
        != (now := _describe(after[key], after_findings.get(key)))
    ]
    return ReportChanges(
        previous_job_id=previous.job_id,
        previous_finished_at=previous.finished_at,
        previous_complete=_authoritative(previous),
        opened=opened,
        closed=closed,
        changed=changed,
        not_seen=not_seen,
    )


def _authoritative(report: ScanReport) -> bool:
    # nmap runs with -Pn, so "down" means it got no answer at all: no evidence either way.
    return report.complete and report.host_state == "up"


def _open_ports(report: ScanReport) -> dict[PortKey, OpenPort]:
    ports: dict[PortKey, OpenPort] = {}
    for port in report.open_ports:
        ports.setdefault((port.port, port.protocol), port)
    return ports


def _worst_findings(report: ScanReport) -> dict[PortKey, Finding]:
    worst: dict[PortKey, Finding] = {}
    for finding in report.findings:
        key = (finding.port, finding.protocol)
        if key not in worst or finding.severity.rank > worst[key].severity.rank:
            worst[key] = finding
    return worst


def _scanned_protocols(report: ScanReport) -> frozenset[str]:
    # Every profile scans TCP; UDP only on a privileged worker (nmap's own record of its
    # arguments holds -sU then). A UDP port cannot close in a scan that skipped UDP.
    protocols = {"tcp", *(port.protocol for port in report.open_ports)}
    if "-sU" in report.nmap.command.split():
        protocols.add("udp")
    return frozenset(protocols)


def _port_change(port: OpenPort, finding: Finding | None) -> PortChange:
    return PortChange(
        port=port.port,
        protocol=port.protocol,
        service=port.service,
        severity=finding.severity if finding is not None else None,
    )


def _describe(port: OpenPort, finding: Finding | None) -> str:
    """Return "service product version" for a port (findings carry what nmap identified)."""
    product = finding.product if finding is not None else ""
    version = finding.version if finding is not None else ""
    return " ".join(part for part in (port.service, product, version) if part)
