"""A fake Kubernetes API server for core/v1 Secrets and ConfigMaps, over real HTTP/1.1
(or HTTPS) on loopback.

It is driven by real clients (the ``kubernetes`` Python client, ``kubectl``), so it
speaks the wire protocol they expect:

- discovery: ``/api``, ``/apis``, ``/api/v1``, ``/version``;
- ``/api/v1/namespaces/{ns}/{secrets,configmaps}``: GET list / ``?watch=true``, POST
  create; ``/api/v1/{secrets,configmaps}``: cluster-wide list / watch (so tests can
  prove nobody uses it);
- ``/api/v1/namespaces/{ns}/{secrets,configmaps}/{name}``: GET, PUT, PATCH (merge,
  strategic merge as merge, JSON patch), DELETE (with ``preconditions.resourceVersion``);
- lists page with ``limit``/``continue`` (a ``continue`` token whose resourceVersion
  was compacted away is ``410``); a list or watch from a resourceVersion *ahead* of
  the store (after :meth:`SecretStore.restore`, an etcd restore) is ``504``
  "Too large resource version", as kube-apiserver answers;
- watches stream one JSON event per chunk (``Transfer-Encoding: chunked``) from the
  requested resourceVersion, replaying history; ``allowWatchBookmarks`` adds
  ``BOOKMARK`` events (every ``bookmark_interval`` seconds and right before a
  ``timeoutSeconds`` close); an unset or ``"0"`` resourceVersion starts with synthetic
  ``ADDED`` events for the current state; a too-old resourceVersion is ``410 Gone``,
  as an ``ERROR`` event in a 200 stream (what kube-apiserver's watch cache does,
  ``expired_as="event"``) or as an HTTP 410 (``expired_as="status"``);
- ``Accept: ...;as=Table`` gets a ``meta.k8s.io/v1 Table`` (what ``kubectl get``
  prints from);
- ``tls=(cert, key)`` serves HTTPS; ``tokens`` (bearer token -> user) turns on
  authentication (``401`` otherwise; :meth:`FakeKube.add_token` /
  :meth:`FakeKube.revoke_token` model a rotated service account token); ``roles``
  (user -> :class:`Rule` list) is RBAC: ``403`` outside the Role, ``resourceNames``
  honoured for list and watch only with a ``metadata.name`` field selector.

Fault hooks, settable from tests while clients are connected: :meth:`FakeKube.close_watches`,
:meth:`FakeKube.abort_watches` (cut mid-chunk), :meth:`FakeKube.error_watches`
(``ERROR`` event), :meth:`FakeKube.stall_watches` (no bytes, connection kept open),
:meth:`FakeKube.fail_requests` (the next N matching requests get a ``Status`` error,
optionally with ``Retry-After``), :meth:`FakeKube.outage` (``"refuse"``: stop listening;
``"drop"``: read each request, log it, close without answering; ``"hang"``: a silent
peer, nothing answered and nothing closed), :meth:`FakeKube.recover`,
:meth:`FakeKube.restart` (same port; ``lose_history=True``: the watch cache starts
empty, so old resourceVersions are ``410``), :meth:`SecretStore.compact` and
:meth:`SecretStore.restore` on :attr:`FakeKube.store`, and the attributes
``expired_as``, ``watch_cap`` (end every watch after N seconds, like a proxy) and
``split_events`` (each event cut across two chunks, like a re-chunking proxy).

``/openapi/v3`` serves the slice of the OpenAPI document that ``kubectl apply`` reads
to choose server-side field validation, and ``fieldValidation=Strict`` rejects unknown
fields, so plain ``kubectl apply`` / ``patch`` / ``delete`` work as against a cluster.

Every request is recorded in :attr:`FakeKube.requests` (method, path, query, status,
user).

Not modelled: a ``continue`` list is served from the current state after the token's
position (a real server serves the snapshot of the first page); writes between pages
are then seen early, never missed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakekube.selectors import SelectorError, field_selector, label_selector
from tests.fakekube.store import RESOURCES, ApiError, Event, SecretStore, status_object

VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-fakekube",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

SECRETS_RESOURCE = {
    "name": "secrets",
    "singularName": "secret",
    "namespaced": True,
    "kind": "Secret",
    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    "storageVersionHash": "S6u1pOWzb84=",
}

#: The slice of the OpenAPI v3 document kubectl reads: it finds Secret's PATCH and
#: its ``fieldValidation`` parameter, so ``kubectl apply`` relies on server-side field
#: validation (``fieldValidation=Strict``) instead of downloading a full schema.
_GVK = {"group": "", "version": "v1", "kind": "Secret"}
_GVK_CM = {"group": "", "version": "v1", "kind": "ConfigMap"}
_QUERY = [
    {"name": n, "in": "query", "schema": {"type": "string"}}
    for n in ("dryRun", "fieldManager", "fieldValidation", "pretty")
]
OPENAPI_V1: dict[str, Any] = {
    "openapi": "3.0.0",
    "info": {"title": "Kubernetes", "version": "v1.37.0-fakekube"},
    "paths": {
        "/api/v1/namespaces/{namespace}/secrets": {
            "post": {
                "x-kubernetes-group-version-kind": _GVK,
                "parameters": _QUERY,
                "responses": {},
            },
        },
        "/api/v1/namespaces/{namespace}/secrets/{name}": {
            verb: {"x-kubernetes-group-version-kind": _GVK, "parameters": _QUERY, "responses": {}}
            for verb in ("put", "patch")
        },
        "/api/v1/namespaces/{namespace}/configmaps": {
            "post": {
                "x-kubernetes-group-version-kind": _GVK_CM,
                "parameters": _QUERY,
                "responses": {},
            },
        },
        "/api/v1/namespaces/{namespace}/configmaps/{name}": {
            verb: {
                "x-kubernetes-group-version-kind": _GVK_CM,
                "parameters": _QUERY,
                "responses": {},
            }
            for verb in ("put", "patch")
        },
    },
    "components": {
        "schemas": {
            "io.k8s.api.core.v1.Secret": {
                "type": "object",
                "x-kubernetes-group-version-kind": [_GVK],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "data": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "format": "byte"},
                    },
                    "stringData": {"type": "object", "additionalProperties": {"type": "string"}},
                    "immutable": {"type": "boolean"},
                    "type": {"type": "string"},
                },
            },
            "io.k8s.api.core.v1.ConfigMap": {
                "type": "object",
                "x-kubernetes-group-version-kind": [_GVK_CM],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "data": {"type": "object", "additionalProperties": {"type": "string"}},
                    "binaryData": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "format": "byte"},
                    },
                    "immutable": {"type": "boolean"},
                },
            },
        }
    },
}
_OPENAPI_HASH = "fakekube1"

CONFIGMAPS_RESOURCE = {
    "name": "configmaps",
    "singularName": "configmap",
    "namespaced": True,
    "kind": "ConfigMap",
    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    "shortNames": ["cm"],
    "storageVersionHash": "qFsyl6wFWjQ=",
}

NAMESPACES_RESOURCE = {
    "name": "namespaces",
    "singularName": "namespace",
    "namespaced": False,
    "kind": "Namespace",
    "verbs": ["get"],
    "shortNames": ["ns"],
}


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    at: float  # time.monotonic() at arrival
    status: int = 0  # HTTP status answered (0: none, e.g. dropped)
    note: str = ""  # e.g. "expired-event", "dropped", "injected", "hung", "forbidden"
    user: str = ""  # who the bearer token says (empty: no authentication configured)

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch") in ("true", "1")

    @property
    def is_list(self) -> bool:
        return (
            self.method == "GET"
            and not self.is_watch
            and self.path.endswith(("/secrets", "/configmaps"))
        )


@dataclass(frozen=True)
class Rule:
    """One rule of an RBAC Role: ``verbs`` on ``resources``, optionally only the objects
    named in ``resource_names`` (which, as on a real server, authorizes list and watch
    only when they carry ``fieldSelector=metadata.name=<that name>``)."""

    verbs: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, verbs: str, resources: str, names: str = "") -> Rule:
        """``Rule.of("get,list,watch", "secrets", "a,b")``."""

        def split(text: str) -> frozenset[str]:
            return frozenset(p for p in text.split(",") if p)

        return cls(split(verbs), split(resources), split(names))

    def allows(self, verb: str, resource: str, name: str) -> bool:
        if verb not in self.verbs and "*" not in self.verbs:
            return False
        if resource not in self.resources and "*" not in self.resources:
            return False
        return not self.resource_names or name in self.resource_names


@dataclass
class _Fault:
    count: int
    code: int
    predicate: Callable[[Request], bool]
    retry_after: int | None = None
    expires: float | None = None  # monotonic; None: until used up


@dataclass
class _WatchControl:
    """Commands a test sends to one open watch."""

    command: str = ""  # "", "close", "abort", "error", "kill"
    error_code: int = 410
    stalled: bool = False
    sock: socket.socket | None = None
    request: Request | None = None


@dataclass
class _State:
    faults: list[_Fault] = field(default_factory=list)
    watches: list[_WatchControl] = field(default_factory=list)
    stalled: bool = False
    dropping: bool = False
    hanging: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64
    fake: FakeKube
    tls_context: ssl.SSLContext | None = None


class FakeKube:
    """The fake API server. ``with FakeKube() as kube:`` starts and stops it."""

    def __init__(
        self,
        *,
        history: int = 1000,
        bookmark_interval: float | None = 60.0,
        default_watch_timeout: float = 1800.0,
        expired_as: Literal["event", "status"] = "event",
        port: int = 0,
        tls: tuple[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        """``tls=(cert_file, key_file)`` serves HTTPS. ``tokens`` (bearer token -> user
        name) turns authentication on: any other token is ``401``. :attr:`roles` (user
        -> rules) restricts a user to its Role; a user without an entry may do anything
        (an administrator, e.g. the test's kubectl)."""
        self.store = SecretStore(history=history)
        self.tls = tls
        self.tokens: dict[str, str] | None = dict(tokens) if tokens is not None else None
        self.roles: dict[str, list[Rule]] = {}
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.expired_as = expired_as
        #: end every watch after at most this many seconds (a proxy's idle cut); None: off
        self.watch_cap: float | None = None
        #: send each watch event in two chunks cut mid-line (a re-chunking proxy)
        self.split_events = False
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._port = port

    # -- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def write_kubeconfig(
        self, path: Path, *, user: str = "u", token: str | None = "t", namespace: str | None = None
    ) -> Path:
        """A kubeconfig at ``path`` whose current context is this server, for the real
        client, the service and ``kubectl`` alike (JSON is valid YAML)."""
        context: dict[str, Any] = {"cluster": "fake", "user": user}
        if namespace is not None:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {"token": token} if token is not None else {}}],
            "contexts": [{"name": "fake", "context": context}],
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return path

    def start(self) -> FakeKube:
        """Listen on 127.0.0.1 (the same port as before after a stop)."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.tls_context = context
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakekube",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (a crashed API server)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.store.changed:
            for watch in self._state.watches:
                watch.command = "kill"
            self.store.changed.notify_all()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            _hard_close(conn)

    def restart(self, down_for: float = 0.0, *, lose_history: bool = False) -> None:
        """Stop, stay down ``down_for`` seconds, listen again on the same port.

        ``lose_history``: the restarted server (its watch cache) keeps no event from
        before, so a watch from an older resourceVersion is ``410 Gone``."""
        self.stop()
        if lose_history:
            self.store.compact()
        if down_for:
            time.sleep(down_for)
        self.start()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault hooks -----------------------------------------------------------------

    def outage(self, mode: Literal["refuse", "drop", "hang"] = "refuse") -> None:
        """Make the API unreachable: ``refuse`` stops listening (connection refused);
        ``drop`` accepts, logs each request (note ``dropped``) and closes it unanswered,
        so tests can count what an outage costs. Open connections are cut either way.
        ``hang`` is the silent peer: open watches stop sending, and every new request is
        read, logged (note ``hung``) and never answered, the connection held open (no
        FIN, no RST) until :meth:`recover`."""
        if mode == "refuse":
            self.stop()
            return
        if mode == "hang":
            with self.store.changed:
                self._state.hanging = True
                self._state.stalled = True
                self.store.changed.notify_all()
            return
        with self.store.changed:
            self._state.dropping = True
            for watch in self._state.watches:
                watch.command = "kill"
            self.store.changed.notify_all()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            _hard_close(conn)

    def recover(self) -> None:
        """End an :meth:`outage` (held connections of ``hang`` are then closed)."""
        with self.store.changed:
            self._state.dropping = False
            if self._state.hanging:
                self._state.hanging = False
                self._state.stalled = False
            self.store.changed.notify_all()
        self.start()

    def fail_requests(
        self,
        count: int,
        code: int = 500,
        predicate: Callable[[Request], bool] | None = None,
        *,
        retry_after: int | None = None,
        ttl: float | None = None,
    ) -> None:
        """Answer the next ``count`` requests matching ``predicate`` with a ``code`` Status
        (with a ``Retry-After`` header and ``details.retryAfterSeconds`` when given, as
        the API server's priority and fairness does with ``429``). ``ttl``: the fault
        lasts that many seconds at most, used up or not (a real server's trouble passes
        whether or not a client asks meanwhile)."""
        expires = None if ttl is None else time.monotonic() + ttl
        with self._lock:
            self._state.faults.append(
                _Fault(count, code, predicate or (lambda r: True), retry_after, expires)
            )

    def clear_faults(self) -> None:
        """Drop every pending :meth:`fail_requests` fault: the trouble is over."""
        with self._lock:
            self._state.faults = []

    def add_token(self, token: str, user: str) -> None:
        """Accept bearer ``token`` as ``user`` (turns authentication on)."""
        with self._lock:
            if self.tokens is None:
                self.tokens = {}
            self.tokens[token] = user

    def revoke_token(self, token: str) -> None:
        """Stop accepting ``token`` (an expired bound service account token)."""
        with self._lock:
            if self.tokens is not None:
                self.tokens.pop(token, None)

    def _signal(self, command: str, code: int = 410) -> int:
        with self.store.changed:
            watches = [w for w in self._state.watches if not w.command]
            for watch in watches:
                watch.command = command
                watch.error_code = code
            self.store.changed.notify_all()
            return len(watches)

    def close_watches(self) -> int:
        """End every open watch cleanly (final chunk), as a server-side timeout does."""
        return self._signal("close")

    def abort_watches(self) -> int:
        """Cut every open watch in the middle of a chunk (connection reset)."""
        return self._signal("abort")

    def error_watches(self, code: int = 410) -> int:
        """Send an ``ERROR`` event with ``code`` (410: Expired) on every open watch, then end it."""
        return self._signal("error", code)

    def stall_watches(self) -> None:
        """Open and new watches send nothing at all (not even bookmarks) until
        :meth:`release_watches`; the connections stay open."""
        with self.store.changed:
            self._state.stalled = True
            self.store.changed.notify_all()

    def release_watches(self) -> None:
        """End :meth:`stall_watches`."""
        with self.store.changed:
            self._state.stalled = False
            self.store.changed.notify_all()

    def open_watches(self) -> int:
        """How many watch streams are open now."""
        with self.store.changed:
            return sum(1 for w in self._state.watches if not w.command)

    def wait_for_watches(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` watches are open."""
        deadline = time.monotonic() + timeout
        with self.store.changed:
            while sum(1 for w in self._state.watches if not w.command) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.store.changed.wait(min(remaining, 0.05))
            return True

    # -- request log -----------------------------------------------------------------

    def log(self, since: float = 0.0) -> list[Request]:
        """A copy of the requests that arrived at or after ``since`` (monotonic)."""
        with self._lock:
            return [r for r in self.requests if r.at >= since]

    def wait_requests(
        self, predicate: Callable[[Request], bool], count: int = 1, timeout: float = 5.0
    ) -> list[Request]:
        """Block until ``count`` logged requests match ``predicate``; returns the matches
        (fewer on timeout)."""
        with self._logged:
            self._logged.wait_for(
                lambda: sum(1 for r in self.requests if predicate(r)) >= count, timeout
            )
            return [r for r in self.requests if predicate(r)]

    def _record(self, request: Request) -> _Fault | None:
        with self._lock:
            self.requests.append(request)
            self._logged.notify_all()
            self._state.faults = [
                f
                for f in self._state.faults
                if f.count > 0 and (f.expires is None or f.expires > request.at)
            ]
            for fault in self._state.faults:
                if fault.count > 0 and fault.predicate(request):
                    fault.count -= 1
                    return fault
            return None


def _hard_close(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) so the peer sees a reset, not a clean end."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing --------------------------------------------------------------------

    def setup(self) -> None:
        context = self.server.tls_context
        if context is not None:
            self.request.settimeout(5)  # a client that never finishes the handshake
            self.request = context.wrap_socket(self.request, server_side=True)
            self.request.settimeout(None)
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.fake._lock:
                self.server.fake._connections.discard(self.connection)
            if isinstance(self.request, ssl.SSLSocket):
                # socketserver closes the raw socket it accepted, which the TLS
                # wrapper took over: close the wrapper here
                with contextlib.suppress(OSError):
                    self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send_json(
        self,
        code: int,
        body: Mapping[str, Any],
        request: Request | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Audit-Id", "fakekube")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        if request is not None:
            request.status = code

    def _send_error(self, error: ApiError, request: Request) -> None:
        self._send_json(error.code, error.status(), request)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", "the body of the request is not valid JSON") from exc

    # -- routing ---------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request(method, url.path, query, time.monotonic())
        fault = fake._record(request)
        with fake.store.changed:
            dropping = fake._state.dropping
            hanging = fake._state.hanging
        if dropping:
            request.note = "dropped"
            self.close_connection = True
            _hard_close(self.connection)
            return
        if hanging:
            self._hang(request)
            return
        if not self._authenticate(request):
            return
        if fault is not None:
            request.note = "injected"
            if method != "GET":
                self._body()  # keep the connection usable for the next request
            details: dict[str, Any] = {}
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                details["retryAfterSeconds"] = fault.retry_after
                headers["Retry-After"] = str(fault.retry_after)
            self._send_json(
                fault.code,
                status_object(
                    fault.code,
                    _REASONS.get(fault.code, "InternalError"),
                    "injected fault",
                    details,
                ),
                request,
                headers,
            )
            return
        try:
            self._route(method, url.path, query, request)
        except ApiError as error:
            self._send_error(error, request)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True

    def _hang(self, request: Request) -> None:
        """A silent peer: the request was read; nothing is ever sent back."""
        fake = self.server.fake
        request.note = "hung"
        with fake.store.changed:
            while fake._state.hanging and fake.listening:
                fake.store.changed.wait(0.05)
        self.close_connection = True
        _hard_close(self.connection)

    def _authenticate(self, request: Request) -> bool:
        """Bearer token authentication when the fake has tokens; 401 otherwise."""
        fake = self.server.fake
        with fake._lock:
            tokens = None if fake.tokens is None else dict(fake.tokens)
        if tokens is None:
            return True
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        user = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            request.note = "unauthorized"
            if request.method != "GET":
                self._body()
            self._send_json(401, status_object(401, "Unauthorized", "Unauthorized"), request)
            return False
        request.user = user
        return True

    def _authorize(
        self, request: Request, verb: str, resource: str, namespace: str, name: str
    ) -> None:
        """RBAC: a user with a Role may only do what one of its rules allows. For list
        and watch, ``resourceNames`` match only the name of a ``metadata.name`` field
        selector, as on a real API server."""
        rules = self.server.fake.roles.get(request.user)
        if rules is None:
            return
        if verb in ("list", "watch"):
            selector = request.query.get("fieldSelector", "")
            key, eq, value = selector.partition("=")
            name = value.lstrip("=") if key == "metadata.name" and eq else ""
        if any(rule.allows(verb, resource, name) for rule in rules):
            return
        request.note = "forbidden"
        target = f'{resource} "{name}"' if name and verb not in ("list", "watch") else resource
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise ApiError(
            403,
            "Forbidden",
            f'{target} is forbidden: User "{request.user}" cannot {verb} resource '
            f'"{resource}" in API group ""{where}',
            {"name": name, "kind": resource} if name else {"kind": resource},
        )

    def _route(self, method: str, path: str, query: dict[str, str], request: Request) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        store = self.server.fake.store
        if method == "GET" and path == "/version":
            self._send_json(200, VERSION, request)
        elif method == "GET" and path == "/api":
            self._send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {
                            "clientCIDR": "0.0.0.0/0",
                            "serverAddress": f"127.0.0.1:{self.server.fake.port}",
                        }
                    ],
                },
                request,
            )
        elif method == "GET" and path == "/openapi/v3":
            self._send_json(
                200,
                {
                    "paths": {
                        "api/v1": {"serverRelativeURL": f"/openapi/v3/api/v1?hash={_OPENAPI_HASH}"}
                    }
                },
                request,
            )
        elif method == "GET" and path == "/openapi/v3/api/v1":
            self._send_json(200, OPENAPI_V1, request)
        elif method == "GET" and path == "/apis":
            self._send_json(
                200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}, request
            )
        elif method == "GET" and path == "/api/v1":
            self._send_json(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": "v1",
                    "resources": [NAMESPACES_RESOURCE, SECRETS_RESOURCE, CONFIGMAPS_RESOURCE],
                },
                request,
            )
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4 and method == "GET":
            self._send_json(200, _namespace(parts[3]), request)  # every namespace exists
        elif len(parts) == 3 and parts[:2] == ["api", "v1"] and parts[2] in RESOURCES:
            if method != "GET":
                raise _method_not_allowed(method)
            resource = parts[2]
            self._authorize(request, "watch" if request.is_watch else "list", resource, "", "")
            self._collection(None, query, request, resource)
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 5 and parts[4] in RESOURCES:
            namespace, resource = parts[3], parts[4]
            if method == "GET":
                verb = "watch" if request.is_watch else "list"
                self._authorize(request, verb, resource, namespace, "")
                self._collection(namespace, query, request, resource)
            elif method == "POST":
                self._authorize(request, "create", resource, namespace, "")
                body = _strict(query, self._body(), resource)
                obj = store.create(namespace, body, dry_run=_dry_run(query), resource=resource)
                self._send_json(201, obj, request)
            else:
                raise _method_not_allowed(method)
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 6 and parts[4] in RESOURCES:
            object_verb = _VERBS.get(method)
            if object_verb is None:
                raise _method_not_allowed(method)
            self._authorize(request, object_verb, parts[4], parts[3], parts[5])
            self._object(method, parts[3], parts[5], query, request, parts[4])
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _object(
        self,
        method: str,
        namespace: str,
        name: str,
        query: dict[str, str],
        request: Request,
        resource: str = "secrets",
    ) -> None:
        store = self.server.fake.store
        dry_run = _dry_run(query)
        if method == "GET":
            self._send_json(200, store.get(namespace, name, resource), request)
        elif method == "PUT":
            body = _strict(query, self._body(), resource)
            self._send_json(
                200,
                store.update(namespace, name, body, dry_run=dry_run, resource=resource),
                request,
            )
        elif method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self._body()
            if isinstance(patch, dict):
                _strict(query, patch, resource)
            self._send_json(
                200,
                store.patch(
                    namespace,
                    name,
                    _patcher(content_type, patch),
                    dry_run=dry_run,
                    resource=resource,
                ),
                request,
            )
        elif method == "DELETE":
            options = self._body() or {}
            precondition = (options.get("preconditions") or {}).get("resourceVersion")
            gone = store.delete(
                namespace, name, precondition_rv=precondition, dry_run=dry_run, resource=resource
            )
            self._send_json(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "kind": resource, "uid": gone["metadata"]["uid"]},
                },
                request,
            )
        else:
            raise _method_not_allowed(method)

    def _collection(
        self,
        namespace: str | None,
        query: dict[str, str],
        request: Request,
        resource: str = "secrets",
    ) -> None:
        try:
            by_labels = label_selector(query.get("labelSelector"))
            by_fields = field_selector(query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from exc

        def match(obj: Mapping[str, Any]) -> bool:
            return by_labels(obj["metadata"].get("labels") or {}) and by_fields(obj)

        store = self.server.fake.store
        if request.is_watch:
            self._watch(namespace, match, query, request, resource)
            return
        requested = query.get("resourceVersion", "")
        if requested not in ("", "0"):
            try:
                wanted = int(requested)
            except ValueError as exc:
                raise ApiError(
                    400, "BadRequest", f"invalid resource version: {requested!r}"
                ) from exc
            if wanted > store.resource_version:
                raise too_large(wanted, store.resource_version)
        items, rv = store.list(namespace, match, resource)
        continue_from = ""
        token = query.get("continue", "")
        if token:
            rv, continue_from = _read_continue(token, store.compacted)
            items = [i for i in items if _position(i) > continue_from]
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        limit = query.get("limit", "")
        if limit:
            try:
                size = int(limit)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", "limit must be an integer") from exc
            if size > 0 and len(items) > size:
                items = items[:size]
                metadata["continue"] = _write_continue(rv, _position(items[-1]))
        if "as=Table" in (self.headers.get("Accept") or ""):
            self._send_json(200, _table(items, metadata, resource), request)
            return
        for item in items:  # items of a typed list carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(
            200,
            {
                "kind": f"{RESOURCES[resource]}List",
                "apiVersion": "v1",
                "metadata": metadata,
                "items": items,
            },
            request,
        )

    # -- watch -----------------------------------------------------------------------

    def _watch(
        self,
        namespace: str | None,
        match: Callable[[Mapping[str, Any]], bool],
        query: dict[str, str],
        request: Request,
        resource: str = "secrets",
    ) -> None:
        fake = self.server.fake
        store = fake.store
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        try:
            timeout = (
                float(query["timeoutSeconds"])
                if "timeoutSeconds" in query
                else fake.default_watch_timeout
            )
        except ValueError as exc:
            raise ApiError(400, "BadRequest", "timeoutSeconds must be an integer") from exc
        if fake.watch_cap is not None:
            timeout = min(timeout, fake.watch_cap)
        requested = query.get("resourceVersion", "")
        control = _WatchControl(sock=self.connection, request=request)
        initial: list[tuple[str, dict[str, Any]]] = []
        with store.changed:
            if requested in ("", "0"):
                items, cursor = store.list(namespace, match, resource)
                initial = [("ADDED", item) for item in items]
            else:
                try:
                    cursor = int(requested)
                except ValueError as exc:
                    raise ApiError(
                        400, "BadRequest", f"invalid resource version: {requested!r}"
                    ) from exc
                if cursor > store.resource_version:
                    # ahead of the store (an etcd restore): the watch cache waits for a
                    # version it will never reach, then gives up with a 504
                    request.note = "too-large"
                    raise too_large(cursor, store.resource_version)
                if cursor < store.compacted:
                    if fake.expired_as == "status":
                        raise ApiError(
                            410,
                            "Expired",
                            f"too old resource version: {cursor} ({store.compacted})",
                        )
                    request.note = "expired-event"
                    control.command = "error"
            fake._state.watches.append(control)
            store.changed.notify_all()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            request.status = 200
            for kind, obj in initial:
                self._chunk({"type": kind, "object": obj})
            self._stream(namespace, match, cursor, timeout, bookmarks, control, resource)
        except OSError:
            self.close_connection = True
        finally:
            with store.changed:
                if control in fake._state.watches:
                    fake._state.watches.remove(control)
                store.changed.notify_all()

    def _chunk(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        parts = (
            [line[: len(line) // 2], line[len(line) // 2 :]]
            if self.server.fake.split_events
            else [line]
        )
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _stream(
        self,
        namespace: str | None,
        match: Callable[[Mapping[str, Any]], bool],
        cursor: int,
        timeout: float,
        bookmarks: bool,
        control: _WatchControl,
        resource: str = "secrets",
    ) -> None:
        fake = self.server.fake
        store = fake.store
        deadline = time.monotonic() + timeout
        interval = fake.bookmark_interval
        next_bookmark = time.monotonic() + interval if (bookmarks and interval) else float("inf")
        while True:
            out: list[Event] = []
            action = ""
            with store.changed:
                while True:
                    now = time.monotonic()
                    if control.command:
                        action = control.command
                        break
                    if fake._state.stalled:
                        store.changed.wait(0.05)  # silent: no events, no bookmarks, no close
                        continue
                    if store.resource_version > cursor:
                        try:
                            out = [
                                e
                                for e in store.events_after(cursor)
                                if (namespace is None or e.namespace == namespace)
                                and e.resource == resource
                            ]
                        except ApiError:
                            action, control.error_code = "error", 410  # fell out of the history
                            break
                        cursor = store.resource_version
                        if out:
                            break
                        continue
                    if now >= deadline:
                        action = "timeout"
                        break
                    if now >= next_bookmark:
                        action = "bookmark"
                        break
                    store.changed.wait(min(deadline, next_bookmark, now + 0.25) - now)
            for event in out:
                view = event.view(match)
                if view is not None:
                    self._chunk({"type": view[0], "object": view[1]})
            if action == "bookmark":
                self._chunk(_bookmark(cursor, resource))
                next_bookmark = time.monotonic() + (interval or 0)
            elif action == "timeout":
                if bookmarks:
                    self._chunk(_bookmark(cursor, resource))
                self._end()
                return
            elif action == "close":
                self._end()
                return
            elif action == "error":
                code = control.error_code
                reason = "Expired" if code == 410 else _REASONS.get(code, "InternalError")
                message = (
                    f"too old resource version: {cursor} ({store.compacted})"
                    if code == 410
                    else "injected watch error"
                )
                self._chunk({"type": "ERROR", "object": status_object(code, reason, message)})
                self._end()
                return
            elif action == "abort":
                line = json.dumps(_bookmark(cursor)).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s" % (len(line), line[: len(line) // 2]))
                self.close_connection = True
                _hard_close(self.connection)
                return
            elif action == "kill":
                self.close_connection = True
                _hard_close(self.connection)
                return


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _bookmark(rv: int, resource: str = "secrets") -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": RESOURCES[resource],
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(rv)},
        },
    }


_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def too_large(requested: int, current: int) -> ApiError:
    """The API server's answer to a resourceVersion it has not reached (504)."""
    return ApiError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        {
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
    )


def _position(item: Mapping[str, Any]) -> str:
    """Where an item sorts in a list (namespace, then name), for ``continue``."""
    meta = item["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _write_continue(rv: int, after: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": after}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _read_continue(token: str, compacted: int) -> tuple[int, str]:
    """(resourceVersion, last position) of a ``continue`` token; ``410`` once the
    list's resourceVersion was compacted away, as on a real server."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        rv, after = int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, "BadRequest", "continue key is not valid") from exc
    if rv < compacted:
        raise ApiError(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list "
            "result. You can start a new list without the continue parameter.",
        )
    return rv, after


def _namespace(name: str) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


_SECRET_FIELDS = frozenset(
    {"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"}
)
_META_FIELDS = frozenset(
    {
        "name", "generateName", "namespace", "labels", "annotations", "uid", "resourceVersion",
        "creationTimestamp", "ownerReferences", "finalizers", "managedFields", "selfLink",
        "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
    }
)  # fmt: skip


_CONFIGMAP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"})


def _strict(query: Mapping[str, str], body: Any, resource: str = "secrets") -> Any:
    """``fieldValidation=Strict``: an unknown field is a 400, as on a real server."""
    if query.get("fieldValidation") != "Strict" or not isinstance(body, dict):
        return body
    known = _CONFIGMAP_FIELDS if resource == "configmaps" else _SECRET_FIELDS
    unknown = [f for f in body if f not in known and not f.startswith("$")]
    meta = body.get("metadata")
    if isinstance(meta, dict):
        unknown += [f"metadata.{f}" for f in meta if f not in _META_FIELDS]
    if unknown:
        raise ApiError(400, "BadRequest", f'strict decoding error: unknown field "{unknown[0]}"')
    return body


def _dry_run(query: Mapping[str, str]) -> bool:
    return query.get("dryRun") == "All"


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource: {method}",
    )


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; ``$``-directives of strategic merge patches are dropped
    (a Secret has no list with a merge key, so strategic merge equals merge here)."""
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "delete":
        return None
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if not k.startswith("$")}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            merged = _merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 ``add``, ``remove``, ``replace`` and ``test`` on objects (maps)."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    for op in ops:
        tokens = _pointer(op.get("path", ""))
        parent: Any = target
        for token in tokens[:-1]:
            if not isinstance(parent, dict) or token not in parent:
                raise ApiError(422, "Invalid", f"path {op.get('path')!r} does not exist")
            parent = parent[token]
        leaf = tokens[-1]
        kind = op.get("op")
        if not isinstance(parent, dict):
            raise ApiError(422, "Invalid", "only maps can be patched here")
        if kind == "add":
            parent[leaf] = op.get("value")
        elif kind == "replace":
            if leaf not in parent:
                raise ApiError(422, "Invalid", f"path {op.get('path')!r} does not exist")
            parent[leaf] = op.get("value")
        elif kind == "remove":
            if leaf not in parent:
                raise ApiError(422, "Invalid", f"path {op.get('path')!r} does not exist")
            del parent[leaf]
        elif kind == "test":
            if parent.get(leaf) != op.get("value"):
                raise ApiError(422, "Invalid", f"test failed at {op.get('path')!r}")
        else:
            raise ApiError(400, "BadRequest", f"unsupported JSON patch operation {kind!r}")
    return target


def _patcher(content_type: str, patch: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        return lambda obj: _merge_patch(obj, patch)
    if content_type == "application/json-patch+json":
        return lambda obj: _json_patch(obj, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format: {content_type}",
    )


def _table(
    items: list[dict[str, Any]], metadata: Mapping[str, Any], resource: str = "secrets"
) -> dict[str, Any]:
    """The ``Table`` kubectl asks for to print ``kubectl get secrets`` (or configmaps)."""

    def column(name: str, fmt: str = "") -> dict[str, Any]:
        return {"name": name, "type": "string", "format": fmt, "description": "", "priority": 0}

    secrets = resource == "secrets"
    columns = [column("Name", "name")]
    if secrets:
        columns.append(column("Type"))
    columns += [column("Data"), column("Age")]

    def cells(item: Mapping[str, Any]) -> list[Any]:
        count = len(item.get("data") or {}) + len(item.get("binaryData") or {})
        row: list[Any] = [item["metadata"]["name"]]
        if secrets:
            row.append(item.get("type", "Opaque"))
        return [*row, count, "0s"]

    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(metadata),
        "columnDefinitions": columns,
        "rows": [
            {
                "cells": cells(item),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }
