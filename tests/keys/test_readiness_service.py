"""Readiness through the whole service: a rollout with a mistyped Secret name never turns
Ready, and a Secret lost after Ready does not flap it.

The real App (gRPC health, Checks over real gRPC), its decryption keys in a Secret on
the fake API server, found through ``KUBECONFIG`` as on a laptop.
"""

from __future__ import annotations

import json
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
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def kube(use_kubeconfig: Callable[..., Any]) -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=None) as server:
        yield use_kubeconfig(server)


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[Callable[[str], App]]:
    started: list[App] = []

    def start(secret: str) -> App:
        decryption = {"keys": [{"kubernetes": {"namespace": NAMESPACE, "secrets": [secret]}}]}
        instance = App(config_mod.load(write_config(decryption=decryption)))
        instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop_now()


def test_a_missing_secret_keeps_the_service_not_ready_until_it_exists(
    kube: FakeKube,
    app: Callable[[str], App],
    enc_jwk: dict[str, Any],
    mint_token: Callable[..., str],
) -> None:
    service = app(SECRET)  # the Secret does not exist yet: a typo, or not applied yet
    client = Client(service.grpc_port)
    assert wait_for(lambda: any(r.is_watch for r in kube.log()), 10)
    assert not service.is_ready()
    assert client.status() == NOT_SERVING
    assert f"Secret {NAMESPACE}/{SECRET}" in " ".join(service.store.pending())
    token = mint_token()
    assert client.check(token)["metadata"]["reason"] == "not_ready"

    kube.store.put_secret(NAMESPACE, SECRET, {"jwks.json": json.dumps({"keys": [enc_jwk]})})
    assert wait_for(lambda: client.status() == SERVING, 10)
    assert client.check(token)["decision"] == "allow"

    kube.store.delete_secret(NAMESPACE, SECRET)  # lost after ready
    assert wait_for(lambda: client.check(mint_token(sub="b"))["decision"] == "deny", 5)
    assert client.status() == SERVING, "a later loss is for logs and metrics, not readiness"
    assert service.is_ready()
    client.channel.close()


def test_an_empty_secret_keeps_the_service_not_ready(
    kube: FakeKube, app: Callable[[str], App]
) -> None:
    kube.store.put_secret(NAMESPACE, SECRET, {"jwks.json": json.dumps({"keys": []})})
    service = app(SECRET)
    client = Client(service.grpc_port)
    assert wait_for(lambda: any(r.is_watch for r in kube.log()), 10)
    assert client.status() == NOT_SERVING
    assert service.store.pending() == [
        f"decryption keys: no usable key in kubernetes {NAMESPACE}/{SECRET}"
    ]
    client.channel.close()
