"""Fixtures for the Kubernetes key source: a fake API server, the real client, keys.

The fake API server (``tests/fakekube``) speaks real HTTP on loopback; the source talks
to it through the real ``kubernetes`` client built exactly as in production
(:func:`new_api_client`), only the Configuration's ``host`` points at the fake.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import trustme
from joserfc.jwk import ECKey, RSAKey
from kubernetes import client

from extauthz.keys.material import Key
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.kubernetes import KubernetesSource, new_api_client
from tests.fakekube import FakeKube
from tests.jwks_server import JwksServer, signing_key

NAMESPACE = "auth"
#: retries come quickly in tests; the schedule is data, the logic is the same
FAST = Backoff(initial=0.05, factor=2.0, cap=0.2)


class KeyRecorder:
    """A ``KeySink`` that records (monotonic time, value) of every call, then forwards
    to ``inner`` (a KeyStore sink) when given."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.published: list[tuple[float, list[Key]]] = []
        self.failures: list[tuple[float, BaseException]] = []
        self.missings: list[tuple[float, list[str]]] = []
        self._cond = threading.Condition()

    def publish(self, keys: Sequence[Key]) -> None:
        if self.inner is not None:
            self.inner.publish(keys)
        with self._cond:
            self.published.append((time.monotonic(), list(keys)))
            self._cond.notify_all()

    def failed(self, error: BaseException) -> None:
        if self.inner is not None:
            self.inner.failed(error)
        with self._cond:
            self.failures.append((time.monotonic(), error))
            self._cond.notify_all()

    def missing(self, names: Sequence[str]) -> None:
        if self.inner is not None:
            self.inner.missing(names)
        with self._cond:
            self.missings.append((time.monotonic(), list(names)))
            self._cond.notify_all()

    @property
    def kids(self) -> set[str] | None:
        """Kids of the last publish (None before the first)."""
        with self._cond:
            return {k.kid for k in self.published[-1][1]} if self.published else None

    def wait(self, predicate: Callable[[KeyRecorder], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_kids(self, kids: set[str], after: int = 0, timeout: float = 5.0) -> float:
        """Time of the first publish (index >= ``after``) whose kids are exactly ``kids``."""

        def find() -> float | None:
            for at, keys in self.published[after:]:
                if {k.kid for k in keys} == kids:
                    return at
            return None

        with self._cond:
            self._cond.wait_for(lambda: find() is not None, timeout)
            found = find()
        assert found is not None, f"never published {kids}; last: {self.kids}"
        return found


class KeyFactory:
    """Keys generated once per session, by kid (RSA-OAEP-256 enc, or ES256 sig)."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}

    def enc(self, kid: str) -> RSAKey:
        if kid not in self._keys:
            self._keys[kid] = RSAKey.generate_key(
                2048, parameters={"kid": kid, "use": "enc", "alg": "RSA-OAEP-256"}, private=True
            )
        key: RSAKey = self._keys[kid]
        return key

    def sig(self, kid: str) -> ECKey:
        if kid not in self._keys:
            self._keys[kid] = ECKey.generate_key(
                "P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"}, private=True
            )
        key: ECKey = self._keys[kid]
        return key

    def jwks(self, *kids: str, private: bool = True) -> bytes:
        """A JWKS document of the (enc or sig) keys named."""
        keys = [dict(self._keys[k].as_dict(private=private)) for k in kids]
        return json.dumps({"keys": keys}).encode()

    def jwk(self, kid: str, private: bool = True) -> bytes:
        return json.dumps(dict(self._keys[kid].as_dict(private=private))).encode()


@pytest.fixture(scope="session")
def keys() -> KeyFactory:
    factory = KeyFactory()
    for kid in ("k1", "k2", "k3"):
        factory.enc(kid)
    return factory


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    """A running fake API server; bookmarks only at watch timeouts unless a test asks."""
    with FakeKube(bookmark_interval=None) as server:
        yield server


@pytest.fixture
def k8s_client(kube: FakeKube) -> Iterator[client.ApiClient]:
    """The real client, built as in production, pointed at the fake server."""
    api = new_api_client(client.Configuration(host=kube.url))
    yield api
    api.close()


@pytest.fixture
def make_source(
    k8s_client: client.ApiClient,
) -> Iterator[Callable[..., KubernetesSource]]:
    """Build sources with short timeouts; every one is stopped after the test."""
    made: list[KubernetesSource] = []

    def make(
        secrets: Sequence[str] = (), label_selector: str | None = None, **kwargs: Any
    ) -> KubernetesSource:
        kwargs.setdefault("api_client", k8s_client)
        kwargs.setdefault("watch_timeout_seconds", 30)
        kwargs.setdefault("connect_timeout", 1.0)
        kwargs.setdefault("list_timeout", 2.0)
        kwargs.setdefault("backoff", FAST)
        namespace = kwargs.pop("namespace", NAMESPACE)
        source = KubernetesSource(namespace, secrets, label_selector, **kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.stop()


@pytest.fixture
def recorder() -> KeyRecorder:
    return KeyRecorder()


@pytest.fixture
def ready(kube: FakeKube, make_source: Any, recorder: Any, keys: Any) -> Callable[..., Any]:
    """Start a names-mode source on Secret ``s`` (holding k1) and wait until it watches."""

    def start(**kwargs: Any) -> Any:
        kube.store.put_secret(NAMESPACE, "s", {"jwks.json": keys.jwks("k1")})
        source = make_source(["s"], **kwargs)
        source.start(recorder)
        recorder.wait_kids({"k1"})
        assert kube.wait_for_watches(1)
        return source

    return start


# -- an identity provider serving a JWKS over TLS (JWKS source tests) --


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def key_a() -> tuple[Any, dict[str, Any]]:
    return signing_key("key-a", "ES256")


@pytest.fixture
def idp(ca: trustme.CA, key_a: tuple[Any, dict[str, Any]]) -> Iterator[JwksServer]:
    with JwksServer(ca) as server:
        server.set_keys([key_a[1]])
        server.cache_control = "max-age=3600"
        yield server
