"""Objects watched live through the Kubernetes API server, and the keys they hold.

The only module that imports the ``kubernetes`` client (and ``urllib3``, its
transport, whose exceptions escape the client while a watch is streamed). Every
client failure is wrapped into :class:`~extauthz.errors.KeySourceError` here.

Two layers:

- :class:`ObjectWatcher` keeps a live copy of Secrets or ConfigMaps of one namespace,
  by name or by label selector, and hands every change to a :class:`WatchHandler`
  (its docstring is the interface). It knows nothing about keys; the revocation
  lists use it too.
- :class:`KubernetesSource` is the key source: a handler that turns Secrets into keys
  and publishes them to the key store.

How the watcher works (the reflector of client-go, as kopf does it in Python):

- One *stream* per object name (``fieldSelector=metadata.name=<name>``, which a Role
  with ``resourceNames`` allows) or one stream for a label selector. Each stream
  runs in its own thread: a watch is a blocking long-poll, so N names need N open
  connections, and the synchronous client has no select loop. More than
  :data:`MANY_NAMES` names logs a warning pointing to label mode.
- A stream lists (in pages of ``page_size`` with ``limit``/``continue``), then
  watches from the list's ``resourceVersion`` with ``allowWatchBookmarks``. When the
  server ends the watch, the stream re-watches from the last resourceVersion seen
  (events and bookmarks move it) without relisting. Objects are decoded and handed
  to the handler outside any lock shared with the other streams.
- Relist: ``410 Gone`` (status or ``ERROR`` event), any other ``ERROR`` event, and any
  error status answering the watch request (a ``504`` "Too large resource version"
  after an etcd restore, a ``500``, a ``403``) start over with a fresh list, as
  client-go does; a broken connection or a ``429`` re-watches from the same
  resourceVersion. ``Retry-After`` (``429``/``503``) is honoured up to 60 s.
- Dead connections: every connection has TCP keepalive (a dead peer is found within
  30 s, see :mod:`extauthz.keys.sources.net`); every request has a client timeout
  ``(connect, read)``; each watch asks the server to end it after a jittered
  ``timeoutSeconds`` (75-100 % of ``watch_timeout_seconds``, so a fleet does not
  reconnect in step) and reads with a timeout :data:`WATCH_READ_MARGIN` seconds
  longer: a connection whose peer still answers TCP but sends nothing is replaced
  within ``watch_timeout_seconds + WATCH_READ_MARGIN`` (55 s by default).
- Retries: a watch that brought changes or stayed open :data:`HEALTHY_WATCH_SECONDS`
  is re-opened at once, even when it ended in an error; anything else backs off
  (capped exponential, jittered). The backoff follows the longer of two streaks:
  attempts whose watch never opened (refused, unreachable, an error status), which
  ends as soon as a watch opens; and watches that opened but ended, broke or expired
  without progress (a server that cuts every watch, a 410 on every watch), which
  ends only with progress. So a fault that follows another, with the API answering
  in between, starts from a short delay, while a server that keeps failing, or keeps
  ending watches at once, is retried ever more slowly. A
  single failed request is logged as ``kubernetes_api_retry`` (info); only when the
  retry fails too is it an error (``kubernetes_api_error``) and reported to the
  handler (``api_failed``, so ``extauthz_key_source_up`` drops to 0).
- In cluster, the service account token is re-read as soon as its file changes (the
  kubelet rotates bound tokens hourly).

Key semantics of :class:`KubernetesSource`:

- Each Secret is applied atomically: every entry that holds key material must parse
  (JWK, JWKS or PEM), or the whole new version is rejected, ``sink.failed`` is
  called, and the Secret's last good keys stay in force. Entries that are not key
  material (no key-like name, content neither JSON nor PEM) are ignored with one log
  line per entry per change.
- The source publishes the union of the last good keys of all its Secrets, only when
  it changed, and for the first time only after every stream's first list succeeded.
  A deleted Secret (or one that stops matching the selector) takes its keys away.
- A Secret named in the config that does not exist is reported to the store
  (``sink.missing``): the service is not ready until it exists.
- Health (``extauthz_key_source_up``) follows the sink's last call: an API outage is
  reported with ``failed`` once (after a retry failed too), a rejected Secret keeps the
  source down until fixed, and recovery publishes the keys again, changed or not.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from extauthz.errors import KeyMaterialError, KeySourceError
from extauthz.keys.keyset import KeySink
from extauthz.keys.material import Key, MaterialMemo
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.net import keepalive_socket_options

log = structlog.get_logger("extauthz.keys.kubernetes")

#: where a pod's service account credentials and namespace are mounted
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

#: entry names that always hold key material (a parse failure is an error, not "ignored")
KEY_ENTRY_SUFFIXES = (".json", ".jwk", ".jwks", ".pem", ".key", ".crt", ".cer", ".pub")

#: seconds each watch asks the server to end it after (before jitter): short enough that
#: a silent connection is replaced within a minute, long enough to cost nothing
WATCH_TIMEOUT_SECONDS = 40

#: seconds a watch's read timeout exceeds its server-side timeout: the server may send
#: nothing at all until it closes the stream, so less would cut healthy watches
WATCH_READ_MARGIN = 15.0

#: a watch that delivered no change lasted at least this long to count as progress
#: (bookmarks do not count: a proxy that cuts every watch at once may still pass them)
HEALTHY_WATCH_SECONDS = 1.0

#: one watch event larger than this is a protocol error (an object is at most 1 MiB)
MAX_EVENT_BYTES = 4 << 20

#: ``Retry-After`` is honoured up to this many seconds
MAX_RETRY_AFTER = 60.0

#: objects per list page (``limit``); the API server's own default chunk size
PAGE_SIZE = 500

#: more names than this in one source: warn (one thread and connection per name)
MANY_NAMES = 16

_DNS_SUBDOMAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")

Kind = Literal["secret", "configmap"]


# ------------------------------------------------------------------ client configuration


class _TokenFile:
    """A ``refresh_api_key_hook`` that re-reads the service account token when its file
    changes (a stat per request; the kubelet swaps the file through a symlink)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None

    def __call__(self, configuration: k8s.Configuration) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return  # keep the last token; the request tells if it still works
        if token:
            configuration.api_key["BearerToken"] = f"bearer {token}"
            if self._stamp is not None:
                log.info("kubernetes_token_reloaded", path=str(self.path))
            self._stamp = stamp


