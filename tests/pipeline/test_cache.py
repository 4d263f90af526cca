"""The verified-token cache: hits skip crypto, never outlive exp or a key, stay bounded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from extauthz.errors import Reason
from extauthz.keys.keyset import DECRYPTION

from .support import IDP, Env, Kit, claims, generated, jwk_dict, key, nested, sign

NewEnv = Callable[..., Env]


class Counter:
    """Wraps ``TokenVerifier.verify`` and counts the real verifications."""

    def __init__(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = env.evaluator.verifier.verify

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(env.evaluator.verifier, "verify", counted)


def test_a_hit_does_not_verify_again(env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second and later checks of the same token reuse the first verification."""
    counter = Counter(env, monkeypatch)
    token = nested(kit)
    first = env.check(token)
    assert first.allowed
    for _ in range(3):
        again = env.check(token)
        assert again.allowed
        assert again.upstream_headers == first.upstream_headers
        assert again.metadata == first.metadata
    assert counter.calls == 1


def test_denied_tokens_are_not_cached(env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only successes are cached: an invalid token is re-examined every time."""
    counter = Counter(env, monkeypatch)
    bad = sign(claims(), kit.attacker, header={"kid": "sig-rsa"})
    for _ in range(3):
        assert env.check(bad).reason is Reason.BAD_SIGNATURE
    assert counter.calls == 3
    assert len(env.evaluator.cache) == 0


def test_a_cached_token_is_never_served_past_exp(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the injected clock past ``exp + leeway`` the cached token is expired."""
    env = new_env(idp={"leeway_seconds": 0})
    counter = Counter(env, monkeypatch)
    token = nested(kit, claims(ttl=60))
    assert env.check(token).allowed
    env.clock.advance(59)
    assert env.check(token).allowed
    assert counter.calls == 1
    env.clock.advance(2)
    decision = env.check(token)
    assert (decision.allowed, decision.reason) == (False, Reason.EXPIRED)
    assert counter.calls == 2


def test_a_cached_token_within_leeway_stays_until_exp_plus_leeway(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache bound is ``exp + leeway``: the same instant the validator uses."""
    counter = Counter(env, monkeypatch)
    token = sign(claims(ttl=60), kit.sig_rsa)
    assert env.check(token).allowed
    env.clock.advance(60 + 29)
    assert env.check(token).allowed
    env.clock.advance(2)
    assert env.check(token).reason is Reason.EXPIRED
    assert counter.calls == 2


def test_cache_ttl_caps_long_lived_tokens(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cache.max_ttl_seconds`` bounds an entry even when ``exp`` is far away."""
    env = new_env({"cache": {"max_ttl_seconds": 10}})
    counter = Counter(env, monkeypatch)
    token = sign(claims(ttl=3600), kit.sig_rsa)
    assert env.check(token).allowed
    env.clock.advance(9)
    assert env.check(token).allowed
    assert counter.calls == 1
    env.clock.advance(2)
    assert env.check(token).allowed
    assert counter.calls == 2


def test_removing_the_decryption_key_denies_the_cached_token_at_once(env: Env, kit: Kit) -> None:
    """A new key list without the JWE key: the cached decision is dropped immediately."""
    token = nested(kit)
    assert env.check(token).allowed
    env.publish(DECRYPTION, [k for k in kit.decryption_keys if k.kid != "enc-rsa"])
    decision = env.check(token)
    assert (decision.allowed, decision.reason) == (False, Reason.UNKNOWN_KID)


def test_removing_the_signing_key_denies_the_cached_token_at_once(env: Env, kit: Kit) -> None:
    """The same for the provider key that verified the inner JWS."""
    token = nested(kit)
    assert env.check(token).allowed
    env.publish(IDP, [k for k in kit.idp_keys if k.kid != "sig-rsa"])
    assert env.check(token).reason is Reason.UNKNOWN_KID


def test_a_key_replaced_under_the_same_kid_denies_the_cached_token(env: Env, kit: Kit) -> None:
    """Identity is the key's thumbprint, not its kid: a swapped key invalidates the entry."""
    token = sign(claims(), kit.sig_rsa)
    assert env.check(token).allowed
    impostor = key({**jwk_dict(generated("sig", "RS256", "tmp")), "kid": "sig-rsa"})
    env.publish(IDP, [impostor])
    assert env.check(token).reason is Reason.BAD_SIGNATURE


def test_removed_key_is_caught_even_without_the_purge_listener(new_env: NewEnv, kit: Kit) -> None:
    """Each hit re-checks its keys against the current ring (not only the purge hook)."""
    env = new_env(purge=False)  # as if the app had not wired cache.purge to the store
    token = nested(kit)
    assert env.check(token).allowed
    env.publish(DECRYPTION, [kit.enc_ec])
    assert not env.check(token).allowed


def test_adding_keys_keeps_cached_tokens(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation overlap: publishing a larger key list does not cost a re-verification."""
    counter = Counter(env, monkeypatch)
    token = nested(kit)
    assert env.check(token).allowed
    env.publish(IDP, [*kit.idp_keys, kit.extra_rsa[0]])
    assert env.check(token).allowed
    assert counter.calls == 1


def test_the_cache_is_bounded(new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most ``cache.max_entries`` tokens are kept; the oldest goes first."""
    env = new_env({"cache": {"max_entries": 3}})
    counter = Counter(env, monkeypatch)
    tokens = [sign(claims(f"user-{i}"), kit.sig_rsa) for i in range(5)]
    for token in tokens:
        assert env.check(token).allowed
    assert len(env.evaluator.cache) == 3
    assert counter.calls == 5
    assert env.check(tokens[-1]).allowed
    assert counter.calls == 5
    assert env.check(tokens[0]).allowed
    assert counter.calls == 6
    assert len(env.evaluator.cache) == 3


def test_max_entries_zero_disables_the_cache(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cache.max_entries: 0``: every check verifies."""
    env = new_env({"cache": {"max_entries": 0}})
    counter = Counter(env, monkeypatch)
    token = sign(claims(), kit.sig_rsa)
    for _ in range(3):
        assert env.check(token).allowed
    assert counter.calls == 3
    assert len(env.evaluator.cache) == 0


def test_rules_are_evaluated_on_every_request_for_a_cached_token(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached token still meets each request's rule, path and context afresh."""
    env = new_env(
        {"rules": [{"name": "admin", "path_prefix": "/admin/", "require_scopes": ["admin"]}]}
    )
    counter = Counter(env, monkeypatch)
    token = nested(kit, claims(scope="read"))
    assert env.check(token, path="/").allowed
    assert env.check(token, path="/admin/x").status == 403
    assert env.check(token, path="/").allowed
    assert env.check(token, path="/", context={"scopes": "write"}).status == 403
    assert env.check(token, path="/", context={"rule": "nope"}).reason is Reason.UNKNOWN_RULE
    assert env.check(token, path="/admin/y").reason is Reason.INSUFFICIENT_SCOPE
    assert counter.calls == 1


def test_upstream_options_apply_to_cached_tokens(new_env: NewEnv, kit: Kit) -> None:
    """Per-request pieces (stripped client headers) are computed for each hit."""
    env = new_env({"upstream": {"strip_header_prefixes": ["x-auth-"]}})
    token = sign(claims(), kit.sig_rsa)
    assert "x-auth-evil" not in env.check(token).remove_headers
    assert "x-auth-evil" in env.check(token, headers={"x-auth-evil": "1"}).remove_headers


def test_cache_key_is_the_exact_token(env: Env, kit: Kit) -> None:
    """A different token string is a different entry, even with the same claims."""
    data = claims()
    assert env.check(sign(data, kit.sig_rsa)).allowed
    assert env.check(sign(data, kit.sig_ec["P-256"])).allowed  # ECDSA: a new signature
    assert len(env.evaluator.cache) == 2


def test_the_fingerprint_is_the_first_12_hex_of_sha256(env: Env, kit: Kit) -> None:
    """Logs identify a token by a short SHA-256 prefix, never the token."""
    import hashlib

    token = sign(claims(), kit.sig_rsa)
    _, fingerprint = env.evaluator.check(env.request(token))
    assert fingerprint == hashlib.sha256(token.encode()).hexdigest()[:12]
    _, none = env.evaluator.check(env.request())
    assert none == ""
