"""The HTTP edge of the pipeline: Envoy's ``http_service`` authorization protocol.

Envoy sends the client's method and path (behind the ``path_prefix`` set in Envoy,
which ``listen.http_authz_path_prefix`` removes again) and the headers its
``allowed_headers`` lists, with no body. The answer is the same :class:`Decision`
the gRPC edge renders, written as HTTP/1.1:

- allow -> ``200``, the claim headers, ``x-envoy-auth-headers-to-remove: a,b``, the
  configured client headers, and the ``dynamic_metadata`` fields as
  ``x-extauthz-<field>`` (Envoy: ``dynamic_metadata_from_headers``);
- deny -> its status, ``www-authenticate``, ``content-type``, the JSON body, the
  client headers, and only ``x-extauthz-decision`` / ``x-extauthz-reason`` (on a deny
  some gateways send every header to the client: never the subject or key ids);
- ``not_ready`` -> ``403`` rather than ``503``: Envoy counts a 5xx from an
  ``http_service`` as a failure of the service, and with ``failure_mode_allow`` the
  request would pass;
- no body on an answer to ``HEAD`` (a body there breaks Envoy's keep-alive connection).

The server is asyncio on uvloop with httptools' parser, in one thread of its own.
Cached Checks are decided inline on the loop (tens of microseconds); a token that
must be verified goes to a thread pool, because verification can wait on a JWKS
refetch and the loop must never block. Answers on one connection keep the order of
the requests. Bounds: request line and headers (:data:`MAX_HEAD_BYTES`), a body
Envoy does not send (:data:`MAX_BODY_BYTES`), slow clients (``header_timeout``) and
idle keep-alive connections (``idle_timeout``, longer than Envoy's upstream idle
timeout in the shipped configs, so that Envoy is the side that closes an idle
connection and never sends a Check on a connection being closed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httptools
import structlog
import uvloop

from extauthz.config import LoggingConfig, TlsConfig
from extauthz.errors import Reason
from extauthz.pipeline.decision import Decision
from extauthz.pipeline.evaluate import Evaluator
from extauthz.pipeline.request import CheckInput
from extauthz.server.decisions import AnswerMemo, DecisionLog

log = structlog.get_logger("extauthz.server")

#: request line and headers; Envoy's own default limit is 60 KiB, and the pipeline
#: denies (``too_large``) what exceeds ``token.max_header_bytes`` below this
MAX_HEAD_BYTES = 256 * 1024
#: header lines; the pipeline denies more than ``token.max_headers`` below this
MAX_HEADER_LINES = 2048
#: Envoy sends no body unless configured to; the same bound as a gRPC CheckRequest
MAX_BODY_BYTES = 1 << 20
#: requests parsed ahead on one connection before reading pauses (pipelining)
MAX_PENDING = 16
#: HTTP header the metadata fields are sent in, ``x-extauthz-<field>``
METADATA_PREFIX = "x-extauthz-"
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}  # fmt: skip
#: the deny fields a client may see (some gateways pass every header of a deny on)
_DENY_METADATA = ("decision", "reason")


def _header_safe(value: str) -> bool:
    """No control character (CR, LF, NUL...) and encodable: never a split header."""
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


@dataclass(frozen=True, slots=True)
class Answer:
    """A rendered decision: status line and headers (without the final blank line)
    and the body, kept apart because ``HEAD`` and ``connection: close`` vary them."""

    head: bytes
    body: bytes


def render(decision: Decision, *, metadata: bool = True) -> Answer:
    """Write ``decision`` as Envoy's ``http_service`` expects it (see the module doc)."""
    lines: list[tuple[str, str]] = []
    fields: Iterable[tuple[str, str]]
    if decision.allowed:
        status = 200
        lines.extend(decision.upstream_headers)
        if decision.remove_headers:
            lines.append((REMOVE_HEADER, ",".join(decision.remove_headers)))
        lines.extend(decision.response_headers)
        fields = decision.metadata.items() if metadata else ()
    else:
        # Envoy treats a 5xx as a failure of this service (failure_mode_allow applies)
        status = 403 if decision.status >= 500 else decision.status
        lines.extend(decision.response_headers)
        meta = decision.metadata
        fields = ((k, meta[k]) for k in _DENY_METADATA) if metadata else ()
    lines.extend((METADATA_PREFIX + k.replace("_", "-"), v) for k, v in fields if _header_safe(v))
    body = decision.body.encode()
    out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}".encode()]
    out.extend(f"{name}: {value}".encode() for name, value in lines)
    out.append(b"content-length: %d" % len(body))
    return Answer(b"\r\n".join(out) + b"\r\n", body)


