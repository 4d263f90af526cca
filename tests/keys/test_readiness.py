"""Readiness means the service can decide (KeyStore, with real sources where it matters).

Behaviours:
- not ready until every source loaded once; ``pending()`` names the source;
- a source that loaded but holds no usable key keeps the store not ready: a provider
  with only ``use: enc`` keys, decryption keys without their private half; ``pending()``
  names the provider (or "decryption keys") and its sources;
- a Secret named in the config that does not exist keeps the store not ready (the pod
  of a rollout with a mistyped Secret name never turns Ready) and is picked up when
  created; ``pending()`` names it;
- once ready, ready for good: a later loss (every key gone, the Secret deleted) is an
  ERROR log line and a zero key count, never a flap of readiness.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from structlog.testing import capture_logs

from extauthz import metrics
from extauthz.keys.keyset import DECRYPTION, REVOCATION, KeyStore, provider_purpose
from extauthz.keys.material import Key, parse_key_material
from tests.fakekube import FakeKube

NS = "auth"
IDP = provider_purpose("idp")


class Manual:
    """A source whose loading the test does by hand through the sink it gets."""

    kind = "static"

    def __init__(self, description: str) -> None:
        self.description = description

    def start(self, sink: Any) -> None:
        """Nothing runs in the background."""

    def stop(self) -> None:
        """Nothing to stop."""

    def alive(self) -> bool:
        return True


def parsed(document: bytes, origin: str) -> list[Key]:
    return parse_key_material(document, origin)


def sig_keys(keys: Any, *kids: str) -> list[Key]:
    """Public ``use: sig`` keys (what a provider publishes)."""
    docs = [dict(keys.sig(kid).as_dict(private=False)) for kid in kids]
    return parsed(json.dumps({"keys": docs}).encode(), "test[sig]")


def enc_keys(keys: Any, *kids: str, private: bool = True) -> list[Key]:
    return parsed(keys.jwks(*kids, private=private), f"test[enc-{private}]")


def attach(store: KeyStore, purpose: str, description: str) -> Any:
    return store.attach(purpose, Manual(description))


def test_not_ready_until_every_source_loaded_and_pending_names_it(keys: Any) -> None:
    store = KeyStore()
    decryption = attach(store, DECRYPTION, "directory /keys/decrypt")
    verification = attach(store, IDP, "jwks https://idp.example/jwks")
    decryption.publish(enc_keys(keys, "k1"))
    assert not store.ready
    assert store.pending() == ["jwks https://idp.example/jwks: not loaded yet"]
    verification.publish(sig_keys(keys, "s1"))
    assert store.ready
    assert store.pending() == []


def test_a_provider_without_a_usable_verification_key_is_not_ready(keys: Any) -> None:
    store = KeyStore()
    attach(store, DECRYPTION, "decrypt").publish(enc_keys(keys, "k1"))
    verification = attach(store, IDP, "kubernetes auth/idp-keys")
    with capture_logs() as logs:
        verification.publish(enc_keys(keys, "k2"))  # use: enc keys only
    assert not store.ready
    assert store.pending() == ["provider idp: no usable key in kubernetes auth/idp-keys"]
    assert any(e["event"] == "keys_unusable" for e in logs)
    verification.publish([])
    assert not store.ready
    verification.publish(sig_keys(keys, "s1"))
    assert store.ready


def test_decryption_needs_a_private_key(keys: Any) -> None:
    store = KeyStore()
    decryption = attach(store, DECRYPTION, "kubernetes auth/extauthz-decryption-keys")
    attach(store, IDP, "idp").publish(sig_keys(keys, "s1"))
    decryption.publish(enc_keys(keys, "k1", private=False))
    assert not store.ready
    assert store.pending() == [
        "decryption keys: no usable key in kubernetes auth/extauthz-decryption-keys"
    ]
    decryption.publish(enc_keys(keys, "k1"))
    assert store.ready


def test_once_ready_a_loss_is_logged_and_counted_not_a_flap(keys: Any) -> None:
    store = KeyStore()
    decryption = attach(store, DECRYPTION, "decrypt")
    decryption.publish(enc_keys(keys, "k1"))
    attach(store, IDP, "idp").publish(sig_keys(keys, "s1"))
    assert store.ready
    with capture_logs() as logs:
        decryption.publish([])
        decryption.missing(["Secret auth/extauthz-decryption-keys"])
    assert store.ready
    assert store.pending() == []
    lost = [e for e in logs if e["event"] == "keys_lost"]
    assert len(lost) == 1
    assert lost[0]["log_level"] == "error"
    assert lost[0]["purpose"] == "decryption keys"
    missing = [e for e in logs if e["event"] == "key_object_missing"]
    assert missing
    assert missing[0]["log_level"] == "error"
    count = metrics.REGISTRY.get_sample_value("extauthz_keys", {"source": "static", "use": "enc"})
    assert count == 0
    with capture_logs() as logs:
        decryption.publish(enc_keys(keys, "k2"))
    assert [e["event"] for e in logs if e["event"].startswith("keys_re")] == ["keys_restored"]


def test_a_revocation_source_gates_readiness_without_keys(keys: Any) -> None:
    store = KeyStore()
    attach(store, DECRYPTION, "decrypt").publish(enc_keys(keys, "k1"))
    attach(store, IDP, "idp").publish(sig_keys(keys, "s1"))
    revocation = attach(store, REVOCATION, "kubernetes auth/extauthz-revoked")
    assert store.pending() == ["kubernetes auth/extauthz-revoked: not loaded yet"]
    revocation.missing(["ConfigMap auth/extauthz-revoked"])
    revocation.publish([])
    assert store.pending() == [
        "kubernetes auth/extauthz-revoked: missing ConfigMap auth/extauthz-revoked"
    ]
    revocation.missing([])
    assert store.ready


def test_the_check_can_be_relaxed_for_pipelines_built_by_hand(keys: Any) -> None:
    store = KeyStore(require_usable_keys=False)
    attach(store, DECRYPTION, "decrypt").publish(enc_keys(keys, "k1", private=False))
    assert store.ready


# -- with the Kubernetes source --------------------------------------------------------


def names(missing: Sequence[str]) -> list[str]:
    return list(missing)


def test_a_missing_named_secret_keeps_the_store_not_ready_until_created(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "idp-keys", {"jwks.json": sig_jwks(keys, "s1")})
    store = KeyStore()
    verification = make_source(["idp-keys"])
    verification.start(store.attach(IDP, verification))
    decryption = make_source(["extauthz-decryption-kyes"])  # a typo in the config
    recorder.inner = store.attach(DECRYPTION, decryption)
    with capture_logs() as logs:
        decryption.start(recorder)
        assert recorder.wait(lambda r: bool(r.published) and bool(r.missings))
    assert recorder.kids == set()  # the source loaded: nothing
    assert not store.wait_ready(0.3)
    assert store.pending() == [
        "kubernetes auth/extauthz-decryption-kyes: missing Secret auth/extauthz-decryption-kyes",
        "decryption keys: no usable key in kubernetes auth/extauthz-decryption-kyes",
    ]
    assert any(e["event"] == "kubernetes_secret_missing" for e in logs)

    kube.store.put_secret(NS, "extauthz-decryption-kyes", {"jwks.json": keys.jwks("k1")})
    assert store.wait_ready(5)

    kube.store.delete_secret(NS, "extauthz-decryption-kyes")  # lost after ready
    recorder.wait_kids(set(), after=len(recorder.published))
    assert store.ready, "no flap: the loss is for logs and metrics"


def test_an_empty_secret_is_not_ready(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "empty", {"README": b"keys go here"})
    store = KeyStore()
    source = make_source(["empty"])
    recorder.inner = store.attach(DECRYPTION, source)
    source.start(recorder)
    recorder.wait_kids(set())
    assert not store.ready
    assert store.pending() == ["decryption keys: no usable key in kubernetes auth/empty"]


def sig_jwks(keys: Any, *kids: str) -> bytes:
    return json.dumps({"keys": [dict(keys.sig(k).as_dict(private=False)) for k in kids]}).encode()
