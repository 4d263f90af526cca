"""Revocation lists from ConfigMaps or Secrets, watched live through the API server.

The list+watch machinery is the key sources' :class:`ObjectWatcher` (one watch per
named object, or one for a label selector; relist on 410, backoff, timeouts); this
module only turns what it delivers into list versions for the store:

- each object version is one list version (every data entry must be a valid list
  document, or the version is rejected and the object keeps its last good list);
- a deleted object (or one that stops matching the selector) keeps its last list in
  force: the store logs and counts it;
- readiness: the first complete listing with no named object missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import structlog

from extauthz.errors import KeySourceError
from extauthz.keys.sources.kubernetes import ObjectWatcher, WatchedObject, WatchStatus
from extauthz.revocation.store import ListSink

log = structlog.get_logger("extauthz.revocation.kubernetes")


class _Handler:
    """The watcher's handler: forwards to the store's sink."""

    def __init__(self, sink: ListSink, description: str) -> None:
        self.sink = sink
        self.description = description
        self._status: WatchStatus | None = None

    def changed(self, obj: WatchedObject) -> None:
        if obj.error is not None:
            self.sink.invalid(obj.name, obj.error)
        else:
            self.sink.update(obj.name, obj.data)

    def deleted(self, name: str) -> None:
        self.sink.delete(name)

    def settled(self, status: WatchStatus) -> None:
        if status.listed and status != self._status:
            self._status = status
            self.sink.synced(missing=status.missing)

    def api_failed(self, error: KeySourceError) -> None:
        self.sink.failed(error)

    def api_recovered(self) -> None:
        log.info("revocation_source_recovered", source=self.description)


class KubernetesListSource:
    """ConfigMaps (``kind="configmap"``) or Secrets in one namespace, by name or selector."""

    kind = "kubernetes"

    def __init__(
        self,
        namespace: str | None,
        *,
        kind: Literal["secret", "configmap"] = "configmap",
        names: Sequence[str] = (),
        label_selector: str | None = None,
        watcher: ObjectWatcher | None = None,
    ) -> None:
        self.watcher = watcher or ObjectWatcher(kind, namespace, names, label_selector)
        self.description = f"revocation {self.watcher.description}"

    def start(self, sink: ListSink) -> None:
        """Start watching; returns at once."""
        self.watcher.start(_Handler(sink, self.description))

    def stop(self) -> None:
        """Stop every watch."""
        self.watcher.stop()

    def alive(self) -> bool:
        """False if a watch thread died of an unexpected error."""
        return self.watcher.alive()
