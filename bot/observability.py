"""Logging set-up for the entry points: structlog to stderr, console or JSON lines.

Library modules only call ``structlog.get_logger``; this is called once per process.
Imports: structlog, logging.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, level: str = "WARNING", json_lines: bool = False) -> None:
    """Route structlog and stdlib logging to stderr at ``level``."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.WARNING)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s", force=True)
    # httpx logs every request URL at INFO, and a Bot API URL carries the bot token
    # (https://api.telegram.org/bot<token>/getUpdates): keep its request lines out of the log.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
