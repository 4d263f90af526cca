"""Revocation: propagation, cost on the cached path, memory (a benchmark, not a test).

    python bench/revocation.py [--revocations 50] [--entries 100000] [--rounds 7]
                               [--checks 20000]

1. **Propagation**: the fake API server (tests/fakekube, real HTTP on loopback) holds
   the list ConfigMap; ``extauthz serve`` runs as its own process, watching it through
   ``KUBECONFIG``; this process sends Checks in a loop over gRPC with one token
   (verified once, then cached). ``--revocations`` times: write the ConfigMap with that
   token's ``jti`` added, and measure from the write to the first Check answered
   ``revoked``. p50 / p99 / max. Twice: with an empty list, and with ``--entries``
   other entries in further ConfigMaps of the same list (10,000 per ConfigMap, all
   selected by one label), so each update merges a full list.
2. **Cached-Check CPU**: in this process, the pipeline (``Evaluator.check``) on a cached
   token, with no revocation list next to a list of ``--entries`` entries (60% jti,
   20% token_sha256, 20% subject), in interleaved rounds; CPU time per Check (the
   median round). The target: at most 5% more with the list.
3. **Memory**: bytes held by a list of ``--entries`` entries (tracemalloc, after the
   parsed document is freed), the size of its JSON document, and the time to parse
   and index it.

Prints the command line and markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import structlog  # noqa: E402

from extauthz import config as config_mod  # noqa: E402
from extauthz import mint  # noqa: E402
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2  # noqa: E402
from extauthz.client import build_request, describe  # noqa: E402
from extauthz.keys.keyset import KeyStore  # noqa: E402
from extauthz.pipeline.evaluate import Evaluator  # noqa: E402
from extauthz.revocation.entries import parse_document  # noqa: E402
from extauthz.revocation.store import RevocationList, RevocationStore, Tables  # noqa: E402
from extauthz.server.app import Sources  # noqa: E402
from extauthz.server.authz import METHOD, to_input  # noqa: E402
from tests.fakekube import FakeKube  # noqa: E402

ISSUER = "https://idp.bench.test"
AUDIENCE = "api://bench"
NS = "auth"
CONFIGMAP = "extauthz-revoked"
LABELS = {"extauthz/revocation": "true"}
LABEL_SELECTOR = "extauthz/revocation=true"
#: entries per background ConfigMap (a ConfigMap holds 1 MiB: about 10,000 entries)
PER_CONFIGMAP = 10_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def setup_keys(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    enc = mint.generate_jwk("enc", "RSA-OAEP-256", "enc-1")
    sig = mint.generate_jwk("sig", "RS256", "sig-1")
    public = {k: v for k, v in sig.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    (root / "enc").mkdir()
    (root / "sig").mkdir()
    (root / "enc" / "enc.json").write_text(json.dumps(enc))
    (root / "sig" / "sig.json").write_text(json.dumps({"keys": [public]}))
    return enc, sig


def write_config(root: Path, grpc_port: int, http_port: int, revocation: bool) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "extauthz/v1",
        "listen": {"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
        "decryption": {"keys": [{"directory": str(root / "enc")}]},
        "providers": [{"name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE],
                       "keys": [{"directory": str(root / "sig")}]}],
        "logging": {"level": "warning", "decisions": "deny"},
        "shutdown": {"drain_seconds": 0, "grace_seconds": 1},
    }  # fmt: skip
    if revocation:
        # every list ConfigMap carries the label: the runbook's one and, in the full-list
        # variant, the ones holding the background entries
        config["revocation"] = {
            "sources": [{"kubernetes": {"namespace": NS, "label_selector": LABEL_SELECTOR}}],
            "max_entries": 200_000,
        }
    path = root / f"config-{grpc_port}.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def token(enc: dict[str, Any], sig: dict[str, Any], subject: str, jti: str | None) -> str:
    extra = {"jti": jti} if jti else {}
    claims = mint.claims_for(ISSUER, AUDIENCE, subject, ttl=3600, extra=extra)
    public = {k: v for k, v in enc.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    return mint.encrypt(mint.sign(claims, sig), public)


def put_list(kube: FakeKube, entries: list[dict[str, Any]], name: str = CONFIGMAP) -> None:
    kube.store.put_configmap(
        NS, name, {"revoked.json": json.dumps({"revoked": entries})}, labels=LABELS
    )


# -- 1. propagation ----------------------------------------------------------------------


def propagation(revocations: int, background: int) -> dict[str, Any]:
    """``background`` entries sit in other ConfigMaps of the same list the whole time."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp,
        FakeKube(bookmark_interval=None) as kube,
    ):
        root = Path(tmp)
        enc, sig = setup_keys(root)
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        }))  # fmt: skip
        put_list(kube, [])
        items = json.loads(big_list(background))["revoked"]
        for start in range(0, background, PER_CONFIGMAP):
            put_list(kube, items[start : start + PER_CONFIGMAP], f"revoked-{start:06d}")
        grpc_port, http_port = free_port(), free_port()
        config = write_config(root, grpc_port, http_port, revocation=True)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "extauthz", "serve", "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            result = _propagate(kube, server, grpc_port, http_port, enc, sig, revocations)
            return {**result, "background": background}
        finally:
            server.terminate()
            server.wait(10)


