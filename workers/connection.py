"""The Redis connection: how to open one, and how to read what it returns.

rq needs raw bytes (``decode_responses=False``), so every store shares that client and decodes
values here.
Imports: redis.
"""

from __future__ import annotations

import redis


def connect(url: str) -> redis.Redis:
    """Open a client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
    return redis.Redis.from_url(url, health_check_interval=30)


def as_text(value: bytes | str) -> str:
    """Return a Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else value
