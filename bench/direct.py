"""extauthz alone, under a gRPC load generator: Checks/s, latency, server CPU µs per Check.

    python bench/direct.py [--seconds 8] [--concurrency 16] [--workers 1]

Runs ``python -m extauthz serve`` (decision log: denies only, unless the row says
otherwise) and a grpc.aio client keeping ``--concurrency`` Checks in flight with
Envoy-shaped CheckRequests, for each workload:

- **cached**: one nested RSA-OAEP-256/RS256 token over and over (the verified-token
  cache), with denies-only logging and with the default (``info``, every decision
  logged as a JSON line, written to a file) — the difference is the logging cost;
- **unique RSA**: every Check a new nested RSA-OAEP-256 + A256GCM / RS256 token;
- **unique EC**: every Check a new nested ECDH-ES + A256GCM / ES256 token;
- **invalid signature**: one nested token whose inner JWS is signed by an unknown key
  (denies are never cached: the full decrypt + verify every time);
- **invalid malformed**: a token that is not base64url JSON (the cheap deny path).

Baselines measured in the same run: the trivial Python ext_authz server
(``bench/trivial_authz.py``) under the same client, and bare joserfc
(decrypt + verify + claims validation, no gRPC, no protobuf) in a loop on one core.
Server CPU comes from /proc/PID/stat of the server (and its workers), so it does not
depend on how fast the client is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import harness as h
import loadgen


def bare_rate(keys: h.Keys, tokens: list[str], enc: str, sig: str) -> dict[str, float]:
    """joserfc alone on ``tokens``: JWE decrypt, JWS verify, claims validation."""
    from joserfc import jwe, jwt
    from joserfc.jwa import JWERegistry, JWSRegistry  # type: ignore[attr-defined]  # re-exported
    from joserfc.jwt import JWTClaimsRegistry

    jwe_registry = JWERegistry(algorithms=[enc, "A256GCM"])
    jws_registry = JWSRegistry(algorithms=[sig])
    claims = JWTClaimsRegistry(iss={"essential": True, "value": h.ISSUER},
                               aud={"essential": True, "value": h.AUDIENCE},
                               exp={"essential": True}, sub={"essential": True})  # fmt: skip
    enc_key, sig_key = keys.enc[enc].key.jwk, keys.sig[sig].key.jwk
    wall, cpu = time.perf_counter(), time.process_time()
    for token in tokens:
        inner = jwe.decrypt_compact(token, enc_key, registry=jwe_registry).plaintext
        assert inner is not None
        claims.validate(jwt.decode(inner, sig_key, registry=jws_registry).claims)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rps": len(tokens) / wall, "cpu_us": cpu / len(tokens) * 1e6}


def measure(server: h.Server, payloads: list[bytes], seconds: float, concurrency: int,
            cycle: bool, expect_allow: bool, warm: int = 200) -> dict[str, Any]:  # fmt: skip
    """Warm up on the first ``warm`` payloads, then load the server and read its CPU."""
    if cycle:
        loadgen.grpc_closed_loop(server.port, payloads, 0.5, concurrency, True, expect_allow)
    else:
        loadgen.grpc_closed_loop(server.port, payloads[:warm], 60, concurrency, False,
                                 expect_allow)  # fmt: skip
        payloads = payloads[warm:]
    cpu0 = server.cpu()
    result = loadgen.grpc_closed_loop(server.port, payloads, seconds, concurrency, cycle,
                                      expect_allow)  # fmt: skip
    cpu = server.cpu() - cpu0
    row = result.as_dict()
    row["server_cpu_us"] = cpu / max(result.requests, 1) * 1e6
    row["exhausted"] = not cycle and result.seconds < seconds * 0.98
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8, help="per workload")
    parser.add_argument("--concurrency", type=int, default=16, help="Checks in flight")
    parser.add_argument("--workers", type=int, default=1, help="extauthz --workers")
    parser.add_argument(
        "--nice", type=int, default=0, help="priority of the benchmark and its servers (root: -10)"
    )
    parser.add_argument("--bare-n", type=int, default=400, help="tokens for the joserfc loop")
    args = parser.parse_args()
    h.prioritise(args.nice)
    out: dict[str, Any] = {"command": h.command_line(), "machine": h.machine(), "args": vars(args),
                           "rows": {}, "baselines": {}}  # fmt: skip
    rows = out["rows"]
    with h.scratch("extauthz-direct-") as work:
        keys = h.Keys.generate()
        keys.write(work)
        # an unknown signing key for the invalid-signature workload
        rogue = h.Keys(enc=keys.enc, sig={"RS256": h.KeyPair.generate("sig", "RS256", "sig-rs256")})

        print("baselines: bare joserfc on one core ...", flush=True)
        bare = {}
        for label, enc, sig in (("rsa", "RSA-OAEP-256", "RS256"), ("ec", "ECDH-ES", "ES256")):
            sample = h.mint_tokens(work, args.bare_n, sig, enc, f"bare-{label}")
            bare[label] = bare_rate(keys, sample, enc, sig)
            out["baselines"][f"bare_joserfc_{label}"] = bare[label]
        # enough unique tokens for the run: the bare rate bounds the server's
        need = {label: int(bare[label]["rps"] * args.workers * args.seconds * 1.15) + 400
                for label in bare}  # fmt: skip
        print(f"minting {need['rsa']} RSA + {need['ec']} EC unique tokens ...", flush=True)
        unique = {
            "rsa": [h.envoy_like_request(t) for t in
                    h.mint_tokens(work, need["rsa"], "RS256", "RSA-OAEP-256", "u-rsa")],
            "ec": [h.envoy_like_request(t) for t in
                   h.mint_tokens(work, need["ec"], "ES256", "ECDH-ES", "u-ec")],
        }  # fmt: skip
        cached = [h.envoy_like_request(h.token(keys, "cached-user"))]
        bad_sig = [h.envoy_like_request(h.token(rogue, "mallory"))]
        malformed = [h.envoy_like_request("eyJhbGciOi.not-json.@@@")]

        print("trivial Python ext_authz server ...", flush=True)
        with h.trivial_authz() as trivial:
            rows["trivial"] = measure(trivial, cached, args.seconds, args.concurrency, True, True)
            out["baselines"]["trivial"] = rows["trivial"]

        plan: list[tuple[str, list[bytes], bool, bool, str]] = [
            ("cached", cached, True, True, "deny"),
            ("cached, every decision logged", cached, True, True, "all"),
            ("unique RSA-OAEP-256/RS256", unique["rsa"], False, True, "deny"),
            ("unique ECDH-ES/ES256", unique["ec"], False, True, "deny"),
            ("invalid: bad signature", bad_sig, True, False, "deny"),
            ("invalid: malformed", malformed, True, False, "deny"),
        ]
        logs = work / "decisions.log"
        for name, payloads, cycle, allow, decisions in plan:
            print(f"extauthz: {name} ...", flush=True)
            with h.extauthz(work, workers=args.workers, decisions=decisions,
                            cache_entries=max(10000, len(payloads) + 1000),
                            log=logs if decisions == "all" else None) as server:  # fmt: skip
                rows[name] = measure(server, payloads, args.seconds, args.concurrency, cycle,
                                     allow)  # fmt: skip
                rows[name]["command"] = " ".join(Path(c).name if i == 0 else c
                                                 for i, c in enumerate(server.command))  # fmt: skip
    path = h.save("direct" if args.workers == 1 else f"direct-w{args.workers}", out)
    print(table(out))
    print(f"\nraw results: {path}")


def table(out: dict[str, Any]) -> str:
    """The markdown table of a direct run."""
    rows, base = out["rows"], out["baselines"]
    trivial = base["trivial"]["rps"]
    ratio_to = {"unique RSA-OAEP-256/RS256": ("bare_joserfc_rsa", "bare joserfc RSA"),
                "unique ECDH-ES/ES256": ("bare_joserfc_ec", "bare joserfc EC")}  # fmt: skip
    lines = [
        f"command: `{out['command']}`",
        "",
        "| workload | Checks/s | p50 ms | p90 ms | p99 ms | server CPU µs/Check | ratio |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label in ("bare_joserfc_rsa", "bare_joserfc_ec"):
        b = base[label]
        lines.append(f"| baseline: {label.replace('_', ' ')} (one core, no gRPC) | "
                     f"{b['rps']:,.0f} | | | | {b['cpu_us']:,.0f} | 1.00× |")  # fmt: skip
    for name, row in rows.items():
        if name == "trivial":
            label, ratio = "baseline: trivial Python ext_authz", "1.00×"
        else:
            key, what = ratio_to.get(name, ("trivial", "trivial"))
            ref = base[key]["rps"] if key != "trivial" else trivial
            label, ratio = f"extauthz: {name}", f"{row['rps'] / ref:.2f}× {what}"
        flag = " (tokens ran out)" if row.get("exhausted") else ""
        bad = f" ⚠ {row['errors']} errors, {row['non_2xx']} unexpected" if (
            row["errors"] or row["non_2xx"]) else ""  # fmt: skip
        lines.append(f"| {label}{flag}{bad} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | "
                     f"{row['p90_ms']:.2f} | {row['p99_ms']:.2f} | {row['server_cpu_us']:,.0f} | "
                     f"{ratio} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
