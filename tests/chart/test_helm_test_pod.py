"""The `helm test` pods' command, run against a real local extauthz.

No cluster runs here, so the pods' container arguments are taken from the render and
run as the image would run them (`extauthz <args>`), with the Service's DNS name
resolved to a local server started with both authorization listeners:

- against a ready service, a request without a token is `deny:missing_token`: exit 0,
  over gRPC and over HTTP (with the chart's path prefix);
- a service without its keys answers `not_ready`: exit 1, the test fails;
- a path that an anonymous rule allows: exit 1 (the test really checks the decision);
- nothing listening: exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz import mint
from tests.chart.helmtest import NAMESPACE, RELEASE, Helm
from tests.envoy_harness import free_port

FQDN = f"{RELEASE}-extauthz.{NAMESPACE}.svc.cluster.local"


class LocalService:
    """`extauthz serve` with gRPC, HTTP authorization and ops listeners on loopback."""

    def __init__(self, workdir: Path, *, with_keys: bool, prefix: str, metadata: bool) -> None:
        self.grpc, self.http_authz, self.ops = free_port(), free_port(), free_port()
        decrypt, verify = workdir / "decrypt", workdir / "verify"
        decrypt.mkdir(parents=True)
        verify.mkdir(parents=True)
        if with_keys:
            enc = mint.generate_jwk("enc", "RSA-OAEP-256", "enc-1")
            sig = mint.generate_jwk("sig", "ES256", "sig-1")
            (decrypt / "enc.json").write_text(json.dumps(enc), encoding="utf-8")
            public = {k: v for k, v in sig.items() if k != "d"}
            (verify / "sig.json").write_text(json.dumps(public), encoding="utf-8")
        config = {
            "apiVersion": "extauthz/v1",
            "listen": {
                "grpc": f"127.0.0.1:{self.grpc}",
                "http_authz": f"127.0.0.1:{self.http_authz}",
                "http_authz_path_prefix": prefix,
                "http_authz_metadata": metadata,
                "http": f"127.0.0.1:{self.ops}",
            },
            "decryption": {"keys": [{"directory": str(decrypt)}]},
            "providers": [
                {
                    "name": "idp",
                    "issuer": "https://idp.example.test",
                    "keys": [{"directory": str(verify)}],
                }
            ],
            "rules": [{"name": "public", "path_prefix": "/public/", "anonymous": True}],
        }
        self.config = workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = (workdir / "extauthz.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "extauthz", "serve", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_listening(self, ready: bool, timeout: float = 30) -> None:
        """Until /healthz answers (and /readyz says ready, when ``ready``)."""
        deadline = time.monotonic() + timeout
        path = "/readyz" if ready else "/healthz"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "extauthz exited during start-up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ops}{path}", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"extauthz did not answer {path}")

    def stop(self) -> None:
        """SIGTERM, then wait."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Any]:
    """Start local services; all are stopped at the end."""
    started: list[LocalService] = []

    def start(
        *, with_keys: bool = True, prefix: str = "/authz", metadata: bool = True
    ) -> LocalService:
        service = LocalService(
            tmp_path / f"svc{len(started)}", with_keys=with_keys, prefix=prefix, metadata=metadata
        )
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def pod_commands(helm: Helm, service: LocalService, *extra: str) -> dict[str, list[str]]:
    """The test pods' args (by protocol), rendered for ``service``'s ports, with the
    Service's DNS name pointed at loopback as cluster DNS would resolve it."""
    manifests = helm.template(
        extra=(
            "--set", "transport=both",
            "--set", f"ports.grpc={service.grpc}",
            "--set", f"ports.httpAuthz={service.http_authz}",
            "--set", "httpAuthz.pathPrefix=/authz",
            *extra,
        )
    )  # fmt: skip
    pods = {
        m["metadata"]["name"].rsplit("-", 1)[1]: m
        for m in manifests
        if m["kind"] == "Pod" and m["metadata"]["annotations"].get("helm.sh/hook") == "test"
    }
    commands = {}
    for protocol, pod in pods.items():
        (ctr,) = pod["spec"]["containers"]
        assert "command" not in ctr  # the image's ENTRYPOINT is `extauthz`
        commands[protocol] = [arg.replace(FQDN, "127.0.0.1") for arg in ctr["args"]]
    assert set(commands) == {"grpc", "http"}
    return commands


def run_pod(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The pod's container: the `extauthz` entrypoint with the rendered args."""
    return subprocess.run(
        [sys.executable, "-m", "extauthz", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pods_pass_against_a_ready_service(helm: Helm, service_factory: Any) -> None:
    """deny:missing_token over both protocols: exit 0."""
    service = service_factory()
    service.wait_listening(ready=True)
    for protocol, args in pod_commands(helm, service).items():
        result = run_pod(args)
        assert result.returncode == 0, (protocol, result.stdout, result.stderr)
        assert json.loads(result.stdout)["decision"] == "deny"


def test_http_pod_reads_the_reason_without_metadata_headers(
    helm: Helm, service_factory: Any
) -> None:
    """httpAuthz.metadataHeaders=false (Envoy Gateway): no x-extauthz-* headers, the
    reason comes from the deny's JSON body, and the test still passes."""
    service = service_factory(metadata=False)
    service.wait_listening(ready=True)
    args = pod_commands(helm, service, "--set", "httpAuthz.metadataHeaders=false")["http"]
    result = run_pod(args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    described = json.loads(result.stdout)
    assert not described.get("metadata")
    assert described["body"]["reason"] == "missing_token"


def test_pods_fail_against_a_service_without_keys(helm: Helm, service_factory: Any) -> None:
    """not_ready is not the expected deny: exit 1."""
    service = service_factory(with_keys=False)
    service.wait_listening(ready=False)
    for protocol, args in pod_commands(helm, service).items():
        result = run_pod(args)
        assert result.returncode == 1, (protocol, result.stdout, result.stderr)
        assert "not_ready" in result.stdout


def test_pods_fail_when_the_path_is_anonymous(helm: Helm, service_factory: Any) -> None:
    """tests.path under an anonymous rule is an allow, not the expected deny: exit 1."""
    service = service_factory()
    service.wait_listening(ready=True)
    commands = pod_commands(helm, service, "--set", "tests.path=/public/x")
    for protocol, args in commands.items():
        result = run_pod(args)
        assert result.returncode == 1, (protocol, result.stdout, result.stderr)
        assert json.loads(result.stdout)["decision"] == "allow"


def test_pods_fail_when_nothing_answers(helm: Helm, service_factory: Any) -> None:
    """No server on the ports: exit 2 (an error, not a decision)."""
    service = service_factory()
    service.stop()
    for protocol, args in pod_commands(helm, service).items():
        result = run_pod([*args, "--timeout", "2"])
        assert result.returncode == 2, (protocol, result.stdout, result.stderr)
