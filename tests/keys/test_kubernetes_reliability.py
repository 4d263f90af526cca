"""KubernetesSource against an API server that fails the way real ones do.

Behaviours:
- an etcd restore puts the store behind the source's resourceVersion: the watch gets
  ``504`` "Too large resource version", and the source relists instead of asking again;
- a restart that loses the watch history (``410``) relists;
- ``429``/``503`` with ``Retry-After`` wait that long (bounded) before the next request;
- a single failed request is a retry, not an outage: no ``failed``, ``source_up`` stays
  1, no ERROR log; a failed retry is the outage, reported once;
- a silent peer (connection held open, nothing sent) is replaced; every connection
  carries TCP keepalive that finds a dead peer within 30 s;
- label mode lists in pages (``limit``/``continue``) and restarts a list whose
  ``continue`` token expired; names mode warns above 16 names;
- in cluster over TLS, a rotated service account token is read again at once;
- RBAC: a Role with ``resourceNames`` allows names mode (field-selected list and watch)
  and nothing else;
- a step of the watcher, driven with an injected clock, returns the wait it would make.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from kubernetes import client
from structlog.testing import capture_logs

from extauthz import metrics
from extauthz.keys.keyset import DECRYPTION, KeyStore
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.kubernetes import (
    MANY_NAMES,
    KubernetesSource,
    load_client_configuration,
    new_api_client,
)
from extauthz.keys.sources.net import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL
from tests.fakekube import FakeKube, Rule

NS = "auth"
SA_USER = "system:serviceaccount:auth:extauthz"


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait (condition with a deadline) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def source_up() -> float | None:
    return metrics.REGISTRY.get_sample_value("extauthz_key_source_up", {"source": "kubernetes"})


# -- resourceVersions the server cannot serve ---------------------------------------------


def test_an_etcd_restore_answers_504_and_the_source_relists(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    ready()
    backup = kube.store.snapshot()  # the Secret holds k1
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})
    kube.store.restore(backup)  # etcd restored: back to k1, resourceVersion behind ours
    since = time.monotonic()
    kube.close_watches()
    recorder.wait_kids({"k1"}, after=2)
    after = kube.log(since)
    assert after[0].is_watch
    assert after[0].status == 504
    assert after[0].note == "too-large"
    assert after[1].is_list, "a 504 on the watch relists; it never asks for that version again"
    assert kube.wait_for_watches(1)
    assert int(kube.log(since)[-1].query["resourceVersion"]) <= kube.store.resource_version


def test_a_restart_that_loses_the_history_relists(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    ready()
    kube.store.put_secret("elsewhere", "x", {"a": b"b"})  # moves the resourceVersion on
    since = time.monotonic()
    kube.restart(down_for=0.1, lose_history=True)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})
    after = kube.log(since)
    assert after[0].note == "expired-event"  # 410 Gone as an ERROR event
    assert any(r.is_list for r in after)
    assert kube.wait_for_watches(1)


# -- throttling -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(kube: FakeKube, ready: Any, code: int) -> None:
    ready()
    kube.fail_requests(1, code, lambda r: r.is_watch, retry_after=1)
    since = time.monotonic()
    kube.close_watches()
    throttled = kube.wait_requests(lambda r: r.at >= since and r.status == code)
    assert throttled
    following = kube.wait_requests(lambda r: r.at > throttled[0].at, timeout=5)
    assert following, "no request after the throttled one"
    assert following[0].at - throttled[0].at >= 0.95  # FAST backoff alone would be ~0.05 s


# -- transient failures are not outages ------------------------------------------------


def test_a_single_failed_request_is_a_retry_not_an_outage(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    store = KeyStore()
    source = make_source(["s"])
    recorder.inner = store.attach(DECRYPTION, source)
    source.start(recorder)
    assert store.wait_ready(5)
    assert kube.wait_for_watches(1)
    with capture_logs() as logs:
        kube.fail_requests(1, 500, lambda r: r.is_watch)
        kube.close_watches()
        assert len(kube.wait_requests(lambda r: r.is_watch and r.status == 200, count=2)) >= 2
        assert kube.wait_for_watches(1)
    assert recorder.failures == []
    assert source_up() == 1
    assert not [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in logs if e["event"].startswith("kubernetes_api")] == [
        "kubernetes_api_retry"
    ]

    with capture_logs() as logs:
        kube.fail_requests(3, 500, lambda r: r.is_watch or r.is_list)
        kube.close_watches()
        assert eventually(lambda: len(recorder.failures) == 1)
        assert source_up() == 0
        assert eventually(lambda: source_up() == 1)  # the fourth request works
    assert len(recorder.failures) == 1, "an outage is reported once"
    assert any(e["event"] == "kubernetes_api_error" and e["log_level"] == "error" for e in logs)


# -- dead and silent connections --------------------------------------------------------


def _watch_socket(source: KubernetesSource) -> socket.socket:
    stream = source.watcher.streams[0]
    assert eventually(lambda: stream.response is not None)
    sock = stream.response.connection.sock
    assert isinstance(sock, socket.socket)
    return sock


def test_every_api_connection_carries_tcp_keepalive(ready: Any) -> None:
    source = ready(watch_timeout_seconds=30)
    sock = _watch_socket(source)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
    assert KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT <= 30


def test_a_silent_peer_is_replaced_and_the_source_recovers(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    """Scaled-down timeouts; the default ones are proven in the slow test below."""
    ready(watch_timeout_seconds=1, read_timeout=1.5, list_timeout=1.0)
    kube.outage("hang")  # open watches go quiet; new requests are read and never answered
    silent = time.monotonic()
    hung = kube.wait_requests(lambda r: r.at > silent and r.note == "hung", timeout=5)
    assert hung, "the silent watch was never replaced"
    assert hung[0].at - silent < 1.5 + 0.5
    kube.recover()
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"}, timeout=10)


@pytest.mark.slow
def test_with_default_timeouts_a_silent_peer_is_replaced_within_a_minute(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    source = make_source(["s"], watch_timeout_seconds=40, read_timeout=None)
    source.start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)
    kube.outage("hang")
    silent = time.monotonic()
    hung = kube.wait_requests(lambda r: r.at > silent and r.note == "hung", timeout=65)
    assert hung, "a silent connection was kept for more than a minute"
    assert hung[0].at - silent < 60
    kube.recover()
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"}, timeout=10)


# -- label mode at scale, names mode limits ----------------------------------------------


def test_label_mode_lists_in_pages_and_publishes_once(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    label = {"extauthz/provider": "idp"}
    kids = [f"p{i}" for i in range(25)]
    for kid in kids:
        keys.enc(kid)
        kube.store.put_secret(NS, f"key-{kid}", {"jwk.json": keys.jwk(kid)}, labels=label)
    source = make_source(label_selector="extauthz/provider=idp", page_size=10)
    source.start(recorder)
    recorder.wait_kids(set(kids))
    lists = [r for r in kube.log() if r.is_list]
    assert [r.query.get("limit") for r in lists] == ["10", "10", "10"]
    assert ["continue" in r.query for r in lists] == [False, True, True]
    assert len(recorder.published) == 1, "one publish for the whole list"


def test_an_expired_continue_token_restarts_the_list(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    label = {"extauthz/provider": "idp"}
    kids = [f"q{i}" for i in range(5)]
    for kid in kids:
        keys.enc(kid)
        kube.store.put_secret(NS, f"key-{kid}", {"jwk.json": keys.jwk(kid)}, labels=label)
    kube.fail_requests(1, 410, lambda r: r.is_list and "continue" in r.query)
    source = make_source(label_selector="extauthz/provider=idp", page_size=2)
    source.start(recorder)
    recorder.wait_kids(set(kids))
    lists = [r for r in kube.log() if r.is_list]
    assert lists[1].status == 410
    assert "continue" not in lists[2].query, "the list starts over"


def test_many_names_warn_and_point_to_label_mode(make_source: Any) -> None:
    with capture_logs() as logs:
        make_source([f"s{i}" for i in range(MANY_NAMES + 1)])
        make_source([f"t{i}" for i in range(MANY_NAMES)])
    warnings = [e for e in logs if e["event"] == "kubernetes_many_names"]
    assert len(warnings) == 1
    assert warnings[0]["names"] == MANY_NAMES + 1
    assert "label_selector" in warnings[0]["detail"]


# -- in cluster: TLS, bearer token, rotation, RBAC ----------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cluster(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[FakeKube, Path, dict[str, str]]]:
    """An HTTPS fake API server with bearer tokens, and a pod's service account mount."""
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    ca.cert_pem.write_to_path(str(sa / "ca.crt"))
    (sa / "namespace").write_text(NS)
    (sa / "token").write_text("token-1")
    with FakeKube(
        bookmark_interval=None, tls=(str(cert_file), str(key_file)), tokens={"token-1": SA_USER}
    ) as server:
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(server.port),
        }
        yield server, sa, environ


