"""JwksSource with a real KeyStore against a real local HTTPS IdP (tests/jwks_server.py).

Behaviours: keys fetched become the provider's verification keys; a rotation is picked
up by one refetch on the unknown kid; a flood of random kids stays one fetch; an IdP
that is down, slow or broken never empties the key set and never hangs the source;
discovery finds the JWKS and refuses a document of another issuer.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt
from structlog.testing import capture_logs

from extauthz.errors import KeyMaterialError, KeySourceError
from extauthz.keys.keyset import KeyStore, provider_purpose
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.jwks import JwksSource
from tests.jwks_server import FakeClock, JwksServer, RecordingSink, signing_key

PURPOSE = provider_purpose("idp")
FAST = Backoff(initial=0.02, factor=2, cap=0.1)


@pytest.fixture(scope="module")
def key_b() -> tuple[Any, dict[str, Any]]:
    return signing_key("key-b", "RS256")


class Running:
    """A store with one started JwksSource, stopped at the end of the test."""

    def __init__(self, source: JwksSource) -> None:
        self.source = source
        self.store = KeyStore()
        self.sink = RecordingSink(self.store.attach(PURPOSE, source))
        source.start(self.sink)

    def kids(self) -> set[str]:
        return {k.kid for k in self.store.ring.get(PURPOSE).keys}

    def settle(self) -> None:
        """Wait until no fetch is in flight (the publish comes just before its end)."""
        deadline = time.monotonic() + 5
        while self.source.in_flight and time.monotonic() < deadline:
            time.sleep(0.001)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for item in started:
        item.source.stop()


def start(running: list[Running], source: JwksSource) -> Running:
    item = Running(source)
    running.append(item)
    return item


def sign(private: Any, kid: str, alg: str) -> str:
    return jwt.encode({"alg": alg, "kid": kid}, {"sub": "alice", "iss": "idp"}, private)


def test_fetched_keys_verify_a_token_signed_by_the_idp(
    idp: JwksServer, key_a: Any, key_b: Any, running: list[Running]
) -> None:
    idp.set_keys([key_a[1], key_b[1]])
    r = start(running, JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert r.store.wait_ready(5)

    for private, kid, alg in ((key_a[0], "key-a", "ES256"), (key_b[0], "key-b", "RS256")):
        token = sign(private, kid, alg)
        (key,) = r.store.ring.get(PURPOSE).by_kid(kid)
        assert not key.private
        assert jwt.decode(token, key.jwk, algorithms=[alg]).claims["sub"] == "alice"


def test_a_rotated_key_arrives_with_exactly_one_refetch(
    idp: JwksServer, key_a: Any, running: list[Running]
) -> None:
    """The pipeline's protocol: ``store.refreshed(purpose, kid, generation)``."""
    clock = FakeClock()
    r = start(
        running,
        JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock),
    )
    assert r.store.wait_ready(5)
    assert idp.count() == 1

    new_private, new_public = signing_key("key-new")
    idp.set_keys([key_a[1], new_public])
    clock.advance(10)  # the refetch interval since the initial fetch has passed
    ring = r.store.refreshed(PURPOSE, "key-new", r.store.ring.generation, timeout=5)

    assert ring is not None
    (key,) = ring.get(PURPOSE).by_kid("key-new")
    assert jwt.decode(sign(new_private, "key-new", "ES256"), key.jwk).claims["sub"] == "alice"
    assert idp.count() == 1 + 1
    # the kid is now known: asking again neither fetches nor makes the caller wait
    r.settle()
    clock.advance(10)
    assert r.store.request_refresh(PURPOSE, "key-new") is False
    time.sleep(0.1)
    assert idp.count() == 2


def test_a_refetch_within_the_interval_is_deferred_and_the_caller_does_not_wait(
    idp: JwksServer, key_a: Any, running: list[Running]
) -> None:
    clock = FakeClock()
    r = start(
        running,
        JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock),
    )
    assert r.store.wait_ready(5)
    r.settle()
    _, new_public = signing_key("key-late")
    idp.set_keys([key_a[1], new_public])
    clock.advance(4)  # rotation 4 s after our last fetch: inside the 10 s interval

    started = time.monotonic()
    assert r.store.refreshed(PURPOSE, "key-late", r.store.ring.generation) is None
    assert time.monotonic() - started < 0.05
    assert idp.count() == 1

    clock.advance(6)  # the interval is over: the deferred refetch runs by itself
    r.source.request_refresh("another-unknown")  # (wakes the thread: the clock is fake)
    assert r.sink.wait_for(published=2)
    assert "key-late" in r.kids()
    assert idp.count() == 2


