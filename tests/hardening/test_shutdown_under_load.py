"""Graceful shutdown under load: SIGTERM to one of two replicas behind one Envoy.

Setup: two ``python -m extauthz serve`` processes (the real CLI, the real signal
handling) behind one Envoy cluster with two endpoints, active gRPC health checks
(``grpc.health.v1``, service ``envoy.service.auth.v3.Authorization``, every 100 ms)
and a retry policy on the ext_authz ``grpc_service`` (refused / reset / unavailable
-> another host). Load: client threads through Envoy, half valid tokens (200), half
no token (401); plus a direct gRPC client on the replica being stopped, and a few
deliberately slow Checks (PBES2 with a high iteration count, ~0.4 s of CPU each) sent
just before the drain ends, so that Checks are certainly in flight when the server
stops accepting.

Behaviour: health turns NOT_SERVING at once; the replica keeps answering
for ``drain_seconds``; in-flight Checks complete; the process exits 0 within
``drain_seconds + grace_seconds``; no client through Envoy sees a failure — with
health checks (+ retries), the recommended Envoy setup. With retries alone Envoy keeps
routing to the stopped replica and relies on every retry succeeding; that variant is
measured too and allowed at most 1 % of failures (observed: 0 in most runs).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauthz import mint
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.client import build_request
from extauthz.server.authz import METHOD, SERVICE
from tests.envoy_harness import HTTP_BOOTSTRAP_TEMPLATE, EchoUpstream, free_port, http_get
from tests.hardening.envoy_variants import (
    Bootstrap,
    VariantEnvoy,
    add_check_retries,
    add_health_checks,
    add_http_check_retries,
    set_endpoints,
    set_http_endpoints,
    tighten_http_health_checks,
)
from tests.service_client import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DRAIN = 1.0
GRACE = 3.0
#: PBES2 iterations of the deliberately slow Checks (~0.15 s of CPU each here; joserfc
#: refuses more than 300 000)
SLOW_P2C = 300_000
SLOW_CHECKS = 10  # ~1.5 s of CPU in all: they surely span the moment the drain ends


class Replica:
    """One ``python -m extauthz serve`` process on a fixed port."""

    def __init__(self, workdir: Path, name: str, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.http_authz_port = free_port()
        self.http_port = free_port()
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        data = {**config, "listen": {
            "grpc": f"127.0.0.1:{self.port}", "http_authz": f"127.0.0.1:{self.http_authz_port}",
            "http": f"127.0.0.1:{self.http_port}",
        }}  # fmt: skip
        self.config_path.write_text(json.dumps(data))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "extauthz", "serve", "--config", str(self.config_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def status(self) -> str:
        try:
            answer = self.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
        except grpc.RpcError as error:
            return str(error.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self) -> None:
        self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Load:
    """Client threads through Envoy; every outcome counted by kind."""

    def __init__(self, url: str, token: str, threads: int = 4) -> None:
        self.url = url
        self.token = token
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            valid = n % 2 == 0
            headers = {"authorization": f"Bearer {self.token}"} if valid else {}
            try:
                status, _, _ = http_get(self.url + "/orders/1", headers, timeout=5)
                outcome = "ok" if status == (200 if valid else 401) else f"status {status}"
            except OSError as exc:
                outcome = f"error {type(exc).__name__}"
            with self._lock:
                self.outcomes[outcome] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())


def direct_check(channel: grpc.Channel, token: str, timeout: float = 5.0) -> str:
    """One Check straight to a replica: ``allow``/``deny`` or the gRPC error code."""
    call = channel.unary_unary(
        METHOD,
        request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    try:
        answer = call(build_request({"authorization": f"Bearer {token}"}), timeout=timeout)
    except grpc.RpcError as error:
        return str(error.code().name)
    return "allow" if answer.status.code == 0 else "deny"


@pytest.fixture
def replicas(tmp_path: Path, key_dirs: Path) -> Iterator[list[Replica]]:
    """Two replicas sharing the keys; PBES2 on with a high cap (for the slow Checks)."""
    pbes2_key = mint.generate_jwk("enc", "A256KW", "pbes2-1")
    pbes2_key["alg"] = "PBES2-HS256+A128KW"
    (key_dirs / "keys" / "decrypt" / "pbes2.json").write_text(json.dumps(pbes2_key))
    config = {
        "apiVersion": "extauthz/v1",
        "decryption": {
            "keys": [{"directory": str(key_dirs / "keys" / "decrypt")}],
            "key_algorithms": ["RSA-OAEP-256", "PBES2-HS256+A128KW"],
            "pbes2_max_iterations": SLOW_P2C,
        },
        "providers": [{
            "name": "idp", "issuer": "https://idp.example.test", "audiences": ["api://orders"],
            "keys": [{"directory": str(key_dirs / "keys" / "verify")}],
            "claims_to_headers": {"sub": "x-auth-subject"},
        }],
        "logging": {"level": "info", "format": "json"},
        "shutdown": {"drain_seconds": DRAIN, "grace_seconds": GRACE},
        "cache": {"max_entries": 0},  # every Check does the full work
    }  # fmt: skip
    pair = [Replica(tmp_path, f"replica-{i}", config) for i in (1, 2)]
    try:
        for replica in pair:
            replica.start()
        for replica in pair:
            assert wait_for(lambda r=replica: r.status() == "SERVING", 20), (
                replica.log_path.read_text()
            )
        yield pair
    finally:
        for replica in pair:
            replica.stop()


@pytest.mark.parametrize("mechanism", ["health-checks", "retries-only"])
def test_sigterm_under_load_fails_no_request_and_exits_zero(
    mechanism: str, tmp_path: Path, replicas: list[Replica], mint_token: Callable[..., str],
    key_dirs: Path, sig_jwk: dict[str, Any], record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    victim, survivor = replicas
    token = mint_token()
    pbes2_key = json.loads((key_dirs / "keys" / "decrypt" / "pbes2.json").read_text())

    def slow_token(n: int) -> str:
        """A unique PBES2 token (the same one twice would be a cache hit, not slow)."""
        claims = mint.claims_for("https://idp.example.test", "api://orders", "slow",
                                 extra={"jti": f"slow-{n}"})  # fmt: skip
        return mint.encrypt(mint.sign(claims, sig_jwk), pbes2_key, alg="PBES2-HS256+A128KW",
                            header={"p2c": SLOW_P2C})  # fmt: skip

    # calibrate: enough slow Checks that, sent 0.4 s before the drain ends, together they
    # need ~3 s of CPU (PBKDF2 releases the GIL: two cores share it), so some are still
    # running when the drain ends, and all end well within the grace period
    started = time.monotonic()
    assert direct_check(replicas[0].channel, slow_token(-1)) == "allow"
    one = max(time.monotonic() - started, 0.005)
    slow_count = min(max(SLOW_CHECKS, math.ceil(3.0 / one)), 200)
    slow_tokens = [slow_token(n) for n in range(slow_count)]

    def transform(doc: Bootstrap) -> None:
        set_endpoints(doc, [victim.port, survivor.port])
        if mechanism == "health-checks":
            add_health_checks(doc)
        add_check_retries(doc)

    with EchoUpstream() as upstream, VariantEnvoy(
        tmp_path / "envoy", transform=transform, extauthz_port=victim.port,
        upstream_port=upstream.port, EXTAUTHZ_TIMEOUT="2s",
    ) as envoy:  # fmt: skip
        assert wait_for(lambda: envoy.stat("cluster.extauthz.membership_healthy") == 2, 10)
        time.sleep(0.3)  # both hosts in the load-balancing set of Envoy's worker
        direct: Counter[str] = Counter()
        slow: list[str] = []
        with Load(envoy.url, token) as load:
            assert wait_for(lambda: load.total >= 200, 15)
            assert victim.proc is not None
            sent = time.monotonic()
            victim.proc.send_signal(signal.SIGTERM)
            # health: NOT_SERVING at once
            assert wait_for(lambda: victim.status() == "NOT_SERVING", 1.0, 0.01)
            not_serving_after = time.monotonic() - sent
            # the replica keeps answering while draining
            while time.monotonic() - sent < DRAIN - 0.4:
                direct[direct_check(victim.channel, token)] += 1
            # slow Checks, sent 0.4 s before the drain ends (a loaded machine may
            # start threads late) so they are surely in flight when the server stops accepting
            threads = [
                threading.Thread(target=lambda t=t: slow.append(direct_check(victim.channel, t)))
                for t in slow_tokens
            ]
            for thread in threads:
                thread.start()
            code = victim.proc.wait(DRAIN + GRACE + 5)
            exited_after = time.monotonic() - sent
            for thread in threads:
                thread.join(10)
            after = direct_check(victim.channel, token, timeout=1)
            seen = load.total
            assert wait_for(lambda: load.total >= seen + 100, 15)
        healthy_after = envoy.stat("cluster.extauthz.membership_healthy")
        failed_lines = [line for line in envoy.access_log_lines(0) if line.get("status") != 200
                        and line.get("status") != 401]  # fmt: skip
        retries = envoy.stat("cluster.extauthz.upstream_rq_retry")
        overflow = envoy.stat("cluster.extauthz.upstream_rq_retry_overflow")
    events = victim.events()
    signalled = next(i for i, e in enumerate(events) if e.get("event") == "signal")
    answered_while_draining = sum(1 for e in events[signalled:] if e.get("event") == "check")
    draining = next(e for e in events if e.get("event") == "draining")
    stop_began = _instant(draining["timestamp"]) + DRAIN
    slow_done = [_instant(e["timestamp"]) for e in events
                 if e.get("event") == "check" and e.get("sub") == "slow"]  # fmt: skip
    figures = {
        "requests_through_envoy": load.total,
        "outcomes": dict(load.outcomes),
        "not_serving_after_s": round(not_serving_after, 3),
        "direct_checks_while_draining": dict(direct),
        "slow_checks": slow,
        "slow_checks_completed_after_stop_began": sum(1 for t in slow_done if t > stop_began),
        "answered_by_victim_after_sigterm": answered_while_draining,
        "exit_code": code,
        "exited_after_s": round(exited_after, 2),
        "envoy_retries": retries,
        "envoy_retry_overflow": overflow,
        "failed_access_log": failed_lines[:5],
        "healthy_hosts_after": healthy_after,
        "check_after_exit": after,
    }
    record_property("shutdown", figures)
    print(f"shutdown figures ({mechanism}):", json.dumps(figures))
    assert code == 0
    assert exited_after <= DRAIN + GRACE + 1.0
    assert not_serving_after < 0.5
    failed = load.total - load.outcomes["ok"]
    if mechanism == "health-checks":
        assert failed == 0, figures  # no client saw a failure
    else:
        # retries alone: none failed in most runs, but 1 and 5 of ~490 (UAEX after the
        # retries ran out) in 3 of ~30 runs on a saturated machine; see docs/security.md
        assert failed <= load.total // 100, figures
    assert set(direct) <= {"allow"}, figures  # answered while draining, none refused
    assert slow == ["allow"] * slow_count, figures
    assert figures["slow_checks_completed_after_stop_began"] >= 1, (
        figures
    )  # in flight at stop: completed, not cut
    assert after == "UNAVAILABLE"
    if mechanism == "health-checks":
        assert healthy_after == 1
    assert any(e.get("event") == "stopped" for e in events)


def http_check(port: int, token: str, timeout: float = 5.0) -> str:
    """One request straight to a replica's HTTP listener: ``allow``/``deny``/an error."""
    try:
        status, _, _ = http_get(
            f"http://127.0.0.1:{port}/orders", {"authorization": f"Bearer {token}"},
            timeout=timeout,
        )  # fmt: skip
    except OSError as exc:
        return type(exc).__name__
    return "allow" if status == 200 else f"status {status}"