clients: list[client.ApiClient] = []


def in_cluster_source(
    sa: Path, environ: dict[str, str], made: list[KubernetesSource], **kwargs: Any
) -> KubernetesSource:
    api = new_api_client(load_client_configuration(environ, sa))
    clients.append(api)
    kwargs.setdefault("backoff", Backoff(initial=0.05, factor=2.0, cap=0.2))
    source = KubernetesSource(
        None, api_client=api, serviceaccount_dir=sa, watch_timeout_seconds=30, **kwargs
    )
    made.append(source)
    return source


@pytest.fixture
def made() -> Iterator[list[KubernetesSource]]:
    sources: list[KubernetesSource] = []
    yield sources
    for source in sources:
        source.stop()
    while clients:
        clients.pop().close()


def rotate_token(sa: Path, token: str) -> None:
    """Replace the token file in one rename, as the kubelet's symlink swap does."""
    fresh = sa / ".token.new"
    fresh.write_text(token)
    os.replace(fresh, sa / "token")


def test_a_rotated_service_account_token_is_read_again_at_once(
    cluster: tuple[FakeKube, Path, dict[str, str]],
    made: list[KubernetesSource],
    recorder: Any,
    keys: Any,
) -> None:
    kube, sa, environ = cluster
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    in_cluster_source(sa, environ, made, secrets=["s"]).start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)
    assert {r.user for r in kube.log()} == {SA_USER}
    assert kube.url.startswith("https://")

    rotate_token(sa, "token-2")
    kube.add_token("token-2", SA_USER)
    kube.revoke_token("token-1")  # the old token expired
    since = time.monotonic()
    kube.close_watches()
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})
    after = kube.log(since)
    assert after
    assert all(r.status != 401 for r in after), "the new token was used at once"


