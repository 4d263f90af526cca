"""The fake API server (``tests/fakekube``) with core/v1 ConfigMaps and server-side apply.

Revocation lists live in ConfigMaps, and the runbook writes them with
``kubectl apply --server-side``. :class:`FakeKubeWithConfigMaps` adds, on the same port
and with the same protocol and fault hooks as the Secret fake:

- ``/api/v1/namespaces/{ns}/configmaps[/{name}]``: list, watch, get, create, update,
  patch, delete, served by the fake's own handlers over a second store
  (:class:`ConfigMapStore`: ``data`` is a map of strings, ``binaryData`` base64);
- ``PATCH`` with ``application/apply-patch+yaml`` (server-side apply) on ConfigMaps:
  creates the object when absent, else sets the fields the applied manifest names
  (a merge; enough for a single field manager, which is what the runbook is), and
  requires ``fieldManager``;
- ``configmaps`` in discovery and in the OpenAPI slice kubectl reads.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import yaml
from fakekube import server as fake_server
from fakekube.server import FakeKube, Request
from fakekube.store import ApiError, SecretStore

CONFIGMAPS_RESOURCE = {
    "name": "configmaps",
    "singularName": "configmap",
    "namespaced": True,
    "kind": "ConfigMap",
    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    "shortNames": ["cm"],
    "storageVersionHash": "qFsyl6wFWjQ=",
}

_CM_GVK = {"group": "", "version": "v1", "kind": "ConfigMap"}
_CM_OPENAPI_PATHS = {
    "/api/v1/namespaces/{namespace}/configmaps": {
        "post": {
            "x-kubernetes-group-version-kind": _CM_GVK,
            "parameters": fake_server._QUERY,
            "responses": {},
        },
    },
    "/api/v1/namespaces/{namespace}/configmaps/{name}": {
        verb: {
            "x-kubernetes-group-version-kind": _CM_GVK,
            "parameters": fake_server._QUERY,
            "responses": {},
        }
        for verb in ("put", "patch")
    },
}
_CM_SCHEMA = {
    "type": "object",
    "x-kubernetes-group-version-kind": [_CM_GVK],
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
}
OPENAPI_V1 = copy.deepcopy(fake_server.OPENAPI_V1)
OPENAPI_V1["paths"].update(_CM_OPENAPI_PATHS)
OPENAPI_V1["components"]["schemas"]["io.k8s.api.core.v1.ConfigMap"] = _CM_SCHEMA

_CM_FIELDS = frozenset({"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"})
APPLY = "application/apply-patch+yaml"


class ConfigMapStore(SecretStore):
    """ConfigMaps, with the Secret store's resourceVersion, history and watch semantics."""

    def _normalize(
        self, namespace: str, body: Mapping[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise ApiError(400, "BadRequest", "the body of the request is not a JSON object")
        if body.get("kind", "ConfigMap") != "ConfigMap" or body.get("apiVersion", "v1") != "v1":
            raise ApiError(400, "BadRequest", "the object is not a v1/ConfigMap")
        unknown = [f for f in body if f not in _CM_FIELDS]
        if unknown:
            raise ApiError(400, "BadRequest", f'unknown field "{unknown[0]}"')
        data = body.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ApiError(
                400,
                "BadRequest",
                'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
                "data must be a map of strings",
            )
        binary = body.get("binaryData") or {}
        # reuse the Secret normalization for metadata and base64 checks of binaryData
        obj = super()._normalize(
            namespace,
            {"apiVersion": "v1", "kind": "Secret", "metadata": body.get("metadata"),
             "data": dict(binary)},
            name=name,
        )  # fmt: skip
        out: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        if data:
            out["data"] = dict(data)
        if obj.get("data"):
            out["binaryData"] = obj["data"]
        if body.get("immutable") is not None:
            out["immutable"] = bool(body["immutable"])
        return out

    def put_configmap(
        self, namespace: str, name: str, data: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Create or replace a ConfigMap."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }
        if labels:
            body["metadata"]["labels"] = dict(labels)
        with self.changed:
            try:
                self.get(namespace, name)
            except ApiError:
                return self.create(namespace, body)
            return self.update(namespace, name, body)

    def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's ``data``."""
        return dict(self.get(namespace, name).get("data") or {})


class _View:
    """The server as a ConfigMap request sees it: the fake with the ConfigMap store."""

    def __init__(self, server: Any, fake: FakeKubeWithConfigMaps) -> None:
        self._server = server
        self.fake = _FakeView(fake)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class _FakeView:
    def __init__(self, fake: FakeKubeWithConfigMaps) -> None:
        self._fake = fake
        self.store = fake.configmaps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fake, name)


class _Handler(fake_server._Handler):
    def _route(self, method: str, path: str, query: dict[str, str], request: Request) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        fake = self.server.fake
        if method == "GET" and path == "/api/v1":
            self._send_json(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": "v1",
                    "resources": [
                        fake_server.NAMESPACES_RESOURCE,
                        fake_server.SECRETS_RESOURCE,
                        CONFIGMAPS_RESOURCE,
                    ],
                },
                request,
            )
            return
        if method == "GET" and path == "/openapi/v3/api/v1":
            self._send_json(200, OPENAPI_V1, request)
            return
        configmaps = parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (5, 6) and (
            parts[4] == "configmaps"
        )
        if not configmaps:
            super()._route(method, path, query, request)
            return
        assert isinstance(fake, FakeKubeWithConfigMaps)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if method == "PATCH" and len(parts) == 6 and content_type == APPLY:
            self._apply(fake.configmaps, parts[3], parts[5], query, request)
            return
        real = self.server
        self.server = _View(real, fake)  # type: ignore[assignment]
        try:
            super()._route(method, path.replace("/configmaps", "/secrets"), query, request)
        finally:
            self.server = real

    def _apply(
        self, store: ConfigMapStore, namespace: str, name: str, query: dict[str, str],
        request: Request,
    ) -> None:  # fmt: skip
        if not query.get("fieldManager"):
            raise ApiError(
                422, "Invalid", "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value"
            )
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            applied = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ApiError(400, "BadRequest", "the body is not valid YAML") from exc
        if not isinstance(applied, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        meta = applied.get("metadata") or {}
        if not isinstance(meta, dict) or meta.get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        if meta.get("managedFields") is not None:
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        dry_run = query.get("dryRun") == "All"
        with store.changed:
            try:
                store.get(namespace, name)
                exists = True
            except ApiError:
                exists = False
            if not exists:
                obj = store.create(namespace, applied, dry_run=dry_run)
                self._send_json(201, obj, request)
                return
            patched = store.patch(
                namespace, name, lambda current: fake_server._merge_patch(current, applied),
                dry_run=dry_run,
            )  # fmt: skip
        self._send_json(200, patched, request)


class FakeKubeWithConfigMaps(FakeKube):
    """:class:`FakeKube` serving ConfigMaps (store: :attr:`configmaps`) and server-side apply."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.configmaps = ConfigMapStore(first_rv=500_000)
        self._cm_lock = threading.Lock()

    def start(self) -> FakeKubeWithConfigMaps:
        """Listen on 127.0.0.1 (the same port after a stop), with the ConfigMap routes."""
        if self._server is not None:
            return self
        server = fake_server._Server(("127.0.0.1", self._port), _Handler)
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

    def __enter__(self) -> FakeKubeWithConfigMaps:
        return self.start()


def configmap_manifest(name: str, namespace: str, document: Mapping[str, Any]) -> str:
    """A ConfigMap manifest holding ``document`` as ``revoked.json`` (JSON text)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"revoked.json": json.dumps(document)},
        }
    )
