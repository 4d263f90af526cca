"""docs/kubernetes-quickstart.md: the steps that can run without a cluster, run.

- each `extauthz keygen ... --secret` command of the page, as written, prints a Secret
  manifest that Kubernetes accepts, whose `jwks.json` is the private JWK;
- the page's public-key pipe (`base64 -d | extauthz keygen --public /dev/stdin`) prints
  public members only;
- the page's `my-values.yaml` lints and renders valid manifests.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.chart.helmtest import CHART, KUBERNETES_VERSIONS, REPO, Helm, validate_manifest

PAGE = (REPO / "docs" / "kubernetes-quickstart.md").read_text(encoding="utf-8")
PRIVATE = {"d", "p", "q", "dp", "dq", "qi"}


def shell_commands() -> list[str]:
    """The page's shell commands, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", PAGE, re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def keygen_secret_commands() -> list[list[str]]:
    """`extauthz keygen ... --secret ...` commands, up to the pipe into kubectl."""
    commands = []
    for line in shell_commands():
        if line.startswith("extauthz keygen") and "--secret" in line:
            command, _, rest = line.partition("|")
            assert rest.strip() == "kubectl create -f -", line
            commands.append(shlex.split(command))
    return commands


def run_extauthz(args: list[str], cwd: Path, stdin: str | None = None) -> str:
    """`extauthz` with the page's arguments; its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", *args[1:]],
        input=stdin, capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def public_issuer_jwks(cwd: Path) -> None:
    """The issuer's public JWKS the page assumes (`issuer-public.json`)."""
    private = run_extauthz(["extauthz", "keygen", "--use", "sig", "--alg", "ES256"], cwd)
    (cwd / "issuer.json").write_text(private, encoding="utf-8")
    public = run_extauthz(["extauthz", "keygen", "--public", "issuer.json"], cwd)
    (cwd / "issuer-public.json").write_text(public, encoding="utf-8")


def test_keygen_commands_make_valid_secrets(tmp_path: Path) -> None:
    """Both Secrets of the page: valid manifests in namespace auth, a JWKS inside."""
    public_issuer_jwks(tmp_path)
    commands = keygen_secret_commands()
    assert len(commands) == 2
    secrets: dict[str, dict[str, Any]] = {}
    for command in commands:
        manifest = yaml.safe_load(run_extauthz(command, tmp_path))
        for version in KUBERNETES_VERSIONS:
            validate_manifest(manifest, version)
        assert manifest["kind"] == "Secret"
        assert manifest["metadata"]["namespace"] == "auth"
        secrets[manifest["metadata"]["name"]] = manifest
    decryption = json.loads(
        base64.b64decode(secrets["extauthz-decryption-keys"]["data"]["jwks.json"])
    )
    (key,) = decryption["keys"]
    assert key["use"] == "enc"
    assert key["kid"] == "enc-2026-12"
    assert PRIVATE & key.keys()  # the private key, in the cluster only
    verification = json.loads(
        base64.b64decode(secrets["extauthz-verification-keys"]["data"]["jwks.json"])
    )
    assert not any(PRIVATE & k.keys() for k in verification["keys"])


def test_public_key_pipe_prints_only_public_members(tmp_path: Path) -> None:
    """The Secret's jwks.json through `extauthz keygen --public /dev/stdin`."""
    (pipe,) = [line for line in shell_commands() if "--public /dev/stdin" in line]
    assert "base64 -d | extauthz keygen --public /dev/stdin" in pipe
    (decryption_command, _) = keygen_secret_commands()
    secret = yaml.safe_load(run_extauthz(decryption_command, tmp_path))
    private_jwks = base64.b64decode(secret["data"]["jwks.json"]).decode()
    public = json.loads(
        run_extauthz(["extauthz", "keygen", "--public", "/dev/stdin"], tmp_path, private_jwks)
    )
    (key,) = public["keys"]
    assert not PRIVATE & key.keys()
    assert key["kid"] == "enc-2026-12"


def test_page_values_lint_and_render(helm: Helm, tmp_path: Path) -> None:
    """my-values.yaml of the page: lint --strict, valid manifests, the image it names."""
    match = re.search(r"```yaml\n# my-values.yaml\n(.*?)```", PAGE, re.DOTALL)
    assert match is not None
    values = tmp_path / "my-values.yaml"
    values.write_text(match.group(1), encoding="utf-8")
    lint = helm.run("lint", "--strict", CHART, "--namespace", "auth", "--values", values)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "funcMap fail" not in lint.stdout + lint.stderr
    result = helm.run(
        "template", "extauthz", CHART, "--namespace", "auth", "--values", values, check=True
    )
    manifests = [d for d in yaml.safe_load_all(result.stdout) if d]
    for manifest in manifests:
        for version in KUBERNETES_VERSIONS:
            validate_manifest(manifest, version)
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (ctr,) = deployment["spec"]["template"]["spec"]["containers"]
    assert ctr["image"] == "registry.example.com/platform/extauthz:0.1.0"
    (pod,) = [m for m in manifests if m["kind"] == "Pod"]
    assert pod["spec"]["containers"][0]["args"][:3] == [
        "check", "--address", "extauthz.auth.svc.cluster.local:9001",
    ]  # fmt: skip
    assert "extauthz.auth.svc.cluster.local:9001" in PAGE
