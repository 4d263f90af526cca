"""Keys from Kubernetes Secrets, watched live through the API server.

The only module that imports the ``kubernetes`` client (and ``urllib3``, its
transport, whose exceptions escape the client while a watch is streamed). Every
client failure is wrapped into :class:`~extauthz.errors.KeySourceError` here.

How it works (the reflector pattern of client-go, as kopf does it in Python):

- One *stream* per Secret name (``fieldSelector=metadata.name=<name>``, which a Role
  with ``resourceNames`` allows) or one stream for a label selector. Each stream
  runs in its own thread: a watch is a blocking long-poll, so N names need N open
  connections whichever way they are multiplexed, and the synchronous client has no
  select loop. Names are a handful in practice; threads keep each stream simple.
- A stream lists, then watches from the list's ``resourceVersion`` with
  ``allowWatchBookmarks`` and a server-side ``timeoutSeconds``. When the server ends
  the watch (its timeout), the stream re-watches from the last resourceVersion seen
  (events and bookmarks move it) without relisting. ``410 Gone`` (HTTP status or
  ``ERROR`` event) means that resourceVersion is no longer served: relist.
- Every request carries a client timeout ``(connect, read)``; a watch's read timeout
  exceeds the server timeout plus a margin, so a connection that went silent (a dead
  peer, a stuck proxy) is detected and replaced instead of hanging forever.
- Connection errors, timeouts, 5xx and other API errors retry after a capped
  exponential backoff with jitter; a stream that makes no progress (watch closed at
  once, 410 right after a list) backs off too, so nothing loops hot.

Key semantics (SPEC §4):

- Each Secret is applied atomically: every entry that holds key material must parse
  (JWK, JWKS or PEM), or the whole new version is rejected, ``sink.failed`` is
  called, and the Secret's last good keys stay in force. Entries that are not key
  material (no key-like name, content neither JSON nor PEM) are ignored with one log
  line per entry per change.
- The source publishes the union of the last good keys of all its Secrets, only when
  it changed, and for the first time only after every stream's first list succeeded.
  A deleted Secret (or one that stops matching the selector) takes its keys away.
- Health (``extauthz_key_source_up``) follows the sink's last call: an API failure is
  reported with ``failed`` once per outage of a stream, a rejected Secret keeps the
  source down until fixed, and recovery publishes the keys again, changed or not.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from extauthz.errors import KeyMaterialError, KeySourceError
from extauthz.keys.keyset import KeySink
from extauthz.keys.material import Key, forget, parse_key_material
from extauthz.keys.sources.backoff import Backoff

log = structlog.get_logger("extauthz.keys.kubernetes")

#: where a pod's service account credentials and namespace are mounted
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

#: entry names that always hold key material (a parse failure is an error, not "ignored")
KEY_ENTRY_SUFFIXES = (".json", ".jwk", ".jwks", ".pem", ".key", ".crt", ".cer", ".pub")

#: seconds a watch's read timeout exceeds the server-side timeout: the server may send
#: nothing at all until it closes the stream, so less would cut healthy watches
WATCH_READ_MARGIN = 30.0

#: a watch that delivered no change lasted at least this long to count as progress
#: (bookmarks do not count: a proxy that cuts every watch at once may still pass them)
HEALTHY_WATCH_SECONDS = 1.0

#: one watch event larger than this is a protocol error (a Secret is at most 1 MiB)
MAX_EVENT_BYTES = 4 << 20

_DNS_SUBDOMAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def load_client_configuration(
    environ: Mapping[str, str] | None = None, serviceaccount_dir: Path = SERVICEACCOUNT_DIR
) -> k8s.Configuration:
    """A fresh client Configuration: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set,
    else ``$KUBECONFIG`` (or ``~/.kube/config``). Never touches the global default.

    In-cluster, the service account token is re-read when it rotates (bound tokens
    expire hourly). Raises :class:`KeySourceError` when no configuration is usable.
    """
    env = os.environ if environ is None else environ
    configuration = k8s.Configuration()
    try:
        if env.get("KUBERNETES_SERVICE_HOST"):
            loader = k8s_config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(serviceaccount_dir / "token"),
                cert_filename=str(serviceaccount_dir / "ca.crt"),
                environ=env,
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
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
    times at once, out of sight of the source's backoff. The pool keeps one connection
    per stream.
    """
    configuration.retries = 0
    configuration.connection_pool_maxsize = max(connections, 4)
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


