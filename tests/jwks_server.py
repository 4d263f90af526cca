"""A real local HTTPS identity provider for tests: a JWKS and an OIDC discovery document.

``ThreadingHTTPServer`` + ``ssl`` on ``127.0.0.1:0``, with a certificate from a
``trustme`` CA (or plain http with ``ca=None``). Every knob is a plain attribute that a
test flips while the server runs:

==================  =================================================================
``keys``            the public JWKs served at ``/jwks.json`` (a list; mutate freely)
``cache_control``   ``Cache-Control`` of every response (``None``: no header)
``age``             ``Age`` header (``None``: none)
``status``          HTTP status of ``/jwks.json`` (200)
``delay``           seconds to wait before answering (a slow IdP)
``drip``            seconds between body bytes (a server that trickles)
``body``            raw bytes served at ``/jwks.json`` instead of ``keys`` (malformed)
``send_length``     send ``Content-Length`` (False: body until close)
``gzip``            gzip the body and say so in ``Content-Encoding``
``down``            close every connection without answering (an IdP that is down)
``redirect_to``     ``/jwks.json`` answers 302 to this URL
``extra_headers``   more response headers (e.g. a ``Content-Encoding`` for ``body``)
``issuer``          ``issuer`` of the discovery document (default: :attr:`base_url`)
``jwks_uri``        ``jwks_uri`` of the discovery document (default: :attr:`jwks_url`)
==================  =================================================================

``/hop/<n>`` redirects to ``/hop/<n-1>`` and ``/hop/0`` to ``/jwks.json``, for redirect
limits. :meth:`count` tells how many requests a path received; :attr:`requests` keeps
each request's path and headers.

Also here, because every JWKS test needs them: :class:`RecordingSink` (a ``KeySink``
that counts and forwards), :class:`FakeClock` and :func:`signing_key`.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import shutil
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import trustme
from joserfc import jwk

JWKS_PATH = "/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


def signing_key(kid: str, alg: str = "ES256") -> tuple[Any, dict[str, Any]]:
    """A fresh private signing key and its public JWK (with ``kid``, ``use``, ``alg``)."""
    if alg.startswith("ES"):
        curve = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
        key: Any = jwk.ECKey.generate_key(curve, parameters={"kid": kid})
    elif alg == "EdDSA":
        key = jwk.OKPKey.generate_key("Ed25519", parameters={"kid": kid})
    else:
        key = jwk.RSAKey.generate_key(2048, parameters={"kid": kid})
    public = dict(key.as_dict(private=False))
    public.update(kid=kid, use="sig", alg=alg)
    return key, public


@dataclass
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]


class JwksServer:
    """A local IdP; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self, ca: trustme.CA | None = None, names: Sequence[str] = ("127.0.0.1", "localhost")
    ) -> None:
        self.ca = ca
        self.names = tuple(names)  # the certificate's subject alternative names
        self.keys: list[dict[str, Any]] = []
        self.cache_control: str | None = None
        self.age: str | None = None
        self.status = 200
        self.delay = 0.0
        self.drip = 0.0
        self.body: bytes | None = None
        self.send_length = True
        self.gzip = False
        self.down = False
        self.redirect_to: str | None = None
        self.extra_headers: dict[str, str] = {}
        self.issuer: str | None = None
        self.jwks_uri: str | None = None
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._tmp = Path(tempfile.mkdtemp(prefix="jwks-server-"))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> JwksServer:
        """Bind 127.0.0.1:0 and serve in a background thread."""
        context = None
        if self.ca is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ca.issue_cert(*self.names).configure_cert(context)
        self._server = _Server(self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused afterwards) and remove temp files."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ca is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    @property
    def discovery_url(self) -> str:
        return self.base_url + DISCOVERY_PATH

    def hops_url(self, hops: int) -> str:
        """A URL that reaches ``/jwks.json`` after exactly ``hops`` redirects."""
        return f"{self.base_url}/hop/{hops - 1}" if hops > 0 else self.jwks_url

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the server certificate."""
        assert self.ca is not None, "plain http server has no CA"
        path = self._tmp / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    # -- observations ------------------------------------------------------------------

    def count(self, path: str | None = JWKS_PATH) -> int:
        """Requests received for ``path`` (``None``: all paths)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def set_keys(self, keys: Sequence[dict[str, Any]]) -> None:
        """Serve exactly ``keys`` from now on."""
        with self._lock:
            self.keys = [dict(k) for k in keys]

    # -- serving -----------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests.append(Request(path, {k.lower(): v for k, v in handler.headers.items()}))
        if self.down:
            handler.close_connection = True
            return  # the server closes the socket without a byte of answer
        if self.delay and self._stopping.wait(self.delay):
            return
        if path.startswith("/hop/"):
            hops = int(path.rsplit("/", 1)[1])
            target = self.jwks_url if hops == 0 else f"{self.base_url}/hop/{hops - 1}"
            self._send(handler, 302, b"", {"Location": target})
        elif path.endswith(DISCOVERY_PATH):
            meta = {
                "issuer": self.issuer if self.issuer is not None else self.base_url,
                "jwks_uri": self.jwks_uri if self.jwks_uri is not None else self.jwks_url,
                "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            }
            self._send(handler, 200, json.dumps(meta).encode(), {})
        elif path == JWKS_PATH:
            if self.redirect_to is not None:
                self._send(handler, 302, b"", {"Location": self.redirect_to})
                return
            with self._lock:
                body = (
                    self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
                )
            self._send(handler, self.status, body, {})
        else:
            self._send(handler, 404, b"{}", {})

    def _send(self, handler: _Handler, status: int, body: bytes, headers: dict[str, str]) -> None:
        if self.gzip and body:
            body = gzip_module.compress(body)
            headers = {**headers, "Content-Encoding": "gzip"}
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if self.cache_control is not None:
            handler.send_header("Cache-Control", self.cache_control)
        if self.age is not None:
            handler.send_header("Age", self.age)
        for name, value in {**headers, **self.extra_headers}.items():
            handler.send_header(name, value)
        if self.send_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        if self.drip:
            for index in range(len(body)):
                handler.wfile.write(body[index : index + 1])
                handler.wfile.flush()
                if self._stopping.wait(self.drip):
                    return
        else:
            handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that connects and never asks does not hold a thread forever
    server: _Server

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on :attr:`JwksServer.requests` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # slow handlers wake on stop; never wait for them

    def __init__(self, owner: JwksServer, context: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.context = context
        self.errors: list[BaseException] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup of the host: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.context is not None:
            # Handshake in the handler thread, so a client that fails or stalls the
            # handshake never blocks the accept loop.
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(10)
            request.do_handshake()
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, size caps, TLS refusals) are expected here."""
        import sys

        self.errors.append(sys.exc_info()[1] or RuntimeError("unknown"))


@dataclass
class RecordingSink:
    """A ``KeySink`` that records every call and forwards to ``inner`` (e.g. a store sink)."""

    inner: Any = None
    published: list[list[Any]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, keys: Sequence[Any]) -> None:
        if self.inner is not None:
            self.inner.publish(keys)
        with self._cond:
            self.published.append(list(keys))
            self._cond.notify_all()

    def failed(self, error: BaseException) -> None:
        if self.inner is not None:
            self.inner.failed(error)
        with self._cond:
            self.failures.append(error)
            self._cond.notify_all()

    def missing(self, names: Sequence[str]) -> None:
        """Named objects that do not exist (a JWKS source never reports any)."""
        if self.inner is not None:
            self.inner.missing(names)

    def wait_for(self, *, published: int = 0, failures: int = 0, timeout: float = 5) -> bool:
        """Block until at least that many publishes and failures were seen."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self.published) >= published and len(self.failures) >= failures,
                timeout,
            )

    @property
    def kids(self) -> set[str]:
        """Kids of the last published list."""
        return {k.kid for k in self.published[-1]} if self.published else set()


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
