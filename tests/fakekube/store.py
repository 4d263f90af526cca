"""The fake API server's state: core/v1 Secrets and ConfigMaps, one global
resourceVersion, history.

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

- :meth:`SecretStore.restore` puts back an earlier :meth:`SecretStore.snapshot` (an
  etcd restore from backup): the resourceVersion goes *back*, the history is gone, and
  a watcher holding a newer resourceVersion is ahead of the store.

Every method takes ``resource`` (``"secrets"``, the default, or ``"configmaps"``).

Not modelled: namespaces as objects (every namespace exists), admission, immutable
objects, managedFields, server-side apply. (RBAC lives in the server.)
"""

from __future__ import annotations

import base64
import binascii
import builtins
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


RESOURCES = {"secrets": "Secret", "configmaps": "ConfigMap"}


def not_found(name: str, resource: str = "secrets") -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
    )


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def conflict(name: str, resource: str = "secrets") -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "kind": resource},
    )


@dataclass(frozen=True)
class Event:
    """One committed change. ``old`` is the state before (None for ADDED)."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    namespace: str
    resource: str
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
    """All Secrets and ConfigMaps of the fake cluster. Every method is thread-safe.

    ``changed`` is notified on every commit (and by the server's fault hooks):
    watch handlers wait on it.
    """

    def __init__(self, history: int = 1000, first_rv: int = 1000) -> None:
        self.changed = threading.Condition()
        self._rv = first_rv
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
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

    def get(self, namespace: str, name: str, resource: str = "secrets") -> dict[str, Any]:
        """One object, or 404."""
        with self.changed:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(name, resource)
            return copy.deepcopy(obj)

    def list(
        self,
        namespace: str | None,
        match: Callable[[Mapping[str, Any]], bool],
        resource: str = "secrets",
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching objects (all namespaces when ``namespace`` is None) and the list's rv,
        sorted by (namespace, name): the order ``continue`` tokens rely on."""
        with self.changed:
            items = [
                copy.deepcopy(obj)
                for (res, ns, name), obj in sorted(self._objects.items())
                if res == resource and (namespace is None or ns == namespace) and match(obj)
            ]
            return items, self._rv

    def events_after(self, rv: int) -> builtins.list[Event]:
        """Events newer than ``rv``; raises 410 when some were compacted away.

        Call with :attr:`changed` held when the answer must be consistent with a wait.
        """
        with self.changed:
            if rv < self._compacted:
                raise expired(rv, self._compacted)
            return [event for event in self._history if event.rv > rv]

    # -- writing -------------------------------------------------------------------

    def create(
        self,
        namespace: str,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        resource: str = "secrets",
    ) -> dict[str, Any]:
        """POST: a new object; 409 AlreadyExists if the name is taken."""
        obj = self._normalize(resource, namespace, body)
        name = obj["metadata"]["name"]
        with self.changed:
            if (resource, namespace, name) in self._objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{resource} "{name}" already exists',
                    {"name": name, "kind": resource},
                )
            obj["metadata"]["uid"] = str(uuid.uuid4())
            obj["metadata"]["creationTimestamp"] = _now()
            if dry_run:
                obj["metadata"]["resourceVersion"] = ""
                return obj
            return self._commit("ADDED", resource, namespace, obj, None)

    def update(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        resource: str = "secrets",
    ) -> dict[str, Any]:
        """PUT: replace an object. A stale ``metadata.resourceVersion`` is 409 Conflict;
        none at all is an unconditional update (Secrets and ConfigMaps allow it)."""
        obj = self._normalize(resource, namespace, body, name=name)
        with self.changed:
            old = self._objects.get((resource, namespace, name))
            if old is None:
                raise not_found(name, resource)
            wanted = body.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(name, resource)
            obj["metadata"]["uid"] = old["metadata"]["uid"]
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            return self._write(resource, namespace, obj, old, dry_run=dry_run)

    def patch(
        self,
        namespace: str,
        name: str,
        apply: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        dry_run: bool = False,
        resource: str = "secrets",
    ) -> dict[str, Any]:
        """PATCH: ``apply`` turns the current object into the new one."""
        with self.changed:
            old = self._objects.get((resource, namespace, name))
            if old is None:
                raise not_found(name, resource)
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
                raise conflict(name, resource)
            obj = self._normalize(resource, namespace, patched, name=name)
            obj["metadata"]["uid"] = old["metadata"]["uid"]
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            return self._write(resource, namespace, obj, old, dry_run=dry_run)

    def delete(
        self,
        namespace: str,
        name: str,
        *,
        precondition_rv: str | None = None,
        dry_run: bool = False,
        resource: str = "secrets",
    ) -> dict[str, Any]:
        """DELETE: remove an object; returns its last state (with the delete's rv)."""
        with self.changed:
            old = self._objects.get((resource, namespace, name))
            if old is None:
                raise not_found(name, resource)
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise conflict(name, resource)
            if dry_run:
                return copy.deepcopy(old)
            del self._objects[(resource, namespace, name)]
            gone = copy.deepcopy(old)
            return self._commit("DELETED", resource, namespace, gone, old)

    def compact(self) -> int:
        """Drop every event kept so far (an etcd compaction). Returns the new floor."""
        with self.changed:
            self._history.clear()
            self._compacted = self._rv
            self.changed.notify_all()
            return self._compacted

    def snapshot(self) -> tuple[int, dict[tuple[str, str, str], dict[str, Any]]]:
        """The whole state now (an etcd backup), for :meth:`restore`."""
        with self.changed:
            return self._rv, copy.deepcopy(self._objects)

    def restore(self, snapshot: tuple[int, dict[tuple[str, str, str], dict[str, Any]]]) -> None:
        """Put back a :meth:`snapshot` (an etcd restore): the resourceVersion goes back
        to the snapshot's, the history is gone. A watcher that saw later writes now
        holds a resourceVersion *ahead* of the store."""
        rv, objects = snapshot
        with self.changed:
            self._rv = rv
            self._objects = copy.deepcopy(objects)
            self._history.clear()
            self._compacted = rv
            self.changed.notify_all()

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
        return self._put("secrets", namespace, name, body, labels)

    def put_configmap(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
        binary_data: Mapping[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """Create or replace a ConfigMap (``binary_data`` goes to ``binaryData``)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }
        if binary_data:
            body["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary_data.items()}
        return self._put("configmaps", namespace, name, body, labels)

    def _put(
        self,
        resource: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        labels: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        if labels:
            body["metadata"]["labels"] = dict(labels)
        with self.changed:
            if (resource, namespace, name) in self._objects:
                return self.update(namespace, name, body, resource=resource)
            return self.create(namespace, body, resource=resource)

    def delete_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """Delete a Secret (404 if absent)."""
        return self.delete(namespace, name)

    def delete_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        """Delete a ConfigMap (404 if absent)."""
        return self.delete(namespace, name, resource="configmaps")

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        """A Secret's decoded ``data``."""
        obj = self.get(namespace, name)
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def namespaces(self) -> Iterable[str]:
        with self.changed:
            return sorted({ns for _, ns, _ in self._objects})

    # -- internals -----------------------------------------------------------------

    def _normalize(
        self, resource: str, namespace: str, body: Mapping[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        expected = RESOURCES.get(resource)
        if expected is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not isinstance(body, Mapping):
            raise ApiError(400, "BadRequest", "the body of the request is not a JSON object")
        obj = copy.deepcopy(dict(body))
        kind = obj.get("kind", expected)
        api_version = obj.get("apiVersion", "v1")
        if kind != expected or api_version != "v1":
            raise ApiError(
                400, "BadRequest", f"the object is a {api_version}/{kind}, not a v1/{expected}"
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", f"{expected} is invalid: metadata.name: Required value")
        meta = dict(meta)
        if not meta.get("name") and meta.get("generateName") and name is None:
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        obj_name = meta.get("name")
        if not obj_name:
            raise ApiError(422, "Invalid", f"{expected} is invalid: metadata.name: Required value")
        if name is not None and obj_name != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if not isinstance(obj_name, str) or len(obj_name) > 253 or not _NAME.fullmatch(obj_name):
            raise ApiError(
                422,
                "Invalid",
                f'{expected} "{obj_name}" is invalid: metadata.name: Invalid value: '
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                {"name": str(obj_name), "kind": expected},
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
        if resource == "configmaps":
            self._normalize_configmap(obj)
        else:
            self._normalize_secret(obj)
        obj["apiVersion"] = "v1"
        obj["kind"] = expected
        return obj

    @staticmethod
    def _normalize_secret(obj: dict[str, Any]) -> None:
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

    @staticmethod
    def _normalize_configmap(obj: dict[str, Any]) -> None:
        data = obj.get("data") or {}
        binary = obj.get("binaryData") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ApiError(
                400,
                "BadRequest",
                'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
                "data must be a map of strings",
            )
        if not isinstance(binary, dict):
            raise ApiError(400, "BadRequest", "binaryData must be a map")
        for key, value in binary.items():
            try:
                if not isinstance(value, str):
                    raise TypeError(key)
                base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise ApiError(
                    400, "BadRequest", f"illegal base64 data in binaryData {key}"
                ) from exc
        overlap = sorted(set(data) & set(binary))
        if overlap:
            raise ApiError(422, "Invalid", f"ConfigMap is invalid: duplicate of key {overlap[0]!r}")
        for field_name, value in (("data", data), ("binaryData", binary)):
            if value:
                obj[field_name] = value
            else:
                obj.pop(field_name, None)
        size = sum(len(k) + len(v) for k, v in data.items()) + sum(
            len(k) + len(v) * 3 // 4 for k, v in binary.items()
        )
        if size > 1024 * 1024:
            raise ApiError(
                422,
                "Invalid",
                "ConfigMap is invalid: data: Too long: must have at most 1048576 bytes",
            )

    def _write(
        self,
        resource: str,
        namespace: str,
        obj: dict[str, Any],
        old: dict[str, Any],
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        if _comparable(obj) == _comparable(old):
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion, no event
        if dry_run:
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return obj
        return self._commit("MODIFIED", resource, namespace, obj, old)

    def _commit(
        self,
        kind: str,
        resource: str,
        namespace: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        # caller holds self.changed
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind != "DELETED":
            self._objects[(resource, namespace, obj["metadata"]["name"])] = obj
        self._history.append(
            Event(
                self._rv,
                kind,
                namespace,
                resource,
                copy.deepcopy(obj),
                copy.deepcopy(old) if old else None,
            )
        )
        while len(self._history) > self._history_limit:
            dropped = self._history.popleft()
            self._compacted = dropped.rv
        self.changed.notify_all()
        return copy.deepcopy(obj)


#: the store holds ConfigMaps too; this is the name to use for new code
ObjectStore = SecretStore
