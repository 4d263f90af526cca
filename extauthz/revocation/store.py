"""The revocation list in force: an immutable snapshot swapped by one assignment.

Concurrency contract (as for keys): a Check reads :attr:`RevocationStore.lists` once
and asks that :class:`RevocationList` whether its token is revoked; nothing on that
path takes a lock. Sources hand the store complete versions of their list objects;
the store merges them under a lock (updates are rare), builds a new snapshot with
the next ``generation`` and swaps the reference. The token cache remembers, per
token, the generation it was last found clean under: while the generation is the
same, a cached token costs one integer comparison; when a list changes, each cached
token is looked up again (three dict lookups) on its next use, so a revocation
reaches cached decisions at once.

Failure semantics:

- a list object's version is taken whole or not at all: one bad entry rejects the
  version, the object keeps its last good list, an error is logged (naming the
  entry) and counted;
- an object deleted after it loaded keeps its last list in force (an error is
  logged and counted): clearing a list means applying an empty one;
- an update that would make the whole list larger than ``max_entries`` is rejected
  the same way;
- the store is ready once every source has loaded once and every object named in
  the config exists; once ready it stays ready (a later loss is logged and counted).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import structlog

from extauthz import metrics
from extauthz.revocation.entries import (
    DigestEntry,
    Entry,
    JtiEntry,
    ListError,
    parse_document,
)

log = structlog.get_logger("extauthz.revocation")

_NEVER = float("inf")
_K = TypeVar("_K")

#: the reason class of a revoked token (a deny 401 ``invalid_token``)
REVOKED = "revoked"

#: why a token matched: the ``detail`` of its deny in the decision log
BY_JTI = "revoked by jti"
BY_DIGEST = "revoked by token_sha256"
BY_SUBJECT = "revoked by sub issued_before"


@dataclass(frozen=True, slots=True, eq=False)
class Tables:
    """The three lookup tables of a list (a whole snapshot, or one object's part)."""

    #: (iss, jti) -> the entry's exp (inf: none); iss "" = under every issuer
    jti: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: SHA-256 of the token string -> the entry's exp (inf: none)
    digest: Mapping[bytes, float] = field(default_factory=dict)
    #: (iss, sub) -> issued_before
    subject: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.jti) + len(self.digest) + len(self.subject)

    @classmethod
    def build(cls, entries: Iterable[Entry]) -> Tables:
        """Index ``entries``; duplicates keep the widest reach (latest exp / issued_before)."""
        jti: dict[tuple[str, str], float] = {}
        digest: dict[bytes, float] = {}
        subject: dict[tuple[str, str], float] = {}
        intern = sys.intern
        for entry in entries:
            if isinstance(entry, JtiEntry):
                key = (intern(entry.iss), entry.jti)
                exp = _NEVER if entry.exp is None else entry.exp
                if exp > jti.get(key, -1.0):
                    jti[key] = exp
            elif isinstance(entry, DigestEntry):
                exp = _NEVER if entry.exp is None else entry.exp
                if exp > digest.get(entry.digest, -1.0):
                    digest[entry.digest] = exp
            else:
                skey = (intern(entry.iss), entry.sub)
                if entry.issued_before > subject.get(skey, -1.0):
                    subject[skey] = entry.issued_before
        return cls(jti, digest, subject)

    @classmethod
    def merge(cls, parts: Collection[Tables]) -> Tables:
        """The union of several objects' tables (one part is shared, not copied)."""
        if not parts:
            return cls()
        if len(parts) == 1:
            return next(iter(parts))
        return cls(
            _union([p.jti for p in parts]),
            _union([p.digest for p in parts]),
            _union([p.subject for p in parts]),
        )


