"""ObjectWatcher, the generic list+watch under the key source (and the revocation lists).

Behaviours:
- ConfigMaps by name: "initial list done" with the missing name, then each version of
  the object with its ``data`` as UTF-8 bytes and ``binaryData`` decoded, then a delete
  (the name is missing again); only ConfigMap requests are made;
- ConfigMaps by label: objects that start and stop matching;
- Secrets: ``data`` base64-decoded;
- "initial list done" comes only once every named stream has listed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from extauthz.errors import KeySourceError
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.kubernetes import ObjectWatcher, WatchedObject, WatchStatus
from tests.fakekube import FakeKube

NS = "auth"
FAST = Backoff(initial=0.05, factor=2.0, cap=0.2)


class Recorder:
    """A WatchHandler that records every call in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.cond = threading.Condition()

    def _add(self, call: tuple[str, Any]) -> None:
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    def changed(self, obj: WatchedObject) -> None:
        self._add(("changed", obj))

    def deleted(self, name: str) -> None:
        self._add(("deleted", name))

    def settled(self, status: WatchStatus) -> None:
        self._add(("settled", status))

    def api_failed(self, error: KeySourceError) -> None:
        self._add(("failed", error))

    def api_recovered(self) -> None:
        self._add(("recovered", None))

    def wait(self, predicate: Callable[[list[tuple[str, Any]]], bool]) -> list[tuple[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.calls), 5), self.calls
            return list(self.calls)

    def objects(self) -> list[WatchedObject]:
        with self.cond:
            return [value for kind, value in self.calls if kind == "changed"]

    def statuses(self) -> list[WatchStatus]:
        with self.cond:
            return [value for kind, value in self.calls if kind == "settled"]


@pytest.fixture
def watchers(k8s_client: client.ApiClient) -> Iterator[Callable[..., ObjectWatcher]]:
    made: list[ObjectWatcher] = []

    def make(kind: Any, names: tuple[str, ...] = (), selector: str | None = None) -> ObjectWatcher:
        watcher = ObjectWatcher(
            kind, NS, names, selector, api_client=k8s_client, watch_timeout_seconds=30,
            connect_timeout=1.0, list_timeout=2.0, backoff=FAST,
        )  # fmt: skip
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.stop()


def test_a_named_configmap_missing_then_created_changed_and_deleted(
    kube: FakeKube, watchers: Any
) -> None:
    handler = Recorder()
    watchers("configmap", ("extauthz-revoked",)).start(handler)
    handler.wait(lambda calls: any(kind == "settled" for kind, _ in calls))
    assert handler.statuses()[0] == WatchStatus(listed=True, missing=("extauthz-revoked",))
    assert kube.wait_for_watches(1)

    kube.store.put_configmap(
        NS, "extauthz-revoked", {"revoked.json": '{"revoked": ["é"]}'}, binary_data={"b": b"\x00"}
    )
    handler.wait(lambda calls: len([c for c in calls if c[0] == "changed"]) == 1)
    obj = handler.objects()[0]
    assert obj.name == "extauthz-revoked"
    assert obj.data == {"revoked.json": '{"revoked": ["é"]}'.encode(), "b": b"\x00"}
    assert obj.error is None
    assert handler.wait(lambda c: c[-1][0] == "settled")[-1][1].missing == ()

    kube.store.delete_configmap(NS, "extauthz-revoked")
    calls = handler.wait(lambda c: ("deleted", "extauthz-revoked") in c and c[-1][0] == "settled")
    assert calls[-1][1] == WatchStatus(listed=True, missing=("extauthz-revoked",))
    for request in kube.log():
        assert request.path == f"/api/v1/namespaces/{NS}/configmaps"
        assert request.query["fieldSelector"] == "metadata.name=extauthz-revoked"


def test_configmaps_by_label_follow_matching(kube: FakeKube, watchers: Any) -> None:
    label = {"extauthz/revocation": "true"}
    kube.store.put_configmap(NS, "list-1", {"revoked.json": "{}"}, labels=label)
    kube.store.put_configmap(NS, "other", {"x": "y"})
    handler = Recorder()
    watchers("configmap", selector="extauthz/revocation=true").start(handler)
    handler.wait(lambda c: any(kind == "settled" for kind, _ in c))
    assert [o.name for o in handler.objects()] == ["list-1"]
    assert handler.objects()[0].labels == label
    assert kube.wait_for_watches(1)
    kube.store.put_configmap(NS, "other", {"x": "y"}, labels=label)
    handler.wait(lambda c: [o.name for o in handler.objects()] == ["list-1", "other"])
    kube.store.put_configmap(NS, "list-1", {"revoked.json": "{}"})  # label removed
    handler.wait(lambda c: ("deleted", "list-1") in c)


def test_secrets_are_delivered_decoded(kube: FakeKube, watchers: Any) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": b'{"keys": []}'})
    handler = Recorder()
    watchers("secret", ("s",)).start(handler)
    handler.wait(lambda c: any(kind == "changed" for kind, _ in c))
    assert handler.objects()[0].data == {"jwks.json": b'{"keys": []}'}


def test_initial_list_done_waits_for_every_name(kube: FakeKube, watchers: Any) -> None:
    kube.store.put_configmap(NS, "a", {"k": "v"})
    kube.fail_requests(
        2, 500, lambda r: r.is_list and r.query.get("fieldSelector") == "metadata.name=b"
    )
    handler = Recorder()
    watcher = watchers("configmap", ("a", "b"))
    watcher.start(handler)
    calls = handler.wait(lambda c: any(kind == "settled" and v.listed for kind, v in c))
    first_listed = next(v for kind, v in calls if kind == "settled" and v.listed)
    assert first_listed.missing == ("b",)
    assert next(v.listed for kind, v in calls if kind == "settled") is False  # a listed alone
