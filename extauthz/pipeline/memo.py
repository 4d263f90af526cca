"""A bounded memo: a dict that starts over when full.

The pipeline and the edges remember what many Checks share (parsed headers, path
readings, header shapes, shared claims, answers' fixed parts). Some keys are the
client's choice, so every such memo is bounded; when one is full it is cleared rather
than evicted one by one: what is in use is still referenced by its users, and the next
lookups fill it again. A plain ``dict`` underneath, so a lookup costs what a dict's
does; safe to share between threads (a race can only clear it early or store twice).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict of at most ``limit`` entries, cleared when a new one would exceed it."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def keep(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (clearing the memo first when full); return it."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
