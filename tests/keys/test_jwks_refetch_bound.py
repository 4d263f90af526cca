"""Bounded waiting on an unknown ``kid`` (a real KeyStore, a real JwksSource, a real IdP).

Behaviours: a slow IdP and a handful of forged-``kid`` Checks never hold the worker
threads that valid Checks need (at most one Check per source waits, at most 0.5 s); a
failed fetch wakes the Check waiting for it at once; after a failed fetch nobody waits;
a rotation at the IdP is still picked up by the one Check that waits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from extauthz.keys.keyset import REFETCH_WAIT_SECONDS, KeyStore, provider_purpose
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.jwks import JwksSource
from tests.jwks_server import JwksServer, RecordingSink, signing_key

PURPOSE = provider_purpose("idp")


@pytest.fixture
def store(idp: JwksServer) -> Iterator[KeyStore]:
    """A ready store fed by a JwksSource whose unknown-kid refetch is allowed every 10 ms
    (so rate limiting is never what keeps a Check from waiting here)."""
    source = JwksSource(
        idp.jwks_url,
        issuer=idp.base_url,
        ca_file=idp.ca_file,
        refetch_interval=0.01,
        read_timeout=10.0,
        backoff=Backoff(initial=0.01, factor=1.0, cap=0.01),
    )
    keys = KeyStore()
    source.start(RecordingSink(keys.attach(PURPOSE, source)))
    assert keys.wait_ready(5)
    yield keys
    source.stop()


def check(store: KeyStore, kid: str) -> bool:
    """What the pipeline does for a token's ``kid``: the ring first, then one bounded refetch."""
    ring = store.ring
    if ring.get(PURPOSE).by_kid(kid):
        return True
    fresh = store.refreshed(PURPOSE, kid, ring.generation)
    return fresh is not None and bool(fresh.get(PURPOSE).by_kid(kid))


def timed(store: KeyStore, kid: str, submitted: float) -> tuple[bool, float, float]:
    """(found, seconds from submission to the end, seconds spent in this call)."""
    began = time.monotonic()
    found = check(store, kid)
    end = time.monotonic()
    return found, end - submitted, end - began


def test_forged_kids_against_a_slow_idp_do_not_hold_valid_checks(
    idp: JwksServer, store: KeyStore
) -> None:
    idp.delay = 3.0  # every refetch takes 3 s from now on
    with ThreadPoolExecutor(max_workers=4) as workers:  # the server's Check threads
        submitted = time.monotonic()
        forged = [workers.submit(timed, store, uuid.uuid4().hex, submitted) for _ in range(8)]
        valid = [workers.submit(timed, store, "key-a", submitted) for _ in range(20)]
        forged_results = [f.result() for f in forged]
        valid_results = [f.result() for f in valid]
    assert all(found for found, _, _ in valid_results)
    assert not any(found for found, _, _ in forged_results)
    waited = sorted(spent for _, _, spent in forged_results)
    assert waited[-1] <= REFETCH_WAIT_SECONDS + 0.2, "no Check waits longer than the bound"
    assert waited[-2] < 0.1, "only one Check per source waits"
    assert max(latency for _, latency, _ in valid_results) < REFETCH_WAIT_SECONDS + 0.4


def test_a_failed_fetch_wakes_the_waiting_check_and_nobody_waits_after_it(
    idp: JwksServer, store: KeyStore
) -> None:
    idp.delay = 0.2
    idp.status = 500
    time.sleep(0.02)  # past the refetch interval of the initial fetch
    found, _, spent = timed(store, "rotated-or-forged", time.monotonic())
    assert not found
    assert 0.15 <= spent < 0.4, "woken by the failure, not by the timeout"
    for _ in range(5):  # the IdP is failing: no Check waits for it
        found, _, spent = timed(store, uuid.uuid4().hex, time.monotonic())
        assert not found
        assert spent < 0.05
    assert check(store, "key-a"), "the last good keys still serve"


def test_the_one_waiting_check_gets_a_key_rotated_in_at_the_idp(
    idp: JwksServer, store: KeyStore, key_a: tuple[Any, dict[str, Any]]
) -> None:
    _, fresh = signing_key("key-fresh")
    idp.set_keys([key_a[1], fresh])
    idp.delay = 0.1
    time.sleep(0.02)  # past the refetch interval of the initial fetch
    found, _, spent = timed(store, "key-fresh", time.monotonic())
    assert found
    assert spent < REFETCH_WAIT_SECONDS
