"""The pipeline, end to end: request -> token -> JWE -> JWS -> claims -> rule -> Decision.

:meth:`Evaluator.check` never raises: every outcome is a :class:`Decision`, and an
unexpected exception becomes a deny ``internal_error`` (logged with its traceback)
— fail closed.

The verified-token cache maps the SHA-256 of a token to what verification and
claims validation produced (claims, provider, precomputed claim headers). It is
bounded, an entry never outlives ``exp + leeway``, and every hit re-checks that
the keys the entry depended on are still in the current key ring with the same
identity (material, ``kid``, ``use``, ``alg``), so a removed or re-purposed key
stops working at once. Rules are evaluated on every request.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from extauthz import metrics
from extauthz.config import Config, ProviderConfig, TokenSourceConfig
from extauthz.errors import AuthError, PolicyError, Reason, TokenError
from extauthz.keys.keyset import KeyRing
from extauthz.pipeline import claims as claims_mod
from extauthz.pipeline import credentials, policy
from extauthz.pipeline.decision import (
    DENY_MEMO_MAX,
    ClaimHeaders,
    Decision,
    Denials,
    HeaderShape,
)
from extauthz.pipeline.memo import Memo
from extauthz.pipeline.request import CheckInput, path_readings
from extauthz.pipeline.tokens import TokenVerifier
from extauthz.revocation.store import REVOKED, RevocationList, RevocationStore

log = structlog.get_logger("extauthz.pipeline")


class Keys(Protocol):
    """What the pipeline needs from the key store."""

    ring: KeyRing

    @property
    def ready(self) -> bool: ...

    def refreshed(
        self, purpose: str, kid: str, generation: int, timeout: float = ...
    ) -> KeyRing | None: ...


#: cache entries holding a memoized decision at once: the most recently decided ones.
#: The others keep only what re-deciding needs (a few microseconds, and the edges
#: render the answer again), so the memory of a full cache does not grow with a
#: Decision per token.
MEMO_MAX = 4096
#: paths whose readings are memoized at once (the memo starts over when full), and the
#: longest path memoized
READINGS_MAX = 4096
READINGS_PATH_MAX = 256
#: a path not read yet (None is a reading: ambiguous); compared by identity
_UNREAD: tuple[str, ...] = ("<unread>",)


@dataclass(frozen=True, slots=True)
class Origin:
    """What a cached token has in common with many others, kept once for all of them:
    the provider and keys it was verified with, the claims rules read, the shape of
    its claim headers."""

    provider: ProviderConfig
    #: (purpose, key identity) of every key the token's verification depended on
    depends: tuple[tuple[str, str], ...]
    kid: str
    enc_kid: str
    #: the claims rules may read (scopes, require_claims roots): never mutated
    claims: Mapping[str, Any]
    #: claim headers set / removed / dropped
    shape: HeaderShape


@dataclass(slots=True)
class Entry:
    """A verified, validated token and the pieces of its allow response.

    Many of these live at once (``cache.max_entries``): an entry keeps only what a
    later Check reads, and what tokens have in common is one shared :class:`Origin`.
    """

    origin: Origin
    expires: float  # epoch seconds: exp + leeway, capped by the cache TTL
    #: the values of the claim headers ``origin.shape.names``
    values: tuple[str, ...]
    inner: str
    sub: str
    #: the last decision made for this token and its (rule, stripped headers) key: a
    #: client mostly repeats the same request; one slot, and only the most recently
    #: decided :data:`MEMO_MAX` entries hold one (see :meth:`Evaluator._remember`)
    memo: tuple[tuple[Any, ...], Decision] | None = field(default=None, compare=False)
    #: revocation: the token's ``jti`` ("" if none) and ``iat`` (kept only when a
    #: revocation list is configured), and the generation of the revocation list it
    #: was last found clean under (-1: never checked)
    jti: str = ""
    iat: float | None = None
    revocation: int = field(default=-1, compare=False)

    @property
    def provider(self) -> ProviderConfig:
        return self.origin.provider

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.origin.claims

    @property
    def depends(self) -> tuple[tuple[str, str], ...]:
        return self.origin.depends

    @property
    def shape(self) -> HeaderShape:
        return self.origin.shape

    @property
    def kid(self) -> str:
        return self.origin.kid

    @property
    def enc_kid(self) -> str:
        return self.origin.enc_kid


class TokenCache:
    """Bounded map of token digest -> :class:`Entry`, evicting the oldest first.

    Lookups are a single ``dict.get`` (atomic under the GIL); inserts and purges
    take a lock. FIFO rather than LRU: a hit costs no bookkeeping, and an entry
    lives at most ``max_ttl`` anyway. The insertion order is kept in a deque:
    evicting the oldest key of a dict (``next(iter(d))``) walks over the slots of
    earlier deletions and costs O(n) until the dict is resized.
    """

    def __init__(self, max_entries: int, max_ttl: float) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._data: dict[bytes, Entry] = {}
        self._order: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        #: the last ring seen and the key identities it publishes, per purpose
        self._identities: tuple[KeyRing, dict[str, frozenset[str]]] | None = None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, digest: object) -> bool:
        """Whether an entry (live or stale) is stored, without counting a lookup."""
        return digest in self._data

    def get(self, digest: bytes, ring: KeyRing, now: float) -> Entry | None:
        """The live entry for ``digest``, or None (miss / expired / key removed)."""
        if not self.max_entries:
            return None
        entry = self._data.get(digest)
        if entry is None:
            metrics.cache_lookup("miss")
            return None
        if now >= entry.expires or not self._holds(ring, entry.origin.depends):
            with self._lock:
                self._data.pop(digest, None)
            metrics.cache_lookup("stale")
            return None
        metrics.cache_lookup("hit")
        return entry

    def _holds(self, ring: KeyRing, depends: tuple[tuple[str, str], ...]) -> bool:
        """Whether every (purpose, key identity) is still published in ``ring``.

        The identity covers material, ``kid``, ``use`` and ``alg``: a key re-published
        under another ``kid`` or for another use stops the decisions made with it.
        The identities of one ring are collected once (a ring is immutable).
        """
        memo = self._identities
        if memo is None or memo[0] is not ring:
            live = {p: frozenset(k.identity for k in ring.get(p).keys) for p in ring.sets}
            memo = self._identities = (ring, live)
        live = memo[1]
        for purpose, identity in depends:  # noqa: SIM110 - a loop: no generator per hit
            if identity not in live.get(purpose, ()):
                return False
        return True

    def put(self, digest: bytes, entry: Entry) -> None:
        """Insert, evicting the oldest entries beyond ``max_entries``."""
        if not self.max_entries:
            return
        with self._lock:
            if digest not in self._data:
                self._order.append(digest)
            self._data[digest] = entry
            while len(self._data) > self.max_entries and self._order:
                self._data.pop(self._order.popleft(), None)
            if len(self._order) > 2 * self.max_entries:
                # keys dropped as stale or purged linger in the deque: compact it
                self._order = collections.deque(d for d in self._order if d in self._data)

    def purge(self, ring: KeyRing) -> int:
        """Drop entries whose keys left the ring (called on every key change)."""
        with self._lock:
            dead = [d for d, e in self._data.items() if not self._holds(ring, e.origin.depends)]
            for digest in dead:
                del self._data[digest]
        return len(dead)


def fingerprint(digest: bytes) -> str:
    """The token fingerprint for logs: first 12 hex digits of its SHA-256."""
    return digest.hex()[:12]


class Evaluator:
    """Decides Checks under one config, reading keys from a store."""

    def __init__(
        self, config: Config, keys: Keys, clock: Callable[[], float] = time.time,
        revocation: RevocationStore | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.keys = keys
        #: None when no revocation list is configured: a Check then pays nothing for it
        self.revocation = revocation
        self.clock = clock
        self.verifier = TokenVerifier(config, refresh=keys.refreshed)
        self.policy = policy.Policy(config.rules, config.path_matching.case)
        self.headers = ClaimHeaders(config)
        self.denials = Denials(config)
        self.cache = TokenCache(config.cache.max_entries, config.cache.max_ttl_seconds)
        self.upstream = config.upstream
        self.response_headers = config.response.headers
        self._strip = config.upstream.strip_header_prefixes
        #: top-level claims any rule may read: scopes, and the roots of require_claims
        roots = {name.split(".")[0] for r in config.rules for name, _ in r.require_claims}
        self._rule_claims = frozenset({"scope", "scp"} | roots)
        #: headers the allow path always sets or removes itself (a token's claim headers
        #: are among ``all_names``)
        self._managed = frozenset(self.headers.all_names) | {"authorization"}
        #: entries holding a memoized decision, oldest first (see :meth:`_remember`)
        self._memoized: collections.deque[Entry] = collections.deque()
        #: path -> its readings (:meth:`_route_paths`)
        self._readings: Memo[str, tuple[str, ...] | None] = Memo(READINGS_MAX)
        #: rule claims shared between cache entries, by their (name, text) pairs
        self._kept: Memo[tuple[tuple[str, str], ...], dict[str, Any]] = Memo(MEMO_MAX)
        #: anonymous allows by (rule, stripped headers) (:meth:`_anonymous`)
        self._anonymous_memo: Memo[tuple[str, tuple[str, ...]], Decision] = Memo(DENY_MEMO_MAX)
        #: origins shared between cache entries (:meth:`_shared_origin`)
        self._origins: Memo[tuple[Any, ...], Origin] = Memo(MEMO_MAX)

    def check(self, request: CheckInput) -> tuple[Decision, str]:
        """Decide ``request``. Returns the decision and the token fingerprint ("" if none)."""
        try:
            decided = self._check(request)
        except Exception:
            log.exception("check_failed", path=request.path_only, request_id=request.request_id)
            return self.denials.deny(Reason.INTERNAL_ERROR, policy.DEFAULT), ""
        if decided is None:  # only inline checks stop short; never here
            return self.denials.deny(Reason.INTERNAL_ERROR, policy.DEFAULT), ""
        return decided

    def check_cached(self, request: CheckInput) -> tuple[Decision, str] | None:
        """Like :meth:`check`, but None where a token would have to be verified.

        Verification may wait (a JWKS refetch for an unknown ``kid``): an edge that runs
        on an event loop answers what this returns at once and hands the rest, via
        :meth:`check`, to a thread.
        """
        try:
            return self._check(request, inline=True)
        except Exception:
            log.exception("check_failed", path=request.path_only, request_id=request.request_id)
            return self.denials.deny(Reason.INTERNAL_ERROR, policy.DEFAULT), ""

    def _check(self, request: CheckInput, *, inline: bool = False) -> tuple[Decision, str] | None:
        if not self.keys.ready:
            return self.denials.deny(Reason.NOT_READY, policy.DEFAULT), ""
        ring = self.keys.ring
        try:
            # bounds first: no rule (path_regex) ever runs on an unbounded request
            credentials.check_bounds(request, self.config.token)
        except TokenError as error:
            return self.denials.deny(error.reason, policy.DEFAULT, error.detail), ""
        paths = self._route_paths(request)
        if paths is None:
            return self.denials.deny(Reason.BAD_PATH, policy.DEFAULT, "ambiguous path"), ""
        try:
            rule = self.policy.select(request.method, paths, request.context)
        except PolicyError as error:
            log.error(  # noqa: TRY400 - a config mistake, no traceback to show
                "configuration_error", error="unknown rule in context_extensions",
                      rule=request.context.get("rule", ""))  # fmt: skip
            return self.denials.from_policy(error, request.context.get("rule", "")), ""
        try:
            found = credentials.locate(request, self.config.token)
        except TokenError as error:
            return self.denials.deny(error.reason, rule.name, error.detail), ""
        if found is None:
            if rule.anonymous:
                return self._anonymous(request, rule.name), ""
            return self.denials.deny(Reason.MISSING_TOKEN, rule.name), ""
        token, source = found

        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        fp = fingerprint(digest)
        if inline and digest not in self.cache:
            return None
        now = self.clock()
        entry = self.cache.get(digest, ring, now)
        if entry is None:
            if inline:
                return None
            try:
                entry = self._verify(token, ring, now)
            except AuthError as error:
                return self.denials.deny(error.reason, rule.name, error.detail), fp
            self.cache.put(digest, entry)
        if self.revocation is not None:
            lists = self.revocation.lists  # one snapshot for the whole check
            if entry.revocation != lists.generation:
                revoked = self._revoked(lists, rule, entry, digest, now)
                if revoked is not None:
                    return revoked, fp
        stripped = self._stripped(request) if self._strip else ()
        key = (rule, stripped, source)
        memo = entry.memo
        if memo is not None and memo[0] == key:
            return memo[1], fp
        decision = self._decide(rule, entry, stripped, source)
        self._remember(entry, key, decision)
        return decision, fp

    def _remember(self, entry: Entry, key: tuple[Any, ...], decision: Decision) -> None:
        """Memoize ``decision`` in ``entry``; past :data:`MEMO_MAX` entries holding one,
        the oldest memo is dropped (that token's next Check decides again: same
        Decision, a new object). Lock-free: a race can only drop a memo early."""
        entry.memo = (key, decision)
        held = self._memoized
        held.append(entry)
        if len(held) > MEMO_MAX:
            with contextlib.suppress(IndexError):  # another thread took the last one
                held.popleft().memo = None

    def _route_paths(self, request: CheckInput) -> tuple[str, ...] | None:
        """``request.route_paths``, memoized by path: clients repeat their paths, and
        reading one costs a pass over every character. Bounded in count and length."""
        path = request.path_only
        paths = self._readings.get(path, _UNREAD)
        if paths is _UNREAD:
            paths = path_readings(path)
            if len(path) <= READINGS_PATH_MAX:
                self._readings.keep(path, paths)
        return paths

    def _decide(
        self, rule: policy.Rule, entry: Entry, stripped: tuple[str, ...],
        source: TokenSourceConfig,
    ) -> Decision:  # fmt: skip
        who = {"sub": entry.sub, "iss": entry.provider.issuer, "kid": entry.kid,
               "enc_kid": entry.enc_kid, "jti": entry.jti}  # fmt: skip
        try:
            policy.authorize(rule, entry.provider.name, entry.claims)
        except PolicyError as error:
            return self.denials.from_policy(error, rule.name, **who)
        except TokenError as error:
            return self.denials.deny(
                error.reason, rule.name, error.detail, sub=entry.sub, iss=entry.provider.issuer,
                kid=entry.kid, enc_kid=entry.enc_kid, jti=entry.jti,
            )  # fmt: skip
        return self._allow(rule.name, entry, stripped, source)

    def _revoked(
        self, lists: RevocationList, rule: policy.Rule, entry: Entry, digest: bytes, now: float
    ) -> Decision | None:
        """A deny when the token is on the revocation list in force; else remember that
        it is clean under this list's generation (a cached token costs one comparison
        until the list changes). A revoked token's deny is memoized in the entry's slot
        for this generation: replaying it costs no more than a cached allow, and the
        edges serialize its answer once."""
        if not lists.ready:
            return self.denials.deny(Reason.NOT_READY, rule.name, "revocation lists not loaded")
        key = (REVOKED, lists.generation, rule)
        memo = entry.memo
        if memo is not None and memo[0] == key:
            return memo[1]
        provider = entry.provider
        why = lists.match(
            digest, provider.issuer, entry.jti, entry.sub, entry.iat, now, provider.leeway_seconds
        )
        if why:
            decision = self.denials.deny(
                Reason.REVOKED, rule.name, why, sub=entry.sub, iss=provider.issuer,
                kid=entry.kid, enc_kid=entry.enc_kid, jti=entry.jti,
            )  # fmt: skip
            self._remember(entry, key, decision)
            return decision
        entry.revocation = lists.generation
        return None

    def _verify(self, token: str, ring: KeyRing, now: float) -> Entry:
        verified = self.verifier.verify(token, ring)
        expires = claims_mod.validate(verified.claims, verified.provider, now)
        claims: Mapping[str, Any] = verified.claims
        # keep only what rules can read later (scopes and require_claims roots)
        fresh = {k: claims[k] for k in self._rule_claims if k in claims}
        kept, kept_key = self._shared(fresh)
        if kept is not fresh:
            # the header values of those claims: the shared strings, too
            claims = {**claims, **kept}
        shape, values = self.headers.render(verified.provider, claims)
        sub = claims.get("sub")
        jti = claims.get("jti")
        iat = claims.get("iat")  # validated: a number in range, or absent
        if self.revocation is None or isinstance(iat, bool) or not isinstance(iat, int | float):
            iat = None  # only a revocation list (issued_before) reads it
        inner = verified.inner if self.upstream.authorization == "inner" else ""
        origin = Origin(
            provider=verified.provider, depends=verified.depends, kid=verified.kid or "",
            enc_kid=verified.enc_kid or "", claims=kept, shape=shape,
        )  # fmt: skip
        if kept_key is not None:
            origin = self._shared_origin(origin, kept_key)
        return Entry(
            origin=origin, expires=min(expires, now + self.cache.max_ttl), values=values,
            inner=inner, sub=sub if isinstance(sub, str) else "",
            jti=jti if isinstance(jti, str) else "", iat=None if iat is None else float(iat),
        )  # fmt: skip

    def _shared(self, kept: dict[str, Any]) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
        """``kept``, or an equal dict already held by another entry (tokens mostly carry
        the same few scope strings), and its key; None when not shared: only all-text
        claims are (``1``, ``1.0`` and ``true`` compare equal but are different JSON
        values)."""
        if not all(type(v) is str for v in kept.values()):
            return kept, None
        key = tuple(kept.items())
        found = self._kept.get(key)
        if found is None:
            found = self._kept.keep(key, kept)
        return found, key

    def _shared_origin(self, origin: Origin, claims_key: tuple[Any, ...]) -> Origin:
        """``origin``, or an equal one already held by other entries."""
        key = (origin.provider.name, origin.depends, origin.kid, origin.enc_kid, claims_key,
               origin.shape)  # fmt: skip
        found = self._origins.get(key)
        if found is None:
            found = self._origins.keep(key, origin)
        return found

    def _stripped(self, request: CheckInput) -> tuple[str, ...]:
        """Client headers under ``strip_header_prefixes`` that we neither set nor remove."""
        names = {k for k, _ in request.raw_headers} if request.raw_headers else request.headers
        managed = self._managed  # a token's claim headers are among them
        return tuple(sorted(
            n for n in names if n.startswith(self._strip) and n not in managed
        ))  # fmt: skip

    def _allow(
        self, rule: str, entry: Entry, stripped: tuple[str, ...], source: TokenSourceConfig
    ) -> Decision:
        shape = entry.shape
        headers = shape.pairs(entry.values)
        remove = shape.remove
        mode = self.upstream.authorization
        if mode != "keep":
            # the token leaves the request where it came from. A cookie takes the whole
            # cookie header with it: rewriting the header minus one cookie would rely on
            # the upstream splitting cookies exactly as we do (``,`` vs ``;``, quotes)
            taken = source.header or "cookie"
            if mode == "inner" and entry.inner:
                headers = (*headers, ("authorization", f"Bearer {entry.inner}"))
                if taken != "authorization":
                    remove = (*remove, taken)
            else:
                remove = (*remove, taken)
        if stripped:
            remove = (*remove, *(h for h in stripped if h not in remove))
        return Decision(
            allowed=True, status=200, reason=Reason.OK, rule=rule,
            upstream_headers=headers, remove_headers=remove,
            response_headers=self.response_headers, sub=entry.sub,
            iss=entry.provider.issuer, kid=entry.kid, enc_kid=entry.enc_kid, jti=entry.jti,
            dropped=shape.dropped,
        )  # fmt: skip

    def _anonymous(self, request: CheckInput, rule: str) -> Decision:
        """The allow of a request without a token on an anonymous route: one Decision
        object per (rule, stripped headers), so the edges render its answer once."""
        stripped = self._stripped(request) if self._strip else ()
        key = (rule, stripped)
        decision = self._anonymous_memo.get(key)
        if decision is None:
            decision = Decision(
                allowed=True, status=200, reason=Reason.ANONYMOUS, rule=rule,
                remove_headers=(*self.headers.all_names, *stripped),
                response_headers=self.response_headers,
            )  # fmt: skip
            self._anonymous_memo.keep(key, decision)  # stripped names are the client's
        return decision
