"""A revocation list fed by the test itself: a store whose one source never runs, the
test writes the list through the sink."""

from __future__ import annotations

import json
from typing import Any

from extauthz.revocation.store import ListSink, RevocationStore


class ListsFromTest:
    kind = "directory"
    description = "test lists"

    def start(self, sink: Any) -> None:  # pragma: no cover - fed by the test directly
        raise AssertionError

    def stop(self) -> None:  # pragma: no cover
        pass

    def alive(self) -> bool:  # pragma: no cover
        return True


def list_store(ready: bool = True) -> tuple[RevocationStore, ListSink]:
    """A store with one list source; ``ready``: an empty list already loaded."""
    store = RevocationStore()
    sink = store.attach(ListsFromTest())
    if ready:
        sink.update("list", {"revoked.json": b'{"revoked": []}'})
        sink.synced()
    return store, sink


def revoke(sink: ListSink, *entries: dict[str, Any]) -> None:
    """Replace the list with ``entries``."""
    sink.update("list", {"revoked.json": json.dumps({"revoked": list(entries)}).encode()})
