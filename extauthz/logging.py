"""structlog configuration — the only module that configures logging.

JSON lines to stdout by default (console rendering when asked, or on a TTY in dev
mode); the stdlib loggers of grpc, kubernetes and urllib3 are routed through the
same processors. A redaction processor runs last before rendering and guarantees
that no token, ``authorization`` or ``cookie`` value is ever written: it drops
such fields by name and masks anything shaped like a JWS/JWE in every string.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
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


#: characters valid raw in a JSON string that line splitters other than ``\n`` (Python's
#: ``str.splitlines``, JavaScript) treat as line breaks; orjson writes them raw
_SEPARATORS = (("\u0085".encode(), b"\\u0085"), ("\u2028".encode(), b"\\u2028"),
               ("\u2029".encode(), b"\\u2029"))  # fmt: skip


def json_line(data: Any, option: int | None = None, default: Any = None) -> bytes:
    """``orjson.dumps`` with U+0085, U+2028 and U+2029 escaped: a value that carries
    one (a path, a claim) never splits a log line for any reader, nor forges a line
    after it. ``default`` as orjson's (structlog passes its fallback for objects)."""
    out = orjson.dumps(data, default=default, option=option)
    if not out.isascii():
        for raw, escaped in _SEPARATORS:
            out = out.replace(raw, escaped)
    return out


#: how stale buffered log lines may get before they are written out
FLUSH_SECONDS = 0.2


class _LazyFlush:
    """A binary stream whose ``flush`` is deferred to the flusher thread (and exit).

    structlog flushes after every line; at thousands of decisions a second that is a
    system call each. Lines are written whole, in order, under the stream's own lock;
    at most ``FLUSH_SECONDS`` of them are lost on a SIGKILL.
    """

    def __init__(self, text: Any, binary: Any) -> None:
        self._text = text
        self._binary = binary
        self.write = binary.write

    def flush(self) -> None:
        """Deferred: the flusher thread flushes."""

    def flush_now(self) -> None:
        """Write out what is buffered (the flusher thread, exit, reconfiguration)."""
        with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
            self._text.flush()  # the stdlib handler writes through the text layer
            self._binary.flush()


class _Lines:
    """Event lines written straight into the buffered sink, skipping structlog's chain.

    The decision log writes a line per Check; structlog's bound logger and processor
    chain cost about 5 µs of it. This writer produces the same line — the fields, then
    ``event``, ``level`` and the UTC ``timestamp`` in structlog's ISO format, after
    :func:`redact` — with one ``orjson.dumps``. It is used only while structlog still
    runs the chain :func:`configure` installed with it (a test capturing logs, or a
    later ``structlog.configure``, sends lines back through structlog). Context
    variables are not merged: extauthz binds none.
    """

    def __init__(self, sink: _LazyFlush, level: int, processors: list[Any]) -> None:
        self._write = sink.write
        self.level = level
        self.processors = processors
        self.renderer = processors[-1]
        self._second = -1
        self._prefix = ""

    def active(self) -> bool:
        """Whether structlog still runs the configuration this writer belongs to."""
        processors = structlog.get_config()["processors"]
        # structlog's capture_logs swaps the chain's contents in place
        return processors is self.processors and processors[-1] is self.renderer

    def write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """One line; ``fields`` is consumed (redacted and extended in place)."""
        if _LEVELS[level] < self.level:
            return
        now = time.time()
        second = int(now)
        if second != self._second:  # the date and time text changes once a second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        redact(None, level, fields)
        fields["event"] = event
        fields["level"] = level
        fields["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        self._write(json_line(fields, orjson.OPT_APPEND_NEWLINE))


class EventLog:
    """A named logger for a hot line: straight into the sink when JSON output is
    configured (:class:`_Lines`), through structlog otherwise."""

    def __init__(self, name: str) -> None:
        self._slow = structlog.get_logger(name)

    def line(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """Write ``event`` at ``level`` (``info``/``warning``) with ``fields``."""
        fast = _FLUSHER.lines
        if fast is not None and fast.active():
            fast.write(level, event, fields)
        else:
            getattr(self._slow, level)(event, **fields)


class _Flusher:
    """The process's one log-flushing thread and the sink it flushes.

    ``configure`` may run many times (tests do); each call points the flusher at the
    new sink instead of starting another thread. The thread starts with the first
    buffered sink, never on import.
    """

    def __init__(self) -> None:
        self.sink: _LazyFlush | None = None
        self.lines: _Lines | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def attach(self, sink: _LazyFlush | None) -> None:
        """Flush the previous sink, then flush ``sink`` every ``FLUSH_SECONDS``."""
        with self._lock:
            previous, self.sink = self.sink, sink
            if previous is not None:
                previous.flush_now()
            if sink is not None and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-flush", daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def flush(self) -> None:
        """Flush the current sink now."""
        sink = self.sink
        if sink is not None:
            sink.flush_now()

    @property
    def threads(self) -> int:
        """How many flusher threads this process runs (0 or 1)."""
        return 0 if self._thread is None else 1

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()


#: process-wide logging state: the only global this module keeps
_FLUSHER = _Flusher()


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once, at start-up.

    ``stream`` defaults to stdout (tests pass a file to inspect every line written).
    """
    out = stream or sys.stdout
    renderer: Any
    fast: Any = None
    sink: _LazyFlush | None = None
    factory: Any = structlog.PrintLoggerFactory(file=out)
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
        binary = getattr(out, "buffer", None)
        if binary is not None:
            # the decision log is the hot path: orjson into a buffered binary stream,
            # flushed every FLUSH_SECONDS and at exit (not after every line)
            fast = structlog.processors.JSONRenderer(serializer=json_line)
            sink = _LazyFlush(out, binary)
            factory = structlog.BytesLoggerFactory(file=sink)  # type: ignore[arg-type]
    _FLUSHER.attach(sink)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    processors = [*shared, structlog.processors.format_exc_info, redact, fast or renderer]
    _FLUSHER.lines = None if sink is None else _Lines(sink, _LEVELS[level], processors)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
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
