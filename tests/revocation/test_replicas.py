"""Two replicas (two ``extauthz serve`` processes) watch the same ConfigMap on the same
(fake) API server: a revocation is enforced by both within 1 s of the write, each
answering Checks in a loop over gRPC, and each one's metrics and decision log show it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envoy_harness import free_port
from tests.revocation.kubeapi import FakeKubeWithApply
from tests.service_client import Client, wait_for

NAMESPACE = "auth"
CONFIGMAP = "extauthz-revoked"
ISSUER = "https://idp.example.test"
EXTAUTHZ = Path(sys.executable).parent / "extauthz"


class Replica:
    """One ``extauthz serve`` process with its own ports and log file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        data = yaml.safe_load(config.read_text())
        self.grpc = free_port()
        self.http = free_port()
        data["listen"] = {"grpc": f"127.0.0.1:{self.grpc}", "http": f"127.0.0.1:{self.http}"}
        self.config = config.with_name(f"{log.stem}.yaml")
        self.config.write_text(yaml.safe_dump(data))
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [str(EXTAUTHZ), "serve", "--config", str(self.config)],
            stdout=self._out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=2) as r:
                return int(r.status), str(r.read().decode())
        except OSError:
            return 0, ""

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_text().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._out.close()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[FakeKubeWithApply, Path]]:
    with FakeKubeWithApply(bookmark_interval=None) as server:
        path = server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server, path


def put_list(kube: FakeKubeWithApply, *entries: dict[str, Any]) -> None:
    kube.store.put_configmap(
        NAMESPACE, CONFIGMAP, {"revoked.json": json.dumps({"revoked": list(entries)})}
    )


@pytest.mark.slow
def test_two_replicas_both_enforce_within_a_second(
    kube: tuple[FakeKubeWithApply, Path],
    tmp_path: Path,
    write_config: Callable[..., Path],
    mint_token: Callable[..., str],
) -> None:
    fake, kubeconfig = kube
    put_list(fake)
    revocation = {"sources": [{"kubernetes": {"namespace": NAMESPACE, "configmaps": [CONFIGMAP]}}]}
    config = write_config(revocation=revocation)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    replicas = [Replica(config, env, tmp_path / f"replica-{i}.log") for i in (1, 2)]
    leaked = mint_token(sub="alice", jti="leaked-1")
    stop = threading.Event()
    denied: dict[int, float] = {}
    reasons: dict[int, str] = {}

    def loop(index: int, replica: Replica) -> None:
        client = Client(replica.grpc)
        try:
            while not stop.is_set():
                answer = client.check(leaked)
                if answer["decision"] == "deny" and index not in denied:
                    denied[index] = time.monotonic()
                    reasons[index] = answer["metadata"]["reason"]
        finally:
            client.channel.close()

    threads = [threading.Thread(target=loop, args=(i, r)) for i, r in enumerate(replicas)]
    try:
        for replica in replicas:
            assert wait_for(lambda r=replica: r.get("/readyz")[0] == 200, 30), (
                replica.log.read_text()
            )
        for replica in replicas:
            client = Client(replica.grpc)
            assert client.check(leaked)["decision"] == "allow"
            client.channel.close()
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert not denied
        written = time.monotonic()
        put_list(fake, {"jti": "leaked-1", "iss": ISSUER, "exp": int(time.time()) + 300})
        wait_for(lambda: len(denied) == 2, 2.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        metrics = [replica.get("/metrics")[1] for replica in replicas]
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()

    assert reasons == {0: "revoked", 1: "revoked"}
    delays = sorted(at - written for at in denied.values())
    assert len(delays) == 2
    assert delays[-1] < 1.0, delays
    for text in metrics:
        assert "extauthz_revocation_entries 1.0" in text
        assert any(
            line.startswith("extauthz_checks_total{") and 'reason="revoked"' in line
            for line in text.splitlines()
        )
    for replica in replicas:
        revoked = [x for x in replica.lines() if x.get("event") == "check"
                   and x.get("reason") == "revoked"]  # fmt: skip
        assert revoked, replica.log.read_text()[-2000:]
        assert revoked[0]["jti"] == "leaked-1"
        assert revoked[0]["sub"] == "alice"