def _union(maps: list[Mapping[_K, float]]) -> dict[_K, float]:
    # bulk updates run in C; only keys present in several objects are compared here
    out: dict[_K, float] = {}
    for source in maps:
        common = source.keys() & out.keys()  # a set the size of source, not of out
        keep = {key: out[key] for key in common if out[key] > source[key]}
        out.update(source)
        out.update(keep)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class RevocationList:
    """One immutable version of the whole revocation list."""

    tables: Tables = field(default_factory=Tables)
    generation: int = 0
    #: every source has loaded once (and every named object existed): Checks may pass
    ready: bool = False

    def match(
        self, digest: bytes, iss: str, jti: str, sub: str, iat: float | None, now: float,
        leeway: float,
    ) -> str:  # fmt: skip
        """Why the token is revoked (:data:`BY_JTI`, ...), or "" when it is not.

        ``digest`` is the SHA-256 of the token string; ``jti``/``sub`` are "" when the
        token has none. A ``jti`` or ``token_sha256`` entry is ignored from its
        ``exp`` + ``leeway`` on; an ``issued_before`` entry revokes the subject's
        tokens with an earlier ``iat``, and those with none.
        """
        tables = self.tables
        if jti:
            exp = tables.jti.get((iss, jti))
            if exp is not None and now < exp + leeway:
                return BY_JTI
            exp = tables.jti.get(("", jti))
            if exp is not None and now < exp + leeway:
                return BY_JTI
        exp = tables.digest.get(digest)
        if exp is not None and now < exp + leeway:
            return BY_DIGEST
        if sub:
            before = tables.subject.get((iss, sub))
            if before is not None and (iat is None or iat < before):
                return BY_SUBJECT
        return ""


class ListSink(Protocol):
    """What a revocation source talks to: the store, through the source's own slot."""

    def update(self, name: str, data: Mapping[str, bytes]) -> None:
        """A new version of list object ``name``: its data entries (file or key -> bytes)."""

    def invalid(self, name: str, error: str) -> None:
        """A new version of ``name`` could not even be read (``error`` says why); it is
        rejected as a bad list would be."""

    def delete(self, name: str) -> None:
        """Object ``name`` is gone; its last list stays in force."""

    def synced(self, missing: Collection[str] = ()) -> None:
        """The source has loaded everything once; ``missing`` names objects it was told
        to read that do not exist (the store is not ready while any is missing)."""

    def failed(self, error: BaseException) -> None:
        """Reading failed (I/O, API); every list stays as it is."""


class ListSource(Protocol):
    """A place revocation lists come from; runs its own background thread."""

    #: the source kind, a bounded metric label: ``directory`` or ``kubernetes``
    kind: str
    #: human description for logs
    description: str

    def start(self, sink: ListSink) -> None:
        """Begin loading in the background; must not block."""

    def stop(self) -> None:
        """Stop promptly."""

    def alive(self) -> bool:
        """False if the background work died unexpectedly (the app then exits)."""


@dataclass
class _Slot:
    kind: str
    description: str
    objects: dict[str, Tables] = field(default_factory=dict)
    synced: bool = False
    missing: frozenset[str] = frozenset()
    #: objects whose every version so far was rejected: nothing of theirs is in force
    unloaded: set[str] = field(default_factory=set)


class _SlotSink:
    """The :class:`ListSink` handed to one source."""

    def __init__(self, store: RevocationStore, slot: _Slot) -> None:
        self._store = store
        self._slot = slot

    def update(self, name: str, data: Mapping[str, bytes]) -> None:
        self._store._update(self._slot, name, data)

    def invalid(self, name: str, error: str) -> None:
        self._store._reject(self._slot, name, f"{name}: {error}")

    def delete(self, name: str) -> None:
        self._store._delete(self._slot, name)

    def synced(self, missing: Collection[str] = ()) -> None:
        self._store._synced(self._slot, frozenset(missing))

    def failed(self, error: BaseException) -> None:
        self._store._failed(self._slot, error)


