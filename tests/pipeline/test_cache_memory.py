"""What a cached token keeps, and the bounds on what it shares: only the most recently
decided entries hold a memoized Decision; an entry whose memo was dropped decides again
— the same Decision, after the same expiry, key and revocation checks as any hit —
without verifying again; equal rule claims and header shapes are shared, never mixed
up between tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from extauthz.errors import Reason
from extauthz.keys.keyset import DECRYPTION
from extauthz.pipeline import evaluate
from extauthz.pipeline.evaluate import Entry, Evaluator
from extauthz.revocation.store import ListSink
from tests.revocation.lists import list_store, revoke

from .support import ISSUER, Env, Kit, assert_allow_invariants, claims, nested, sign
from .test_cache import Counter

NewEnv = Callable[..., Env]
BOUND = 4


@pytest.fixture
def small_memo(monkeypatch: pytest.MonkeyPatch) -> int:
    """At most ``BOUND`` memoized decisions at once."""
    monkeypatch.setattr(evaluate, "MEMO_MAX", BOUND)
    return BOUND


def entry_of(env: Env, token: str) -> Entry:
    """The cache entry of ``token``."""
    return env.evaluator.cache._data[hashlib.sha256(token.encode()).digest()]


def memoized(env: Env) -> int:
    """Cache entries holding a memoized decision."""
    return sum(entry.memo is not None for entry in env.evaluator.cache._data.values())


def tokens(kit: Kit, count: int, **extra: Any) -> list[str]:
    return [sign(claims(f"user-{i}", **extra), kit.sig_rsa) for i in range(count)]


def test_only_the_most_recent_decisions_stay_memoized(env: Env, kit: Kit, small_memo: int) -> None:
    """The bound holds however many tokens are cached, and the newest keep their memo."""
    many = tokens(kit, 12)
    for token in many:
        assert env.check(token).allowed
    assert len(env.evaluator.cache) == 12
    assert memoized(env) <= small_memo
    assert len(env.evaluator._memoized) <= small_memo
    assert entry_of(env, many[-1]).memo is not None
    assert entry_of(env, many[0]).memo is None


def test_a_hit_after_its_memo_was_dropped_decides_the_same(
    env: Env, kit: Kit, small_memo: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An equal Decision (every field) from the cached entry, with no new verification;
    then memoized again."""
    counter = Counter(env, monkeypatch)
    first_token = nested(kit, claims(email="a@example.test", scope="read write"))
    first = env.check(first_token)
    assert env.check(first_token) is first  # memoized
    for token in tokens(kit, small_memo + 2):
        assert env.check(token).allowed
    assert entry_of(env, first_token).memo is None
    again = env.check(first_token)
    assert again is not first
    assert again == first
    assert_allow_invariants(again)
    assert dict(again.upstream_headers)["x-auth-scope"] == "read write"
    assert env.check(first_token) is again
    assert counter.calls == 1 + small_memo + 2


def test_a_hit_after_its_memo_was_dropped_still_expires(
    new_env: NewEnv, kit: Kit, small_memo: int
) -> None:
    env = new_env(idp={"leeway_seconds": 0})
    token = sign(claims(ttl=60), kit.sig_rsa)
    assert env.check(token).allowed
    for other in tokens(kit, small_memo + 1, ttl=600):
        assert env.check(other).allowed
    assert entry_of(env, token).memo is None
    env.clock.advance(61)
    assert env.check(token).reason is Reason.EXPIRED


def test_a_hit_after_its_memo_was_dropped_still_needs_its_keys(
    new_env: NewEnv, kit: Kit, small_memo: int
) -> None:
    env = new_env(purge=False)  # only the hit's own key check can catch it
    token = nested(kit)
    assert env.check(token).allowed
    for other in tokens(kit, small_memo + 1):
        assert env.check(other).allowed
    assert entry_of(env, token).memo is None
    env.publish(DECRYPTION, [kit.enc_ec])
    assert not env.check(token).allowed


def with_revocation(env: Env) -> tuple[Env, ListSink]:
    """``env`` with a revocation list (empty, loaded)."""
    store, sink = list_store()
    env.evaluator = Evaluator(env.config, env.store, clock=env.clock, revocation=store)
    return env, sink


