"""Measure server-side tuning ideas before proposing them: same load, one knob at a time.

    python bench/server_options.py [--workload cached|unique] [--seconds 4] [--rounds 2]

Each variant runs extauthz through ``bench/_patched_serve.py`` (the product code is
untouched; the knob is patched in at start-up) under the direct gRPC client of
:mod:`loadgen` with Envoy-shaped CheckRequests, and reports Checks/s and server CPU
µs per Check, next to the unpatched default measured in the same run. Rounds
interleave the variants; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import harness as h
import loadgen

#: (label, extauthz kwargs for harness.extauthz)
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("default (8 threads, denies logged)", {}),
    ("server.threads: 1", {"threads": 1}),
    ("server.threads: 2", {"threads": 2}),
    ("server.threads: 4", {"threads": 4}),
    ("server.threads: 16", {"threads": 16}),
    ("sys.setswitchinterval(0.001)", {"knobs": {"switch_interval": 0.001}}),
    ("grpc.optimization_target=throughput",
     {"knobs": {"grpc_options": [["grpc.optimization_target", "throughput"]]}}),
    ("grpc.max_concurrent_streams=8",
     {"knobs": {"grpc_options": [["grpc.max_concurrent_streams", 8]]}}),
    ("every decision logged (default logging)", {"decisions": "all"}),
    ("every decision logged, orjson + buffered bytes logger",
     {"decisions": "all", "knobs": {"fast_log": True}}),
    ("concurrent.futures.ThreadPoolExecutor instead of the call pool",
     {"knobs": {"stock_pool": True}}),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="cached", choices=["cached", "unique"])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated variant numbers (0 = default)")
    parser.add_argument("--nice", type=int, default=0, help="priority of this benchmark")
    args = parser.parse_args()
    h.prioritise(args.nice)
    chosen = [VARIANTS[int(i)] for i in args.only.split(",")] if args.only else VARIANTS
    if chosen[0] is not VARIANTS[0]:
        chosen.insert(0, VARIANTS[0])
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in chosen}
    with h.scratch("extauthz-options-") as work:
        keys = h.Keys.generate()
        keys.write(work)
        if args.workload == "cached":
            payloads = [h.envoy_like_request(h.token(keys, "cached-user"))]
        else:
            count = int(1000 * args.seconds * args.rounds * len(chosen)) + 200
            print(f"minting {count} unique RSA tokens ...", flush=True)
            payloads = [h.envoy_like_request(t) for t in
                        h.mint_tokens(work, count, "RS256", "RSA-OAEP-256", "opt")]  # fmt: skip
        cycle = args.workload == "cached"
        offset = 0
        for round_ in range(args.rounds):
            for label, kwargs in chosen:
                print(f"round {round_ + 1}: {label} ...", flush=True)
                log = work / "decisions.log" if kwargs.get("decisions") == "all" else None
                with h.extauthz(work, log=log, **kwargs) as server:
                    loadgen.grpc_closed_loop(server.port, payloads[offset:offset + 100], 0.5,
                                             args.concurrency, cycle)  # fmt: skip
                    if not cycle:
                        offset += 100
                    cpu = server.cpu()
                    result = loadgen.grpc_closed_loop(
                        server.port, payloads[offset:], args.seconds, args.concurrency, cycle
                    )
                    cpu = server.cpu() - cpu
                    if not cycle:
                        offset += result.requests
                    per_check = cpu / max(result.requests, 1) * 1e6
                    results[label].append(
                        {"rps": result.rps, "p99_ms": result.p99_ms, "cpu_us": per_check}
                    )
    best = {label: min(rows, key=lambda r: r["cpu_us"]) for label, rows in results.items()}
    base = best[chosen[0][0]]
    print(f"\ncommand: `{h.command_line()}`\n")
    mean = {label: sum(r["cpu_us"] for r in rows) / len(rows) for label, rows in results.items()}
    print(
        "| variant | Checks/s | ÷ default | server CPU µs/Check (best round) | ÷ default "
        "| mean over rounds | ÷ default |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, row in best.items():
        print(
            f"| {label} | {row['rps']:,.0f} | {row['rps'] / base['rps']:.2f}× | "
            f"{row['cpu_us']:,.0f} | {row['cpu_us'] / base['cpu_us']:.2f}× | "
            f"{mean[label]:,.0f} | {mean[label] / mean[chosen[0][0]]:.2f}× |"
        )
    h.save(f"server_options-{args.workload}", {"command": h.command_line(), "best": best,
                                                "runs": results})  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