class RevocationStore:
    """Every source's last good lists, and the merged :class:`RevocationList` in force."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._slots: list[_Slot] = []
        self._ready = False
        #: the snapshot in force; read it once per Check
        self.lists = RevocationList()

    def attach(self, source: ListSource) -> ListSink:
        """Register ``source`` and return the sink it must report to."""
        slot = _Slot(source.kind, source.description)
        with self._lock:
            self._slots.append(slot)
        return _SlotSink(self, slot)

    @property
    def ready(self) -> bool:
        """True once every source has loaded and every named object existed (latched)."""
        return self._ready

    def pending(self) -> list[str]:
        """What readiness waits for: sources not loaded yet, named objects missing."""
        with self._lock:
            out = [s.description for s in self._slots if not s.synced]
            out += [f"{s.description}: {n} missing" for s in self._slots for n in sorted(s.missing)]
            out += [
                f"{s.description}: {n} invalid" for s in self._slots for n in sorted(s.unloaded)
            ]
        return out

    def wait_ready(self, timeout: float) -> bool:
        """Block until :attr:`ready` or ``timeout`` seconds; returns :attr:`ready`."""
        with self._changed:
            return self._changed.wait_for(lambda: self._ready, timeout)

    def wait_generation(self, generation: int, timeout: float) -> bool:
        """Block until the snapshot's generation exceeds ``generation`` (tests, benches)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.lists.generation > generation, timeout)

    # -- sink calls ----------------------------------------------------------------------

    def _update(self, slot: _Slot, name: str, data: Mapping[str, bytes]) -> None:
        started = time.perf_counter()
        try:
            entries: list[Entry] = []
            for key in sorted(data):
                entries.extend(parse_document(data[key], f"{name}[{key}]"))
            tables = Tables.build(entries)
        except ListError as error:
            self._reject(slot, name, str(error))
            return
        except Exception:  # a parser bug on hostile input must not kill the source
            log.exception("revocation_list_unreadable", source=slot.description, object=name)
            self._reject(slot, name, f"{name}: unreadable list")
            return
        with self._lock:
            previous = slot.objects.get(name)
            slot.objects[name] = tables
            merged = self._merged()
            size = len(merged)
            too_many = size > self.max_entries
            if too_many:
                if previous is None:
                    del slot.objects[name]
                else:
                    slot.objects[name] = previous
            else:
                slot.unloaded.discard(name)
                self._publish(merged)
                self._check_ready()
        if too_many:
            self._reject(
                slot, name,
                f"{name}: the list would hold {size} entries, more than "
                f"revocation.max_entries ({self.max_entries})",
            )  # fmt: skip
            return
        metrics.revocation_reload(slot.kind, "success")
        log.info(
            "revocation_list_loaded", source=slot.description, object=name,
            entries=len(tables), total=size, generation=self.lists.generation,
            seconds=round(time.perf_counter() - started, 4),
        )  # fmt: skip

    def _delete(self, slot: _Slot, name: str) -> None:
        with self._lock:
            kept = slot.objects.get(name)
            slot.unloaded.discard(name)
            self._check_ready()
        if kept is None:
            return  # never loaded (or rejected from the start): nothing in force
        metrics.revocation_reload(slot.kind, "error")
        log.error(
            "revocation_list_deleted", source=slot.description, object=name,
            kept_entries=len(kept),
            hint="its last list stays in force; apply an empty list to clear it",
        )  # fmt: skip

    def _synced(self, slot: _Slot, missing: frozenset[str]) -> None:
        with self._lock:
            first = not slot.synced
            slot.synced = True
            slot.missing = missing
            self._check_ready()
        if missing:
            log.warning("revocation_list_missing", source=slot.description,
                        missing=sorted(missing), ready=self._ready)  # fmt: skip
        elif first:
            log.info("revocation_source_synced", source=slot.description)

    def _failed(self, slot: _Slot, error: BaseException) -> None:
        metrics.revocation_reload(slot.kind, "error")
        log.error("revocation_source_failed", source=slot.description, error=str(error),
                  kept_entries=sum(len(t) for t in slot.objects.values()))  # fmt: skip

    def _reject(self, slot: _Slot, name: str, error: str) -> None:
        metrics.revocation_reload(slot.kind, "error")
        with self._lock:
            kept = slot.objects.get(name)
            if kept is None:
                slot.unloaded.add(name)
        log.error("revocation_list_rejected", source=slot.description, object=name,
                  error=error, kept_entries=len(kept) if kept is not None else 0)  # fmt: skip

    # -- under the lock --------------------------------------------------------------------

    def _merged(self) -> Tables:
        return Tables.merge([t for s in self._slots for _, t in sorted(s.objects.items())])

    def _check_ready(self) -> None:
        if self._ready or not all(
            s.synced and not s.missing and not s.unloaded for s in self._slots
        ):
            return
        self._ready = True
        self._publish(self._merged())
        log.info("revocation_ready", entries=len(self.lists.tables))

    def _publish(self, tables: Tables) -> None:
        self.lists = RevocationList(tables, self.lists.generation + 1, self._ready)
        metrics.set_revocation_entries(len(tables))
        self._changed.notify_all()