def test_a_hit_after_its_memo_was_dropped_is_still_revoked(
    env: Env, kit: Kit, small_memo: int
) -> None:
    """By jti, and by subject issued before (``iat`` is kept when a list is configured);
    revoked denies are memoized under the same bound."""
    env, sink = with_revocation(env)
    leaked = sign(claims("victim", jti="leaked-1"), kit.sig_rsa)
    others = tokens(kit, small_memo + 1)
    assert env.check(leaked).allowed
    for other in others:
        assert env.check(other).allowed
    assert entry_of(env, leaked).memo is None
    assert entry_of(env, leaked).iat is not None
    revoke(sink, {"jti": "leaked-1", "iss": ISSUER})
    denied = env.check(leaked)
    assert (denied.allowed, denied.reason) == (False, Reason.REVOKED)
    assert env.check(leaked) is denied  # memoized for this list generation
    revoke(sink, {"sub": "user-0", "iss": ISSUER, "issued_before": env.clock() + 1})
    assert env.check(leaked).allowed  # its jti is no longer listed
    for other in others[1:]:
        assert env.check(other).allowed
    assert memoized(env) <= small_memo
    assert entry_of(env, others[0]).memo is None
    assert env.check(others[0]).reason is Reason.REVOKED
    assert memoized(env) <= small_memo


def test_iat_is_kept_only_for_a_revocation_list(env: Env, kit: Kit) -> None:
    token = sign(claims(), kit.sig_rsa)
    assert env.check(token).allowed
    assert entry_of(env, token).iat is None


def test_equal_rule_claims_and_header_shapes_are_shared(env: Env, kit: Kit) -> None:
    """Tokens with the same scope and keys share one origin (claims dict, header shape,
    keys); each keeps its own header values."""
    a, b = (sign(claims(user, scope="read write", email=f"{user}@x.test"), kit.sig_rsa)
            for user in ("alice", "bob"))  # fmt: skip
    da, db = env.check(a), env.check(b)
    ea, eb = entry_of(env, a), entry_of(env, b)
    assert ea.origin is eb.origin
    assert ea.claims is eb.claims
    assert ea.claims == {"scope": "read write"}
    assert ea.shape is eb.shape
    assert dict(da.upstream_headers) == {"x-auth-subject": "alice", "x-auth-scope": "read write",
                                         "x-auth-email": "alice@x.test"}  # fmt: skip
    assert dict(db.upstream_headers)["x-auth-email"] == "bob@x.test"
    assert da.remove_headers == db.remove_headers


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_shared_rule_claims_keep_their_json_types(
    new_env: NewEnv, kit: Kit, order: tuple[int, ...]
) -> None:
    """``1``, ``1.0``, ``true`` and ``"1"`` are different claims to ``require_claims``
    whatever token came first."""
    env = new_env(
        {"rules": [{"name": "one", "path_prefix": "/", "require_claims": {"level": [1]}}]}
    )
    values: list[Any] = [1, True, "1", 1.0]
    expected = {0: True, 1: False, 2: False, 3: True}  # JSON numbers 1 and 1.0 are equal
    signed = [sign(claims(f"user-{i}", level=values[i]), kit.sig_rsa) for i in range(4)]
    for i in order:
        assert env.check(signed[i], path="/x").allowed is expected[i], values[i]
    for i in order:  # cached now
        assert env.check(signed[i], path="/x").allowed is expected[i], values[i]


def test_shared_scopes_decide_per_token(new_env: NewEnv, kit: Kit) -> None:
    env = new_env({"rules": [{"name": "admin", "path_prefix": "/", "require_scopes": ["admin"]}]})
    admin = [sign(claims(f"a{i}", scope="read admin"), kit.sig_rsa) for i in range(3)]
    reader = [sign(claims(f"r{i}", scope="read"), kit.sig_rsa) for i in range(3)]
    for _ in range(2):
        for a, r in zip(admin, reader, strict=True):
            assert env.check(a, path="/x").allowed
            assert env.check(r, path="/x").reason is Reason.INSUFFICIENT_SCOPE