def load_client_configuration(
    environ: Mapping[str, str] | None = None, serviceaccount_dir: Path = SERVICEACCOUNT_DIR
) -> k8s.Configuration:
    """A fresh client Configuration: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set,
    else ``$KUBECONFIG`` (or ``~/.kube/config``). Never touches the global default.

    In-cluster, the service account token is re-read as soon as its file changes
    (bound tokens are rotated by the kubelet). Raises :class:`KeySourceError` when no
    configuration is usable.
    """
    env = os.environ if environ is None else environ
    configuration = k8s.Configuration()
    try:
        if env.get("KUBERNETES_SERVICE_HOST"):
            token_file = serviceaccount_dir / "token"
            loader = k8s_config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(token_file),
                cert_filename=str(serviceaccount_dir / "ca.crt"),
                environ=env,
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
            hook = _TokenFile(token_file)
            hook(configuration)
            configuration.refresh_api_key_hook = hook  # type: ignore[assignment]
        else:
            config_file = env.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            # persist_config=False: never write refreshed credentials back (read-only FS)
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=config_file, client_configuration=configuration, persist_config=False
            )
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise KeySourceError(f"no usable Kubernetes client configuration: {exc}") from exc
    return configuration


def new_api_client(configuration: k8s.Configuration, connections: int = 4) -> k8s.ApiClient:
    """An ApiClient for long-running watchers, from ``configuration`` (which it tunes).

    urllib3's own retries are turned off: they would retry a refused connection three
    times at once, out of sight of the watcher's backoff. The pool keeps one
    connection per stream; every connection has TCP keepalive.
    """
    configuration.retries = 0
    configuration.connection_pool_maxsize = max(connections, 4)
    configuration.socket_options = keepalive_socket_options()
    return k8s.ApiClient(configuration)


def pod_namespace(serviceaccount_dir: Path = SERVICEACCOUNT_DIR) -> str:
    """The namespace of the pod this process runs in (from its service account mount)."""
    path = serviceaccount_dir / "namespace"
    try:
        namespace = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeySourceError(
            f"namespace not configured and {path} is unreadable (not running in a pod?)"
        ) from exc
    if not namespace:
        raise KeySourceError(f"namespace not configured and {path} is empty")
    return namespace


# ----------------------------------------------------------------------- the watcher


@dataclass(frozen=True, slots=True)
class WatchedObject:
    """One version of a watched object, decoded.

    ``data`` holds every entry as bytes: a Secret's ``data`` base64-decoded, a
    ConfigMap's ``data`` UTF-8-encoded and its ``binaryData`` decoded. ``error`` is set
    (and ``data`` empty) when the object could not be decoded.
    """

    name: str
    resource_version: str
    data: Mapping[str, bytes]
    labels: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """Where the watcher stands, given with every :meth:`WatchHandler.settled`."""

    #: every stream has completed its first list ("initial list done")
    listed: bool
    #: names given to the watcher that do not exist now (always empty in label mode)
    missing: tuple[str, ...]


