"""Request-rate limits per user and per target, on the ``limits`` package with Redis storage.

A moving window (``MovingWindowRateLimiter``) counts exactly what happened in the last hour,
so "3 per hour" never lets a burst of 6 through at a window edge.
Imports: limits, ``workers.models``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

from workers.models import Requester, Role


class RateLimited(Exception):
    """Too many requests; ``retry_after_s`` says when the next one will be accepted."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RateLimits:
    """The configured limits, as ``limits`` strings such as ``"3/hour"``."""

    user: str = "3/hour"
    agent: str = "60/hour"
    target: str = "10/hour"


def describe_wait(seconds: int) -> str:
    """Say how long to wait in words a person reads at a glance."""
    if seconds <= 1:
        return "1 second"
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


class RequestLimiter:
    """Counts scan requests per user (by role) and per target address."""

    def __init__(self, storage: Storage, limits: RateLimits | None = None) -> None:
        configured = limits or RateLimits()
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_role: dict[Role, RateLimitItem] = {
            Role.USER: parse(configured.user),
            Role.AGENT: parse(configured.agent),
            Role.ADMIN: parse(configured.agent),
        }
        self._per_target = parse(configured.target)

    def check(self, requester: Requester, role: Role, address: str) -> None:
        """Raise RateLimited if this request would exceed a limit; count nothing."""
        for item, key, whose in self._items(requester, role, address):
            if not self._limiter.test(item, *key):
                self._refuse(item, key, whose)

    def hit(self, requester: Requester, role: Role, address: str) -> None:
        """Count one request against the user's and the target's limits, or raise RateLimited."""
        self.check(requester, role, address)
        for item, key, whose in self._items(requester, role, address):
            if not self._limiter.hit(item, *key):
                self._refuse(item, key, whose)

    def hit_target(self, address: str) -> None:
        """Count one scan of the address against its limit alone (a watch run has no caller)."""
        item, key, whose = self._target_item(address)
        if not self._limiter.hit(item, *key):
            self._refuse(item, key, whose)

    def _target_item(self, address: str) -> tuple[RateLimitItem, tuple[str, ...], str]:
        return (self._per_target, ("pp-target", address), f"{address} has")

    def _items(
        self, requester: Requester, role: Role, address: str
    ) -> list[tuple[RateLimitItem, tuple[str, ...], str]]:
        return [
            (self._per_role[role], ("pp-user", str(requester)), "you have"),
            self._target_item(address),
        ]

    def _refuse(self, item: RateLimitItem, key: tuple[str, ...], whose: str) -> None:
        stats = self._limiter.get_window_stats(item, *key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        name = item.GRANULARITY.name
        per = name if item.multiples == 1 else f"{item.multiples} {name}s"
        raise RateLimited(
            f"{whose} reached the limit of {item.amount} scan{'' if item.amount == 1 else 's'} "
            f"per {per}; "
            f"try again in {describe_wait(wait)}",
            wait,
        )
