"""The fake API server's state: core/v1 Secrets, one global resourceVersion, history.

What it keeps faithful to kube-apiserver (these are the things a watcher depends on):

- one monotonically increasing resourceVersion for every write in every namespace,
  carried by the written object; a list carries the store's current resourceVersion;
- a write that changes nothing (same data, labels, ...) is a no-op: no new
  resourceVersion, no event (kubectl apply of an unchanged manifest);
- a bounded event history; a watch from a resourceVersion older than what is kept
  is ``410 Gone`` (reason ``Expired``); :meth:`SecretStore.compact` drops history
  at once, like an etcd compaction;
- a watch with a label or field selector sees an object that *starts* matching as
  ``ADDED`` and one that *stops* matching as ``DELETED`` (the watch cache does this);
- a deleted object's event carries the resourceVersion of the delete;
- ``stringData`` is folded into ``data`` on writes and never returned; ``data``
  values must be valid base64 (400 otherwise); ``type`` defaults to ``Opaque``;
- errors are ``Status`` objects with the real reasons: ``NotFound``,
  ``AlreadyExists``, ``Conflict``, ``Invalid``, ``BadRequest``, ``Expired``,
  ``InternalError``.

Not modelled: namespaces as objects (every namespace exists), RBAC, admission,
immutable Secrets, managedFields, server-side apply.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ApiError(Exception):
    """An API error; the server answers ``status()`` with HTTP ``code``."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> dict[str, Any]:
        """The ``Status`` object of this error, as the API server sends it."""
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``meta/v1 Status`` of a failure."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def not_found(name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'secrets "{name}" not found', {"name": name, "kind": "secrets"}
    )


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def conflict(name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on secrets "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "kind": "secrets"},
    )


@dataclass(frozen=True)
class Event:
    """One committed change. ``old`` is the state before (None for ADDED)."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    namespace: str
    obj: dict[str, Any]
    old: dict[str, Any] | None

    def view(self, match: Callable[[Mapping[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
        """What a watcher with selector ``match`` sees of this event, if anything."""
        now = self.type != "DELETED" and match(self.obj)
        before = self.old is not None and match(self.old)
        if self.type == "DELETED":
            return ("DELETED", self.obj) if before else None
        if now and before:
            return ("MODIFIED", self.obj)
        if now:
            return ("ADDED", self.obj)
        if before:
            return ("DELETED", self.obj)
        return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object without the fields the server owns, to detect no-op writes."""
    out = copy.deepcopy(dict(obj))
    out["metadata"] = {
        k: v for k, v in out.get("metadata", {}).items() if k not in ("resourceVersion",)
    }
    return out