class WatchHandler(Protocol):
    """What an :class:`ObjectWatcher` hands its changes to.

    Calls for one stream come one at a time, in order, from that stream's thread;
    calls for different streams (names mode) may run concurrently, so a handler
    guards its own state. A call never overlaps with :meth:`ObjectWatcher.stop`
    returning. Expensive work (parsing) belongs in :meth:`changed`, outside the
    handler's lock; the handler's lock is for swapping its state.

    Sequence: a list delivers ``changed`` for every object whose resourceVersion the
    handler has not seen, ``deleted`` for every object it held that is gone, then one
    ``settled``; each watch event delivers one ``changed`` or ``deleted`` and one
    ``settled``. ``settled`` carries :class:`WatchStatus`: ``listed`` turns True once
    every stream listed once, ``missing`` names the absent named objects.
    """

    def changed(self, obj: WatchedObject) -> None:
        """A new object, or a new version of one (an object that starts matching)."""

    def deleted(self, name: str) -> None:
        """An object was deleted (or stopped matching the selector)."""

    def settled(self, status: WatchStatus) -> None:
        """A batch of changes is complete; act on them now (publish)."""

    def api_failed(self, error: KeySourceError) -> None:
        """The API failed for a stream and a retry failed too (once per outage)."""

    def api_recovered(self) -> None:
        """A stream that had failed talks to the API again."""


class _Expired(Exception):
    """The watched resourceVersion is gone (410): relist at once."""


class _Relist(KeySourceError):
    """The server cannot follow our resourceVersion (or sent nonsense): relist."""


class _Throttled(KeySourceError):
    """``429``/``503`` with ``Retry-After``: wait that long (bounded) first."""

    def __init__(self, message: str, retry_after: float | None, relist: bool) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.relist = relist


class _Stopped(Exception):
    """The watcher is stopping."""


@dataclass
class Stream:
    """One list+watch: a single object by name, or a label selector."""

    label: str
    name: str | None  # names mode: the one object; None in label mode
    label_selector: str | None
    objects: dict[str, str] = field(default_factory=dict)  # name -> resourceVersion
    listed: bool = False
    failing: bool = False  # reported to the handler as failed (until a request works)
    errors: int = 0  # failed attempts since the last watch began (the first is a retry)
    refused: int = 0  # consecutive attempts whose watch never opened
    short: int = 0  # consecutive watches that opened (or expired) without progress
    #: when the current attempt's watch opened (None: it did not); a watch's time
    #: counts from then, not from the request
    opened_at: float | None = None
    relisted: bool = False  # a 410 relist happened since the last progress
    changes: int = 0  # changes the current watch brought (kept when it breaks)
    resource_version: str | None = None
    response: Any = None  # the open HTTP response, so stop() can cut it
    thread: threading.Thread | None = None

    @property
    def field_selector(self) -> str | None:
        return f"metadata.name={self.name}" if self.name else None


