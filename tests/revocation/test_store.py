"""Matching and the store's failure semantics, with no server.

Matching: a jti with and without iss, token_sha256, sub + issued_before at its
boundaries, tokens without jti / iat, entries ignored after exp + leeway. The store:
a bad update keeps the last good list, a deleted object keeps its list, the size bound
makes an update fail, readiness waits for every source and every named object, and each
change is a new generation."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from extauthz import metrics
from extauthz.revocation.entries import parse_document
from extauthz.revocation.store import (
    BY_DIGEST,
    BY_JTI,
    BY_SUBJECT,
    RevocationList,
    RevocationStore,
    Tables,
)

ISS = "https://idp.example.test"
OTHER = "https://other.example.test"
NOW = 1_800_000_000.0
TOKEN = "eyJhbGciOi.the.token"
DIGEST = hashlib.sha256(TOKEN.encode()).digest()


def lists(*entries: dict[str, Any]) -> RevocationList:
    data = json.dumps({"revoked": list(entries)}).encode()
    return RevocationList(Tables.build(parse_document(data, "test")), 1, True)


def match(
    rl: RevocationList, *, jti: str = "", sub: str = "", iat: float | None = None,
    iss: str = ISS, now: float = NOW, leeway: float = 30, digest: bytes = b"\0" * 32,
) -> str:  # fmt: skip
    return rl.match(digest, iss, jti, sub, iat, now, leeway)


def test_an_empty_list_revokes_nothing() -> None:
    rl = RevocationList()
    assert match(rl, jti="a", sub="alice", digest=DIGEST) == ""


def test_jti_with_iss_revokes_only_under_that_issuer() -> None:
    rl = lists({"jti": "t-1", "iss": ISS})
    assert match(rl, jti="t-1") == BY_JTI
    assert match(rl, jti="t-1", iss=OTHER) == ""
    assert match(rl, jti="t-2") == ""
    assert match(rl, jti="T-1") == ""  # jti is case-sensitive


def test_jti_without_iss_revokes_under_every_issuer() -> None:
    rl = lists({"jti": "t-1"})
    assert match(rl, jti="t-1") == BY_JTI
    assert match(rl, jti="t-1", iss=OTHER) == BY_JTI


def test_a_token_without_jti_never_matches_a_jti_entry() -> None:
    rl = lists({"jti": "t-1"})
    assert match(rl, jti="") == ""


def test_jti_entries_are_ignored_from_exp_plus_leeway_on() -> None:
    rl = lists({"jti": "t-1", "exp": NOW})
    assert match(rl, jti="t-1", now=NOW + 29.9) == BY_JTI
    assert match(rl, jti="t-1", now=NOW + 30) == ""
    assert match(rl, jti="t-1", now=NOW + 30, leeway=0) == ""
    assert match(rl, jti="t-1", now=NOW - 0.1, leeway=0) == BY_JTI


def test_token_sha256_revokes_that_exact_token() -> None:
    rl = lists({"token_sha256": DIGEST.hex(), "exp": NOW})
    assert match(rl, digest=DIGEST) == BY_DIGEST
    assert match(rl, digest=hashlib.sha256(TOKEN.encode() + b"x").digest()) == ""
    assert match(rl, digest=DIGEST, now=NOW + 30) == ""


@pytest.mark.parametrize(
    ("iat", "revoked"),
    [(NOW - 1, True), (NOW - 0.001, True), (NOW, False), (NOW + 1, False), (None, True)],
)
def test_issued_before_boundary_and_tokens_without_iat(iat: float | None, revoked: bool) -> None:
    rl = lists({"iss": ISS, "sub": "alice", "issued_before": NOW})
    assert (match(rl, sub="alice", iat=iat) == BY_SUBJECT) is revoked
    # never another subject, never the same subject of another issuer
    assert match(rl, sub="bob", iat=iat) == ""
    assert match(rl, sub="alice", iat=iat, iss=OTHER) == ""
    assert match(rl, sub="", iat=iat) == ""


def test_issued_before_ignores_leeway_and_time() -> None:
    rl = lists({"iss": ISS, "sub": "alice", "issued_before": NOW})
    assert match(rl, sub="alice", iat=NOW - 1, now=NOW + 10**6, leeway=3600) == BY_SUBJECT


def test_duplicates_keep_the_widest_reach() -> None:
    rl = lists(
        {"jti": "t", "exp": NOW},
        {"jti": "t", "exp": NOW + 100},
        {"jti": "t", "exp": NOW + 50},
        {"iss": ISS, "sub": "alice", "issued_before": NOW + 100},
        {"iss": ISS, "sub": "alice", "issued_before": NOW},
    )
    assert match(rl, jti="t", now=NOW + 90) == BY_JTI
    assert match(rl, sub="alice", iat=NOW + 50) == BY_SUBJECT
    assert len(rl.tables) == 2


# -- the store -----------------------------------------------------------------------


class FakeSource:
    kind = "directory"

    def __init__(self, description: str = "test source") -> None:
        self.description = description

    def start(self, sink: Any) -> None:  # pragma: no cover - never started here
        raise AssertionError

    def stop(self) -> None:  # pragma: no cover
        pass

    def alive(self) -> bool:  # pragma: no cover
        return True


def body(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"revoked": list(entries)}).encode()


def reloads(result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "extauthz_revocation_reloads_total", {"source": "directory", "result": result}
    )
    return value or 0.0


def entries_gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("extauthz_revocation_entries")


def test_ready_only_when_every_source_synced_with_nothing_missing() -> None:
    store = RevocationStore()
    a = store.attach(FakeSource("a"))
    b = store.attach(FakeSource("b"))
    assert not store.ready
    assert not store.lists.ready
    a.update("one", {"x.json": body({"jti": "t"})})
    a.synced()
    assert not store.ready  # b has not loaded
    b.synced(missing=["two"])
    assert not store.ready  # a named object does not exist
    assert store.pending() == ["b: two missing"]
    b.update("two", {"x.json": body()})
    b.synced()
    assert store.ready
    assert store.lists.ready
    assert match(store.lists, jti="t") == BY_JTI
    # once ready, stays ready
    b.synced(missing=["two"])
    assert store.ready


def test_an_object_whose_first_version_is_invalid_keeps_the_store_not_ready() -> None:
    store = RevocationStore()
    sink = store.attach(FakeSource("a"))
    sink.update("one", {"x.json": b"{not json"})
    sink.synced()
    assert not store.ready
    assert store.pending() == ["a: one invalid"]
    sink.update("one", {"x.json": body()})
    assert store.ready


def test_a_bad_update_keeps_the_last_good_list_and_counts_an_error() -> None:
    store = RevocationStore()
    sink = store.attach(FakeSource())
    sink.update("one", {"x.json": body({"jti": "t"})})
    sink.synced()
    generation = store.lists.generation
    errors = reloads("error")
    sink.update("one", {"x.json": body({"jti": "t"}), "y.json": body({"jti": 1})})
    assert reloads("error") == errors + 1
    assert store.lists.generation == generation  # nothing changed
    assert match(store.lists, jti="t") == BY_JTI
    successes = reloads("success")
    sink.update("one", {"x.json": body({"jti": "u"})})
    assert reloads("success") == successes + 1
    assert store.lists.generation == generation + 1
    assert match(store.lists, jti="t") == ""
    assert match(store.lists, jti="u") == BY_JTI


def test_a_deleted_object_keeps_its_list_in_force() -> None:
    store = RevocationStore()
    sink = store.attach(FakeSource())
    sink.update("one", {"x.json": body({"jti": "t"})})
    sink.synced()
    errors = reloads("error")
    sink.delete("one")
    assert reloads("error") == errors + 1
    assert match(store.lists, jti="t") == BY_JTI
    sink.update("one", {"x.json": body()})  # clearing means applying an empty list
    assert match(store.lists, jti="t") == ""


def test_objects_are_merged_and_each_replaced_whole() -> None:
    store = RevocationStore()
    sink = store.attach(FakeSource())
    sink.update("one", {"a.json": body({"jti": "a"}), "b.yaml": b"revoked: [{jti: b}]"})
    sink.update("two", {"c.json": body({"jti": "c"})})
    sink.synced()
    assert {j for j in ("a", "b", "c") if match(store.lists, jti=j)} == {"a", "b", "c"}
    assert entries_gauge() == 3
    sink.update("one", {"a.json": body({"jti": "a"})})
    assert {j for j in ("a", "b", "c") if match(store.lists, jti=j)} == {"a", "c"}
    assert entries_gauge() == 2


def test_an_update_beyond_max_entries_fails_and_keeps_the_last_good_list() -> None:
    store = RevocationStore(max_entries=3)
    sink = store.attach(FakeSource())
    sink.update("one", {"a.json": body({"jti": "a"}, {"jti": "b"})})
    sink.synced()
    generation = store.lists.generation
    errors = reloads("error")
    sink.update("two", {"c.json": body({"jti": "c"}, {"jti": "d"})})  # 4 > 3
    assert reloads("error") == errors + 1
    assert store.lists.generation == generation
    assert match(store.lists, jti="c") == ""
    sink.update("one", {"a.json": body({"jti": "a"}, {"jti": "b"}, {"jti": "x"}, {"jti": "y"})})
    assert match(store.lists, jti="x") == ""
    assert match(store.lists, jti="a") == BY_JTI
    sink.update("two", {"c.json": body({"jti": "c"})})  # 3: fits
    assert match(store.lists, jti="c") == BY_JTI


def test_each_change_is_a_new_generation() -> None:
    store = RevocationStore()
    sink = store.attach(FakeSource())
    seen = [store.lists.generation]
    sink.update("one", {"a.json": body()})
    seen.append(store.lists.generation)
    sink.synced()
    seen.append(store.lists.generation)
    sink.update("one", {"a.json": body({"jti": "a"})})
    seen.append(store.lists.generation)
    assert seen == sorted(set(seen))
    assert store.wait_generation(seen[-1] - 1, 0)
    assert not store.wait_generation(seen[-1], 0.01)
