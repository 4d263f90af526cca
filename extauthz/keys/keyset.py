"""Immutable key snapshots and the store that swaps them.

A Check reads :attr:`KeyStore.ring` once and works on that :class:`KeyRing` to the
end: no locks on the hot path. Sources publish the *complete* key list they hold
now; the store rebuilds the ring under a lock (publishes are rare) and swaps the
reference in one assignment.

Purposes: the decryption keys are purpose ``"decryption"``; each provider's
verification keys are purpose ``"provider:<name>"``. A key published for one
provider is never visible to another (SPEC §2, per-provider scoping).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from extauthz import metrics
from extauthz.keys.material import Key

DECRYPTION = "decryption"

log = structlog.get_logger("extauthz.keys")


def provider_purpose(name: str) -> str:
    """The purpose under which provider ``name`` publishes its verification keys."""
    return f"provider:{name}"


class KeySet:
    """An immutable set of keys for one purpose, indexed by ``kid``."""

    __slots__ = ("_by_kid", "keys", "thumbprints")

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        unique: dict[tuple[str, str], Key] = {}
        for key in keys:
            unique.setdefault((key.thumbprint, key.kid), key)
        self.keys: tuple[Key, ...] = tuple(unique.values())
        by_kid: dict[str, list[Key]] = {}
        for key in self.keys:
            by_kid.setdefault(key.kid, []).append(key)
        self._by_kid: dict[str, tuple[Key, ...]] = {k: tuple(v) for k, v in by_kid.items()}
        self.thumbprints: frozenset[str] = frozenset(k.thumbprint for k in self.keys)

    def by_kid(self, kid: str) -> tuple[Key, ...]:
        """Keys with exactly this ``kid`` (no fallback to others)."""
        return self._by_kid.get(kid, ())

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)


EMPTY = KeySet()


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Everything a Check needs from the key sources, frozen at one instant."""

    sets: Mapping[str, KeySet] = field(default_factory=dict)
    generation: int = 0

    def get(self, purpose: str) -> KeySet:
        """The keys of ``purpose`` (empty when none are loaded)."""
        return self.sets.get(purpose, EMPTY)

    def holds(self, purpose: str, thumbprint: str) -> bool:
        """Whether a key with ``thumbprint`` is still live for ``purpose``."""
        return thumbprint in self.get(purpose).thumbprints


class KeySink(Protocol):
    """What a source talks to: the store, seen through one (purpose, source) slot."""

    def publish(self, keys: Sequence[Key]) -> None:
        """Replace every key this source holds with ``keys`` (the full current list)."""

    def failed(self, error: BaseException) -> None:
        """A reload failed; the source's last good keys stay in force."""


class KeySource(Protocol):
    """A place keys come from. Runs in its own supervised background thread."""

    #: the source kind, a bounded metric label: ``directory``, ``kubernetes``, ``jwks``
    kind: str
    #: human description for logs, e.g. ``kubernetes auth/extauthz-keys``
    description: str

    def start(self, sink: KeySink) -> None:
        """Begin loading in the background; must not block."""

    def stop(self) -> None:
        """Stop promptly (interrupt any backoff or blocking read)."""

    def alive(self) -> bool:
        """False if the background work died unexpectedly (the app then exits)."""


class RefreshHook(Protocol):
    """Optional capability of a source: refetch when a token names an unknown ``kid``."""

    def request_refresh(self, kid: str) -> bool:
        """Ask for a (rate-limited) refetch; never blocks.

        Returns True when a fetch is under way (started now or already in flight)
        whose result the caller may wait for; False when rate-limited.
        """


@dataclass
class _Slot:
    purpose: str
    kind: str
    description: str
    keys: tuple[Key, ...] = ()
    loaded: bool = False
    use: str = "sig"
    healthy: bool = False


class _SlotSink:
    """The :class:`KeySink` handed to one source."""

    def __init__(self, store: KeyStore, slot_id: int) -> None:
        self._store = store
        self._slot_id = slot_id

    def publish(self, keys: Sequence[Key]) -> None:
        self._store._publish(self._slot_id, tuple(keys))

    def failed(self, error: BaseException) -> None:
        self._store._failed(self._slot_id, error)


