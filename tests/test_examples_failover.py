"""The shipped Envoy bootstrap survives a replica going away, as it is.

`examples/envoy/envoy.yaml` is run with its own health checking, retry policy, retry
budget and outlier detection; the only change is the extauthz cluster's endpoints (two
replicas on loopback ports, where a headless Service would give two pod IPs). Under a
steady load of valid-token requests through Envoy, one replica gets SIGTERM, drains
and exits: every request through Envoy still gets its 200, the replica exits 0, and
Envoy stops sending to it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from extauthz import mint
from tests.envoy_harness import EchoUpstream, free_port, http_get
from tests.hardening.envoy_variants import VariantEnvoy, set_endpoints

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ISSUER, AUDIENCE = "https://idp.example.test", "api://orders"
DRAIN, GRACE = 3, 10  # the chart's defaults


class Replica:
    """One `extauthz serve` process, with the keys shared by both replicas."""

    def __init__(self, workdir: Path, keys: Path) -> None:
        workdir.mkdir(parents=True)
        self.grpc, self.ops = free_port(), free_port()
        config = {
            "apiVersion": "extauthz/v1",
            "listen": {"grpc": f"127.0.0.1:{self.grpc}", "http": f"127.0.0.1:{self.ops}"},
            "decryption": {"keys": [{"directory": str(keys / "decrypt")}]},
            "providers": [
                {
                    "name": "idp",
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "keys": [{"directory": str(keys / "verify")}],
                    "claims_to_headers": {"sub": "x-auth-subject"},
                }
            ],
            "shutdown": {"drain_seconds": DRAIN, "grace_seconds": GRACE},
            "logging": {"level": "warning"},
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = (workdir / "extauthz.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "extauthz", "serve", "--config", str(workdir / "config.yaml")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        """Until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "extauthz exited during start-up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ops}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail("extauthz did not become ready")

    def stop(self) -> None:
        """SIGTERM (if still running), then wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DRAIN + GRACE + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def token_and_keys(tmp_path: Path) -> tuple[str, Path]:
    """Key directories for both replicas, and a valid nested token."""
    keys = tmp_path / "keys"
    (keys / "decrypt").mkdir(parents=True)
    (keys / "verify").mkdir()
    enc = mint.generate_jwk("enc", "RSA-OAEP-256", "enc-1")
    sig = mint.generate_jwk("sig", "ES256", "sig-1")
    (keys / "decrypt" / "enc.json").write_text(json.dumps(enc), encoding="utf-8")
    public_sig = {k: v for k, v in sig.items() if k != "d"}
    (keys / "verify" / "sig.json").write_text(json.dumps(public_sig), encoding="utf-8")
    public_enc = {k: v for k, v in enc.items() if k not in {"d", "p", "q", "dp", "dq", "qi"}}
    claims = mint.claims_for(ISSUER, AUDIENCE, "alice", 3600)
    return mint.encrypt(mint.sign(claims, sig), public_enc), keys


@pytest.fixture
def replicas(tmp_path: Path, token_and_keys: tuple[str, Path]) -> Iterator[list[Replica]]:
    """Two ready replicas."""
    pair = [Replica(tmp_path / f"replica{i}", token_and_keys[1]) for i in range(2)]
    try:
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


class Load:
    """Client threads sending valid-token requests through Envoy; outcomes counted."""

    def __init__(self, url: str, token: str, threads: int = 4) -> None:
        self.url, self.headers = url + "/orders/1", {"authorization": f"Bearer {token}"}
        self.outcomes: Counter[int | str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status: int | str = http_get(self.url, self.headers, timeout=5)[0]
            except OSError as exc:
                status = type(exc).__name__
            with self.lock:
                self.outcomes[status] += 1

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def wait_for(condition: object, timeout: float) -> bool:
    """Poll a zero-argument callable until it is true or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_replica_going_away_fails_no_request(
    tmp_path: Path, replicas: list[Replica], token_and_keys: tuple[str, Path]
) -> None:
    """SIGTERM to one of two replicas under load: all 200, exit 0, Envoy moves away."""
    victim, survivor = replicas
    token = token_and_keys[0]
    with (
        EchoUpstream() as upstream,
        VariantEnvoy(
            tmp_path / "envoy",
            transform=lambda doc: set_endpoints(doc, [victim.grpc, survivor.grpc]),
            extauthz_port=victim.grpc,
            upstream_port=upstream.port,
        ) as envoy,
    ):
        assert wait_for(lambda: envoy.stat("cluster.extauthz.membership_healthy") == 2, 15)
        with Load(envoy.url, token) as load:
            assert wait_for(lambda: load.total >= 100, 20)
            sent = time.monotonic()
            victim.proc.send_signal(signal.SIGTERM)
            code = victim.proc.wait(DRAIN + GRACE + 5)
            exited_after = time.monotonic() - sent
            seen = load.total
            assert wait_for(lambda: load.total >= seen + 100, 20)
        healthy = envoy.stat("cluster.extauthz.membership_healthy")
    assert code == 0
    assert exited_after < DRAIN + GRACE
    assert set(load.outcomes) == {200}, dict(load.outcomes)
    assert load.total >= 200
    assert healthy == 1
