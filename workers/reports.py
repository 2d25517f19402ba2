"""Stored scan reports: by job id, the newest per address and profile, and a short history.

Key layout: ``pp:report:<job_id>`` holds the report document (JSON) for ``REPORT_TTL_S``;
``pp:history:<address>`` is a list of job ids, newest first, capped at ``HISTORY_LENGTH``.
Imports: redis, ``workers.models``.
"""

from __future__ import annotations

import json

import redis

from workers.connection import as_text
from workers.models import Requester, ScanReport

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

    def history(self, address: str, *, limit: int = HISTORY_LENGTH) -> list[ScanReport]:
        """Return the stored reports of an address, newest first."""
        job_ids = self._redis.lrange(f"{HISTORY_PREFIX}{address}", 0, limit - 1)
        reports = [self.get(as_text(job_id)) for job_id in job_ids]
        return [report for report in reports if report is not None]
