"""Rotation latency and outage cost of the Kubernetes key source (a benchmark, not a test).

Runs the fake API server (tests/fakekube, real HTTP on loopback), a KubernetesSource
with production defaults (timeouts, backoff) through the real ``kubernetes`` client,
and a KeyStore. Then:

1. ``--rotations`` times: write the Secret with a new RSA-OAEP-256 key next to the
   previous one (the key before that leaves), and measure from the API write until a
   JWE for the new key decrypts with ``store.ring``, and until one for the key that
   left no longer does;
2. a ``--outage`` second outage (the server reads and drops every request), counting
   the requests it cost, then the time until a rotation made during the outage is
   in force.

Prints the command line and a markdown table. ``python bench/rotation.py --help``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402
from joserfc import jwe  # noqa: E402
from joserfc.jwe import JWERegistry  # noqa: E402
from joserfc.jwk import RSAKey  # noqa: E402
from kubernetes import client  # noqa: E402

from extauthz.keys.keyset import DECRYPTION, KeyRing, KeyStore  # noqa: E402
from extauthz.keys.sources.backoff import Backoff  # noqa: E402
from extauthz.keys.sources.kubernetes import KubernetesSource, new_api_client  # noqa: E402
from tests.fakekube import FakeKube  # noqa: E402

NS = "auth"
SECRET = "extauthz-decryption-keys"
REGISTRY = JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM"])


def decrypts(ring: KeyRing, token: str, kid: str) -> bool:
    for key in ring.get(DECRYPTION).by_kid(kid):
        try:
            jwe.decrypt_compact(token, key.jwk, registry=REGISTRY)
        except Exception:
            continue
        return True
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def max_requests(backoff: Backoff, seconds: float) -> int:
    """The most requests a retry loop can make in ``seconds`` (every delay at its minimum)."""
    total, attempts = 0.0, 1
    while True:
        step = 0.5 * min(backoff.cap, backoff.initial * backoff.factor ** (attempts - 1))
        if total + step > seconds:
            return attempts
        total += step
        attempts += 1


def jwks(*keys: RSAKey) -> bytes:
    return json.dumps({"keys": [dict(k.as_dict(private=True)) for k in keys]}).encode()


def wait_until(store: KeyStore, condition: Any, timeout: float) -> float:
    """Wait (on ring swaps, no spinning) until ``condition(ring)``; returns perf_counter()."""
    deadline = time.perf_counter() + timeout
    while True:
        ring = store.ring
        if condition(ring):
            return time.perf_counter()
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("the key store never reached the expected state")
        store.wait_generation(ring.generation, remaining)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=60, help="rotations to time (>= 50)")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds of API outage")
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(50)  # the table only (the outage logs)
    )

    print(f"generating {args.rotations + 2} RSA-2048 keys...", file=sys.stderr)
    keys = [
        RSAKey.generate_key(2048, parameters={"kid": f"k{i}", "use": "enc", "alg": "RSA-OAEP-256"})
        for i in range(args.rotations + 2)
    ]
    tokens = [
        jwe.encrypt_compact(
            {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": f"k{i}"}, b"{}", key, registry=REGISTRY
        )
        for i, key in enumerate(keys)
    ]

    backoff = Backoff()  # production default
    with FakeKube() as kube:
        kube.store.put_secret(NS, SECRET, {"jwks.json": jwks(keys[0])})
        api = new_api_client(client.Configuration(host=kube.url))
        source = KubernetesSource(NS, [SECRET], api_client=api, backoff=backoff)
        store = KeyStore()
        source.start(store.attach(DECRYPTION, source))
        if not store.wait_ready(10):
            raise SystemExit("the source never became ready")
        kube.wait_for_watches(1)

        usable: list[float] = []
        refused: list[float] = []
        for i in range(1, args.rotations + 1):
            gone = i - 2  # the key that leaves with this write (none on the first)
            written = time.perf_counter()
            kube.store.put_secret(NS, SECRET, {"jwks.json": jwks(keys[i - 1], keys[i])})
            new_ok = wait_until(store, lambda r, i=i: decrypts(r, tokens[i], f"k{i}"), 5)
            usable.append((new_ok - written) * 1000)
            if gone >= 0:
                old_out = wait_until(
                    store, lambda r, g=gone: not decrypts(r, tokens[g], f"k{g}"), 5
                )
                refused.append((old_out - written) * 1000)

        # outage: every request is read, logged and dropped without an answer
        outage_start = time.monotonic()
        kube.outage("drop")
        time.sleep(args.outage)
        outage_end = time.monotonic()
        n = args.rotations + 1
        kube.store.put_secret(NS, SECRET, {"jwks.json": jwks(keys[n - 1], keys[n])})
        kube.recover()
        recovered = time.monotonic()
        wait_until(store, lambda r: decrypts(r, tokens[n], f"k{n}"), 60)
        recovery = time.monotonic() - recovered
        dropped = [r for r in kube.log(outage_start) if r.note == "dropped" and r.at <= outage_end]
        source.stop()
        api.close()  # type: ignore[no-untyped-call]

    command = shlex.join(["python", "bench/rotation.py", *sys.argv[1:]])
    print(f"`{command}` — Python {platform.python_version()}, {platform.machine()}\n")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| rotations | {len(usable)} |")
    print(
        f"| API write → new key decrypts (p50 / p99 / max) | {statistics.median(usable):.1f} / "
        f"{percentile(usable, 0.99):.1f} / {max(usable):.1f} ms |"
    )
    print(
        f"| API write → removed key refused (p50 / p99 / max) | {statistics.median(refused):.1f} / "
        f"{percentile(refused, 0.99):.1f} / {max(refused):.1f} ms |"
    )
    print(
        f"| API requests during a {args.outage:.0f} s outage (dropped) | {len(dropped)} "
        f"(bound from backoff {backoff.initial} s x {backoff.factor}^n, cap {backoff.cap} s, "
        f"half-jitter: {max_requests(backoff, outage_end - outage_start)}) |"
    )
    print(f"| outage end → rotation made during it in force | {recovery:.2f} s |")


if __name__ == "__main__":
    main()