def test_shared_tables_are_bounded(
    env: Env, kit: Kit, small_memo: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct scope strings and header shapes: the sharing memos start over when full,
    and every token still gets its own headers."""
    monkeypatch.setattr(env.evaluator.headers._shapes, "limit", 2)
    monkeypatch.setattr(env.evaluator._kept, "limit", small_memo)
    monkeypatch.setattr(env.evaluator._origins, "limit", small_memo)
    for i in range(3 * small_memo):
        extra: dict[str, Any] = {"scope": f"s{i}"}
        if i % 2:
            extra["email"] = f"u{i}@x.test"
        if i % 3:
            extra["roles"] = ["a", "b"]
        decision = env.check(sign(claims(f"u{i}", **extra), kit.sig_rsa))
        headers = dict(decision.upstream_headers)
        assert headers["x-auth-scope"] == f"s{i}"
        assert headers.get("x-auth-email") == extra.get("email")
        assert headers.get("x-auth-roles") == ("a,b" if i % 3 else None)
        assert_allow_invariants(decision)
    assert len(env.evaluator._kept) <= small_memo
    assert len(env.evaluator._origins) <= small_memo
    assert len(env.evaluator.headers._shapes) <= 2


PATHS = [
    "/orders/42", "/orders/42?x=1", "/a/../admin/x", "//admin", "/%61dmin", "/x;y", "/a%2Fb",
    "/a\\b", "/%252e", "/ok#frag", "relative", "/" + "a" * 300, "/" + "b" * 300 + "/../c",
]  # fmt: skip


def test_path_readings_are_memoized_bounded_and_unchanged(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo gives what the request computes (ambiguous: None), for the first and
    the repeated request; long paths are not kept; the bound holds."""
    monkeypatch.setattr(env.evaluator._readings, "limit", 4)
    evaluator = env.evaluator
    for _ in range(2):
        for path in PATHS:
            request = env.request(path=path)
            assert evaluator._route_paths(request) == request.route_paths, path
            assert len(evaluator._readings) <= 4
            assert all(len(p) <= evaluate.READINGS_PATH_MAX for p in evaluator._readings)
    token = sign(claims(), kit.sig_rsa)
    for _ in range(2):
        assert env.check(token, path="/x;y").reason is Reason.BAD_PATH
        assert env.check(token, path="/a/../b").allowed


def test_tokens_of_other_keys_or_typed_claims_get_their_own_origin(
    new_env: NewEnv, kit: Kit
) -> None:
    """An origin is shared only by tokens verified with the same keys and holding the
    same all-text rule claims."""
    env = new_env()
    plain = sign(claims("a", scope="read"), kit.sig_rsa)
    wrapped = nested(kit, claims("b", scope="read"))
    typed = [sign(claims(f"t{i}", scp=["read"]), kit.sig_rsa) for i in range(2)]
    for token in (plain, wrapped, *typed):
        assert env.check(token).allowed
    assert entry_of(env, plain).origin is not entry_of(env, wrapped).origin
    assert entry_of(env, wrapped).enc_kid == kit.enc_rsa.kid
    assert entry_of(env, plain).enc_kid == ""
    first, second = (entry_of(env, t) for t in typed)
    assert first.origin is not second.origin
    assert first.claims == second.claims == {"scp": ["read"]}


def test_anonymous_allows_are_one_decision_per_rule_and_stripped_headers(
    new_env: NewEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same request gets the same Decision object (the edges render it once); other
    stripped headers get their own, equal to what a fresh evaluation gives; bounded."""
    monkeypatch.setattr(evaluate, "DENY_MEMO_MAX", 4)
    overrides = {
        "upstream": {"strip_header_prefixes": ["x-auth-"]},
        "rules": [{"name": "pub", "path_prefix": "/", "anonymous": True}],
    }
    env = new_env(overrides)
    first = env.check(headers={"x-auth-admin": "true"})
    assert env.check(headers={"x-auth-admin": "other value"}) is first
    assert first.reason is Reason.ANONYMOUS
    for i in range(10):
        decision = env.check(headers={f"x-auth-n{i}": "1", "x-auth-admin": "1"})
        assert_allow_invariants(decision)
        assert decision == new_env(overrides).check(
            headers={f"x-auth-n{i}": "1", "x-auth-admin": "1"}
        )
        assert {f"x-auth-n{i}", "x-auth-admin"} <= set(decision.remove_headers)
        assert f"x-auth-n{i - 1}" not in decision.remove_headers
        assert len(env.evaluator._anonymous_memo) <= 4
    assert env.check(headers={"x-auth-admin": "true"}) == first
