"""The fake API server (``tests/fakekube``) with server-side apply.

The revocation runbook writes its list ConfigMap with ``kubectl apply --server-side``:
a ``PATCH`` with ``Content-Type: application/apply-patch+yaml``. :class:`FakeKubeWithApply`
is the fake API server plus that verb, for Secrets and ConfigMaps alike:

- it requires ``fieldManager`` (422 otherwise, as kube-apiserver does);
- it creates the object when absent (201), else sets the fields the applied manifest
  names (a JSON merge of the manifest onto the object: exact for a single field
  manager, which is the runbook's case) and answers 200;
- a ``metadata.resourceVersion`` in the manifest makes the apply conditional (409 on
  a mismatch), ``metadata.managedFields`` is refused, ``dryRun=All`` changes nothing.

Everything else (routing, RBAC, watches, fault hooks) is the fake's own.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.fakekube import server as fake_server
from tests.fakekube.server import FakeKube, Request
from tests.fakekube.store import ApiError

APPLY = "application/apply-patch+yaml"


class _Handler(fake_server._Handler):
    def _object(
        self, method: str, namespace: str, name: str, query: dict[str, str], request: Request,
        resource: str = "secrets",
    ) -> None:  # fmt: skip
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if method == "PATCH" and content_type == APPLY:
            self._apply(namespace, name, query, request, resource)
            return
        super()._object(method, namespace, name, query, request, resource)

    def _apply(
        self, namespace: str, name: str, query: dict[str, str], request: Request, resource: str
    ) -> None:
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
        meta = applied.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if meta.get("managedFields") is not None:
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        store = self.server.fake.store
        dry_run = query.get("dryRun") == "All"
        with store.changed:
            try:
                store.get(namespace, name, resource)
            except ApiError:
                created = store.create(namespace, applied, dry_run=dry_run, resource=resource)
                self._send_json(201, created, request)
                return
            patched = store.patch(
                namespace, name, lambda current: fake_server._merge_patch(current, applied),
                dry_run=dry_run, resource=resource,
            )  # fmt: skip
        self._send_json(200, patched, request)


class FakeKubeWithApply(FakeKube):
    """:class:`FakeKube` that also answers server-side apply."""

    def start(self) -> FakeKubeWithApply:
        """Listen (see :meth:`FakeKube.start`), serving requests with the apply verb."""
        super().start()
        server: Any = self._server
        server.RequestHandlerClass = _Handler  # before any client knows the port
        return self

    def __enter__(self) -> FakeKubeWithApply:
        return self.start()