def to_input(
    method: str, target: str, headers: dict[str, str], header_bytes: int, prefix: str = ""
) -> tuple[CheckInput, bool]:
    """The pipeline's request for an authorization request, and whether its path is
    one Envoy built with ``prefix`` (when not, the request keeps the whole target for
    the log, and is denied ``bad_path``)."""
    ours = target.startswith(prefix)
    if ours and prefix:
        target = target[len(prefix) :]
    ours = ours and target.startswith("/")
    request = CheckInput(
        method=method,
        path=target,
        headers=headers,
        request_id=headers.get("x-request-id", ""),
        header_bytes=max(header_bytes, 1),
    )
    return request, ours


class _Reject(Exception):
    """Raised in a parser callback to refuse the request with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(slots=True)
class _Request:
    request: CheckInput
    ours: bool
    head: bool
    keep_alive: bool
    start: float


def _upper_method(data: bytes) -> bytes:
    """Upper-case the method of a request line: Envoy forwards an HTTP/2 client's
    ``delete`` as it came, the parser accepts only upper-case methods, and the
    frameworks behind Envoy upper-case it before routing (so must the rules)."""
    space = data.find(b" ", 0, 24)
    if space > 0 and data[:space].isalpha() and not data[:space].isupper():
        return data[:space].upper() + data[space:]
    return data


class _Connection(asyncio.Protocol):
    """One client connection: parse, decide in order, answer, keep alive."""

    def __init__(self, server: HttpAuthzServer) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.lines = 0
        self.head_bytes = 0
        self.header_size = 0
        self.body_bytes = 0
        self.in_headers = False
        self.in_message = False
        self.pending: collections.deque[_Request] = collections.deque()
        self.busy = False
        self.paused = False
        self.closing = False
        self.deadline = 0.0

    # -- asyncio ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.deadline = self.loop.time() + self.server.idle_timeout
        self.server.connections.add(self)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.in_headers or not self.in_message:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail(431)
                return
        if not self.in_message:
            data = _upper_method(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ or exc.__cause__
            self._fail(cause.status if isinstance(cause, _Reject) else 400)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.paused:
            self.transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self.in_headers = True
        self.url = b""
        self.headers = {}
        self.lines = 0
        self.header_size = 0
        self.body_bytes = 0
        self.deadline = self.loop.time() + self.server.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD_BYTES:
            raise _Reject(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.lines += 1
        if self.lines > MAX_HEADER_LINES:
            raise _Reject(431)
        self.header_size += len(name) + len(value)
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "replace")
        previous = self.headers.get(key)
        # repeated headers joined with "," as Envoy's gRPC request does: two
        # authorization headers become one value the pipeline denies
        self.headers[key] = text if previous is None else f"{previous},{text}"

    def on_headers_complete(self) -> None:
        self.in_headers = False
        length = self.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise _Reject(413 if length.isdigit() else 400)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            raise _Reject(413)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.head_bytes = 0  # bytes read since the end of a request bound the next head
        start = time.perf_counter()
        method = self.parser.get_method().decode("latin-1")
        size = self.header_size + len(self.url)
        request, ours = to_input(
            method, self.url.decode("utf-8", "replace"), self.headers,
            size, self.server.path_prefix,
        )  # fmt: skip
        if len(self.pending) >= MAX_PENDING * 4:
            raise _Reject(400)  # a flood of pipelined requests: Envoy never sends one
        self.pending.append(
            _Request(request, ours, method == "HEAD", self.parser.should_keep_alive(), start)
        )
        if len(self.pending) >= MAX_PENDING and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        if not self.busy:
            self._pump()

    # -- deciding and answering ------------------------------------------------------

    def _pump(self) -> None:
        server = self.server
        while self.pending and not self.busy and self.transport is not None:
            item = self.pending.popleft()
            if not item.ours:
                decided: tuple[Decision, str] | None = (server.bad_path(), "")
            else:
                decided = server.evaluator.check_cached(item.request)
            if decided is None:
                self.busy = True
                future = server.executor.submit(server.evaluator.check, item.request)
                future.add_done_callback(functools.partial(self._done, item))
                return
            self._answer_safely(item, *decided)
        if self.paused and self.transport is not None and len(self.pending) < MAX_PENDING:
            self.paused = False
            self.transport.resume_reading()

    def _done(self, item: _Request, future: Future[tuple[Decision, str]]) -> None:
        """In the pool's thread: hand the result back to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody to answer
            self.loop.call_soon_threadsafe(self._verified, item, future)

    def _verified(self, item: _Request, future: Future[tuple[Decision, str]]) -> None:
        self.busy = False
        if self.transport is None:
            return
        if future.cancelled():
            self._close()
            return
        self._answer_safely(item, *future.result())
        self._pump()

    def _answer_safely(self, item: _Request, decision: Decision, fingerprint: str) -> None:
        """Answer; an unexpected failure on the way is a deny ``internal_error`` (never a
        5xx, which ``failure_mode_allow`` would turn into a pass), else a closed
        connection."""
        try:
            self._answer(item, decision, fingerprint)
        except Exception:
            log.exception("http_answer_failed", path=item.request.path_only,
                          request_id=item.request.request_id)  # fmt: skip
            try:
                self._answer(item, self.server.internal_error(), fingerprint)
            except Exception:
                log.exception("http_answer_failed")
                self._close()

    def _answer(self, item: _Request, decision: Decision, fingerprint: str) -> None:
        server = self.server
        answer = server.answers.get(decision)
        close = not item.keep_alive or server.draining or self.closing
        head = answer.head + (b"connection: close\r\n\r\n" if close else b"\r\n")
        transport = self.transport
        if transport is None:  # the client left while we decided
            return
        transport.write(head if item.head else head + answer.body)
        server.decisions.record(
            item.request, decision, fingerprint, time.perf_counter() - item.start
        )
        if close:
            self._close()
        elif not self.pending:
            self.deadline = self.loop.time() + server.idle_timeout

    def _fail(self, status: int) -> None:
        """A request the parser or a bound refused: answer the status, then close."""
        if self.transport is None or self.closing:
            return
        body = b""
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "content-length: 0\r\nconnection: close\r\n\r\n"
        ).encode()
        self.pending.clear()
        self.transport.write(head + body)
        self._close()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        """Nothing received, pending or being decided."""
        return not (self.in_message or self.pending or self.busy)

    def expired(self, now: float) -> bool:
        """A slow client (mid-request) or an idle keep-alive connection past its time."""
        return not (self.pending or self.busy) and now > self.deadline


