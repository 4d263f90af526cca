"""Revocation through the whole service: the list is a ConfigMap on the (fake) Kubernetes
API, found through ``KUBECONFIG``; Checks run in a loop over real gRPC while the
ConfigMap is updated, and the HTTP authorization listener answers the same.

Behaviours: not ready until the named ConfigMap exists; a cached token revoked by a
ConfigMap update is denied within 1 s (gRPC and HTTP); the subject's later token keeps
working; a bad update changes nothing and is counted; a deleted ConfigMap keeps its
list; the metrics (``extauthz_revocation_entries``, reloads, ``checks_total`` with
reason ``revoked``) and the decision log show it."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from structlog.testing import capture_logs

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.revocation.kubeapi import FakeKubeWithApply
from tests.service_client import Client, wait_for

NAMESPACE = "auth"
CONFIGMAP = "extauthz-revoked"
ISSUER = "https://idp.example.test"


@pytest.fixture
def kube(use_kubeconfig: Callable[..., Any]) -> Iterator[FakeKubeWithApply]:
    with FakeKubeWithApply(bookmark_interval=None) as server:
        yield use_kubeconfig(server)


def put_list(kube: FakeKubeWithApply, *entries: dict[str, Any]) -> None:
    kube.store.put_configmap(
        NAMESPACE, CONFIGMAP, {"revoked.json": json.dumps({"revoked": list(entries)})}
    )


@pytest.fixture
def app(kube: FakeKubeWithApply, write_config: Callable[..., Path]) -> Iterator[App]:
    revocation = {"sources": [{"kubernetes": {"namespace": NAMESPACE, "configmaps": [CONFIGMAP]}}]}
    listen = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}
    service = App(config_mod.load(write_config(revocation=revocation, listen=listen)))
    service.start()
    yield service
    service.stop_now()


def http_check(app: App, token: str) -> tuple[int, dict[str, str]]:
    assert app.http_authz is not None
    conn = http.client.HTTPConnection("127.0.0.1", app.http_authz.port, timeout=5)
    try:
        conn.request("GET", "/orders", headers={"authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def scrape(app: App) -> str:
    assert app.http is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{app.http.port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")) and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0


def test_not_ready_until_the_named_configmap_exists(
    kube: FakeKubeWithApply, app: App, mint_token: Callable[..., str]
) -> None:
    client = Client(app.grpc_port)
    try:
        time.sleep(1.0)  # keys load at once; the list does not exist
        assert app.store.ready
        assert not app.is_ready()
        assert client.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        denied = client.check(mint_token())
        assert denied["metadata"]["reason"] == "not_ready"
        put_list(kube)
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING, 5)
        assert client.check(mint_token())["decision"] == "allow"
    finally:
        client.channel.close()


def test_a_cached_token_is_denied_within_a_second_of_the_configmap_update(
    kube: FakeKubeWithApply, app: App, mint_token: Callable[..., str]
) -> None:
    put_list(kube)
    client = Client(app.grpc_port)
    leaked = mint_token(sub="alice", jti="leaked-1")
    stop = threading.Event()
    results: list[tuple[float, str, str]] = []  # (time, decision, reason)

    def loop() -> None:
        local = Client(app.grpc_port)
        while not stop.is_set():
            answer = local.check(leaked)
            results.append((time.monotonic(), answer["decision"], answer["metadata"]["reason"]))
        local.channel.close()

    thread = threading.Thread(target=loop)
    try:
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING, 10)
        assert client.check(leaked)["decision"] == "allow"  # now cached
        assert http_check(app, leaked)[0] == 200
        thread.start()
        time.sleep(0.5)
        before = scrape(app)
        with capture_logs() as logs:
            revoked_at = time.monotonic()
            put_list(kube, {"jti": "leaked-1", "iss": ISSUER, "exp": int(time.time()) + 300})
            assert wait_for(lambda: bool(results) and results[-1][1] == "deny", 1.0)
            denied_at = time.monotonic()
            time.sleep(0.3)
        stop.set()
        thread.join(timeout=10)
        # the same subject's later token keeps working, over both transports
        fresh = mint_token(sub="alice", jti="fresh-2")
        assert client.check(fresh)["decision"] == "allow"
        assert http_check(app, fresh)[0] == 200
        status, headers = http_check(app, leaked)
        after = scrape(app)
    finally:
        stop.set()
        client.channel.close()

    assert denied_at - revoked_at < 1.0
    allowed = [t for t, d, _ in results if d == "allow"]
    late = [(d, r) for t, d, r in results if t > denied_at]
    assert allowed
    assert late
    assert all(d == "deny" and r == "revoked" for d, r in late), "revoked tokens stay denied"
    # over HTTP: 401 invalid_token, reason revoked
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert headers["x-extauthz-reason"] == "revoked"
    # metrics
    assert sample(after, "extauthz_revocation_entries") == 1
    assert sample(after, "extauthz_revocation_reloads_total", source="kubernetes",
                  result="success") > sample(before, "extauthz_revocation_reloads_total",
                                             source="kubernetes", result="success")  # fmt: skip
    # the gRPC line: an HTTP line with the same decision and reason may come first (its
    # child exists first when an earlier test in this process made an HTTP revoked deny)
    assert sample(after, "extauthz_checks_total", decision="deny", reason="revoked",
                  transport="grpc") >= len(late)  # fmt: skip
    # the decision log
    lines = [x for x in logs if x.get("event") == "check" and x.get("reason") == "revoked"]
    assert lines
    assert lines[0]["decision"] == "deny"
    assert lines[0]["sub"] == "alice"
    assert lines[0]["detail"] == "revoked by jti"
    assert lines[0].get("jti") == "leaked-1"
    loaded = [x for x in logs if x.get("event") == "revocation_list_loaded"]
    assert loaded
    assert loaded[0]["object"] == CONFIGMAP


def test_a_bad_update_changes_nothing_and_a_deleted_list_stays_in_force(
    kube: FakeKubeWithApply, app: App, mint_token: Callable[..., str]
) -> None:
    put_list(kube, {"jti": "t-1"})
    client = Client(app.grpc_port)
    revoked = mint_token(jti="t-1")
    other = mint_token(jti="t-2")
    try:
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING, 10)
        assert client.check(revoked)["metadata"]["reason"] == "revoked"
        assert client.check(other)["decision"] == "allow"
        errors = sample(scrape(app), "extauthz_revocation_reloads_total",
                        source="kubernetes", result="error")  # fmt: skip
        generation = app.evaluator.revocation.lists.generation  # type: ignore[union-attr]
        with capture_logs() as logs:
            # an entry with a typo: the whole version is rejected
            kube.store.put_configmap(NAMESPACE, CONFIGMAP, {"revoked.json": json.dumps(
                {"revoked": [{"jti": "t-2"}, {"jit": "t-1"}]})})  # fmt: skip
            assert wait_for(
                lambda: sample(scrape(app), "extauthz_revocation_reloads_total",
                               source="kubernetes", result="error") > errors, 2,
            )  # fmt: skip
        assert app.evaluator.revocation.lists.generation == generation  # type: ignore[union-attr]
        assert client.check(revoked)["metadata"]["reason"] == "revoked"
        assert client.check(other)["decision"] == "allow"
        rejected = [x for x in logs if x.get("event") == "revocation_list_rejected"]
        assert "revoked[1]" in rejected[0]["error"]
        # the ConfigMap is deleted: its last list stays in force, the service stays ready
        kube.store.delete_configmap(NAMESPACE, CONFIGMAP)
        time.sleep(0.5)
        assert client.check(revoked)["metadata"]["reason"] == "revoked"
        assert client.status() == health_pb2.HealthCheckResponse.SERVING
        # clearing means applying an empty list
        put_list(kube)
        assert wait_for(lambda: client.check(revoked)["decision"] == "allow", 1.0)
    finally:
        client.channel.close()
