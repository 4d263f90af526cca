"""Immutable key snapshots, the store that swaps them, and readiness.

A Check reads :attr:`KeyStore.ring` once and works on that :class:`KeyRing` to the
end: no locks on the hot path. Sources publish the *complete* key list they hold
now; the store rebuilds the ring under a lock (publishes are rare) and swaps the
reference in one assignment.

Purposes: the decryption keys are purpose ``"decryption"``; each provider's
verification keys are purpose ``"provider:<name>"``. A key published for one
provider is never visible to another (per-provider scoping).

Readiness means the service *can decide*. :attr:`KeyStore.ready` turns true once

- every attached source has loaded successfully at least once,
- no source reports a named object (a Secret or ConfigMap named in the config) as
  missing (:meth:`KeySink.missing`), and
- every key purpose that has a source holds at least one *usable* key: a
  verification key that may verify (``use`` absent or ``sig``), a decryption key that
  may decrypt (``use`` absent or ``enc``, private half present).

Other purposes (e.g. :data:`REVOCATION`) hold no keys: a source attached under one
takes part in readiness only by loading once (``publish([])``) and by reporting its
missing named objects (``missing``), so a revocation list that never loaded, or whose
ConfigMap is missing, keeps the service not ready too.

and then it stays true for the life of the process: once ready, losing keys is an
error in the log (``keys_lost``) and a zero in ``extauthz_keys``, never a pod that
leaves its Service and sends the traffic to its peers, which lost the same Secret at
the same time. :meth:`KeyStore.pending` says, in operator words, what readiness is
still waiting for (the source that has not loaded, the Secret that is missing, the
provider whose sources hold no usable key).

Unknown ``kid`` (:meth:`KeyStore.refreshed`): a Check may wait for a refetch, but
work caused by an unauthenticated request stays bounded: at most one Check per
refetching source waits, for at most :data:`REFETCH_WAIT_SECONDS`; a failed fetch
wakes it at once; and while the source's last fetch failed nobody waits at all
(the source's :meth:`RefreshHook.request_refresh` answers False).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from extauthz import metrics
from extauthz.keys.material import Key

DECRYPTION = "decryption"

#: a purpose for sources that gate readiness without holding keys (revocation lists)
REVOCATION = "revocation"

#: the longest a Check waits for a refetch on an unknown ``kid`` (Envoy's default
#: ext_authz timeout is 200 ms to 1 s in practice: a longer wait only holds a worker)
REFETCH_WAIT_SECONDS = 0.5

log = structlog.get_logger("extauthz.keys")


def provider_purpose(name: str) -> str:
    """The purpose under which provider ``name`` publishes its verification keys."""
    return f"provider:{name}"


def describe_purpose(purpose: str) -> str:
    """Operator words for a purpose: ``decryption keys`` or ``provider idp``."""
    if purpose == DECRYPTION:
        return "decryption keys"
    if purpose.startswith("provider:"):
        return f"provider {purpose.removeprefix('provider:')}"
    return purpose


def holds_keys(purpose: str) -> bool:
    """Whether ``purpose`` needs a usable key to be ready (decryption, a provider)."""
    return purpose == DECRYPTION or purpose.startswith("provider:")


def usable_for_purpose(key: Key, purpose: str) -> bool:
    """Whether ``key`` can serve ``purpose`` at all (whatever the algorithm)."""
    if purpose == DECRYPTION:
        return key.use in (None, "enc") and key.private
    return key.use in (None, "sig")


class KeySet:
    """An immutable set of keys for one purpose, indexed by ``kid``."""

    __slots__ = ("_by_kid", "fits", "keys", "thumbprints")

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        unique: dict[str, Key] = {}
        for key in keys:
            unique.setdefault(key.identity, key)  # same material under another use/alg stays
        self.keys: tuple[Key, ...] = tuple(unique.values())
        by_kid: dict[str, list[Key]] = {}
        for key in self.keys:
            by_kid.setdefault(key.kid, []).append(key)
        self._by_kid: dict[str, tuple[Key, ...]] = {k: tuple(v) for k, v in by_kid.items()}
        self.thumbprints: frozenset[str] = frozenset(k.thumbprint for k in self.keys)
        #: the keys that fit a token's (kid, use, alg, ...), memoized by the verifier
        #: for the kids this set holds (a set is immutable, so the answer is too)
        self.fits: dict[tuple[Any, ...], tuple[Key, ...]] = {}

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

    def missing(self, names: Sequence[str]) -> None:
        """The objects named in the config that do not exist now (empty: all exist).

        A source that watches objects by name calls it whenever that set changes;
        before the service is ready, a missing object keeps it not ready.
        """


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
        whose result the caller may wait for; False when rate-limited, or when the
        source's last fetch failed (waiting would only hold the caller).
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
    missing: tuple[str, ...] = ()
    #: publishes and failures so far: a Check waiting on this source's refetch wakes
    #: when it moves, whatever the outcome
    outcomes: int = 0
    #: a Check is waiting for this source's refetch (at most one at a time)
    waiter: bool = False


class _SlotSink:
    """The :class:`KeySink` handed to one source."""

    def __init__(self, store: KeyStore, slot_id: int) -> None:
        self._store = store
        self._slot_id = slot_id

    def publish(self, keys: Sequence[Key]) -> None:
        self._store._publish(self._slot_id, tuple(keys))

    def failed(self, error: BaseException) -> None:
        self._store._failed(self._slot_id, error)

    def missing(self, names: Sequence[str]) -> None:
        self._store._missing(self._slot_id, tuple(names))


class KeyStore:
    """Holds each source's keys and the current :class:`KeyRing`; decides readiness.

    ``require_usable_keys=False`` drops the "at least one usable key per purpose"
    condition (for pipelines built by hand around deliberately unusable keys); the
    service always runs with it on.
    """

    def __init__(self, *, require_usable_keys: bool = True) -> None:
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._refreshers: dict[str, list[tuple[int, RefreshHook]]] = {}
        self._listeners: list[Callable[[KeyRing], object]] = []
        self._require_usable = require_usable_keys
        #: the current snapshot; read it once per Check
        self.ring = KeyRing()
        self._changed = threading.Condition(self._lock)
        self._ready = False  # latched: once ready, ready for good
        self._lost: set[str] = set()  # purposes that lost every usable key after ready

    def attach(self, purpose: str, source: KeySource) -> KeySink:
        """Register ``source`` for ``purpose`` and return the sink it must publish to."""
        use = "enc" if purpose == DECRYPTION else "sig"
        with self._lock:
            self._slots.append(_Slot(purpose, source.kind, source.description, use=use))
            slot_id = len(self._slots) - 1
            if hasattr(source, "request_refresh"):
                self._refreshers.setdefault(purpose, []).append((slot_id, source))  # type: ignore[arg-type]
            self._ready = False  # a source attached later must load too (sources attach first)
        return _SlotSink(self, slot_id)

    def on_change(self, listener: Callable[[KeyRing], object]) -> None:
        """Call ``listener(ring)`` after every swap (e.g. to purge the token cache)."""
        self._listeners.append(listener)

    # -- readiness ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the service can decide (see the module docstring); then for good."""
        if self._ready:
            return True
        with self._lock:
            return self._check_ready_locked()

    def pending(self) -> list[str]:
        """What readiness waits for, one operator-readable line each ([] when ready)."""
        if self._ready:
            return []
        with self._lock:
            return self._pending_locked()

    def wait_ready(self, timeout: float) -> bool:
        """Block until :attr:`ready` or ``timeout`` seconds; returns :attr:`ready`."""
        with self._changed:
            return self._changed.wait_for(self._check_ready_locked, timeout)

    def _pending_locked(self) -> list[str]:
        out = [f"{s.description}: not loaded yet" for s in self._slots if not s.loaded]
        for slot in self._slots:
            if slot.missing:
                out.append(f"{slot.description}: missing {', '.join(slot.missing)}")
        if self._require_usable:
            for purpose, slots in self._by_purpose_locked().items():
                if not holds_keys(purpose):
                    continue
                if all(s.loaded for s in slots) and not self._usable_locked(purpose):
                    names = "; ".join(s.description for s in slots)
                    out.append(f"{describe_purpose(purpose)}: no usable key in {names}")
        return out

    def _check_ready_locked(self) -> bool:
        if self._ready:
            return True
        if self._pending_locked():
            return False
        self._ready = True
        return True

    def _by_purpose_locked(self) -> dict[str, list[_Slot]]:
        grouped: dict[str, list[_Slot]] = {}
        for slot in self._slots:
            grouped.setdefault(slot.purpose, []).append(slot)
        return grouped

    def _usable_locked(self, purpose: str) -> bool:
        return any(usable_for_purpose(k, purpose) for k in self.ring.get(purpose).keys)

    # -- unknown kid ---------------------------------------------------------------------

    def wait_generation(self, generation: int, timeout: float) -> bool:
        """Block until the ring's generation exceeds ``generation``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.ring.generation > generation, timeout)

    def request_refresh(self, purpose: str, kid: str) -> bool:
        """Ask the sources of ``purpose`` that can refetch to do so.

        True when at least one of them has a fetch under way that a caller may wait
        for; False when none can (no such source, all rate-limited or failing).
        """
        return bool(self._accepting(purpose, kid))

    def _accepting(self, purpose: str, kid: str) -> list[int]:
        accepted = []
        for slot_id, hook in self._refreshers.get(purpose, []):
            if hook.request_refresh(kid):
                accepted.append(slot_id)
        return accepted

    def refreshed(
        self, purpose: str, kid: str, generation: int, timeout: float = REFETCH_WAIT_SECONDS
    ) -> KeyRing | None:
        """Refetch for an unknown ``kid`` and wait (bounded) for a newer ring.

        Returns the newer ring, or None when no refetch could be made, another Check
        already waits for it, it failed, or it did not complete within ``timeout``
        (at most :data:`REFETCH_WAIT_SECONDS`). Every caller still *asks* for the
        refetch (rate-limited in the sources), so a real rotation is picked up.
        """
        if self.ring.generation > generation:
            return self.ring  # keys changed since the caller's snapshot: try those first
        accepted = self._accepting(purpose, kid)
        if not accepted:
            return None
        timeout = min(timeout, REFETCH_WAIT_SECONDS)
        with self._changed:
            slot = next((self._slots[i] for i in accepted if not self._slots[i].waiter), None)
            if slot is None:
                return None  # one Check already waits for this source: do not hold another
            slot.waiter = True
            seen = slot.outcomes
            try:
                self._changed.wait_for(
                    lambda: self.ring.generation > generation or slot.outcomes != seen, timeout
                )
            finally:
                slot.waiter = False
            return self.ring if self.ring.generation > generation else None

    # -- from the sources ----------------------------------------------------------------

    def _publish(self, slot_id: int, keys: tuple[Key, ...]) -> None:
        with self._lock:
            slot = self._slots[slot_id]
            slot.keys = keys
            slot.loaded = True
            slot.healthy = True
            slot.outcomes += 1
            was_ready = self._ready
            ring = self._rebuild()
            usable = self._usable_locked(slot.purpose)
            now_ready = self._check_ready_locked()
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
        self._report_usable(slot, usable, was_ready)
        if now_ready and not was_ready:
            log.info("keys_ready", generation=ring.generation)
        for listener in self._listeners:
            listener(ring)

    def _report_usable(self, slot: _Slot, usable: bool, was_ready: bool) -> None:
        if not self._require_usable or not holds_keys(slot.purpose):
            return
        purpose = slot.purpose
        if usable:
            if purpose in self._lost:
                self._lost.discard(purpose)
                log.info(
                    "keys_restored", purpose=describe_purpose(purpose), source=slot.description
                )
            return
        if was_ready:
            if purpose not in self._lost:
                self._lost.add(purpose)
                log.error(
                    "keys_lost",
                    purpose=describe_purpose(purpose),
                    source=slot.description,
                    detail="no usable key left: every token of it is denied until one is "
                    "published again (the service stays ready)",
                )
        elif not slot.keys:
            log.warning("keys_empty", purpose=describe_purpose(purpose), source=slot.description)
        else:
            log.warning(
                "keys_unusable",
                purpose=describe_purpose(purpose),
                source=slot.description,
                detail="keys loaded, none can serve this purpose (use, or a public key "
                "where decryption needs the private one)",
            )

    def _failed(self, slot_id: int, error: BaseException) -> None:
        with self._lock:
            slot = self._slots[slot_id]
            slot.healthy = False
            slot.outcomes += 1
            self._changed.notify_all()
        metrics.key_reload(slot.kind, "error")
        self._export_counts()
        log.error(
            "key_reload_failed",
            source=slot.description,
            purpose=slot.purpose,
            error=str(error),
            kept_keys=len(slot.keys),
        )

    def _missing(self, slot_id: int, names: tuple[str, ...]) -> None:
        with self._lock:
            slot = self._slots[slot_id]
            if slot.missing == names:
                return
            before = slot.missing
            slot.missing = names
            was_ready = self._ready
            self._check_ready_locked()
            self._changed.notify_all()
        gone = sorted(set(names) - set(before))
        back = sorted(set(before) - set(names))
        if gone:
            (log.error if was_ready else log.warning)(
                "key_object_missing", source=slot.description, missing=gone
            )
        if back:
            log.info("key_object_found", source=slot.description, found=back)

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
