"""Zero-downtime rotation through the whole service: the decryption keys live in a
Secret on the (fake) Kubernetes API, the service finds the API through ``KUBECONFIG``
as it would on a laptop, and Checks run in a loop over real gRPC while the Secret is
rotated: add the new key next to the old, then remove the old."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.fakekube import FakeKube
from tests.service_client import Client, wait_for

NAMESPACE = "auth"
SECRET = "extauthz-decryption-keys"


@pytest.fixture
def kube(use_kubeconfig: Callable[..., Any]) -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=None) as server:
        yield use_kubeconfig(server)


def put(kube: FakeKube, *jwks: dict[str, Any]) -> None:
    kube.store.put_secret(NAMESPACE, SECRET, {"jwks.json": json.dumps({"keys": list(jwks)})})


def test_rotation_while_checks_run_never_fails_a_check(
    kube: FakeKube,
    write_config: Callable[..., Path],
    enc_jwk: dict[str, Any],
    enc_jwk2: dict[str, Any],
    mint_token: Callable[..., str],
) -> None:
    put(kube, enc_jwk)
    decryption = {"keys": [{"kubernetes": {"namespace": NAMESPACE, "secrets": [SECRET]}}]}
    app = App(config_mod.load(write_config(decryption=decryption)))
    app.start()
    client = Client(app.grpc_port)
    stop = threading.Event()
    results: list[tuple[str, float, str]] = []  # (token name, time, decision)

    def loop(name: str, token: str) -> None:
        local = Client(app.grpc_port)
        while not stop.is_set():
            results.append((name, time.monotonic(), local.check(token)["decision"]))
        local.channel.close()

    try:
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING, 10)
        # unique tokens defeat the cache: every Check really decrypts
        old = mint_token(sub="old")
        new = mint_token(enc=enc_jwk2, sub="new")
        assert client.check(old)["decision"] == "allow"
        assert client.check(new)["metadata"]["reason"] == "unknown_kid"

        # step 1: add the new key next to the old one
        added_at = time.monotonic()
        put(kube, enc_jwk, enc_jwk2)
        assert wait_for(lambda: client.check(new)["decision"] == "allow", 1.0)
        in_force = time.monotonic() - added_at
        threads = [
            threading.Thread(target=loop, args=("old", old)),
            threading.Thread(target=loop, args=("new", new)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # the overlap: both keys present, both tokens must pass
        overlap = [(n, d) for n, _, d in results]
        # step 2: remove the old key
        removed_at = time.monotonic()
        put(kube, enc_jwk2)
        assert wait_for(lambda: client.check(old)["decision"] == "deny", 1.0)
        denied_at = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        stop.set()
        client.channel.close()
        app.stop_now()

    assert in_force < 1.0
    assert len(overlap) > 20
    assert all(d == "allow" for _, d in overlap), "a Check failed during the overlap"
    assert all(d == "allow" for n, _, d in results if n == "new"), "the new key never fails"
    # the old token: allowed until the removal, denied for good within 1 s of it
    assert denied_at - removed_at < 1.0
    late = [d for n, t, d in results if n == "old" and t > denied_at + 0.05]
    assert late
    assert all(d == "deny" for d in late)
