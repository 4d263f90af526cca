"""Key rotation through Kubernetes Secrets, seen by a reader of ``KeyStore.ring``.

While a checker thread decrypts (JWE, RSA-OAEP-256) and verifies (JWS, ES256) tokens
for the old and the new key in a tight loop, each reading ``store.ring`` once per
round, the Secrets go through a rotation: add the new key next to the old one, then
remove the old one. Behaviours:

- in every round, a token works exactly when its key is in that round's ring: no
  round where a present key fails, none where a removed key still works;
- there is never a round where neither token works (no gap), and while both keys
  are present both tokens work (zero failures during the overlap);
- the old key's removal is in force within 1 s of the API write.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwe, jws
from joserfc.jwe import JWERegistry

from extauthz.keys.keyset import DECRYPTION, KeyRing, KeyStore, provider_purpose
from tests.fakekube import FakeKube

NS = "auth"
PROVIDER = provider_purpose("idp")
LABEL = {"extauthz/provider": "idp"}
JWE_REGISTRY = JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM"])


def header_kid(token: str) -> str:
    segment = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    kid: str = header["kid"]
    return kid


def decrypts(ring: KeyRing, token: str) -> bool:
    kid = header_kid(token)
    for key in ring.get(DECRYPTION).by_kid(kid):
        try:
            jwe.decrypt_compact(token, key.jwk, registry=JWE_REGISTRY)
        except Exception:  # a wrong key is a failed try, whatever joserfc raises
            continue
        return True
    return False


def verifies(ring: KeyRing, token: str) -> bool:
    kid = header_kid(token)
    for key in ring.get(PROVIDER).by_kid(kid):
        try:
            jws.deserialize_compact(token, key.jwk, algorithms=["ES256"])
        except Exception:
            continue
        return True
    return False


@dataclass(frozen=True)
class Round:
    generation: int
    has_old_enc: bool
    has_new_enc: bool
    has_old_sig: bool
    has_new_sig: bool
    old_decrypts: bool
    new_decrypts: bool
    old_verifies: bool
    new_verifies: bool


def test_rotation_has_overlap_no_gap_and_immediate_removal(
    kube: FakeKube, make_source: Any, keys: Any
) -> None:
    old_enc, new_enc = keys.enc("k1"), keys.enc("k2")
    old_sig, new_sig = keys.sig("s1"), keys.sig("s2")
    tokens = {
        "old_jwe": jwe.encrypt_compact(
            {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "k1"},
            b"{}",
            old_enc,
            registry=JWE_REGISTRY,
        ),
        "new_jwe": jwe.encrypt_compact(
            {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "k2"},
            b"{}",
            new_enc,
            registry=JWE_REGISTRY,
        ),
        "old_jws": jws.serialize_compact(
            {"alg": "ES256", "kid": "s1"}, b"{}", old_sig, algorithms=["ES256"]
        ),
        "new_jws": jws.serialize_compact(
            {"alg": "ES256", "kid": "s2"}, b"{}", new_sig, algorithms=["ES256"]
        ),
    }
    kube.store.put_secret(NS, "extauthz-decryption-keys", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(
        NS, "idp-keys", {"jwks.json": keys.jwks("s1", private=False)}, labels=LABEL
    )

    store = KeyStore()
    swaps: list[tuple[float, KeyRing]] = []
    store.on_change(lambda ring: swaps.append((time.monotonic(), ring)))
    decryption = make_source(["extauthz-decryption-keys"])
    provider = make_source(label_selector="extauthz/provider=idp")
    decryption.start(store.attach(DECRYPTION, decryption))
    provider.start(store.attach(PROVIDER, provider))
    assert store.wait_ready(5)
    assert kube.wait_for_watches(2)

    rounds: list[Round] = []
    done = threading.Event()

    def check() -> None:
        while not done.is_set():
            ring = store.ring  # read once per round, as a Check does
            enc, sig = ring.get(DECRYPTION), ring.get(PROVIDER)
            rounds.append(
                Round(
                    ring.generation,
                    bool(enc.by_kid("k1")),
                    bool(enc.by_kid("k2")),
                    bool(sig.by_kid("s1")),
                    bool(sig.by_kid("s2")),
                    decrypts(ring, tokens["old_jwe"]),
                    decrypts(ring, tokens["new_jwe"]),
                    verifies(ring, tokens["old_jws"]),
                    verifies(ring, tokens["new_jws"]),
                )
            )

    def seen_rounds(state: Callable[[Round], bool], count: int = 10) -> None:
        """Wait (5 s at most) until the checker ran ``count`` rounds in ``state``."""
        deadline = time.monotonic() + 5
        while sum(1 for r in list(rounds) if state(r)) < count:
            assert time.monotonic() < deadline, "the checker did not run"
            time.sleep(0.01)

    checker = threading.Thread(target=check, name="checker", daemon=True)
    checker.start()
    try:
        # 1. the new keys join the old ones
        kube.store.put_secret(NS, "extauthz-decryption-keys", {"jwks.json": keys.jwks("k1", "k2")})
        kube.store.put_secret(
            NS, "idp-keys", {"jwks.json": keys.jwks("s1", "s2", private=False)}, labels=LABEL
        )
        assert store.wait_generation(store.ring.generation, 2)
        deadline = time.monotonic() + 5
        while not (
            store.ring.get(DECRYPTION).by_kid("k2") and store.ring.get(PROVIDER).by_kid("s2")
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        seen_rounds(lambda r: r.has_old_enc and r.has_new_enc and r.has_new_sig)  # the overlap

        # 2. the old keys go
        removed_at = time.monotonic()
        kube.store.put_secret(NS, "extauthz-decryption-keys", {"jwks.json": keys.jwks("k2")})
        kube.store.put_secret(
            NS, "idp-keys", {"jwks.json": keys.jwks("s2", private=False)}, labels=LABEL
        )
        deadline = time.monotonic() + 5
        while store.ring.get(DECRYPTION).by_kid("k1") or store.ring.get(PROVIDER).by_kid("s1"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        seen_rounds(lambda r: not r.has_old_enc and not r.has_old_sig)  # after the removal
    finally:
        done.set()
        checker.join(5)

    assert len(rounds) > 20
    for r in rounds:
        # a token works exactly when its key is in the ring the round read
        assert r.old_decrypts == r.has_old_enc, r
        assert r.new_decrypts == r.has_new_enc, r
        assert r.old_verifies == r.has_old_sig, r
        assert r.new_verifies == r.has_new_sig, r
        assert r.old_decrypts or r.new_decrypts, f"a round with no working decryption key: {r}"
        assert r.old_verifies or r.new_verifies, f"a round with no working verification key: {r}"
    overlap = [r for r in rounds if r.has_old_enc and r.has_new_enc]
    assert overlap, "the checker never saw both keys"
    assert all(r.old_decrypts and r.new_decrypts for r in overlap)
    assert rounds[-1] == Round(
        rounds[-1].generation, False, True, False, True, False, True, False, True
    )

    gone = next(
        at for at, ring in swaps if at >= removed_at and not ring.get(DECRYPTION).by_kid("k1")
    )
    assert gone - removed_at < 1.0
