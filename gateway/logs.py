"""Structured logging with structlog: JSON in production, readable in a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from gateway.settings import ServerSettings

# Event keys whose values are credentials; a last line of defence, the code
# does not log them in the first place.
_SENSITIVE = frozenset({"authorization", "token", "api_key", "apikey", "x-api-key", "password", "secret", "chat_token"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event.keys() & _SENSITIVE:
        event[key] = "**********"
    return event


class StderrLogger:
    """Writes each rendered event to whatever ``sys.stderr`` is at that moment.

    Resolving the stream per write (rather than binding it once, as
    ``WriteLoggerFactory`` does) keeps logging working when the stream is
    replaced, e.g. by a supervisor or a test's capture, and a failed write is
    dropped like ``logging`` does: a log line must never fail a request.
    """

    def msg(self, message: str) -> None:
        try:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _logger_factory(*args: Any) -> StderrLogger:
    return StderrLogger()


def configure_logging(settings: ServerSettings) -> None:
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
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
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(settings.log_level.upper())),
        logger_factory=_logger_factory,
        cache_logger_on_first_use=False,
    )