class SecretStore:
    """All Secrets of the fake cluster. Every method is thread-safe.

    ``changed`` is notified on every commit (and by the server's fault hooks):
    watch handlers wait on it.
    """

    def __init__(self, history: int = 1000, first_rv: int = 1000) -> None:
        self.changed = threading.Condition()
        self._rv = first_rv
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: deque[Event] = deque()
        self._history_limit = history
        #: events with rv <= compacted are gone; a watch from below it is 410
        self._compacted = first_rv

    # -- reading -------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        with self.changed:
            return self._rv

    @property
    def compacted(self) -> int:
        """The oldest resourceVersion a watch may still start from."""
        with self.changed:
            return self._compacted

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """One Secret, or 404."""
        with self.changed:
            obj = self._objects.get((namespace, name))
            if obj is None:
                raise not_found(name)
            return copy.deepcopy(obj)

    def list(
        self, namespace: str | None, match: Callable[[Mapping[str, Any]], bool]
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching Secrets (all namespaces when ``namespace`` is None) and the list's rv."""
        with self.changed:
            items = [
                copy.deepcopy(obj)
                for (ns, name), obj in sorted(self._objects.items())
                if (namespace is None or ns == namespace) and match(obj)
            ]
            return items, self._rv

    def events_after(self, rv: int) -> list[Event]:
        """Events newer than ``rv``; raises 410 when some were compacted away.

        Call with :attr:`changed` held when the answer must be consistent with a wait.
        """
        with self.changed:
            if rv < self._compacted:
                raise expired(rv, self._compacted)
            return [event for event in self._history if event.rv > rv]

    # -- writing -------------------------------------------------------------------

    def create(
        self, namespace: str, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """POST: a new Secret; 409 AlreadyExists if the name is taken."""
        obj = self._normalize(namespace, body)
        name = obj["metadata"]["name"]
        with self.changed:
            if (namespace, name) in self._objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'secrets "{name}" already exists',
                    {"name": name, "kind": "secrets"},
                )
            obj["metadata"]["uid"] = str(uuid.uuid4())
            obj["metadata"]["creationTimestamp"] = _now()
            if dry_run:
                obj["metadata"]["resourceVersion"] = ""
                return obj
            return self._commit("ADDED", namespace, obj, None)

    def update(
        self, namespace: str, name: str, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """PUT: replace a Secret. A stale ``metadata.resourceVersion`` is 409 Conflict;
        none at all is an unconditional update (Secrets allow it)."""
        obj = self._normalize(namespace, body, name=name)
        with self.changed:
            old = self._objects.get((namespace, name))
            if old is None:
                raise not_found(name)
            wanted = body.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(name)
            obj["metadata"]["uid"] = old["metadata"]["uid"]
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            return self._write(namespace, obj, old, dry_run=dry_run)

    def patch(
        self,
        namespace: str,
        name: str,
        apply: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PATCH: ``apply`` turns the current object into the new one."""
        with self.changed:
            old = self._objects.get((namespace, name))
            if old is None:
                raise not_found(name)
            patched = apply(copy.deepcopy(old))
            meta = patched.get("metadata")
            if not isinstance(meta, dict):
                raise ApiError(422, "Invalid", "metadata: Required value")
            if meta.get("name") != name:
                raise ApiError(
                    400, "BadRequest", "the name of the object does not match the name on the URL"
                )
            wanted = meta.get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(name)
            obj = self._normalize(namespace, patched, name=name)
            obj["metadata"]["uid"] = old["metadata"]["uid"]
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            return self._write(namespace, obj, old, dry_run=dry_run)

    def delete(
        self,
        namespace: str,
        name: str,
        *,
        precondition_rv: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE: remove a Secret; returns its last state (with the delete's rv)."""
        with self.changed:
            old = self._objects.get((namespace, name))
            if old is None:
                raise not_found(name)
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise conflict(name)
            if dry_run:
                return copy.deepcopy(old)
            del self._objects[(namespace, name)]
            gone = copy.deepcopy(old)
            return self._commit("DELETED", namespace, gone, old)

    def compact(self) -> int:
        """Drop every event kept so far (an etcd compaction). Returns the new floor."""
        with self.changed:
            self._history.clear()
            self._compacted = self._rv
            self.changed.notify_all()
            return self._compacted

    # -- conveniences for tests ------------------------------------------------------

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes | str],
        labels: Mapping[str, str] | None = None,
        secret_type: str = "Opaque",
    ) -> dict[str, Any]:
        """Create or replace a Secret from raw (not yet base64) values."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": secret_type,
            "data": {
                key: base64.b64encode(value.encode() if isinstance(value, str) else value).decode()
                for key, value in data.items()
            },
        }
        if labels:
            body["metadata"]["labels"] = dict(labels)
        with self.changed:
            if (namespace, name) in self._objects:
                return self.update(namespace, name, body)
            return self.create(namespace, body)

    def delete_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """Delete a Secret (404 if absent)."""
        return self.delete(namespace, name)

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        """A Secret's decoded ``data``."""
        obj = self.get(namespace, name)
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def namespaces(self) -> Iterable[str]:
        with self.changed:
            return sorted({ns for ns, _ in self._objects})

    # -- internals -----------------------------------------------------------------

    def _normalize(
        self, namespace: str, body: Mapping[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise ApiError(400, "BadRequest", "the body of the request is not a JSON object")
        obj = copy.deepcopy(dict(body))
        kind = obj.get("kind", "Secret")
        api_version = obj.get("apiVersion", "v1")
        if kind != "Secret" or api_version != "v1":
            raise ApiError(
                400, "BadRequest", f"the object is a {api_version}/{kind}, not a v1/Secret"
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", "Secret is invalid: metadata.name: Required value")
        meta = dict(meta)
        if not meta.get("name") and meta.get("generateName") and name is None:
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        obj_name = meta.get("name")
        if not obj_name:
            raise ApiError(422, "Invalid", "Secret is invalid: metadata.name: Required value")
        if name is not None and obj_name != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if not isinstance(obj_name, str) or len(obj_name) > 253 or not _NAME.fullmatch(obj_name):
            raise ApiError(
                422,
                "Invalid",
                f'Secret "{obj_name}" is invalid: metadata.name: Invalid value: '
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                {"name": str(obj_name), "kind": "Secret"},
            )
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match "
                "the namespace sent on the request",
            )
        meta["namespace"] = namespace
        for owned in ("resourceVersion", "uid", "creationTimestamp", "selfLink", "managedFields"):
            meta.pop(owned, None)
        labels = meta.get("labels")
        if labels is not None and (
            not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values())
        ):
            raise ApiError(400, "BadRequest", "metadata.labels must be a map of strings")
        if labels == {}:
            meta.pop("labels")
        if meta.get("annotations") == {}:
            meta.pop("annotations")
        obj["metadata"] = meta
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise ApiError(
                400,
                "BadRequest",
                'Secret in version "v1" cannot be handled as a Secret: data must be a map',
            )
        for key, value in data.items():
            try:
                if not isinstance(value, str):
                    raise TypeError(key)
                base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'Secret in version "v1" cannot be handled as a Secret: '
                    f"illegal base64 data in {key}",
                ) from exc
        string_data = obj.pop("stringData", None) or {}
        if not isinstance(string_data, dict):
            raise ApiError(400, "BadRequest", "stringData must be a map of strings")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        if data:
            obj["data"] = data
        else:
            obj.pop("data", None)
        obj.setdefault("type", "Opaque")
        obj["apiVersion"] = "v1"
        obj["kind"] = "Secret"
        return obj

    def _write(
        self, namespace: str, obj: dict[str, Any], old: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        if _comparable(obj) == _comparable(old):
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion, no event
        if dry_run:
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return obj
        return self._commit("MODIFIED", namespace, obj, old)

    def _commit(
        self, kind: str, namespace: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        # caller holds self.changed
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind != "DELETED":
            self._objects[(namespace, obj["metadata"]["name"])] = obj
        self._history.append(
            Event(
                self._rv, kind, namespace, copy.deepcopy(obj), copy.deepcopy(old) if old else None
            )
        )
        while len(self._history) > self._history_limit:
            dropped = self._history.popleft()
            self._compacted = dropped.rv
        self.changed.notify_all()
        return copy.deepcopy(obj)
