"""The rotation runbook of docs/kubernetes.md works as written.

Its ``sh`` blocks are extracted from the document and run verbatim with bash (the real
``extauthz`` CLI, the real ``kubectl``, ``jq``) against the fake API server, while a
KubernetesSource watches the Secret. Behaviours: the first install loads k1; step 1
adds k2 next to k1; step 2 changes nothing; step 3 leaves k2 only; the one-key-per-entry
alternative adds k2.json and removes k1.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakekube import FakeKube

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
NS = "auth"
SECRET = "extauthz-decryption-keys"


def runbook_blocks() -> list[str]:
    """The ``sh`` blocks of the "Rotation runbook" section, in order."""
    text = DOC.read_text()
    section = text.split("## Rotation runbook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def shell(kube: FakeKube, tmp_path: Path) -> Any:
    """Run a doc block with bash in a scratch directory, as an operator would."""
    bindir = Path(sys.executable).parent
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    for tool in ("kubectl", "extauthz", "jq", "base64", "shred"):
        if shutil.which(tool, path=path) is None:
            pytest.skip(f"{tool} is not installed")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "ops", "user": {"token": "ops"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ops"}}],
                "current-context": "fake",
            }
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": path, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    def run(script: str) -> None:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{script}\n--- stderr:\n{done.stderr}"

    run.work = work  # type: ignore[attr-defined]
    return run


def test_the_runbook_rotates_without_a_gap(
    kube: FakeKube, shell: Any, make_source: Any, recorder: Any, keys: Any
) -> None:
    install, add, publish, remove, per_entry = runbook_blocks()
    make_source([SECRET]).start(recorder)
    recorder.wait_kids(set())  # the Secret does not exist yet: ready, empty

    shell(install)
    recorder.wait_kids({"k1"})
    shell(add)
    recorder.wait_kids({"k1", "k2"})
    published = len(recorder.published)
    shell(publish)
    assert len(recorder.published) == published  # handing out the public key changes nothing
    shell(remove)
    recorder.wait_kids({"k2"})
    assert not recorder.failures
    assert not list(shell.work.glob("*.json"))  # the private key files were shredded

    # the one-key-per-entry layout: k1.json in force, then the runbook's two patches
    (shell.work / "k1.json").write_bytes(keys.jwk("k1"))
    (shell.work / "k2.json").write_bytes(keys.jwk("k2"))
    shell(
        f"kubectl -n {NS} create secret generic {SECRET} --from-file=k1.json "
        "--dry-run=client -o yaml | kubectl apply -f -\n"
    )
    recorder.wait_kids({"k1"})
    shell(per_entry)
    recorder.wait_kids({"k2"})
    assert set(kube.store.secret_data(NS, SECRET)) == {"k2.json"}
    assert not recorder.failures