def test_concurrent_misses_share_one_fetch(idp: JwksServer, running: list[Running]) -> None:
    clock = FakeClock()
    r = start(
        running,
        JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock),
    )
    assert r.store.wait_ready(5)
    _, public = signing_key("key-c")
    idp.set_keys([*idp.keys, public])
    clock.advance(10)
    generation = r.store.ring.generation
    barrier = threading.Barrier(32)
    answers: list[bool] = []

    def miss() -> None:
        barrier.wait()
        answers.append(r.source.request_refresh("key-c"))
        r.store.wait_generation(generation, 5)

    threads = [threading.Thread(target=miss) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert idp.count() == 2, "one refetch for all 32 misses"
    assert "key-c" in r.kids()
    # every caller was told to wait, or found the kid already published
    assert answers.count(True) >= 1
    assert r.store.ring.generation == generation + 1


def test_a_flood_of_random_kids_costs_one_fetch_per_interval(
    idp: JwksServer, running: list[Running]
) -> None:
    """1,000 random kids from 8 threads within one refetch interval: one refetch."""
    clock = FakeClock()
    r = start(
        running,
        JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock),
    )
    assert r.store.wait_ready(5)
    clock.advance(10)

    def flood() -> None:
        for _ in range(125):
            r.store.request_refresh(PURPOSE, uuid.uuid4().hex)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.sink.wait_for(published=2)
    time.sleep(0.2)  # anything else would have been fetched by now
    assert idp.count() == 2, "initial fetch + one refetch for the whole flood"
    # the next interval allows exactly one more
    clock.advance(10)
    r.store.request_refresh(PURPOSE, uuid.uuid4().hex)
    assert r.sink.wait_for(published=3)
    time.sleep(0.1)
    assert idp.count() == 3


def test_not_ready_while_the_idp_is_down_then_ready_when_it_answers(
    idp: JwksServer, running: list[Running]
) -> None:
    idp.down = True
    r = start(
        running,
        JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, backoff=FAST),
    )
    assert r.sink.wait_for(failures=3)
    assert not r.store.ready
    assert r.sink.published == []
    assert all(isinstance(e, KeySourceError) for e in r.sink.failures)

    idp.down = False
    assert r.store.wait_ready(5)
    assert r.kids() == {"key-a"}


def test_an_idp_that_goes_down_later_leaves_the_last_good_keys(
    idp: JwksServer, key_a: Any, running: list[Running]
) -> None:
    idp.cache_control = "max-age=0"  # clamped to min_refresh: refresh every 50 ms
    r = start(
        running,
        JwksSource(
            idp.jwks_url,
            issuer=idp.base_url,
            ca_file=idp.ca_file,
            min_refresh=0.05,
            backoff=FAST,
        ),
    )
    assert r.store.wait_ready(5)
    idp.down = True
    assert r.sink.wait_for(failures=3)
    assert r.kids() == {"key-a"}
    (key,) = r.store.ring.get(PURPOSE).by_kid("key-a")
    assert jwt.decode(sign(key_a[0], "key-a", "ES256"), key.jwk).claims["sub"] == "alice"

    published = len(r.sink.published)
    idp.down = False
    assert r.sink.wait_for(published=published + 1)


def test_a_key_gone_from_a_good_fetch_is_gone(idp: JwksServer, key_a: Any, key_b: Any) -> None:
    clock = FakeClock()
    idp.set_keys([key_a[1], key_b[1]])
    source = JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock)
    store = KeyStore()
    sink = store.attach(PURPOSE, source)
    source.poll(sink)
    assert {k.kid for k in store.ring.get(PURPOSE).keys} == {"key-a", "key-b"}
    idp.set_keys([key_b[1]])
    clock.advance(3600)
    source.poll(sink)
    assert {k.kid for k in store.ring.get(PURPOSE).keys} == {"key-b"}
    source.stop()


def test_a_slow_idp_times_out_instead_of_hanging(idp: JwksServer) -> None:
    idp.delay = 5
    source = JwksSource(
        idp.jwks_url,
        issuer=idp.base_url,
        ca_file=idp.ca_file,
        connect_timeout=0.2,
        read_timeout=0.3,
    )
    sink = RecordingSink()
    started = time.monotonic()
    source.poll(sink)
    assert time.monotonic() - started < 1.5
    assert [type(e) for e in sink.failures] == [KeySourceError]
    source.stop()


def test_a_trickling_idp_hits_the_fetch_deadline(idp: JwksServer) -> None:
    """Each byte comes within the read timeout; the whole body does not."""
    idp.drip = 0.05
    source = JwksSource(
        idp.jwks_url,
        issuer=idp.base_url,
        ca_file=idp.ca_file,
        connect_timeout=0.2,
        read_timeout=0.3,
    )
    sink = RecordingSink()
    started = time.monotonic()
    source.poll(sink)
    assert time.monotonic() - started < 1.5
    assert [type(e) for e in sink.failures] == [KeySourceError]
    source.stop()


