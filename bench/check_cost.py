"""Cost of one Check in-process, next to bare joserfc decrypt+verify+claims on the same tokens.

    python bench/check_cost.py [--n 300] [--repeat 3] [--cached 20000]

No server, no network: the edges' own code on one core, in one process, so the
figures are CPU µs per Check with nothing else in them.

- **cached**: one nested RSA-OAEP-256 + RS256 token checked over and over (the
  verified-token cache, as a client reusing its token). gRPC edge: serialized
  ``CheckRequest`` bytes -> ``CheckRequest.FromString`` -> ``Authorizer.check`` ->
  ``CheckResponse`` bytes (what grpcio's deserializer and the handler run). HTTP edge
  (when the HTTP authorization listener exists): the raw request bytes Envoy sends
  through a fresh connection protocol object to the bytes of the answer. Decision log
  as in production (orjson into a buffered stream, here /dev/null), with every
  decision logged (the default) and with denies only.
- **unique**: every Check a new nested token, RSA-OAEP-256 + A256GCM / RS256 and
  ECDH-ES + A256GCM / ES256, through the gRPC edge; next to **bare joserfc** on the
  same tokens (``jwe.decrypt_compact`` + ``jws.deserialize_compact`` + ``json.loads`` +
  ``JWTClaimsRegistry.validate``: no policy, no protobuf, no logging). ``--repeat``
  rounds interleave bare and edge (fresh tokens each round, so every edge Check is a
  cache miss); the least disturbed round of each is kept.

Ratios are what to compare: the machine is shared. Raw results go to
``bench/results/check_cost.json``; the targets are printed at the end.

``--memory-sites N`` shows where the bytes
of N cached tokens are allocated (tracemalloc, by the innermost extauthz frame). ``--loop
cached|cached-http|unique-rsa|unique-ec --seconds S`` only runs that workload for S
seconds after printing ``ready`` (tokens minted first): the target that
``bench/profile_server.py --inprocess`` attaches py-spy to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwe, jws, jwt
from joserfc.jwa import JWERegistry, JWSRegistry  # type: ignore[attr-defined]  # re-exported

from extauthz import mint
from extauthz.client import build_request
from extauthz.config import CacheConfig, Config, LoggingConfig, ProviderConfig
from extauthz.keys.keyset import DECRYPTION, KeyStore, provider_purpose
from extauthz.keys.material import key_from_jwk
from extauthz.keys.sources.static import StaticSource
from extauthz.pipeline.evaluate import Evaluator
from extauthz.server.authz import Authorizer

ISSUER = "https://idp.bench"
PAIRS = (("RSA-OAEP-256 + RS256", "RSA-OAEP-256", "RS256"),
         ("ECDH-ES + ES256", "ECDH-ES", "ES256"))  # fmt: skip
#: the request line and headers Envoy 1.40's http_service sends (path_prefix empty)
HTTP_REQUEST = (
    "GET /orders/42 HTTP/1.1\r\nhost: 127.0.0.1:10000\r\nauthorization: Bearer {token}\r\n"
    "x-request-id: 5f0a4b1e-9a57-4f43-9c1e-5d1f0c2d8e11\r\ncontent-length: 0\r\n"
    "x-envoy-internal: true\r\nx-envoy-expected-rq-timeout-ms: 2000\r\n\r\n"
)


def measure(fn: Callable[[int], Any], n: int) -> dict[str, float]:
    """Calls per wall second and CPU µs per call of ``fn(i)`` for i in range(n)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6, "n": n}


@dataclass
class Setup:
    """An Authorizer over static keys, the keys, and a minting function."""

    authorizer: Authorizer
    evaluator: Evaluator
    config: Config
    enc: Any
    sig: Any
    counter: Any

    def token(self) -> str:
        claims = mint.claims_for(ISSUER, "api", f"user-{next(self.counter)}",
                                 extra={"scope": "a b", "email": "user@bench.test"})  # fmt: skip
        return mint.encrypt(mint.sign(claims, self.sig), self.enc, enc="A256GCM")