class _Expired(Exception):
    """The watched resourceVersion is gone (410): relist."""


class _Resync(KeySourceError):
    """The server sent something we cannot follow: back off, then relist."""


class _Stopped(Exception):
    """The source is stopping."""


@dataclass
class _SecretState:
    """What one Secret contributes: its last good keys, as of ``resource_version``."""

    resource_version: str
    keys: tuple[Key, ...]
    key_entries: frozenset[str]  # entries that held keys in the last good version
    rejected: bool = False  # the newest version was invalid; ``keys`` are older


@dataclass
class _Stream:
    """One list+watch: a single Secret by name, or a label selector."""

    label: str
    field_selector: str | None
    label_selector: str | None
    secrets: dict[str, _SecretState] = field(default_factory=dict)
    listed: bool = False
    failing: bool = False  # its last API request failed (reported to the sink once)
    resource_version: str | None = None
    response: Any = None  # the open HTTP response, so stop() can cut it
    thread: threading.Thread | None = None


@dataclass
class _WatchResult:
    changes: int = 0  # ADDED / MODIFIED / DELETED events taken in
    started: float | None = None  # when the watch request was sent (None: never)

    @property
    def progressed(self) -> bool:
        """A watch that brought changes or stayed open: retrying at once cannot loop hot."""
        if self.changes:
            return True
        return self.started is not None and time.monotonic() - self.started >= HEALTHY_WATCH_SECONDS


