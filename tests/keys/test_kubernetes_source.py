"""KubernetesSource against the fake API server, through the real ``kubernetes`` client.

Behaviours (the rotation contract and the source's own):
- the first list publishes every JWK / JWKS / PEM entry; a PEM key's kid is its
  RFC 7638 thumbprint; other entries are ignored with one log line per change;
- an update is published within 1 s of the API write; old and new overlap while
  both are present; a removed key is gone from the very next publish;
- an invalid update keeps that Secret's last good keys and calls ``failed``;
- a deleted Secret (or one that stops matching the selector) takes its keys away;
- names mode: one list+watch per name, each scoped by ``fieldSelector``; label
  mode: one list+watch with the selector; never a cluster-wide call;
- the first publish comes only after every name's / the selector's first list;
- the server's watch timeout re-watches from the last resourceVersion (bookmarks
  included) without a relist.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from kubernetes import client
from structlog.testing import capture_logs

from extauthz.errors import KeyMaterialError, KeySourceError
from extauthz.keys.sources.kubernetes import (
    KubernetesSource,
    load_client_configuration,
    new_api_client,
)
from tests.fakekube import FakeKube

NS = "auth"


def _pem_key() -> tuple[bytes, str]:
    """A PEM EC private key and its RFC 7638 thumbprint."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, ECKey.import_key(private).thumbprint()


def _kids(keys: Any) -> set[str]:
    return {k.kid for k in keys}


# -- loading ----------------------------------------------------------------------------