class _TlsContexts:
    """The server's SSL context, rebuilt when the certificate files change.

    Each handshake asks (at most once a second it looks at the files) whether a newer
    context exists and switches the connection to it. A pair that does not load (a
    certificate rewritten before its key) keeps the previous context in use.
    """

    CHECK_SECONDS = 1.0

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self._stamp = self._read_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.current = self._build()

    def _paths(self) -> list[Path]:
        paths = [Path(self.tls.cert_file), Path(self.tls.key_file)]
        if self.tls.client_ca_file:
            paths.append(Path(self.tls.client_ca_file))
        return paths

    def _read_stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((st.st_ino, st.st_mtime_ns) for st in (p.stat() for p in self._paths()))

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        if self.tls.client_ca_file:
            context.load_verify_locations(cafile=str(self.tls.client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["http/1.1"])
        context.sni_callback = self._on_handshake
        return context

    def refresh(self) -> ssl.SSLContext:
        """The newest context that loads."""
        now = time.monotonic()
        if now - self._checked < self.CHECK_SECONDS:
            return self.current
        with self._lock:
            self._checked = now
            try:
                stamp = self._read_stamp()
                if stamp != self._stamp:
                    self.current = self._build()
                    self._stamp = stamp
                    log.info("tls_reloaded", cert_file=str(self.tls.cert_file),
                             listener="http_authz")  # fmt: skip
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error("tls_reload_failed", error=str(exc), listener="http_authz")  # noqa: TRY400 - keep old certs
        return self.current

    def _on_handshake(self, connection: Any, _name: str | None, context: ssl.SSLContext) -> None:
        fresh = self.refresh()
        if fresh is not context:
            connection.context = fresh


class HttpAuthzServer:
    """The HTTP authorization listener: an event loop in a thread of its own.

    ``start`` serves; ``begin_drain`` marks every answer ``connection: close`` (Envoy
    reconnects, and stops once its endpoint is gone); ``stop(grace)`` stops accepting,
    lets requests in flight finish within ``grace`` seconds, then closes the rest.
    """

    def __init__(
        self, evaluator: Evaluator, logging: LoggingConfig, address: str, *,
        path_prefix: str = "", metadata: bool = True, tls: TlsConfig | None = None,
        reuse_port: bool = False, threads: int = 8,
        header_timeout: float = 10.0, idle_timeout: float = 900.0,
    ) -> None:  # fmt: skip
        self._sock = _listen(address, reuse_port)  # first: a busy port leaks nothing
        self.port: int = self._sock.getsockname()[1]
        self.evaluator = evaluator
        self.decisions = DecisionLog(logging, "http")
        self.path_prefix = path_prefix.rstrip("/") if path_prefix != "/" else ""
        self.answers: AnswerMemo[Answer] = AnswerMemo(
            lambda d: render(d, metadata=metadata),
            AnswerMemo.size_for(evaluator.config.cache.max_entries),
        )
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.draining = False
        self.connections: set[_Connection] = set()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http-check")
        self.tls = _TlsContexts(tls) if tls else None
        self.loop = uvloop.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="http-authz", daemon=True)
        self._started = threading.Event()
        self._bad_path: Decision | None = None

    def internal_error(self) -> Decision:
        """The deny for a Check whose answer could not be written."""
        return self.evaluator.denials.deny(Reason.INTERNAL_ERROR, "default")

    def bad_path(self) -> Decision:
        """The deny for a path Envoy did not build (outside the configured prefix)."""
        if self._bad_path is None:
            self._bad_path = self.evaluator.denials.deny(
                Reason.BAD_PATH, "default", "path outside listen.http_authz_path_prefix"
            )
        return self._bad_path

    # -- lifecycle (called from other threads) ----------------------------------------

    def start(self) -> None:
        """Serve in the background; returns once the listener accepts."""
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
            self._started.set()
            self.loop.run_forever()
        finally:
            self._started.set()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self._sock.close()

    async def _serve(self) -> None:
        tls: dict[str, Any] = {}
        if self.tls is not None:
            # a client that never finishes its handshake is dropped like a slow one
            tls = {"ssl": self.tls.current, "ssl_handshake_timeout": self.header_timeout}
        self._server = await self.loop.create_server(
            lambda: _Connection(self), sock=self._sock, backlog=1024, **tls
        )
        self.loop.call_later(0.5, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if connection.expired(now):
                connection._close()
        self.loop.call_later(0.5, self._sweep)

    def begin_drain(self) -> None:
        """From now on every answer closes its connection."""
        self.draining = True

    def ping(self, timeout: float) -> bool:
        """Whether the event loop runs a callback within ``timeout`` seconds (liveness)."""
        if not self._thread.is_alive() or self.loop.is_closed():
            return False
        done = threading.Event()
        try:
            self.loop.call_soon_threadsafe(done.set)
        except RuntimeError:  # loop closed meanwhile
            return False
        return done.wait(timeout)

    def stop(self, grace: float) -> None:
        """Stop accepting, finish in-flight requests within ``grace``, close the rest."""
        if not self._thread.is_alive():
            self._sock.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(grace), self.loop)
        try:
            future.result(grace + 5)
        except Exception:  # stopping anyway
            log.exception("http_authz_stop_failed")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, grace: float) -> None:
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while True:
            for connection in list(self.connections):
                if connection.idle:
                    connection._close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        # let the aborted transports run their close callbacks before the loop stops
        for _ in range(3):
            await asyncio.sleep(0)


def _listen(address: str, reuse_port: bool) -> socket.socket:
    """A listening socket on ``host:port`` (IPv6 in brackets), bound now so that a busy
    port fails start-up and port 0 reports the port picked."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # an empty host means every address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["Answer", "HttpAuthzServer", "render", "to_input"]
