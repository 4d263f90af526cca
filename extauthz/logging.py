"""structlog configuration — the only module that configures logging.

JSON lines to stdout by default (console rendering when asked, or on a TTY in dev
mode); the stdlib loggers of grpc, kubernetes and urllib3 are routed through the
same processors. A redaction processor runs last before rendering and guarantees
that no token, ``authorization`` or ``cookie`` value is ever written: it drops
such fields by name and masks anything shaped like a JWS/JWE in every string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}  # fmt: skip

#: field names whose values are never logged
SECRET_FIELDS = frozenset({"token", "authorization", "cookie", "set-cookie", "access_token",
                           "id_token", "refresh_token", "password", "secret"})  # fmt: skip
#: a compact JWS/JWE (base64url segments of JSON starting with '{"' -> 'eyJ')
_JOSE = re.compile(r"eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){2,4}")
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _JOSE.sub(REDACTED, value) if "eyJ" in value else value
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in SECRET_FIELDS else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret field, no token-shaped string survives.

    Runs on every decision line, so the common cases (short strings, numbers) cost a
    type check and one substring test each.
    """
    for key, value in event.items():
        if key in SECRET_FIELDS or (not key.islower() and key.lower() in SECRET_FIELDS):
            event[key] = REDACTED
        elif type(value) is str:
            if "eyJ" in value:
                event[key] = _JOSE.sub(REDACTED, value)
        elif value is None or type(value) in (int, float, bool):
            continue
        else:
            event[key] = _scrub(value)
    return event


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once, at start-up.

    ``stream`` defaults to stdout (tests pass a file to inspect every line written).
    """
    out = stream or sys.stdout
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))
    for noisy in ("kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