def setup(enc_alg: str, sig_alg: str, decisions: Any = "all",
          keys: tuple[Any, Any] | None = None, cache_entries: int = 10000) -> Setup:  # fmt: skip
    """An Authorizer with one decryption and one verification key (new ones unless
    ``keys`` gives them), decision log ``decisions``."""
    enc, sig = keys or (key_from_jwk(mint.generate_jwk("enc", enc_alg, "e1"), "bench"),
                        key_from_jwk(mint.generate_jwk("sig", sig_alg, "s1"), "bench"))  # fmt: skip
    provider: dict[str, Any] = {
        "name": "idp", "issuer": ISSUER, "audiences": ("api",), "keys": (),
        "claims_to_headers": (("sub", "x-auth-subject"), ("scope", "x-auth-scope"),
                              ("email", "x-auth-email")),
    }  # fmt: skip
    config = Config(
        providers=(ProviderConfig(**provider),),
        logging=LoggingConfig(decisions=decisions),
        cache=CacheConfig(max_entries=cache_entries, max_ttl_seconds=3600),
    )
    store = KeyStore()
    store.attach(DECRYPTION, StaticSource([enc])).publish([enc])
    store.attach(provider_purpose("idp"), StaticSource([sig])).publish([sig])
    evaluator = Evaluator(config, store)
    authorizer = Authorizer(evaluator, config.logging)
    return Setup(authorizer, evaluator, config, enc, sig, iter(range(10**9)))


def grpc_edge(authorizer: Authorizer, requests: list[bytes]) -> Callable[[int], bytes]:
    """bytes -> CheckRequest -> Check -> bytes, as grpcio's handler runs it."""
    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb

    parse, check = pb.CheckRequest.FromString, authorizer.check

    def run(i: int) -> bytes:
        wire: bytes = check(parse(requests[i]))
        assert wire[:2] != b"\n\x02", "deny"  # CheckResponse.status with a code
        return wire

    return run


def http_edge(s: Setup, token: str) -> Callable[[int], bytes] | None:
    """Envoy's HTTP authorization request -> the HTTP edge -> the answer's bytes, or
    None when this extauthz has no HTTP edge (or it cannot be driven in-process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import http_inprocess

    return http_inprocess.driver(s.evaluator, s.config, HTTP_REQUEST.format(token=token))


def bare(enc: Any, sig: Any, enc_alg: str, sig_alg: str,
         tokens: list[str]) -> Callable[[int], None]:  # fmt: skip
    """joserfc alone: decrypt, verify, parse and validate the claims."""
    jwe_reg = JWERegistry(algorithms=[enc_alg, "A256GCM"])
    jws_reg = JWSRegistry(algorithms=[sig_alg])
    claims_reg = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "api"},
        exp={"essential": True},
        sub={"essential": True},
        leeway=30,
    )

    def run(i: int) -> None:
        inner = jwe.decrypt_compact(tokens[i], enc.jwk, registry=jwe_reg).plaintext
        assert inner is not None
        signed = jws.deserialize_compact(inner, sig.jwk, registry=jws_reg)
        claims_reg.validate(json.loads(signed.payload))

    return run


def _same(edge: Callable[[int], Any]) -> Callable[[int], Any]:
    """``edge`` on its first request every time (one cached token)."""
    return lambda _i: edge(0)


def cached(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Cached-token rows: each edge, each decision-log mode."""
    out: dict[str, dict[str, float]] = {}
    keys: tuple[Any, Any] | None = None
    for decisions in ("all", "deny"):
        s = setup("RSA-OAEP-256", "RS256", decisions, keys)
        keys = (s.enc, s.sig)
        token = s.token()
        wire = build_request({"authorization": f"Bearer {token}",
                              "x-request-id": "5f0a4b1e-9a57-4f43-9c1e-5d1f0c2d8e11"},
                             "/orders/42").SerializeToString()  # fmt: skip
        edges: list[tuple[str, Callable[[int], Any] | None]] = [
            ("gRPC", grpc_edge(s.authorizer, [wire] * 1)),
            ("HTTP", http_edge(s, token)),
        ]
        for name, edge in edges:
            if edge is None:
                continue
            edge(0)  # the miss: decrypt and verify once
            runs = [measure(_same(edge), args.cached) for _ in range(args.repeat)]
            out[f"cached, {name} edge, decisions: {decisions}"] = min(
                runs, key=lambda r: r["cpu_us"]
            )
    return out


