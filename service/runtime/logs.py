"""structlog set-up: configured once at start; JSON when not on a terminal.

A redaction processor drops any key that names a PIN or a verifier (but not
pin_type): cheap insurance on top of never passing them in the first place.

Every RPC writes a line, so the per-line cost is on the verify path: the
context of a call (rpc, card, terminal) is one ContextVar holding a dict
(`new_context` / `bind_context`), merged into each line; structlog's own
contextvars scan every variable of the context per line and per bind. JSON
is rendered with orjson (figures: docs/performance.md).

The standard library's loggers (gRPC's, SQLAlchemy's, Alembic's, asyncio's)
go through the same processors and renderer (a root handler with structlog's
ProcessorFormatter), so the log is one format; their lines carry `logger`,
the library logger's name. Their warnings and errors are written at any
level up to warning; their INFO and DEBUG lines (Alembic's plugin set-up on
import, gRPC's internals) only at level debug, so that a command's stderr
stays its one line. SQLAlchemy is never let below WARNING: its INFO lines
are SQL statements with their parameters, which include verifiers. gRPC's C core writes to stderr by itself
(GRPC_VERBOSITY, GRPC_TRACE), outside any Python logger.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import sys
from typing import Any, TextIO

import orjson
import structlog

_SECRET_KEY = re.compile(r"(^|_)(pin|pins|current_pin|new_pin|digest|verifier|key)$", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_secrets(_logger, _method, event_dict):
    for key in [k for k in event_dict if _is_secret(k)]:
        event_dict[key] = "[redacted]"
    return event_dict


_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("pinlife_log_context", default={})  # noqa: B039 - never mutated: replaced


def new_context(**values: Any) -> None:
    """Replace the log context of this task (an RPC starts with its own)."""
    _context.set(values)


def bind_context(**values: Any) -> None:
    """Add to the log context of this task (and of tasks it starts)."""
    _context.set({**_context.get(), **values})


def merge_context(_logger, _method, event_dict):
    for key, value in _context.get().items():
        event_dict.setdefault(key, value)
    return event_dict


def _orjson_dumps(obj: Any, **kw: Any) -> str:
    return orjson.dumps(obj, default=kw.get("default")).decode()


def level_number(level: int | str) -> int:
    """A level by name (debug, info, warning, error) or number."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


class _LibraryHandler(logging.Handler):
    """The standard library's records, rendered by structlog and written by
    a structlog PrintLogger: with its lock on the stream, so that a library's
    line never lands in the middle of one of ours."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter, level: int):
        super().__init__(level)
        self.setFormatter(formatter)
        self._out = structlog.PrintLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:  # noqa: BLE001 - the logging module's own policy
            self.handleError(record)


def configure(log_format: str = "auto", level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    level = level_number(level)
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps) if as_json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        merge_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,  # plain traceback: no local variables
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:  # configured again: replaced
        root.removeHandler(handler)
    root.addHandler(_LibraryHandler(stream, formatter, level))
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))  # the libraries' own loggers inherit it
    logging.getLogger("sqlalchemy").setLevel(max(level, logging.WARNING))