class KeyStore:
    """Holds each source's keys and the current :class:`KeyRing`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._refreshers: dict[str, list[RefreshHook]] = {}
        self._listeners: list[Callable[[KeyRing], object]] = []
        #: the current snapshot; read it once per Check
        self.ring = KeyRing()
        self._changed = threading.Condition(self._lock)

    def attach(self, purpose: str, source: KeySource) -> KeySink:
        """Register ``source`` for ``purpose`` and return the sink it must publish to."""
        use = "enc" if purpose == DECRYPTION else "sig"
        with self._lock:
            self._slots.append(_Slot(purpose, source.kind, source.description, use=use))
            slot_id = len(self._slots) - 1
            if hasattr(source, "request_refresh"):
                self._refreshers.setdefault(purpose, []).append(source)  # type: ignore[arg-type]
        return _SlotSink(self, slot_id)

    def on_change(self, listener: Callable[[KeyRing], object]) -> None:
        """Call ``listener(ring)`` after every swap (e.g. to purge the token cache)."""
        self._listeners.append(listener)

    @property
    def ready(self) -> bool:
        """True once every attached source has loaded successfully at least once."""
        return all(slot.loaded for slot in self._slots)

    def pending(self) -> list[str]:
        """Descriptions of sources that have not loaded yet (for logs and /readyz)."""
        return [s.description for s in self._slots if not s.loaded]

    def wait_ready(self, timeout: float) -> bool:
        """Block until :attr:`ready` or ``timeout`` seconds; returns :attr:`ready`."""
        with self._changed:
            return self._changed.wait_for(lambda: self.ready, timeout)

    def wait_generation(self, generation: int, timeout: float) -> bool:
        """Block until the ring's generation exceeds ``generation`` (used by refreshers)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.ring.generation > generation, timeout)

    def request_refresh(self, purpose: str, kid: str) -> bool:
        """Ask the sources of ``purpose`` that can refetch to do so.

        True when at least one of them has a fetch under way that a caller may wait
        for; False when none can (no such source, or all rate-limited).
        """
        accepted = False
        for hook in self._refreshers.get(purpose, []):
            accepted = bool(hook.request_refresh(kid)) or accepted
        return accepted

    def refreshed(
        self, purpose: str, kid: str, generation: int, timeout: float = 2.0
    ) -> KeyRing | None:
        """Refetch for an unknown ``kid`` and wait (bounded) for a newer ring.

        Returns the newer ring, or None when no refetch could be made or it did not
        complete within ``timeout``. The rate limit lives in the sources, so a flood
        of random ``kid`` values costs at most one fetch per interval and no waiting.
        """
        if self.ring.generation > generation:
            return self.ring  # keys changed since the caller's snapshot: try those first
        if not self.request_refresh(purpose, kid):
            return None
        if self.wait_generation(generation, timeout):
            return self.ring
        return None

    def _publish(self, slot_id: int, keys: tuple[Key, ...]) -> None:
        with self._lock:
            slot = self._slots[slot_id]
            slot.keys = keys
            slot.loaded = True
            slot.healthy = True
            ring = self._rebuild()
            self._changed.notify_all()
        metrics.key_reload(slot.kind, "success")
        self._export_counts()
        log.info(
            "keys_loaded",
            source=slot.description,
            purpose=slot.purpose,
            count=len(keys),
            generation=ring.generation,
        )
        for listener in self._listeners:
            listener(ring)

    def _failed(self, slot_id: int, error: BaseException) -> None:
        slot = self._slots[slot_id]
        slot.healthy = False
        metrics.key_reload(slot.kind, "error")
        self._export_counts()
        log.error(
            "key_reload_failed",
            source=slot.description,
            purpose=slot.purpose,
            error=str(error),
            kept_keys=len(slot.keys),
        )

    def _rebuild(self) -> KeyRing:
        grouped: dict[str, list[Key]] = {}
        for slot in self._slots:
            grouped.setdefault(slot.purpose, []).extend(slot.keys)
        ring = KeyRing(
            sets={purpose: KeySet(keys) for purpose, keys in grouped.items()},
            generation=self.ring.generation + 1,
        )
        self.ring = ring
        return ring

    def _export_counts(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        up: dict[str, bool] = {}
        with self._lock:
            for slot in self._slots:
                label = (slot.kind, slot.use)
                counts[label] = counts.get(label, 0) + len(slot.keys)
                up[slot.kind] = up.get(slot.kind, True) and slot.healthy
        for (kind, use), count in counts.items():
            metrics.set_key_count(kind, use, count)
        for kind, healthy in up.items():
            metrics.set_source_up(kind, healthy)
