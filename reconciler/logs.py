"""One logging setup for the controller and the agent: structlog, rendered by the standard
library's logging, so that our lines and those of uvicorn, urllib3 or alembic come out alike.

Every line carries `timestamp` (UTC, ISO 8601), `level`, `logger` and `event`, as one JSON object
(`--log-format json`, the default when the logs do not go to a terminal) or as a readable line
(`console`). Processors are plain functions (structlog's model), so they are tested as such:
`redact` replaces the value of any key that names a secret, a second line of defence behind
`Secret`, whose repr never shows its value.

The agent imports this module (and `reconciler.wire`, `reconciler.errors`), nothing else of
the controller: it needs only structlog and the standard library.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
FORMATS: tuple[LogFormat, ...] = ("json", "console")
REDACTED = "********"
# Keys whose values are secrets whatever they hold: never rendered.
SECRET_KEY = re.compile(r"pass(word)?|secret|token|authori[sz]ation|credential|api_?key", re.I)
# Libraries whose INFO lines are noise for an operator (one line per request or migration step).
QUIET = ("urllib3", "docker", "alembic", "uvicorn.access", "httpx", "httpcore", "watchfiles")

_OURS = "_hedgerow_handler"  # marks the handler configure() installs, to replace only that one
# Tracebacks without the values of local variables: structlog's defaults show them, and a frame
# holding a decrypted password or a token would print it.
EXCEPTIONS_AS_DATA = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def console_renderer() -> Any:
    return structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )


def redact(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A processor: the value of any key that names a secret is replaced."""
    for key in event_dict:
        if key != "event" and SECRET_KEY.search(key):
            event_dict[key] = REDACTED
    return event_dict


def default_format(stream: TextIO) -> LogFormat:
    """JSON for machines (a file, a pipe, journald), a readable line for a terminal."""
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "json"


def configure(
    log_format: LogFormat | None = None, *, level: str = "INFO", stream: TextIO | None = None
) -> LogFormat:
    """Route structlog and the standard library's logging to one handler on `stream` (stderr
    by default); returns the format chosen. Calling it again replaces the handler it installed,
    and leaves handlers others installed (pytest's) alone."""
    stream = stream if stream is not None else sys.stderr
    chosen = log_format or default_format(stream)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(EXCEPTIONS_AS_DATA)
    else:
        renderer = console_renderer()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    _log_uncaught()
    return chosen


def _log_uncaught() -> None:
    """An exception nothing caught, in any thread, is a log line like the others, not a raw
    traceback on stderr that a JSON reader would choke on."""
    log = structlog.get_logger("hedgerow")

    def main_thread(kind: type[BaseException], error: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        log.critical("uncaught exception", exc_info=(kind, error, tb))

    def other_thread(hook: threading.ExceptHookArgs) -> None:
        if hook.exc_type is SystemExit:
            return
        error = hook.exc_value or hook.exc_type()
        thread = hook.thread.name if hook.thread else None
        log.critical(
            "uncaught exception in a thread",
            thread=thread,
            exc_info=(hook.exc_type, error, hook.exc_traceback),
        )

    sys.excepthook = main_thread
    threading.excepthook = other_thread


def get_logger(name: str) -> Any:
    """A structlog logger named `name` (the `logger` key of each line)."""
    return structlog.get_logger(name)


if not structlog.is_configured():
    # Before configure() (a test, an embedding program): structlog's default, minus the locals.
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            console_renderer(),
        ]
    )