def test_sigterm_under_load_over_http_fails_no_request_and_exits_zero(
    tmp_path: Path, replicas: list[Replica], mint_token: Callable[..., str],
    key_dirs: Path, sig_jwk: dict[str, Any],
) -> None:  # fmt: skip
    """The same sequence with Envoy's HTTP protocol: /readyz health checks every 100 ms,
    retries on reset; each answer while draining closes its connection."""
    victim, survivor = replicas
    token = mint_token()
    pbes2_key = json.loads((key_dirs / "keys" / "decrypt" / "pbes2.json").read_text())

    def slow_token(n: int) -> str:
        claims = mint.claims_for("https://idp.example.test", "api://orders", "slow",
                                 extra={"jti": f"slow-http-{n}"})  # fmt: skip
        return mint.encrypt(mint.sign(claims, sig_jwk), pbes2_key, alg="PBES2-HS256+A128KW",
                            header={"p2c": SLOW_P2C})  # fmt: skip

    # calibrated as in the gRPC test: ~3 s of CPU in all, sent 0.4 s before the drain ends
    started = time.monotonic()
    assert http_check(victim.http_authz_port, slow_token(-1)) == "allow"
    one = max(time.monotonic() - started, 0.005)
    slow_count = min(max(SLOW_CHECKS, math.ceil(3.0 / one)), 200)
    slow_tokens = [slow_token(n) for n in range(slow_count)]

    def transform(doc: Bootstrap) -> None:
        set_http_endpoints(doc, [(r.http_authz_port, r.http_port) for r in (victim, survivor)])
        tighten_http_health_checks(doc)
        add_http_check_retries(doc)

    with EchoUpstream() as upstream, VariantEnvoy(
        tmp_path / "envoy", transform=transform, extauthz_port=victim.http_authz_port,
        upstream_port=upstream.port, EXTAUTHZ_TIMEOUT="2s", template=HTTP_BOOTSTRAP_TEMPLATE,
    ) as envoy:  # fmt: skip
        assert wait_for(lambda: envoy.stat("cluster.extauthz.membership_healthy") == 2, 10)
        time.sleep(0.3)
        direct: Counter[str] = Counter()
        slow: list[str] = []
        with Load(envoy.url, token) as load:
            assert wait_for(lambda: load.total >= 200, 15)
            assert victim.proc is not None
            sent = time.monotonic()
            victim.proc.send_signal(signal.SIGTERM)
            assert wait_for(
                lambda: http_get(f"http://127.0.0.1:{victim.http_port}/readyz")[0] == 503, 1.0
            )
            while time.monotonic() - sent < DRAIN - 0.4:
                direct[http_check(victim.http_authz_port, token)] += 1
            threads = [
                threading.Thread(
                    target=lambda t=t: slow.append(http_check(victim.http_authz_port, t))
                )
                for t in slow_tokens
            ]
            for thread in threads:
                thread.start()
            code = victim.proc.wait(DRAIN + GRACE + 5)
            exited_after = time.monotonic() - sent
            for thread in threads:
                thread.join(10)
            after = http_check(victim.http_authz_port, token, timeout=1)
            seen = load.total
            assert wait_for(lambda: load.total >= seen + 100, 15)
    events = victim.events()
    draining = next(e for e in events if e.get("event") == "draining")
    stop_began = _instant(draining["timestamp"]) + DRAIN
    late = [
        e for e in events
        if e.get("event") == "check" and e.get("sub") == "slow"
        and e.get("transport") == "http" and _instant(e["timestamp"]) > stop_began
    ]  # fmt: skip
    figures = {
        "outcomes": dict(load.outcomes),
        "direct": dict(direct),
        "slow": slow,
        "slow_completed_after_stop_began": len(late),
        "exit_code": code,
        "exited_after_s": round(exited_after, 2),
        "after": after,
    }
    print("shutdown figures (http):", json.dumps(figures))
    assert code == 0
    assert exited_after <= DRAIN + GRACE + 1.0
    assert load.total - load.outcomes["ok"] == 0, figures  # no client saw a failure
    assert set(direct) == {"allow"}, figures  # answered while draining
    assert slow == ["allow"] * slow_count, figures  # in flight at stop: completed
    assert len(late) >= 1, figures  # some were in flight when the listener stopped
    assert after == "ConnectionRefusedError"


def _instant(timestamp: str) -> float:
    """Epoch seconds of a log line's ISO timestamp."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