def unique(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """Unique-token rows: the gRPC edge and bare joserfc, interleaved rounds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, enc_alg, sig_alg in PAIRS:
        s = setup(enc_alg, sig_alg, "deny")
        edge_runs, bare_runs = [], []
        for _ in range(args.repeat):
            tokens = [s.token() for _ in range(args.n)]
            wires = [build_request({"authorization": f"Bearer {t}"}, "/orders/42")
                     .SerializeToString() for t in tokens]  # fmt: skip
            bare_runs.append(measure(bare(s.enc, s.sig, enc_alg, sig_alg, tokens), args.n))
            edge_runs.append(measure(grpc_edge(s.authorizer, wires), args.n))
        out[label] = {
            "edge": min(edge_runs, key=lambda r: r["cpu_us"]),
            "bare": min(bare_runs, key=lambda r: r["cpu_us"]),
        }
    return out


Target = tuple[str, str, str, str, bool]


def targets(result: dict[str, Any]) -> list[Target]:
    """(target, measured, baseline, aim, met) of the in-process figures."""
    found: list[Target] = []
    for name, row in result["cached"].items():
        if name.endswith("decisions: all") or name.endswith("decisions: deny"):
            found.append((f"{name}: ≤ 20 µs CPU", f"{row['cpu_us']:.1f} µs", "",
                          "≤ 20 µs", row["cpu_us"] <= 20))  # fmt: skip
    for label, pair in result["unique"].items():
        ratio = pair["bare"]["cpu_us"] / pair["edge"]["cpu_us"]
        found.append((f"unique {label} ≥ 0.9× bare joserfc", f"{ratio:.2f}× "
                      f"({pair['edge']['cpu_us']:,.0f} µs)",
                      f"bare joserfc {pair['bare']['cpu_us']:,.0f} µs/token", "≥ 0.9×",
                      ratio >= 0.9))  # fmt: skip
    return found


def table(result: dict[str, Any]) -> str:
    """The markdown tables of a run."""
    lines = [f"command: `{result['command']}`", "",
             "| workload | Checks/s (one core) | CPU µs/Check | bare joserfc CPU µs | "
             "÷ bare (throughput) |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, row in result["cached"].items():
        lines.append(f"| {name} | {row['rate']:,.0f} | {row['cpu_us']:.1f} | | |")
    for label, pair in result["unique"].items():
        edge, base = pair["edge"], pair["bare"]
        lines.append(f"| unique {label}, gRPC edge, decisions: deny | {edge['rate']:,.0f} | "
                     f"{edge['cpu_us']:,.0f} | {base['cpu_us']:,.0f} | "
                     f"{base['cpu_us'] / edge['cpu_us']:.2f}× |")  # fmt: skip
    return "\n".join(lines)


def targets_table(found: list[Target]) -> str:
    lines = ["| target | measured | baseline (same run) | aim | met |", "|---|---:|---|---:|---|"]
    for target, value, base, aim, met in found:
        lines.append(f"| {target} | {value} | {base} | {aim} | {'✅ yes' if met else '❌ no'} |")
    return "\n".join(lines)


def loop(workload: str, seconds: float) -> None:
    """Run one workload through the gRPC edge for ``seconds`` (a profiling target)."""
    if workload.startswith("cached"):
        s = setup("RSA-OAEP-256", "RS256", "all")
        tokens = [s.token()]
    else:
        enc_alg, sig_alg = (
            ("RSA-OAEP-256", "RS256") if workload == "unique-rsa" else ("ECDH-ES", "ES256")
        )
        s = setup(enc_alg, sig_alg, "deny")
        # more than the edge can check in ``seconds``: every Check a cache miss
        tokens = [s.token() for _ in range(int(seconds * 4000))]
    wires = [build_request({"authorization": f"Bearer {t}"}, "/orders/42").SerializeToString()
             for t in tokens]  # fmt: skip
    edge = grpc_edge(s.authorizer, wires)
    if workload == "cached-http":
        http = http_edge(s, tokens[0])
        if http is None:
            raise SystemExit("this extauthz has no HTTP edge")
        edge = http
    edge(0)  # a cached workload's miss
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    i = 0
    cpu = time.process_time()
    while time.monotonic() < deadline:
        edge(i % len(wires))
        i += 1
    cpu = time.process_time() - cpu
    print(f"checks {i} cpu_us {cpu / max(i, 1) * 1e6:.1f}", flush=True)


def memory_sites(entries: int, top: int = 14) -> str:
    """Where the bytes of ``entries`` cached tokens go (tracemalloc, by allocation site),
    as a markdown table of bytes per entry."""
    import gc
    import linecache
    import tracemalloc

    s = setup("ECDH-ES", "ES256", "deny", cache_entries=entries)
    wires = [build_request({"authorization": f"Bearer {s.token()}"}, "/orders/42")
             .SerializeToString() for _ in range(entries + 1)]  # fmt: skip
    edge = grpc_edge(s.authorizer, wires)
    edge(entries)  # every code path warm, outside the measurement
    gc.collect()
    tracemalloc.start(30)
    before = tracemalloc.take_snapshot()
    for i in range(entries):
        edge(i)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "traceback")
    total = sum(stat.size_diff for stat in stats)
    lines = [f"{entries:,} unique cached tokens (ECDH-ES + ES256, three claim headers): "
             f"{total / entries:,.0f} B of Python allocations per entry", "",
             "| allocated at (innermost extauthz frame) | B per entry |", "|---|---:|"]  # fmt: skip
    by_site: dict[str, int] = {}
    for stat in stats:
        frames = [f for f in stat.traceback if "/extauthz/" in f.filename]
        # a Traceback runs from the oldest frame to the most recent
        inner = frames[-1] if frames else stat.traceback[-1]
        code = linecache.getline(inner.filename, inner.lineno).strip()
        where = f"{inner.filename.split('/extauthz/')[-1]}:{inner.lineno}` `{code[:70]}"
        by_site[where] = by_site.get(where, 0) + stat.size_diff
    for where, size in sorted(by_site.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| `{where}` | {size / entries:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="unique tokens per round")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--cached", type=int, default=20000, help="cached Checks per round")
    parser.add_argument("--nice", type=int, default=0, help="priority (root: -10)")
    parser.add_argument("--loop", choices=["cached", "cached-http", "unique-rsa", "unique-ec"],
                        help="only run this workload (for a profiler)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=8, help="--loop duration")
    parser.add_argument("--memory-sites", type=int, metavar="N",
                        help="only show where N cached tokens' bytes are allocated")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness as h

    h.prioritise(args.nice)
    from extauthz import logging as extauthz_logging

    # the production decision log, written to /dev/null: its cost counts, a disk's not
    extauthz_logging.configure("info", "json", open(os.devnull, "w"))  # noqa: SIM115
    logging.disable(logging.CRITICAL)
    if args.loop:
        loop(args.loop, args.seconds)
        return
    if args.memory_sites:
        text = f"command: `{h.command_line()}`\n\n{memory_sites(args.memory_sites)}"
        h.save("memory_sites", {"command": h.command_line(), "markdown": text})
        print(text)
        return
    result: dict[str, Any] = {"command": h.command_line(), "machine": h.machine(),
                              "args": vars(args)}  # fmt: skip
    result["cached"] = cached(args)
    result["unique"] = unique(args)
    path = h.save("check_cost", result)
    print(table(result), "", targets_table(targets(result)), sep="\n")
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
