"""The Kubernetes list source on the fake API server, through the real client: a list
spread over several ConfigMaps selected by label, Secrets by name, an object that stops
matching keeps its list, a named object that is missing keeps the store not ready."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.kubernetes import ObjectWatcher, new_api_client
from extauthz.revocation.kubernetes import KubernetesListSource
from extauthz.revocation.store import BY_JTI, RevocationStore
from tests.fakekube import FakeKube
from tests.service_client import wait_for

NS = "auth"
ISS = "https://idp.example.test"
LABEL = {"extauthz/revocation": "true"}
FAST = Backoff(initial=0.05, factor=2.0, cap=0.2)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=None) as server:
        yield server


@pytest.fixture
def start(kube: FakeKube) -> Iterator[Callable[..., RevocationStore]]:
    api = new_api_client(client.Configuration(host=kube.url))
    sources: list[KubernetesListSource] = []

    def make(kind: str = "configmap", names: tuple[str, ...] = (),
             selector: str | None = None) -> RevocationStore:  # fmt: skip
        watcher = ObjectWatcher(
            kind, NS, names, selector, api_client=api,  # type: ignore[arg-type]
            watch_timeout_seconds=30, connect_timeout=1.0, list_timeout=2.0, backoff=FAST,
        )  # fmt: skip
        source = KubernetesListSource(NS, watcher=watcher)
        store = RevocationStore()
        source.start(store.attach(source))
        sources.append(source)
        return store

    yield make
    for source in sources:
        source.stop()
    api.close()


def doc(*jtis: str) -> str:
    return json.dumps({"revoked": [{"jti": j} for j in jtis]})


def revoked(store: RevocationStore, jti: str) -> bool:
    return store.lists.match(b"\0" * 32, ISS, jti, "", None, 0.0, 0) == BY_JTI


def wait(store: RevocationStore, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    generation = store.lists.generation
    while not predicate():
        if not store.wait_generation(generation, timeout):
            return predicate()
        generation = store.lists.generation
    return True


def reloads(result: str) -> float:
    from extauthz import metrics

    value: Any = metrics.REGISTRY.get_sample_value(
        "extauthz_revocation_reloads_total", {"source": "kubernetes", "result": result}
    )
    return float(value or 0.0)


def test_a_list_spread_over_configmaps_selected_by_label(
    kube: FakeKube, start: Callable[..., RevocationStore]
) -> None:
    kube.store.put_configmap(NS, "revoked-1", {"revoked.json": doc("a", "b")}, labels=LABEL)
    kube.store.put_configmap(NS, "revoked-2", {"revoked.json": doc("c")}, labels=LABEL)
    kube.store.put_configmap(NS, "unrelated", {"revoked.json": doc("x")})
    store = start(selector="extauthz/revocation=true")
    assert store.wait_ready(5)
    assert wait(store, lambda: revoked(store, "c"))
    assert [j for j in "abcx" if revoked(store, j)] == ["a", "b", "c"]
    kube.store.put_configmap(NS, "revoked-3", {"more.yaml": "revoked: [{jti: d}]\n"}, labels=LABEL)
    assert wait(store, lambda: revoked(store, "d"))
    # a ConfigMap that stops matching is treated as deleted: its list stays in force
    errors = reloads("error")
    kube.store.put_configmap(NS, "revoked-1", {"revoked.json": doc("a", "b")})
    assert wait_for(lambda: reloads("error") > errors, 2)
    assert revoked(store, "a")


def test_secrets_by_name(kube: FakeKube, start: Callable[..., RevocationStore]) -> None:
    store = start(kind="secret", names=("revoked-secret",))
    assert not store.wait_ready(0.5)
    assert store.pending() == ["revocation kubernetes auth/revoked-secret: revoked-secret missing"]
    kube.store.put_secret(NS, "revoked-secret", {"revoked.json": doc("s")})
    assert store.wait_ready(5)
    assert wait(store, lambda: revoked(store, "s"))


def test_a_bad_version_keeps_the_last_good_list(
    kube: FakeKube, start: Callable[..., RevocationStore]
) -> None:
    kube.store.put_configmap(NS, "revoked", {"revoked.json": doc("a")})
    store = start(names=("revoked",))
    assert store.wait_ready(5)
    errors = reloads("error")
    generation = store.lists.generation
    kube.store.put_configmap(NS, "revoked", {"revoked.json": '{"revoked": [{"jti": 5}]}'})
    assert wait_for(lambda: reloads("error") > errors, 2)
    assert store.lists.generation == generation
    assert revoked(store, "a")
    kube.store.put_configmap(NS, "revoked", {"revoked.json": doc("b")})
    assert wait(store, lambda: revoked(store, "b"))
    assert not revoked(store, "a")


def test_an_api_outage_keeps_the_list_and_counts_an_error(
    kube: FakeKube, start: Callable[..., RevocationStore]
) -> None:
    kube.store.put_configmap(NS, "revoked", {"revoked.json": doc("a")})
    store = start(names=("revoked",))
    assert store.wait_ready(5)
    errors = reloads("error")
    kube.outage("refuse")
    try:
        assert wait_for(lambda: reloads("error") > errors, 5)
        assert revoked(store, "a")
        assert store.ready
    finally:
        kube.recover()
    kube.store.put_configmap(NS, "revoked", {"revoked.json": doc("a", "b")})
    assert wait(store, lambda: revoked(store, "b"), 10)