def _propagate(
    kube: FakeKube, server: subprocess.Popen[bytes], grpc_port: int, http_port: int,
    enc: dict[str, Any], sig: dict[str, Any], revocations: int,
) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("extauthz never became ready") from None
            time.sleep(0.05)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    check = channel.unary_unary(
        METHOD,
        request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    entries: list[dict[str, Any]] = []
    delays: list[float] = []
    checks_between: list[int] = []
    exp = int(time.time()) + 3600
    for index in range(revocations):
        jti = f"leaked-{index}"
        request = build_request({"authorization": f"Bearer {token(enc, sig, 'alice', jti)}"})
        first = check(request, timeout=5)
        if first.status.code != 0:
            raise RuntimeError(f"token {index} not allowed before its revocation")
        seen: list[float] = []
        reasons: list[str] = []
        count = [0]
        stop = threading.Event()

        def loop(request: Any = request, seen: list[float] = seen, count: list[int] = count,
                 stop: threading.Event = stop, reasons: list[str] = reasons) -> None:  # fmt: skip
            while not stop.is_set():
                answer = check(request, timeout=5)
                count[0] += 1
                if answer.status.code != 0:
                    seen.append(time.monotonic())
                    reasons.append(describe(answer)["metadata"].get("reason", ""))
                    return

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(0.05)  # the loop runs: the token is cached and allowed
        entries.append({"jti": jti, "iss": ISSUER, "exp": exp})
        before = count[0]
        written = time.monotonic()
        put_list(kube, entries)
        thread.join(5)
        stop.set()
        if not seen:
            raise RuntimeError(f"revocation {index} not enforced within 5 s")
        if reasons != ["revoked"]:
            raise RuntimeError(f"revocation {index}: denied for {reasons}, not revoked")
        delays.append(seen[0] - written)
        checks_between.append(count[0] - before)
    channel.close()
    return {
        "revocations": revocations,
        "p50_ms": percentile(delays, 0.5) * 1e3,
        "p99_ms": percentile(delays, 0.99) * 1e3,
        "max_ms": max(delays) * 1e3,
        "checks_during_median": statistics.median(checks_between),
    }


# -- 2. cached-Check CPU -------------------------------------------------------------------


def big_list(entries: int) -> bytes:
    items: list[dict[str, Any]] = []
    for i in range(entries):
        kind = i % 5
        if kind < 3:
            items.append({"jti": f"{i:08x}-7d0a-4c43-9f57-0e6c2f4f9a11", "iss": ISSUER,
                          "exp": 4102444800})  # fmt: skip
        elif kind == 3:
            digest = hashlib.sha256(str(i).encode()).hexdigest()
            items.append({"token_sha256": digest, "exp": 4102444800})
        else:
            items.append({"iss": ISSUER, "sub": f"user-{i}@example.com", "issued_before": 1})
    return json.dumps({"revoked": items}).encode()


def cpu(entries: int, rounds: int, checks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp:
        root = Path(tmp)
        enc, sig = setup_keys(root)
        config = config_mod.load(write_config(root, free_port(), free_port(), revocation=False))
        sources = Sources.from_config(config)
        sources.start()
        try:
            if not sources.store.wait_ready(10):
                raise RuntimeError("keys never loaded")
            return _cpu(config, sources.store, enc, sig, entries, rounds, checks)
        finally:
            sources.stop()


def _cpu(
    config: Any, keys: KeyStore, enc: dict[str, Any], sig: dict[str, Any], entries: int,
    rounds: int, checks: int,
) -> dict[str, Any]:  # fmt: skip
    store = RevocationStore(max_entries=max(entries, 1))

    class Source:
        kind = "directory"
        description = "bench"

    sink = store.attach(Source())  # type: ignore[arg-type]
    sink.update("list", {"revoked.json": big_list(entries)})
    sink.synced()
    if len(store.lists.tables) != entries or not store.lists.ready:
        raise RuntimeError("the list did not load")
    plain = Evaluator(config, keys)
    listed = Evaluator(config, keys, revocation=store)
    request = to_input(build_request(
        {"authorization": f"Bearer {token(enc, sig, 'alice', 'clean-1')}"}, "/orders"
    ))  # fmt: skip
    for evaluator in (plain, listed):
        decision, _ = evaluator.check(request)
        if not decision.allowed:
            raise RuntimeError(f"not allowed: {decision.reason}")
    per_check: dict[str, list[float]] = {"none": [], "list": []}
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, evaluator in (("none", plain), ("list", listed)):
                check = evaluator.check
                started = time.process_time()
                for _ in range(checks):
                    check(request)
                per_check[name].append((time.process_time() - started) / checks)
    finally:
        gc.enable()
    none = statistics.median(per_check["none"])
    listed_cost = statistics.median(per_check["list"])
    # the lookup a cached token pays once after each list change
    lists = store.lists
    digest = hashlib.sha256(b"not revoked").digest()
    started = time.process_time()
    for _ in range(checks):
        lists.match(digest, ISSUER, "clean-1", "alice", 1.0, time.time(), 30)
    lookup = (time.process_time() - started) / checks
    return {
        "entries": entries,
        "none_us": none * 1e6,
        "list_us": listed_cost * 1e6,
        "overhead_pct": (listed_cost / none - 1) * 100,
        "lookup_after_change_us": lookup * 1e6,
        "rounds": rounds,
        "checks_per_round": checks,
    }


# -- 3. memory -----------------------------------------------------------------------------


def memory(entries: int) -> dict[str, Any]:
    document = big_list(entries)
    started = time.perf_counter()
    Tables.build(parse_document(document, "bench"))
    elapsed = time.perf_counter() - started  # timed without tracemalloc, which slows it
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tables = Tables.build(parse_document(document, "bench"))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    snapshot = RevocationList(tables, 1, True)
    return {
        "entries": len(snapshot.tables),
        "held_mib": held / 2**20,
        "bytes_per_entry": held / max(entries, 1),
        "peak_while_loading_mib": peak / 2**20,
        "document_mib": len(document) / 2**20,
        "load_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--revocations", type=int, default=50)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--skip-propagation", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    print(f"$ {shlex.join(['python', *sys.argv])}")
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}\n")  # fmt: skip
    if not args.skip_propagation:
        runs = [propagation(args.revocations, 0), propagation(args.revocations, args.entries)]
        print(
            "| propagation: ConfigMap write -> first Check denied `revoked` | "
            + " | ".join(f"{p['background']:,} other entries" for p in runs)
            + " |"
        )
        print("| --- |" + " --- |" * len(runs))
        for label, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms")):
            print(f"| {label} | " + " | ".join(f"{p[key]:.1f} ms" for p in runs) + " |")
        print(
            "| Checks answered meanwhile (median) | "
            + " | ".join(f"{p['checks_during_median']:.0f}" for p in runs)
            + " |"
        )
        print(f"| revocations | {args.revocations} (one entry added per ConfigMap write) |\n")
    c = cpu(args.entries, args.rounds, args.checks)
    print("| cached Check, pipeline only (CPU per Check, median of rounds) | value |")
    print("| --- | --- |")
    print(f"| no revocation list | {c['none_us']:.2f} µs |")
    print(f"| {c['entries']:,}-entry list | {c['list_us']:.2f} µs |")
    print(f"| difference (target ≤ 5%) | {c['overhead_pct']:+.1f}% |")
    print(f"| one lookup, paid once per cached token after a list change | "
          f"{c['lookup_after_change_us']:.2f} µs |")  # fmt: skip
    print(f"| rounds × Checks | {c['rounds']} × {c['checks_per_round']:,} |\n")
    m = memory(args.entries)
    print("| memory | value |")
    print("| --- | --- |")
    print(f"| entries | {m['entries']:,} |")
    print(f"| held by the list | {m['held_mib']:.1f} MiB ({m['bytes_per_entry']:.0f} B/entry) |")
    print(f"| peak while loading | {m['peak_while_loading_mib']:.1f} MiB |")
    print(f"| JSON document | {m['document_mib']:.1f} MiB |")
    print(f"| parse and index | {m['load_s'] * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