class ObjectWatcher:
    """A live copy of Secrets or ConfigMaps in one namespace, by name or label selector.

    ``kind`` is ``"secret"`` or ``"configmap"``. ``namespace=None`` means the pod's own
    namespace. ``api_client`` defaults to one built from
    :func:`load_client_configuration` at :meth:`start`. Timeouts are in seconds; a
    watch reads with ``read_timeout`` (default: its server-side timeout +
    :data:`WATCH_READ_MARGIN`). ``clock`` (monotonic seconds) and ``rng`` (jitter)
    are injectable: tests drive :meth:`step` directly, the threads just loop it.
    """

    def __init__(
        self,
        kind: Kind,
        namespace: str | None,
        names: Sequence[str] = (),
        label_selector: str | None = None,
        *,
        api_client: k8s.ApiClient | None = None,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        read_timeout: float | None = None,
        connect_timeout: float = 5.0,
        list_timeout: float = 30.0,
        page_size: int = PAGE_SIZE,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
    ) -> None:
        if kind not in ("secret", "configmap"):
            raise ValueError(f"cannot watch {kind!r}")
        unique = list(dict.fromkeys(names))
        if bool(unique) == bool(label_selector):
            raise ValueError("give exactly one of names or label_selector")
        for name in unique:
            if not name or len(name) > 253 or not set(name) <= _DNS_SUBDOMAIN:
                raise ValueError(f"invalid {kind} name {name!r}")
        if watch_timeout_seconds < 1:
            raise ValueError("watch_timeout_seconds must be at least 1")
        read = float(watch_timeout_seconds) + WATCH_READ_MARGIN
        if read_timeout is not None:
            read = read_timeout
        if read <= watch_timeout_seconds:
            raise ValueError("read_timeout must exceed watch_timeout_seconds")
        if connect_timeout <= 0 or list_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.kind: Kind = kind
        self.namespace = namespace or pod_namespace(serviceaccount_dir)
        self.names = tuple(unique)
        self.label_selector = label_selector
        self.watch_timeout_seconds = int(watch_timeout_seconds)
        self.read_timeout = read
        self.connect_timeout = connect_timeout
        self.list_timeout = list_timeout
        self.page_size = page_size
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        plural = "Secret" if kind == "secret" else "ConfigMap"
        if unique:
            self.description = f"kubernetes {self.namespace}/{','.join(unique)}"
            self.streams = [Stream(f"name={n}", n, None) for n in unique]
            if len(unique) > MANY_NAMES:
                log.warning(
                    "kubernetes_many_names",
                    source=self.description,
                    names=len(unique),
                    detail=f"one watch connection and thread per {plural}; above "
                    f"{MANY_NAMES} prefer a label_selector (one watch for any number)",
                )
        else:
            self.description = f"kubernetes {self.namespace} {plural}s {label_selector}"
            self.streams = [Stream(f"selector={label_selector}", None, label_selector)]
        self._api_client = api_client
        self._own_client = api_client is None
        self._core: Any = None
        self._handler: WatchHandler | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards responses and the status
        self._crashed = False

    # -- lifecycle ---------------------------------------------------------------------

    def bind(self, handler: WatchHandler) -> None:
        """Attach ``handler`` and the API client without starting threads (tests step)."""
        if self._api_client is None:
            self._api_client = new_api_client(load_client_configuration(), len(self.streams) + 1)
        self._core = k8s.CoreV1Api(self._api_client)
        self._handler = handler

    def start(self, handler: WatchHandler) -> None:
        """Start one thread per stream; returns at once.

        Raises :class:`KeySourceError` when no client configuration can be loaded (no
        in-cluster credentials and no kubeconfig): that is a deployment error, not an
        outage to wait out.
        """
        self.bind(handler)
        for stream in self.streams:
            stream.thread = threading.Thread(
                target=self._run,
                args=(stream,),
                name=f"k8s-{self.kind}:{self.namespace}:{stream.label}",
                daemon=True,
            )
            stream.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every stream: interrupt backoff sleeps and cut open watches."""
        self._stop.set()
        with self._lock:
            responses = [s.response for s in self.streams if s.response is not None]
        for response in responses:
            _cut(response)
        deadline = time.monotonic() + timeout
        for stream in self.streams:
            if stream.thread is not None:
                stream.thread.join(max(0.0, deadline - time.monotonic()))
        if self._own_client and self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]

    def alive(self) -> bool:
        """False if a stream thread died of an unexpected error."""
        return not self._crashed

    def status(self) -> WatchStatus:
        """Every stream listed once?, and the named objects that do not exist now."""
        with self._lock:
            listed = all(s.listed for s in self.streams)
            missing = tuple(
                s.name for s in self.streams if s.name and s.listed and s.name not in s.objects
            )
        return WatchStatus(listed, missing)

    # -- one stream ----------------------------------------------------------------------

    def _run(self, stream: Stream) -> None:
        try:
            while not self._stop.is_set():
                delay = self.step(stream)
                if delay > 0 and self._stop.wait(delay):
                    return
        except _Stopped:
            pass
        except BaseException:
            self._crashed = True
            log.exception("kubernetes_watch_crashed", source=self.description, stream=stream.label)
            raise
        finally:
            with self._lock:
                stream.response = None

    def step(self, stream: Stream) -> float:
        """One attempt: list if needed, then watch until the server ends it.

        Returns the seconds to wait before the next attempt (0: go again at once).
        Raises ``_Stopped`` when the watcher stops meanwhile.
        """
        stream.changes = 0
        stream.opened_at = None
        error: KeySourceError | None = None
        expired = False
        retry_after: float | None = None
        try:
            if stream.resource_version is None:
                self._list(stream)
            self._watch(stream)  # returns when the server ends the watch
        except _Expired:
            stream.resource_version = None
            expired = True
        except KeySourceError as exc:
            error = exc
            if isinstance(exc, _Relist) or (isinstance(exc, _Throttled) and exc.relist):
                stream.resource_version = None
            if isinstance(exc, _Throttled) and exc.retry_after is not None:
                retry_after = min(exc.retry_after, MAX_RETRY_AFTER)
        # a watch that broke after it brought changes made progress all the same
        opened_at = stream.opened_at
        progressed = bool(stream.changes) or (
            opened_at is not None and self.clock() - opened_at >= HEALTHY_WATCH_SECONDS
        )
        if progressed:
            stream.refused = stream.short = 0
            stream.relisted = False
        elif opened_at is not None or expired:
            stream.short += 1
        else:
            stream.refused += 1
        attempt = max(stream.refused, stream.short)
        if error is not None:
            self._stream_error(stream, error)
        if expired:
            log.info("kubernetes_watch_expired", source=self.description, stream=stream.label)
        if progressed or (expired and not stream.relisted):
            # after progress, or at the first 410 since, go again at once (a 410 is
            # an answer, not a failure: the server is up); a retry that makes no
            # progress counts, so the next one waits
            delay = 0.0
        else:
            delay = self.backoff.delay(attempt - 1, self.rng)
        if expired:
            stream.relisted = True
        if retry_after is not None:
            delay = max(delay, retry_after)
        if delay and error is None:
            log.info(
                "kubernetes_watch_unproductive",
                source=self.description,
                stream=stream.label,
                why="expired" if expired else "ended at once",
                attempt=attempt,
                retry_in=round(delay, 3),
            )
        elif error is not None:
            (log.error if stream.errors > 1 else log.info)(
                "kubernetes_api_error" if stream.errors > 1 else "kubernetes_api_retry",
                source=self.description,
                stream=stream.label,
                error=str(error),
                attempt=stream.errors,
                retry_in=round(delay, 3),
            )
        return delay

    def _stream_error(self, stream: Stream, error: KeySourceError) -> None:
        stream.errors += 1
        if stream.errors > 1 and not stream.failing:
            stream.failing = True
            if self._handler is not None:
                self._handler.api_failed(error)

    # -- requests --------------------------------------------------------------------------

    def _call(self, **kwargs: Any) -> Any:
        if self.kind == "secret":
            return self._core.list_namespaced_secret(**kwargs)
        return self._core.list_namespaced_config_map(**kwargs)

    def _request(self, stream: Stream, watch: bool, page: str | None = None) -> Any:
        """Open a list or watch request; returns the streaming urllib3 response."""
        if self._stop.is_set():
            raise _Stopped
        what = "watch" if watch else "list"
        kwargs: dict[str, Any] = {"namespace": self.namespace, "_preload_content": False}
        if stream.field_selector:
            kwargs["field_selector"] = stream.field_selector
        if stream.label_selector:
            kwargs["label_selector"] = stream.label_selector
        if watch:
            server_timeout = max(1, int(self.watch_timeout_seconds * self.rng.uniform(0.75, 1.0)))
            kwargs.update(
                watch=True,
                resource_version=stream.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=server_timeout,
                _request_timeout=(self.connect_timeout, self.read_timeout),
            )
        else:
            kwargs["limit"] = self.page_size
            if page:
                kwargs["_continue"] = page
            kwargs["_request_timeout"] = (self.connect_timeout, self.list_timeout)
        try:
            response = self._call(**kwargs)
        except ApiException as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            raise _api_error(what, exc, watch) from exc
        except _TRANSPORT_ERRORS as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            raise KeySourceError(f"{what} failed: {type(exc).__name__}") from exc
        with self._lock:
            if self._stop.is_set():
                _close(response)
                raise _Stopped
            stream.response = response
        if watch:
            stream.errors = 0  # watching again: the next failure is a retry, not an outage
            stream.opened_at = self.clock()
            stream.refused = 0
            if stream.failing:  # watching again (a list alone is not: RBAC without
                # the watch verb lists fine and then fails every watch)
                stream.failing = False
                log.info("kubernetes_api_recovered", source=self.description,
                         stream=stream.label)  # fmt: skip
                if self._handler is not None:
                    self._handler.api_recovered()
        return response

    def _done(self, stream: Stream, response: Any) -> None:
        with self._lock:
            stream.response = None
        _close(response)

    def _list(self, stream: Stream) -> None:
        raw_items: list[Any] = []
        page: str | None = None
        while True:
            response = self._request(stream, watch=False, page=page)
            try:
                body = json.loads(response.read())
                raw_items.extend(body["items"] or [])
                meta = body["metadata"]
                resource_version = str(meta["resourceVersion"])
                page = meta.get("continue") or None
            except _TRANSPORT_ERRORS as exc:
                if self._stop.is_set():
                    raise _Stopped from exc
                raise KeySourceError(f"list failed: {type(exc).__name__}") from exc
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise KeySourceError(f"list answer is not a {self.kind} list") from exc
            finally:
                self._done(stream, response)
            if page is None:
                break
        try:
            objects = [self._decode(item) for item in raw_items]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeySourceError(f"list answer holds a malformed {self.kind}") from exc
        handler = self._require_handler()
        present = set()
        for obj in objects:
            present.add(obj.name)
            if stream.objects.get(obj.name) != obj.resource_version:
                handler.changed(obj)
                with self._lock:
                    stream.objects[obj.name] = obj.resource_version
        for name in set(stream.objects) - present:
            handler.deleted(name)
            with self._lock:
                del stream.objects[name]
        with self._lock:
            stream.listed = True
        stream.resource_version = resource_version
        handler.settled(self.status())
        log.info(
            "kubernetes_listed",
            source=self.description,
            stream=stream.label,
            objects=len(objects),
            resource_version=resource_version,
        )

    def _watch(self, stream: Stream) -> None:
        """Watch until the server ends the watch; ``stream.changes`` counts what it brought."""
        response = self._request(stream, watch=True)
        try:
            for line in self._lines(response):
                if self._event(stream, line):
                    stream.changes += 1
        except _TRANSPORT_ERRORS as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            raise KeySourceError(f"watch broke: {type(exc).__name__}") from exc
        finally:
            self._done(stream, response)
        if self._stop.is_set():
            raise _Stopped

    @staticmethod
    def _lines(response: Any) -> Iterator[bytes]:
        buffer = bytearray()
        for chunk in response.stream(amt=None, decode_content=False):
            buffer.extend(chunk)
            while (newline := buffer.find(b"\n")) != -1:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if line.strip():
                    yield line
            if len(buffer) > MAX_EVENT_BYTES:
                raise _Relist("watch event larger than allowed")

    def _event(self, stream: Stream, line: bytes) -> bool:
        """Take in one watch event; True if it changed what the stream holds (not a
        bookmark, nor an object again at the resourceVersion already held: a server
        that replays its objects at every watch and then cuts it makes no progress)."""
        obj: WatchedObject | None = None
        try:
            event = json.loads(line)
            kind = event["type"]
            raw = event["object"]
            if kind == "ERROR":
                code = raw.get("code")
                message = str(raw.get("message", ""))[:200]
            elif kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = self._decode(raw)
                resource_version = obj.resource_version
            else:
                resource_version = str(raw["metadata"]["resourceVersion"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Relist("malformed watch event") from exc
        if kind == "ERROR":
            if code == 410:
                raise _Expired
            raise _Relist(f"watch ERROR event: {code} {message}")
        if obj is not None:
            handler = self._require_handler()
            changed = False
            if kind == "DELETED":
                if obj.name in stream.objects:
                    handler.deleted(obj.name)
                    with self._lock:
                        del stream.objects[obj.name]
                    changed = True
            elif stream.objects.get(obj.name) != obj.resource_version:
                handler.changed(obj)
                with self._lock:
                    stream.objects[obj.name] = obj.resource_version
                changed = True
            stream.resource_version = resource_version
            if changed:
                handler.settled(self.status())
            return changed
        if kind != "BOOKMARK":
            log.warning("kubernetes_unknown_event", source=self.description, type=kind)
        stream.resource_version = resource_version
        return False

    def _require_handler(self) -> WatchHandler:
        if self._handler is None:
            raise RuntimeError("ObjectWatcher used before bind() or start()")
        return self._handler

    def _decode(self, raw: Any) -> WatchedObject:
        """A Secret or ConfigMap as a :class:`WatchedObject`; raises on a malformed one."""
        meta = raw["metadata"]
        name = meta["name"]
        if not isinstance(name, str):
            raise TypeError("not an object")
        resource_version = str(meta["resourceVersion"])
        labels = meta.get("labels") or {}
        data = raw.get("data") or {}
        binary = (raw.get("binaryData") or {}) if self.kind == "configmap" else {}
        if not isinstance(data, dict) or not isinstance(binary, dict):
            raise TypeError("not an object")
        out: dict[str, bytes] = {}
        try:
            for entry, value in data.items():
                if not isinstance(value, str):
                    raise TypeError(entry)
                if self.kind == "secret":
                    out[entry] = base64.b64decode(value, validate=True)
                else:
                    out[entry] = value.encode("utf-8")
            for entry, value in binary.items():
                if not isinstance(value, str):
                    raise TypeError(entry)
                out[entry] = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError, UnicodeEncodeError) as exc:
            return WatchedObject(
                name, resource_version, {}, dict(labels), error=f"entry {exc}: not decodable"
            )
        return WatchedObject(name, resource_version, out, dict(labels))


def _api_error(what: str, exc: ApiException, watch: bool) -> Exception:
    """The exception for an API error answer to a list or watch request."""
    status = exc.status or 0
    if status == 410:
        return _Expired()
    message = f"{what} failed: HTTP {status} {exc.reason}"
    if status in (429, 503):
        retry_after = _retry_after(exc)
        # a 503 on a watch is a server that cannot follow us now: relist, as client-go
        return _Throttled(message, retry_after, relist=watch and status == 503)
    if watch:
        # any other error status of a watch (504 "Too large resource version" after an
        # etcd restore, 500, 403 ...): the resourceVersion is not one to go on from
        return _Relist(message)
    return KeySourceError(message)


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    text = str(value).strip()
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return float(text)
    return None


#: what a broken, reset, timed-out or cut connection raises while a request runs
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _close(response: Any) -> None:
    """Close a response and its connection (never reused half-read)."""
    try:
        response.close()
        response.release_conn()
    except _TRANSPORT_ERRORS:
        pass


def _cut(response: Any) -> None:
    """Unblock a thread reading ``response`` by shutting its socket down."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# ------------------------------------------------------------------------ the key source


