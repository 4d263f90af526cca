"""A fake Kubernetes API server for core/v1 Secrets, over real HTTP/1.1 on loopback.

It is driven by real clients (the ``kubernetes`` Python client, ``kubectl``), so it
speaks the wire protocol they expect:

- discovery: ``/api``, ``/apis``, ``/api/v1``, ``/version``;
- ``/api/v1/namespaces/{ns}/secrets``: GET list / ``?watch=true``, POST create;
  ``/api/v1/secrets``: cluster-wide list / watch (so tests can prove nobody uses it);
- ``/api/v1/namespaces/{ns}/secrets/{name}``: GET, PUT, PATCH (merge, strategic
  merge as merge, JSON patch), DELETE (with ``preconditions.resourceVersion``);
- watches stream one JSON event per chunk (``Transfer-Encoding: chunked``) from the
  requested resourceVersion, replaying history; ``allowWatchBookmarks`` adds
  ``BOOKMARK`` events (every ``bookmark_interval`` seconds and right before a
  ``timeoutSeconds`` close); an unset or ``"0"`` resourceVersion starts with synthetic
  ``ADDED`` events for the current state; a too-old resourceVersion is ``410 Gone``,
  as an ``ERROR`` event in a 200 stream (what kube-apiserver's watch cache does,
  ``expired_as="event"``) or as an HTTP 410 (``expired_as="status"``);
- ``Accept: ...;as=Table`` gets a ``meta.k8s.io/v1 Table`` (what ``kubectl get``
  prints from).

Fault hooks, settable from tests while clients are connected: :meth:`FakeKube.close_watches`,
:meth:`FakeKube.abort_watches` (cut mid-chunk), :meth:`FakeKube.error_watches`
(``ERROR`` event), :meth:`FakeKube.stall_watches` (no bytes, connection kept open),
:meth:`FakeKube.fail_requests` (the next N matching requests get a ``Status`` error),
:meth:`FakeKube.outage` (``"refuse"``: stop listening; ``"drop"``: read each request,
log it, close without answering), :meth:`FakeKube.recover`, :meth:`FakeKube.restart`
(same port), :meth:`SecretStore.compact` on :attr:`FakeKube.store`, and the attributes
``expired_as``, ``watch_cap`` (end every watch after N seconds, like a proxy) and
``split_events`` (each event cut across two chunks, like a re-chunking proxy).

``/openapi/v3`` serves the slice of the OpenAPI document that ``kubectl apply`` reads
to choose server-side field validation, and ``fieldValidation=Strict`` rejects unknown
fields, so plain ``kubectl apply`` / ``patch`` / ``delete`` work as against a cluster.

Every request is recorded in :attr:`FakeKube.requests` (method, path, query, status).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from fakekube.selectors import SelectorError, field_selector, label_selector
from fakekube.store import ApiError, Event, SecretStore, status_object

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
            }
        }
    },
}
_OPENAPI_HASH = "fakekube1"

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
    note: str = ""  # e.g. "expired-event", "dropped", "injected"

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch") in ("true", "1")

    @property
    def is_list(self) -> bool:
        return self.method == "GET" and not self.is_watch and self.path.endswith("/secrets")


@dataclass
class _Fault:
    count: int
    code: int
    predicate: Callable[[Request], bool]


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64
    fake: FakeKube


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
    ) -> None:
        self.store = SecretStore(history=history)
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
        return f"http://127.0.0.1:{self._port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def start(self) -> FakeKube:
        """Listen on 127.0.0.1 (the same port as before after a stop)."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
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

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, listen again on the same port."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault hooks -----------------------------------------------------------------

    def outage(self, mode: Literal["refuse", "drop"] = "refuse") -> None:
        """Make the API unreachable: ``refuse`` stops listening (connection refused);
        ``drop`` accepts, logs each request (note ``dropped``) and closes it unanswered,
        so tests can count what an outage costs. Open connections are cut either way."""
        if mode == "refuse":
            self.stop()
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
        """End an :meth:`outage`."""
        with self.store.changed:
            self._state.dropping = False
        self.start()

    def fail_requests(
        self, count: int, code: int = 500, predicate: Callable[[Request], bool] | None = None
    ) -> None:
        """Answer the next ``count`` requests matching ``predicate`` with a ``code`` Status."""
        with self._lock:
            self._state.faults.append(_Fault(count, code, predicate or (lambda r: True)))

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
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.fake._lock:
                self.server.fake._connections.discard(self.connection)

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
        self, code: int, body: Mapping[str, Any], request: Request | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Audit-Id", "fakekube")
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
        if dropping:
            request.note = "dropped"
            self.close_connection = True
            _hard_close(self.connection)
            return
        if fault is not None:
            request.note = "injected"
            if method != "GET":
                self._body()  # keep the connection usable for the next request
            self._send_json(
                fault.code,
                status_object(
                    fault.code, _REASONS.get(fault.code, "InternalError"), "injected fault"
                ),
                request,
            )
            return
        try:
            self._route(method, url.path, query, request)
        except ApiError as error:
            self._send_error(error, request)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True

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
                    "resources": [NAMESPACES_RESOURCE, SECRETS_RESOURCE],
                },
                request,
            )
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4 and method == "GET":
            self._send_json(200, _namespace(parts[3]), request)  # every namespace exists
        elif parts[:2] == ["api", "v1"] and parts[2:] == ["secrets"] and method == "GET":
            self._collection(None, query, request)
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 5 and parts[4] == "secrets":
            namespace = parts[3]
            if method == "GET":
                self._collection(namespace, query, request)
            elif method == "POST":
                body = _strict(query, self._body())
                obj = store.create(namespace, body, dry_run=_dry_run(query))
                self._send_json(201, obj, request)
            else:
                raise _method_not_allowed(method)
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 6 and parts[4] == "secrets":
            self._object(method, parts[3], parts[5], query, request)
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _object(
        self, method: str, namespace: str, name: str, query: dict[str, str], request: Request
    ) -> None:
        store = self.server.fake.store
        dry_run = _dry_run(query)
        if method == "GET":
            self._send_json(200, store.get(namespace, name), request)
        elif method == "PUT":
            body = _strict(query, self._body())
            self._send_json(200, store.update(namespace, name, body, dry_run=dry_run), request)
        elif method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self._body()
            if isinstance(patch, dict):
                _strict(query, patch)
            self._send_json(
                200,
                store.patch(namespace, name, _patcher(content_type, patch), dry_run=dry_run),
                request,
            )
        elif method == "DELETE":
            options = self._body() or {}
            precondition = (options.get("preconditions") or {}).get("resourceVersion")
            gone = store.delete(namespace, name, precondition_rv=precondition, dry_run=dry_run)
            self._send_json(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "kind": "secrets", "uid": gone["metadata"]["uid"]},
                },
                request,
            )
        else:
            raise _method_not_allowed(method)

    def _collection(self, namespace: str | None, query: dict[str, str], request: Request) -> None:
        try:
            by_labels = label_selector(query.get("labelSelector"))
            by_fields = field_selector(query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from exc

        def match(obj: Mapping[str, Any]) -> bool:
            return by_labels(obj["metadata"].get("labels") or {}) and by_fields(obj)

        if request.is_watch:
            self._watch(namespace, match, query, request)
            return
        items, rv = self.server.fake.store.list(namespace, match)
        if "as=Table" in (self.headers.get("Accept") or ""):
            self._send_json(200, _table(items, rv), request)
            return
        for item in items:  # items of a typed list carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(
            200,
            {
                "kind": "SecretList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
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
                items, cursor = store.list(namespace, match)
                initial = [("ADDED", item) for item in items]
            else:
                try:
                    cursor = int(requested)
                except ValueError as exc:
                    raise ApiError(
                        400, "BadRequest", f"invalid resource version: {requested!r}"
                    ) from exc
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
            self._stream(namespace, match, cursor, timeout, bookmarks, control)
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
                                if namespace is None or e.namespace == namespace
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
                self._chunk(_bookmark(cursor))
                next_bookmark = time.monotonic() + (interval or 0)
            elif action == "timeout":
                if bookmarks:
                    self._chunk(_bookmark(cursor))
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


def _bookmark(rv: int) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {"kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}},
    }


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


def _strict(query: Mapping[str, str], body: Any) -> Any:
    """``fieldValidation=Strict``: an unknown field is a 400, as on a real server."""
    if query.get("fieldValidation") != "Strict" or not isinstance(body, dict):
        return body
    unknown = [f for f in body if f not in _SECRET_FIELDS and not f.startswith("$")]
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


def _table(items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    """The ``Table`` kubectl asks for to print ``kubectl get secrets``."""
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
            {"name": "Type", "type": "string", "format": "", "description": "", "priority": 0},
            {"name": "Data", "type": "string", "format": "", "description": "", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "", "priority": 0},
        ],
        "rows": [
            {
                "cells": [
                    item["metadata"]["name"],
                    item.get("type", "Opaque"),
                    len(item.get("data") or {}),
                    "0s",
                ],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }
