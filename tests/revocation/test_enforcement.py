"""Enforcement in the pipeline, with real keys and real tokens and no server: a revoked
token is denied 401 ``invalid_token`` reason ``revoked``, cached allows included; later
tokens of the subject pass; until the lists have loaded, Checks are not ready; a cached
token is looked up once per list generation, not once per Check."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from extauthz.client import build_request
from extauthz.pipeline.decision import Decision
from extauthz.pipeline.evaluate import Evaluator
from extauthz.revocation.store import ListSink, RevocationList
from extauthz.server.authz import to_input
from tests.conftest import LoadReady
from tests.revocation.lists import list_store, revoke

ISSUER = "https://idp.example.test"


def build(load_ready: LoadReady, ready: bool = True) -> tuple[Evaluator, ListSink]:
    config, keys = load_ready()
    store, sink = list_store(ready)
    return Evaluator(config, keys, revocation=store), sink


def check(evaluator: Evaluator, token: str) -> Decision:
    decision, _ = evaluator.check(
        to_input(build_request({"authorization": f"Bearer {token}"}, "/orders"))
    )
    return decision


def assert_revoked(decision: Decision) -> None:
    assert not decision.allowed
    assert decision.status == 401
    assert decision.reason.value == "revoked"
    headers = dict(decision.response_headers)
    assert headers["www-authenticate"] == (
        'Bearer realm="extauthz", error="invalid_token", error_description="revoked"'
    )
    body = json.loads(decision.body)
    assert body["error"] == "invalid_token"
    assert body["reason"] == "revoked"


def test_a_cached_token_revoked_by_jti_is_denied_at_once(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    leaked = mint_token(sub="alice", jti="leaked-1")
    other = mint_token(sub="alice", jti="fresh-2")
    assert check(evaluator, leaked).allowed
    assert check(evaluator, other).allowed
    assert len(evaluator.cache) == 2
    revoke(sink, {"jti": "leaked-1", "iss": ISSUER, "exp": time.time() + 300})
    decision = check(evaluator, leaked)
    assert_revoked(decision)
    assert decision.sub == "alice"
    assert decision.detail == "revoked by jti"
    assert check(evaluator, other).allowed  # the same subject's other token
    revoke(sink)  # an empty list lifts it
    assert check(evaluator, leaked).allowed


def test_a_jti_revoked_under_another_issuer_passes(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    token = mint_token(jti="t-1")
    revoke(sink, {"jti": "t-1", "iss": "https://other.example.test"})
    assert check(evaluator, token).allowed
    revoke(sink, {"jti": "t-1"})  # no iss: every issuer
    assert_revoked(check(evaluator, token))


def test_an_expired_jti_entry_no_longer_applies(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    token = mint_token(jti="t-1")
    revoke(sink, {"jti": "t-1", "exp": time.time() - 31})  # past exp + 30 s leeway
    assert check(evaluator, token).allowed
    revoke(sink, {"jti": "t-1", "exp": time.time() - 20})  # within the leeway
    assert_revoked(check(evaluator, token))


def test_a_token_without_jti_is_revoked_by_its_hash(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    token = mint_token()  # a nested JWE: its jti is unreadable without our keys
    twin = mint_token()
    assert check(evaluator, token).allowed
    digest = hashlib.sha256(token.encode()).hexdigest()
    revoke(sink, {"token_sha256": digest, "exp": time.time() + 300})
    decision = check(evaluator, token)
    assert_revoked(decision)
    assert decision.detail == "revoked by token_sha256"
    assert check(evaluator, twin).allowed


def test_issued_before_revokes_older_tokens_and_those_without_iat(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    cut = int(time.time()) - 10
    older = mint_token(sub="alice", iat=cut - 1)
    at_cut = mint_token(sub="alice", iat=cut)
    later = mint_token(sub="alice", iat=cut + 5)
    no_iat = mint_token(sub="alice", iat=None)
    bob = mint_token(sub="bob", iat=cut - 1)
    for token in (older, at_cut, later, no_iat, bob):
        assert check(evaluator, token).allowed
    revoke(sink, {"iss": ISSUER, "sub": "alice", "issued_before": cut})
    assert_revoked(check(evaluator, older))
    assert check(evaluator, older).detail == "revoked by sub issued_before"
    assert_revoked(check(evaluator, no_iat))
    assert check(evaluator, at_cut).allowed
    assert check(evaluator, later).allowed
    assert check(evaluator, bob).allowed


def test_not_ready_until_the_lists_have_loaded(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready, ready=False)
    token = mint_token()
    decision = check(evaluator, token)
    assert decision.reason.value == "not_ready"
    assert decision.status == 503
    sink.synced()
    assert check(evaluator, token).allowed


class CountingList:
    """Wraps a snapshot and counts lookups."""

    def __init__(self, inner: RevocationList) -> None:
        self.inner = inner
        self.generation = inner.generation
        self.ready = inner.ready
        self.lookups = 0

    def match(self, *args: Any) -> str:
        self.lookups += 1
        return self.inner.match(*args)


def test_a_cached_token_is_looked_up_once_per_generation(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    store = evaluator.revocation
    assert store is not None
    token = mint_token(jti="t-1")
    counting = CountingList(store.lists)
    store.lists = counting  # type: ignore[assignment]
    for _ in range(50):
        assert check(evaluator, token).allowed
    assert counting.lookups == 1
    revoke(sink, {"jti": "other"})  # a new generation: one more lookup, then none
    counting = CountingList(store.lists)
    store.lists = counting  # type: ignore[assignment]
    for _ in range(50):
        assert check(evaluator, token).allowed
    assert counting.lookups == 1


def test_no_list_configured_leaves_checks_untouched(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    config, keys = load_ready()
    evaluator = Evaluator(config, keys)
    assert evaluator.revocation is None
    assert check(evaluator, mint_token(jti="t-1")).allowed


def test_a_replayed_revoked_token_reuses_one_deny(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    evaluator, sink = build(load_ready)
    store = evaluator.revocation
    assert store is not None
    token = mint_token(jti="t-1")
    assert check(evaluator, token).allowed
    revoke(sink, {"jti": "t-1"})
    counting = CountingList(store.lists)
    store.lists = counting  # type: ignore[assignment]
    first = check(evaluator, token)
    assert_revoked(first)
    for _ in range(20):
        assert check(evaluator, token) is first  # the edges serialize it once
    assert counting.lookups == 1
    revoke(sink)  # lifted: the memoized deny is not used under the new generation
    assert check(evaluator, token).allowed