class KubernetesSource:
    """Watches Secrets in one namespace, by name or by label selector.

    ``namespace=None`` means the pod's own namespace. ``api_client`` defaults to one
    built from :func:`load_client_configuration` at :meth:`start`. Timeouts are in
    seconds; ``read_timeout`` (of a watch) defaults to ``watch_timeout_seconds`` +
    :data:`WATCH_READ_MARGIN` and must exceed ``watch_timeout_seconds``.
    """

    kind = "kubernetes"

    def __init__(
        self,
        namespace: str | None,
        secrets: Sequence[str] = (),
        label_selector: str | None = None,
        *,
        api_client: k8s.ApiClient | None = None,
        watch_timeout_seconds: int = 300,
        read_timeout: float | None = None,
        connect_timeout: float = 5.0,
        list_timeout: float = 30.0,
        backoff: Backoff | None = None,
        serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
    ) -> None:
        names = list(dict.fromkeys(secrets))
        if bool(names) == bool(label_selector):
            raise ValueError("give exactly one of secrets (names) or label_selector")
        for name in names:
            if not name or len(name) > 253 or not set(name) <= _DNS_SUBDOMAIN:
                raise ValueError(f"invalid Secret name {name!r}")
        if watch_timeout_seconds < 1:
            raise ValueError("watch_timeout_seconds must be at least 1")
        read = (
            float(watch_timeout_seconds) + WATCH_READ_MARGIN
            if read_timeout is None
            else read_timeout
        )
        if read <= watch_timeout_seconds:
            raise ValueError("read_timeout must exceed watch_timeout_seconds")
        if connect_timeout <= 0 or list_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.namespace = namespace or pod_namespace(serviceaccount_dir)
        self.secrets = tuple(names)
        self.label_selector = label_selector
        self.watch_timeout_seconds = int(watch_timeout_seconds)
        self.read_timeout = read
        self.connect_timeout = connect_timeout
        self.list_timeout = list_timeout
        self.backoff = backoff or Backoff()
        if names:
            self.description = f"kubernetes {self.namespace}/{','.join(names)}"
            self._streams = [
                _Stream(
                    label=f"name={name}",
                    field_selector=f"metadata.name={name}",
                    label_selector=None,
                )
                for name in names
            ]
        else:
            self.description = f"kubernetes {self.namespace} selector {label_selector}"
            self._streams = [
                _Stream(
                    label=f"selector={label_selector}",
                    field_selector=None,
                    label_selector=label_selector,
                )
            ]
        self._api_client = api_client
        self._own_client = api_client is None
        self._core: Any = None
        self._sink: KeySink | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards streams' secrets, publishing, responses
        self._published: tuple[tuple[str, str, str], ...] | None = None
        self._down = False  # the sink's last word from us was ``failed``
        self._crashed = False

    # -- KeySource -------------------------------------------------------------------

    def start(self, sink: KeySink) -> None:
        """Start one thread per stream; returns at once.

        Raises :class:`KeySourceError` when no client configuration can be loaded (no
        in-cluster credentials and no kubeconfig): that is a deployment error, not an
        outage to wait out.
        """
        if self._api_client is None:
            self._api_client = new_api_client(load_client_configuration(), len(self._streams) + 1)
        self._core = k8s.CoreV1Api(self._api_client)
        self._sink = sink
        for stream in self._streams:
            stream.thread = threading.Thread(
                target=self._run,
                args=(stream,),
                name=f"keys-k8s:{self.namespace}:{stream.label}",
                daemon=True,
            )
            stream.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every stream: interrupt backoff sleeps and cut open watches."""
        self._stop.set()
        with self._lock:
            responses = [s.response for s in self._streams if s.response is not None]
        for response in responses:
            _cut(response)
        deadline = time.monotonic() + timeout
        for stream in self._streams:
            if stream.thread is not None:
                stream.thread.join(max(0.0, deadline - time.monotonic()))
        if self._own_client and self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]

    def alive(self) -> bool:
        """False if a stream thread died of an unexpected error."""
        return not self._crashed

    # -- one stream ------------------------------------------------------------------

    def _run(self, stream: _Stream) -> None:
        try:
            self._loop(stream)
        except _Stopped:
            pass
        except BaseException:
            self._crashed = True
            log.exception("kubernetes_source_crashed", source=self.description, stream=stream.label)
            raise
        finally:
            with self._lock:
                stream.response = None

    def _loop(self, stream: _Stream) -> None:
        failures = 0  # consecutive attempts that made no progress
        while not self._stop.is_set():
            result = _WatchResult()
            error: KeySourceError | None = None
            expired = False
            try:
                if stream.resource_version is None:
                    self._list(stream)
                result.started = time.monotonic()
                self._watch(stream, result)  # returns when the server ends the watch
            except _Stopped:
                return
            except _Expired:
                stream.resource_version = None  # relist
                expired = True
            except KeySourceError as exc:
                if isinstance(exc, _Resync):
                    stream.resource_version = None
                error = exc
            failures = 0 if result.progressed else failures + 1
            if error is not None:
                self._stream_failed(stream, error)
            if failures == 0 or (expired and failures == 1):
                # after progress, or at the first 410, go again at once: a retry that
                # fails makes no progress, so the next one waits
                if expired:
                    log.info(
                        "kubernetes_watch_expired", source=self.description, stream=stream.label
                    )
                continue
            delay = self.backoff.delay(failures - 1)
            log.warning(
                "kubernetes_api_error" if error is not None else "kubernetes_watch_unproductive",
                source=self.description,
                stream=stream.label,
                error=str(error) if error is not None else ("expired" if expired else "ended"),
                attempt=failures,
                retry_in=round(delay, 3),
            )
            if self._stop.wait(delay):
                return

    def _request(self, stream: _Stream, watch: bool) -> Any:
        """Open a list or watch request; returns the streaming urllib3 response."""
        if self._stop.is_set():
            raise _Stopped
        kwargs: dict[str, Any] = {
            "namespace": self.namespace,
            "_preload_content": False,
        }
        if stream.field_selector:
            kwargs["field_selector"] = stream.field_selector
        if stream.label_selector:
            kwargs["label_selector"] = stream.label_selector
        if watch:
            kwargs.update(
                watch=True,
                resource_version=stream.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_seconds,
                _request_timeout=(self.connect_timeout, self.read_timeout),
            )
        else:
            kwargs["_request_timeout"] = (self.connect_timeout, self.list_timeout)
        try:
            response = self._core.list_namespaced_secret(**kwargs)
        except ApiException as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            if exc.status == 410:
                raise _Expired from exc
            raise KeySourceError(
                f"{'watch' if watch else 'list'} failed: HTTP {exc.status} {exc.reason}"
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            raise KeySourceError(
                f"{'watch' if watch else 'list'} failed: {type(exc).__name__}"
            ) from exc
        with self._lock:
            if self._stop.is_set():
                _close(response)
                raise _Stopped
            stream.response = response
            if stream.failing:  # the API answers again
                stream.failing = False
                log.info("kubernetes_api_recovered", source=self.description, stream=stream.label)
                self._publish_locked()
        return response

    def _done(self, stream: _Stream, response: Any) -> None:
        with self._lock:
            stream.response = None
        _close(response)

    def _list(self, stream: _Stream) -> None:
        response = self._request(stream, watch=False)
        try:
            body = json.loads(response.read())
            items = [_secret_fields(item) for item in body["items"] or []]
            resource_version = str(body["metadata"]["resourceVersion"])
        except _TRANSPORT_ERRORS as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            raise KeySourceError(f"list failed: {type(exc).__name__}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeySourceError("list answer is not a SecretList") from exc
        finally:
            self._done(stream, response)
        with self._lock:
            present = set()
            for name, item_rv, data in items:
                self._apply(stream, name, item_rv, data)
                present.add(name)
            for name in set(stream.secrets) - present:
                self._remove(stream, name)
            stream.listed = True
            stream.resource_version = resource_version
            self._publish_locked()
        log.info(
            "kubernetes_listed",
            source=self.description,
            stream=stream.label,
            secrets=len(items),
            resource_version=resource_version,
        )

    def _watch(self, stream: _Stream, result: _WatchResult) -> None:
        response = self._request(stream, watch=True)
        try:
            for line in self._lines(response):
                if self._event(stream, line):
                    result.changes += 1
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
                raise _Resync("watch event larger than allowed")

    def _event(self, stream: _Stream, line: bytes) -> bool:
        """Take in one watch event; True if it was a change (not a bookmark)."""
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
            if kind == "ERROR":
                code = obj.get("code")
                reason = obj.get("reason", "")
            elif kind in ("ADDED", "MODIFIED", "DELETED"):
                name, resource_version, data = _secret_fields(obj)
            else:
                resource_version = str(obj["metadata"]["resourceVersion"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Resync("malformed watch event") from exc
        if kind == "ERROR":
            if code == 410:
                raise _Expired
            raise KeySourceError(f"watch ERROR event: {code} {reason}")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            with self._lock:
                if kind == "DELETED":
                    self._remove(stream, name)
                else:
                    self._apply(stream, name, resource_version, data)
                stream.resource_version = resource_version
                self._publish_locked()
            return True
        if kind != "BOOKMARK":
            log.warning("kubernetes_unknown_event", source=self.description, type=kind)
        stream.resource_version = resource_version
        return False

    # -- Secrets -> keys (under self._lock) ---------------------------------------------

    def _apply(
        self, stream: _Stream, name: str, resource_version: str, data: Mapping[str, Any]
    ) -> None:
        """Take in one version of Secret ``name`` (``data`` still base64)."""
        previous = stream.secrets.get(name)
        if previous is not None and previous.resource_version == resource_version:
            return  # a relist of what we hold already
        origin_prefix = f"{self.namespace}/{name}"
        keys: list[Key] = []
        entries: set[str] = set()
        errors: list[KeyMaterialError] = []
        held = previous.key_entries if previous else frozenset()
        for entry in sorted(data):
            origin = f"{origin_prefix}[{entry}]"
            try:
                raw = base64.b64decode(data[entry], validate=True)
            except (binascii.Error, TypeError, ValueError):
                errors.append(KeyMaterialError(f"{origin}: not valid base64"))
                continue
            if not _is_key_entry(entry, raw, entry in held):
                log.info(
                    "kubernetes_entry_ignored",
                    secret=origin_prefix,
                    entry=entry,
                    reason="not key material",
                )
                continue
            try:
                found = parse_key_material(raw, origin)
            except KeyMaterialError as exc:
                errors.append(exc)
                continue
            except Exception:  # a parser bug on hostile data must not kill the watch
                log.exception("kubernetes_entry_unparseable", secret=origin_prefix, entry=entry)
                errors.append(KeyMaterialError(f"{origin}: unreadable key material"))
                continue
            keys.extend(found)
            entries.add(entry)
        if errors:
            for error in errors:
                self._failed(error)
            kept = previous.keys if previous else ()
            kept_entries = previous.key_entries if previous else frozenset()
            stream.secrets[name] = _SecretState(resource_version, kept, kept_entries, rejected=True)
            log.error(
                "kubernetes_secret_rejected",
                secret=origin_prefix,
                resource_version=resource_version,
                errors=len(errors),
                kept_keys=len(kept),
            )
        else:
            stream.secrets[name] = _SecretState(resource_version, tuple(keys), frozenset(entries))
            if not keys:
                log.warning("kubernetes_secret_has_no_keys", secret=origin_prefix)

    def _remove(self, stream: _Stream, name: str) -> None:
        if stream.secrets.pop(name, None) is not None:
            log.info("kubernetes_secret_removed", secret=f"{self.namespace}/{name}")
            forget(f"{self.namespace}/{name}[")  # its parsed keys are freed too

    # -- reporting to the sink (under self._lock) ----------------------------------------
    #
    # The store reads a source's health from its last call: ``publish`` is up, ``failed``
    # is down. So: an API failure is reported once per outage of a stream; a publish made
    # while something is still broken is followed by ``failed``; and once nothing is
    # broken any more, the keys are published again even if unchanged, to say so.

    def _failed(self, error: BaseException) -> None:
        self._down = True
        if self._sink is not None:
            self._sink.failed(error)

    def _stream_failed(self, stream: _Stream, error: KeySourceError) -> None:
        with self._lock:
            if not stream.failing:
                stream.failing = True
                self._failed(error)

    def _broken_locked(self) -> str | None:
        """What is broken now (an API failure or a rejected Secret), if anything."""
        failing = [s.label for s in self._streams if s.failing]
        rejected = [
            name for s in self._streams for name, state in s.secrets.items() if state.rejected
        ]
        if failing:
            return f"API unreachable for {', '.join(failing)}"
        if rejected:
            return f"invalid Secret(s) {', '.join(sorted(rejected))}; last good keys kept"
        return None

    def _publish_locked(self) -> None:
        """Publish the union of every Secret's keys when it changed, or when the source
        recovered (nothing is broken any more); only once every stream has listed."""
        if self._sink is None or not all(s.listed for s in self._streams):
            return
        keys = [
            key
            for stream in self._streams
            for name in sorted(stream.secrets)
            for key in stream.secrets[name].keys
        ]
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


#: what a broken, reset, timed-out or cut connection raises while a request runs
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _secret_fields(obj: Any) -> tuple[str, str, Mapping[str, Any]]:
    """(name, resourceVersion, data) of a Secret object; raises on a malformed one."""
    meta = obj["metadata"]
    name = meta["name"]
    data = obj.get("data") or {}
    if not isinstance(name, str) or not isinstance(data, dict):
        raise TypeError("not a Secret")
    return name, str(meta["resourceVersion"]), data


def _is_key_entry(entry: str, raw: bytes, held_keys: bool) -> bool:
    """Whether a Secret entry is meant to hold key material (so a parse error counts).

    An entry with a key-like name, or content that looks like JSON or PEM, or one that
    held keys before, must parse. Anything else (a README, a config value) is ignored.
    """
    if held_keys or entry.lower().endswith(KEY_ENTRY_SUFFIXES):
        return True
    head = raw.lstrip()[:16]
    return head.startswith((b"{", b"-----BEGIN"))


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