@dataclass
class _SecretState:
    """What one Secret contributes: its last good keys, as of ``resource_version``."""

    resource_version: str
    keys: tuple[Key, ...]
    key_entries: frozenset[str]  # entries that held keys in the last good version
    rejected: bool = False  # the newest version was invalid; ``keys`` are older


@dataclass
class _Parsed:
    """A Secret version parsed outside the lock, to be applied under it."""

    keys: list[Key]
    entries: set[str]
    errors: list[KeyMaterialError]


class KubernetesSource:
    """Keys from Secrets in one namespace, by name or by label selector.

    A :class:`WatchHandler` over an :class:`ObjectWatcher` of Secrets; the arguments
    after ``label_selector`` are the watcher's (see there).
    """

    kind = "kubernetes"

    def __init__(
        self,
        namespace: str | None,
        secrets: Sequence[str] = (),
        label_selector: str | None = None,
        **watcher_options: Any,
    ) -> None:
        try:
            self.watcher = ObjectWatcher(
                "secret", namespace, secrets, label_selector, **watcher_options
            )
        except ValueError as exc:
            raise ValueError(str(exc).replace("names or", "secrets (names) or")) from exc
        self.namespace = self.watcher.namespace
        self.secrets = self.watcher.names
        self.label_selector = label_selector
        self.description = self.watcher.description
        self._sink: KeySink | None = None
        self._lock = threading.Lock()  # guards the Secrets' states and publishing
        self._secrets: dict[str, _SecretState] = {}
        self._memo = MaterialMemo()  # unchanged entries are not parsed again
        self._published: tuple[tuple[str, str, str], ...] | None = None
        self._missing: tuple[str, ...] | None = None
        self._down = False  # the sink's last word from us was ``failed``

    # -- KeySource -------------------------------------------------------------------

    def start(self, sink: KeySink) -> None:
        """Start watching; returns at once (see :meth:`ObjectWatcher.start`)."""
        self._sink = sink
        self.watcher.start(self)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every stream: interrupt backoff sleeps and cut open watches."""
        self.watcher.stop(timeout)

    def alive(self) -> bool:
        """False if a stream thread died of an unexpected error."""
        return self.watcher.alive()

    # -- WatchHandler ----------------------------------------------------------------

    def changed(self, obj: WatchedObject) -> None:
        """Parse the new version (outside the lock), then apply it."""
        with self._lock:
            previous = self._secrets.get(obj.name)
        if previous is not None and previous.resource_version == obj.resource_version:
            return
        parsed = self._parse(obj, previous.key_entries if previous else frozenset())
        with self._lock:
            self._apply(obj, parsed)

    def deleted(self, name: str) -> None:
        """A deleted Secret takes its keys away."""
        with self._lock:
            if self._secrets.pop(name, None) is not None:
                log.info("kubernetes_secret_removed", secret=f"{self.namespace}/{name}")
                self._memo.forget(f"{self.namespace}/{name}[")  # its parsed keys are freed too

    def settled(self, status: WatchStatus) -> None:
        """Publish what changed; tell the store which named Secrets are missing."""
        with self._lock:
            if not status.listed:
                return
            if status.missing != self._missing and self._sink is not None:
                self._missing = status.missing
                if status.missing:
                    log.warning(
                        "kubernetes_secret_missing",
                        source=self.description,
                        missing=[f"{self.namespace}/{n}" for n in status.missing],
                    )
                report = getattr(self._sink, "missing", None)  # optional for plain sinks
                if report is not None:
                    report([f"Secret {self.namespace}/{n}" for n in status.missing])
            self._publish_locked()

    def api_failed(self, error: KeySourceError) -> None:
        """Report the outage once; the last keys stay in force."""
        with self._lock:
            self._failed(error)

    def api_recovered(self) -> None:
        """Say "up" again (a publish, changed or not) once nothing else is broken."""
        with self._lock:
            if self.watcher.status().listed:
                self._publish_locked()

    # -- Secrets -> keys ---------------------------------------------------------------

    def _parse(self, obj: WatchedObject, held: frozenset[str]) -> _Parsed:
        origin_prefix = f"{self.namespace}/{obj.name}"
        parsed = _Parsed([], set(), [])
        if obj.error is not None:
            parsed.errors.append(KeyMaterialError(f"{origin_prefix}: {obj.error}"))
            return parsed
        for entry in sorted(obj.data):
            origin = f"{origin_prefix}[{entry}]"
            raw = obj.data[entry]
            if not _is_key_entry(entry, raw, entry in held):
                log.info(
                    "kubernetes_entry_ignored",
                    secret=origin_prefix,
                    entry=entry,
                    reason="not key material",
                )
                continue
            try:
                found = self._memo.parse(raw, origin)
            except KeyMaterialError as exc:
                parsed.errors.append(exc)
                continue
            except Exception:  # a parser bug on hostile data must not kill the watch
                log.exception("kubernetes_entry_unparseable", secret=origin_prefix, entry=entry)
                parsed.errors.append(KeyMaterialError(f"{origin}: unreadable key material"))
                continue
            parsed.keys.extend(found)
            parsed.entries.add(entry)
        return parsed

    def _apply(self, obj: WatchedObject, parsed: _Parsed) -> None:
        """Take in one parsed version of a Secret (under the lock)."""
        name = obj.name
        origin_prefix = f"{self.namespace}/{name}"
        previous = self._secrets.get(name)
        if parsed.errors:
            for error in parsed.errors:
                self._failed(error)
            kept = previous.keys if previous else ()
            kept_entries = previous.key_entries if previous else frozenset()
            self._secrets[name] = _SecretState(
                obj.resource_version, kept, kept_entries, rejected=True
            )
            log.error(
                "kubernetes_secret_rejected",
                secret=origin_prefix,
                resource_version=obj.resource_version,
                errors=len(parsed.errors),
                kept_keys=len(kept),
            )
            return
        self._secrets[name] = _SecretState(
            obj.resource_version, tuple(parsed.keys), frozenset(parsed.entries)
        )
        if not parsed.keys:
            log.warning("kubernetes_secret_has_no_keys", secret=origin_prefix)

    # -- reporting to the sink (under self._lock) ----------------------------------------
    #
    # The store reads a source's health from its last call: ``publish`` is up, ``failed``
    # is down. So: an API outage is reported once; a publish made while something is
    # still broken is followed by ``failed``; and once nothing is broken any more, the
    # keys are published again even if unchanged, to say so.

    def _failed(self, error: BaseException) -> None:
        self._down = True
        if self._sink is not None:
            self._sink.failed(error)

    def _broken_locked(self) -> str | None:
        """What is broken now (an API failure or a rejected Secret), if anything."""
        rejected = [name for name, state in self._secrets.items() if state.rejected]
        failing = [s.label for s in self.watcher.streams if s.failing]
        if failing:
            return f"API unreachable for {', '.join(failing)}"
        if rejected:
            return f"invalid Secret(s) {', '.join(sorted(rejected))}; last good keys kept"
        return None

    def _publish_locked(self) -> None:
        """Publish the union of every Secret's keys when it changed, or when the source
        recovered (nothing is broken any more)."""
        if self._sink is None:
            return
        keys = [key for name in sorted(self._secrets) for key in self._secrets[name].keys]
        broken = self._broken_locked()
        if self._published is None and not keys and broken:
            return  # nothing usable yet, only errors: stay not ready (fail closed)
        signature = tuple((key.origin, key.thumbprint, key.kid) for key in keys)
        recovered = self._down and broken is None
        if signature == self._published and not recovered:
            return
        if not keys:
            log.warning("kubernetes_no_keys", source=self.description)
        self._published = signature
        self._down = False
        self._sink.publish(keys)
        if broken is not None:
            self._failed(KeySourceError(f"{self.description}: {broken}"))


def _is_key_entry(entry: str, raw: bytes, held_keys: bool) -> bool:
    """Whether a Secret entry is meant to hold key material (so a parse error counts).

    An entry with a key-like name, or content that looks like JSON or PEM, or one that
    held keys before, must parse. Anything else (a README, a config value) is ignored.
    """
    if held_keys or entry.lower().endswith(KEY_ENTRY_SUFFIXES):
        return True
    head = raw.lstrip()[:16]
    return head.startswith((b"{", b"-----BEGIN"))
