"""Keys held in memory (dev mode and tests): published once, never change."""

from __future__ import annotations

from collections.abc import Sequence

from extauthz.keys.keyset import KeySink
from extauthz.keys.material import Key


class StaticSource:
    """Publishes a fixed key list at start."""

    kind = "static"

    def __init__(self, keys: Sequence[Key], description: str = "static") -> None:
        self.keys = tuple(keys)
        self.description = description

    def start(self, sink: KeySink) -> None:
        """Publish the keys at once."""
        sink.publish(self.keys)

    def stop(self) -> None:
        """Nothing to stop."""

    def alive(self) -> bool:
        """Always alive."""
        return True