def test_rbac_resource_names_allow_names_mode_and_nothing_else(
    cluster: tuple[FakeKube, Path, dict[str, str]],
    made: list[KubernetesSource],
    recorder: Any,
    keys: Any,
) -> None:
    kube, sa, environ = cluster
    kube.roles[SA_USER] = [Rule.of("get,list,watch", "secrets", "a,b")]
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2")})
    in_cluster_source(sa, environ, made, secrets=["a", "b"]).start(recorder)
    recorder.wait_kids({"k1", "k2"})
    assert all(r.status in (200, 0) for r in kube.log())

    store = KeyStore()
    source = in_cluster_source(sa, environ, made, label_selector="extauthz/provider=idp")
    source.start(store.attach(DECRYPTION, source))
    forbidden = kube.wait_requests(lambda r: r.note == "forbidden" and r.status == 403, count=2)
    assert len(forbidden) >= 2
    assert all(r.is_list and "fieldSelector" not in r.query for r in forbidden)
    assert not store.ready, "a source the Role does not allow never turns ready"


# -- stepping with an injected clock ---------------------------------------------------------


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_step_returns_its_wait_without_sleeping(
    kube: FakeKube, k8s_client: client.ApiClient, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    backoff = Backoff(initial=4.0, factor=2.0, cap=30.0)
    source = KubernetesSource(
        NS, ["s"], api_client=k8s_client, clock=FrozenClock(), backoff=backoff,
        watch_timeout_seconds=30, connect_timeout=1.0, list_timeout=2.0,
    )  # fmt: skip
    source._sink = recorder  # white-box: bind without threads
    source.watcher.bind(source)
    stream = source.watcher.streams[0]
    kube.watch_cap = 0.0  # every watch ends at once: no progress by the frozen clock
    began = time.monotonic()
    first = source.watcher.step(stream)  # lists, publishes, watch ends at once
    second = source.watcher.step(stream)
    assert recorder.kids == {"k1"}
    assert 2.0 <= first <= 4.0  # backoff.delay(0): half-jittered 4 s
    assert 4.0 <= second <= 8.0
    kube.fail_requests(1, 429, lambda r: r.is_watch, retry_after=25)
    assert source.watcher.step(stream) >= 25.0  # Retry-After wins over the backoff
    kube.fail_requests(1, 429, lambda r: r.is_watch, retry_after=600)
    assert source.watcher.step(stream) <= 60.0 + 30.0  # honoured up to 60 s only
    assert time.monotonic() - began < 3.0, "nothing slept"
