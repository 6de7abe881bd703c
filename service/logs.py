"""structlog set-up: configured once at start; JSON when not on a terminal.

A redaction processor drops any key that names a PIN or a verifier (but not
pin_type): cheap insurance on top of never passing them in the first place.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from typing import TextIO

import structlog

_SECRET_KEY = re.compile(r"(^|_)(pin|pins|current_pin|new_pin|digest|verifier|key)$", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_secrets(_logger, _method, event_dict):
    for key in [k for k in event_dict if _is_secret(k)]:
        event_dict[key] = "[redacted]"
    return event_dict


def configure(log_format: str = "auto", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,  # plain traceback: no local variables
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