PRIVATE_A = signing_key("priv-1")[0].as_dict(private=True) | {"kid": "priv-1"}
ENC_ONLY = signing_key("enc-1")[1] | {"use": "enc"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"keys": [], "keys": []}', id="duplicate-member"),
        pytest.param(b'[{"kty": "EC"}]', id="array"),
        pytest.param(b'{"kty": "EC", "crv": "P-256"}', id="single-jwk"),
        pytest.param(b'{"keys": {}}', id="keys-not-array"),
        pytest.param(b'{"keys": []}', id="empty-set"),
        pytest.param(b'{"keys": [NaN]}', id="nan"),
        pytest.param(b'{"keys": [{"kty": "XYZ", "kid": "x"}]}', id="only-unsupported"),
        pytest.param(json.dumps({"keys": [PRIVATE_A]}).encode(), id="only-private"),
        pytest.param(json.dumps({"keys": [ENC_ONLY]}).encode(), id="only-enc"),
    ],
)
def test_a_bad_document_is_a_failed_fetch_that_keeps_the_last_good_keys(
    idp: JwksServer, body: bytes
) -> None:
    clock = FakeClock()
    source = JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock)
    store = KeyStore()
    sink = RecordingSink(store.attach(PURPOSE, source))
    source.poll(sink)
    assert sink.kids == {"key-a"}

    idp.body = body
    clock.advance(3600)
    source.poll(sink)
    assert len(sink.published) == 1
    assert [type(e) for e in sink.failures] in ([KeyMaterialError], [KeySourceError])
    assert {k.kid for k in store.ring.get(PURPOSE).keys} == {"key-a"}
    source.stop()


def test_private_enc_and_symmetric_members_of_a_set_are_dropped_and_logged(
    idp: JwksServer, key_a: Any
) -> None:
    """The rest of the set is used; a published private key is an error in the log."""
    from joserfc import jwk

    secret = jwk.OctKey.generate_key(256).as_dict() | {"kid": "hmac-1"}
    idp.set_keys([key_a[1], PRIVATE_A, ENC_ONLY, secret, {"kty": "XYZ", "kid": "pq-1"}])
    source = JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file)
    sink = RecordingSink()
    with capture_logs() as logs:
        source.poll(sink)
    source.stop()

    assert sink.kids == {"key-a"}
    assert all(not k.private for k in sink.published[-1])
    private_logged = {e["kid"] for e in logs if e["event"] == "jwks_private_key_ignored"}
    assert private_logged == {"priv-1", "hmac-1"}
    assert all(e["log_level"] == "error" for e in logs if e["event"] == "jwks_private_key_ignored")
    others = {(e["kid"], e["reason"]) for e in logs if e["event"] == "jwks_key_ignored"}
    assert others == {("enc-1", "enc"), ("pq-1", "unsupported")}


def test_discovery_finds_the_jwks_uri(idp: JwksServer, running: list[Running]) -> None:
    r = start(
        running,
        JwksSource(None, issuer=idp.base_url, discovery=True, ca_file=idp.ca_file),
    )
    assert r.store.wait_ready(5)
    assert r.kids() == {"key-a"}
    assert idp.count("/.well-known/openid-configuration") == 1
    assert idp.count() == 1


def test_discovery_of_an_issuer_with_a_path(idp: JwksServer) -> None:
    """``{issuer}/.well-known/openid-configuration``, trailing slash of the issuer removed."""
    issuer = idp.base_url + "/realms/main/"
    idp.issuer = issuer
    source = JwksSource(None, issuer=issuer, discovery=True, ca_file=idp.ca_file)
    sink = RecordingSink()
    source.poll(sink)
    source.stop()
    assert sink.kids == {"key-a"}
    assert idp.count("/realms/main/.well-known/openid-configuration") == 1


def test_discovery_of_another_issuer_is_refused_and_never_published(
    idp: JwksServer,
) -> None:
    idp.issuer = "https://evil.example.test"
    source = JwksSource(
        None, issuer=idp.base_url, discovery=True, ca_file=idp.ca_file, backoff=FAST
    )
    store = KeyStore()
    sink = RecordingSink(store.attach(PURPOSE, source))
    with capture_logs() as logs:
        source.poll(sink)
    source.stop()

    assert sink.published == []
    assert not store.ready
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert idp.count() == 0, "the JWKS of a mismatched issuer is not even fetched"
    (line,) = [e for e in logs if e["event"] == "oidc_issuer_mismatch"]
    assert line["log_level"] == "error"
    assert line["configured"] == idp.base_url
    assert line["discovered"] == "https://evil.example.test"


def test_discovery_refuses_a_plain_http_jwks_uri(idp: JwksServer) -> None:
    idp.jwks_uri = idp.jwks_url.replace("https://", "http://")
    source = JwksSource(None, issuer=idp.base_url, discovery=True, ca_file=idp.ca_file)
    sink = RecordingSink()
    source.poll(sink)
    source.stop()
    assert sink.published == []
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert idp.count() == 0


def test_stop_is_prompt_and_the_source_stays_alive_until_then(
    idp: JwksServer, running: list[Running]
) -> None:
    r = start(running, JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert r.store.wait_ready(5)
    assert r.source.alive()
    started = time.monotonic()
    r.source.stop()
    assert time.monotonic() - started < 0.5
    assert r.source.alive()
