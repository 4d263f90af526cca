"""The runbook of docs/revocation.md works as written.

Its ``sh`` blocks are extracted from the document and run verbatim with bash (the real
``extauthz`` CLI, the real ``kubectl`` doing server-side apply) against the fake API
server, while the whole service watches the list ConfigMap and answers Checks over gRPC.
Behaviours: not ready before step 0, ready after; 2a refuses the token with that jti,
2b the token in leaked.jwt (and shreds the file), 2c the subject's earlier tokens but
not a later one; step 3 prints the three entries; nothing else is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.revocation.kubeapi import FakeKubeWithApply
from tests.service_client import Client, wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "revocation.md"
NS = "auth"
CONFIGMAP = "extauthz-revoked"


def runbook_blocks() -> list[str]:
    """The ``sh`` blocks of the runbook section, in order."""
    text = DOC.read_text()
    section = text.split("## Runbook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def kube(use_kubeconfig: Callable[..., Any]) -> Iterator[FakeKubeWithApply]:
    with FakeKubeWithApply(bookmark_interval=None) as server:
        yield use_kubeconfig(server, user="ops", token="ops")


@pytest.fixture
def shell(kube: FakeKubeWithApply, tmp_path: Path) -> Any:
    """Run a doc block with bash in a scratch directory, as an operator would."""
    bindir = Path(sys.executable).parent
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    for tool in ("kubectl", "extauthz", "shred", "date"):
        if shutil.which(tool, path=path) is None:
            pytest.skip(f"{tool} is not installed")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": path, "HOME": str(tmp_path)}

    def run(script: str) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{script}\n--- stderr:\n{done.stderr}"
        return done.stdout

    run.work = work  # type: ignore[attr-defined]
    return run


def test_the_runbook_revokes_each_way(
    kube: FakeKubeWithApply,
    shell: Any,
    write_config: Callable[..., Path],
    mint_token: Callable[..., str],
) -> None:
    setup, by_jti, by_token, by_subject, show = runbook_blocks()
    jti = re.search(r"^JTI=(\S+)$", by_jti, flags=re.MULTILINE)
    iss = re.search(r"^ISS=(\S+)$", by_jti, flags=re.MULTILINE)
    assert jti is not None
    assert iss is not None
    assert iss.group(1) == "https://idp.example.test"  # the test provider's issuer
    revocation = {"sources": [{"kubernetes": {"namespace": NS, "configmaps": [CONFIGMAP]}}]}
    app = App(config_mod.load(write_config(revocation=revocation)))
    app.start()
    client = Client(app.grpc_port)
    now = int(time.time())
    logged = mint_token(sub="carol", jti=jti.group(1))
    leaked = mint_token(sub="dave")
    alice_old = mint_token(sub="alice@example.com", iat=now - 60)
    bystander = mint_token(sub="erin", jti="erin-1")
    everyone = (logged, leaked, alice_old, bystander)

    def reason(token: str) -> str:
        answer = client.check(token)
        return "allow" if answer["decision"] == "allow" else str(answer["metadata"]["reason"])

    try:
        time.sleep(0.5)
        assert client.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        shell(setup)
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING, 5)
        assert all(reason(t) == "allow" for t in everyone)

        shell(by_jti)
        assert wait_for(lambda: reason(logged) == "revoked", 1.0)
        assert [reason(t) for t in (leaked, alice_old, bystander)] == ["allow"] * 3

        (shell.work / "leaked.jwt").write_text(f"Bearer {leaked}\n")
        shell(by_token)
        assert wait_for(lambda: reason(leaked) == "revoked", 1.0)
        assert not (shell.work / "leaked.jwt").exists()
        assert reason(logged) == "revoked"

        shell(by_subject)
        assert wait_for(lambda: reason(alice_old) == "revoked", 1.0)
        alice_new = mint_token(sub="alice@example.com", iat=int(time.time()) + 2)
        assert reason(alice_new) == "allow"
        assert reason(bystander) == "allow"

        printed = json.loads(shell(show))
    finally:
        client.channel.close()
        app.stop_now()

    kinds = sorted(
        next(k for k in ("jti", "token_sha256", "sub") if k in e) for e in printed["revoked"]
    )
    assert kinds == ["jti", "sub", "token_sha256"]
    # every write was a server-side apply by the runbook's field manager
    applies = [r for r in kube.requests if r.method == "PATCH" and "configmaps" in r.path]
    assert len(applies) == 4
    assert all(r.query.get("fieldManager") == "extauthz-revoke" for r in applies)