def test_first_list_loads_jwk_and_jwks_entries_and_ignores_the_rest(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(
        NS,
        "extauthz-keys",
        {
            "jwks.json": keys.jwks("k1", "k2"),
            "single.jwk": keys.jwk("k3"),
            "README": b"rotate me with extauthz keygen\n",
        },
    )
    with capture_logs() as logs:
        make_source(["extauthz-keys"]).start(recorder)
        assert recorder.wait(lambda r: r.published)
    assert recorder.kids == {"k1", "k2", "k3"}
    assert not recorder.failures
    ignored = [e for e in logs if e["event"] == "kubernetes_entry_ignored"]
    assert [e["entry"] for e in ignored] == ["README"]


def test_a_pem_entry_is_loaded_with_its_thumbprint_as_kid(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    pem, thumbprint = _pem_key()
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1"), "legacy.pem": pem})
    make_source(["s"]).start(recorder)
    recorder.wait_kids({"k1", thumbprint})
    pem_key = next(k for k in recorder.published[-1][1] if k.origin.endswith("[legacy.pem]"))
    assert pem_key.kid == pem_key.thumbprint == thumbprint  # RFC 7638
    assert not recorder.failures


def test_ignored_entries_are_logged_once_per_change_not_per_relist(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1"), "notes.txt": b"hello"})
    with capture_logs() as logs:
        make_source(["s"]).start(recorder)
        assert recorder.wait(lambda r: r.published)
        assert kube.wait_for_watches(1)
        lists = sum(1 for r in kube.log() if r.is_list)
        kube.error_watches(410)  # forces a relist of the same, unchanged Secret
        assert kube.wait_for_watches(1)
        assert sum(1 for r in kube.log() if r.is_list) == lists + 1
        kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1", "k2"), "notes.txt": b"hello"})
        recorder.wait_kids({"k1", "k2"})
    ignored = [e for e in logs if e["event"] == "kubernetes_entry_ignored"]
    assert len(ignored) == 2  # the first version and the change; not the relist
    assert len(recorder.published) == 2  # an unchanged relist publishes nothing


# -- rotation semantics -------------------------------------------------------------------


def test_an_update_is_published_within_one_second_of_the_api_write(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    make_source(["s"]).start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)
    before = len(recorder.published)
    written = time.monotonic()
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    published = recorder.wait_kids({"k2"}, after=before)
    assert published - written < 1.0


def test_old_and_new_overlap_and_a_removed_key_disappears_at_once(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    make_source(["s"]).start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)

    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1", "k2")})
    recorder.wait_kids({"k1", "k2"})
    overlap = len(recorder.published)

    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"}, after=overlap)
    # every publish is a full list: from the very next one, k1 is simply not there
    assert [_kids(keys) for _, keys in recorder.published[overlap - 1 :]] == [
        {"k1", "k2"},
        {"k2"},
    ]


@pytest.mark.parametrize(
    ("entry", "bad"),
    [
        ("jwks.json", b'{"keys": [ {"kty": "RSA"'),  # truncated JSON
        ("jwks.json", b'{"keys": [{"kty": "RSA", "n": "AQAB"}]}'),  # not a usable key
        ("jwks.json", b'{"kty": "XYZ", "k": "c2VjcmV0"}'),  # unsupported key type
        ("key.pem", b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"),
    ],
    ids=["bad-json", "bad-rsa-key", "bad-kty", "bad-pem"],
)
def test_an_invalid_update_keeps_that_secrets_last_good_keys(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any, entry: str, bad: bytes
) -> None:
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2")})
    make_source(["a", "b"]).start(recorder)
    recorder.wait_kids({"k1", "k2"})
    assert kube.wait_for_watches(2)
    published = len(recorder.published)

    kube.store.put_secret(NS, "a", {entry: bad})
    assert recorder.wait(lambda r: r.failures)
    assert isinstance(recorder.failures[0][1], KeyMaterialError)
    assert len(recorder.published) == published  # nothing new: last good keys stay
    assert recorder.kids == {"k1", "k2"}

    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k3")})  # the fix is taken in
    recorder.wait_kids({"k2", "k3"}, after=published)


def test_one_bad_entry_rejects_the_whole_new_version_of_a_secret(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "a", {"old.json": keys.jwk("k1")})
    make_source(["a"]).start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)
    # an operator replaces old.json by new.json but new.json is broken: k1 must stay
    kube.store.put_secret(NS, "a", {"new.json": b"{oops", "other.json": keys.jwk("k2")})
    assert recorder.wait(lambda r: r.failures)
    assert recorder.kids == {"k1"}


def test_a_deleted_secret_removes_its_keys(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2")})
    make_source(["a", "b"]).start(recorder)
    recorder.wait_kids({"k1", "k2"})
    assert kube.wait_for_watches(2)
    kube.store.delete_secret(NS, "a")
    recorder.wait_kids({"k2"})
    kube.store.delete_secret(NS, "b")
    recorder.wait_kids(set())


def test_an_invalid_first_version_is_not_ready_until_fixed(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "a", {"jwks.json": b"not json"})
    make_source(["a"]).start(recorder)
    assert recorder.wait(lambda r: r.failures)
    assert kube.wait_for_watches(1)
    assert recorder.published == []  # nothing usable: stay not ready (fail closed)
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    recorder.wait_kids({"k1"})


def test_a_missing_secret_loads_as_empty_and_is_picked_up_when_created(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    make_source(["later"]).start(recorder)
    recorder.wait_kids(set())
    assert kube.wait_for_watches(1)
    kube.store.put_secret(NS, "later", {"jwks.json": keys.jwks("k1")})
    recorder.wait_kids({"k1"})


# -- readiness ----------------------------------------------------------------------------


def test_first_publish_waits_for_the_first_list_of_every_name(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2")})
    kube.fail_requests(
        4, 500, lambda r: r.is_list and r.query.get("fieldSelector") == "metadata.name=b"
    )
    make_source(["a", "b"]).start(recorder)
    assert kube.wait_for_watches(1)  # a is listed and watching...
    assert recorder.published == []  # ...but nothing is published while b cannot list
    recorder.wait_kids({"k1", "k2"})
    assert len(recorder.published) == 1  # the first publish already holds both
    failed_lists = [r for r in kube.log() if r.status == 500]
    assert len(failed_lists) == 4


# -- least privilege --------------------------------------------------------------------


def test_names_mode_makes_only_namespaced_field_selected_list_and_watch_calls(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2")})
    kube.store.put_secret(NS, "unrelated", {"jwks.json": keys.jwks("k3")})
    kube.store.put_secret("other", "a", {"jwks.json": keys.jwks("k3")})
    make_source(["a", "b"]).start(recorder)
    recorder.wait_kids({"k1", "k2"})
    assert kube.wait_for_watches(2)
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2", "k3")})
    recorder.wait_kids({"k1", "k2", "k3"})

    log = kube.log()
    assert log, "no request seen"
    for request in log:
        assert request.method == "GET"
        assert request.path == f"/api/v1/namespaces/{NS}/secrets"  # namespaced, list/watch only
        assert request.query["fieldSelector"] in ("metadata.name=a", "metadata.name=b")
        assert "labelSelector" not in request.query
    per_name = {
        name: [r for r in log if r.query["fieldSelector"] == f"metadata.name={name}"]
        for name in ("a", "b")
    }
    for requests in per_name.values():  # one list, then one watch from its resourceVersion
        assert [r.is_watch for r in requests] == [False, True]
        watch = requests[1].query
        assert watch["allowWatchBookmarks"] == "true"
        assert 22 <= int(watch["timeoutSeconds"]) <= 30  # 75-100 % of the configured 30
        assert int(watch["resourceVersion"]) >= 1000


def test_label_mode_makes_one_selected_list_and_watch_and_follows_label_changes(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    selector = "extauthz/provider=idp"
    label = {"extauthz/provider": "idp"}
    kube.store.put_secret(NS, "idp-1", {"jwks.json": keys.jwks("k1")}, labels=label)
    kube.store.put_secret(NS, "idp-2", {"jwks.json": keys.jwks("k2")})  # not labelled yet
    make_source(label_selector=selector).start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)

    kube.store.put_secret(NS, "idp-2", {"jwks.json": keys.jwks("k2")}, labels=label)
    recorder.wait_kids({"k1", "k2"})  # starts matching: ADDED
    kube.store.put_secret(NS, "idp-1", {"jwks.json": keys.jwks("k1")})  # label removed
    recorder.wait_kids({"k2"})  # stops matching: DELETED

    log = kube.log()
    assert [r.is_watch for r in log] == [False, True]
    for request in log:
        assert request.path == f"/api/v1/namespaces/{NS}/secrets"
        assert request.query["labelSelector"] == selector
        assert "fieldSelector" not in request.query


# -- watch lifecycle ---------------------------------------------------------------------


def test_a_watch_ended_by_the_server_rewatches_from_the_last_bookmark_without_relisting(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    make_source(["s"], watch_timeout_seconds=1, read_timeout=3).start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)
    for i in range(3):  # writes the source does not see move the global resourceVersion
        kube.store.put_secret("elsewhere", f"x{i}", {"a": b"b"})
    moved = kube.store.resource_version
    assert len(kube.wait_requests(lambda r: r.is_watch, count=2, timeout=5)) >= 2
    log = kube.log()
    assert sum(1 for r in log if r.is_list) == 1
    versions = [int(r.query["resourceVersion"]) for r in log if r.is_watch]
    assert versions == sorted(versions)
    assert versions[-1] == moved  # the bookmark sent at the server's timeout was followed


def test_watch_requests_carry_a_jittered_server_timeout_and_bookmarks(
    kube: FakeKube, make_source: Any, recorder: Any
) -> None:
    kube.watch_cap = 0.2  # every watch ends quickly, so we see many
    make_source(["s"], watch_timeout_seconds=20).start(recorder)
    watches = kube.wait_requests(lambda r: r.is_watch, count=8, timeout=10)
    assert len(watches) >= 8
    timeouts = {int(r.query["timeoutSeconds"]) for r in watches}
    assert timeouts <= set(range(15, 21))
    assert len(timeouts) > 1, "a fleet must not reconnect in step"
    for watch in watches:
        assert watch.query["allowWatchBookmarks"] == "true"
        assert watch.query["watch"] == "true"


def test_by_default_a_silent_watch_is_cut_within_a_minute() -> None:
    watcher = KubernetesSource("auth", ["a"]).watcher
    assert watcher.watch_timeout_seconds < watcher.read_timeout < 60


# -- construction and client configuration -----------------------------------------------


def test_exactly_one_of_names_or_selector() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        KubernetesSource("auth")
    with pytest.raises(ValueError, match="exactly one"):
        KubernetesSource("auth", ["a"], "x=y")


def test_the_read_timeout_must_outlast_the_server_timeout() -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        KubernetesSource("auth", ["a"], watch_timeout_seconds=60, read_timeout=60)
    assert KubernetesSource("auth", ["a"], watch_timeout_seconds=60).watcher.read_timeout > 60


def test_without_a_namespace_the_pods_own_namespace_is_used(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("team-a\n")
    source = KubernetesSource(None, ["keys"], serviceaccount_dir=tmp_path)
    assert source.namespace == "team-a"
    assert source.description == "kubernetes team-a/keys"
    with pytest.raises(KeySourceError):
        KubernetesSource(None, ["keys"], serviceaccount_dir=tmp_path / "absent")


def test_kubeconfig_is_loaded_into_a_fresh_configuration(
    kube: FakeKube, tmp_path: Path, recorder: Any, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    default_host = client.Configuration.get_default_copy().host
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    source = KubernetesSource(NS, ["s"], backoff=None)  # no api_client: built at start()
    try:
        source.start(recorder)
        recorder.wait_kids({"k1"})
    finally:
        source.stop()
    assert client.Configuration.get_default_copy().host == default_host  # global untouched


def test_in_cluster_configuration_when_the_service_host_is_set(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    configuration = load_client_configuration(env, serviceaccount_dir=tmp_path)
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.api_key["BearerToken"] == "bearer sa-token"
    assert configuration.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert configuration.refresh_api_key_hook is not None  # rotated tokens are re-read


def test_no_configuration_at_all_is_a_key_source_error(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "missing")}
    with pytest.raises(KeySourceError):
        load_client_configuration(env)
    with pytest.raises(KeySourceError):
        load_client_configuration({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path)


def test_the_api_client_disables_hidden_transport_retries(kube: FakeKube) -> None:
    configuration = client.Configuration(host=kube.url)
    api = new_api_client(configuration, connections=6)
    try:
        assert configuration.retries == 0  # the source's backoff is the only retry loop
        assert configuration.connection_pool_maxsize == 6
    finally:
        api.close()


def test_a_parser_crash_on_one_entry_is_a_rejected_version_not_a_dead_source(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extauthz.keys import material as module

    real = module.parse_key_material

    def flaky(data: bytes, origin: str, **options: Any) -> Any:
        if origin.endswith("[poison.json]"):
            raise TypeError("a bug in a parser")
        return real(data, origin, **options)

    monkeypatch.setattr(module, "parse_key_material", flaky)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    source = make_source(["s"])
    source.start(recorder)
    recorder.wait_kids({"k1"})
    assert kube.wait_for_watches(1)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2"), "poison.json": b"{}"})
    assert recorder.wait(lambda r: r.failures)
    assert isinstance(recorder.failures[0][1], KeyMaterialError)
    assert recorder.kids == {"k1"}
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})
    assert source.alive()
