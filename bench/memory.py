"""extauthz memory with a full token cache, and start-up time with 100 keys.

    python bench/memory.py [--entries 10000,100000] [--keys 100] [--repeat 3] [--http-authz]
                           [--env NAME=VALUE ...]

**Memory**: for each ``--entries`` N, start extauthz with ``cache.max_entries: N``,
read its RSS (VmRSS of /proc/PID/status) once SERVING after a few Checks (the
baseline: everything imported, nothing cached), then fill the cache with N unique
valid tokens through real gRPC Checks and read RSS again (each reading also split into
anonymous and file-backed memory: a library's mapped code counts in the idle figure
before it allocates anything). The tokens are nested JWTs
(ECDH-ES + A256GCM around an RS256-signed JWT with the usual claims): a cache entry
holds the inner JWT and the claims, whose size does not depend on the outer
algorithm, and ECDH-ES keeps the fill minutes shorter than RSA-OAEP would. The
``extauthz_token_cache_total`` counters on ``/metrics`` prove every fill Check was a
miss and that the first tokens are still cached (hits) at the end. ``--http-authz``
also opens the HTTP authorization listener (a server running both transports).

**Start-up**: time from spawning ``python -m extauthz serve`` to gRPC health
``SERVING`` (polled every 10 ms) with ``--keys`` RSA-2048 private JWKs in the
decryption key directory (and ``--keys`` public RS256 JWKs in the provider's),
next to the same with one key of each — the baseline, in the same run. Median of
``--repeat`` starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import harness as h
import loadgen


def cache_counts(http_port: int) -> dict[str, float]:
    """``extauthz_token_cache_total`` by result, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = re.compile(r'^extauthz_token_cache_total\{result="(\w+)"\} (\S+)$', re.M)
    return {m[1]: float(m[2]) for m in pattern.finditer(text)}


def rss_split(pid: int) -> dict[str, float]:
    """RSS of ``pid`` in MB by kind (/proc/PID/status): ``anon`` (Python objects, C
    heaps, thread stacks) and ``file`` (mapped code of the interpreter and the
    extension modules: what importing a library costs even before it allocates)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem"):
            out[name[3:].lower()] = int(value.split()[0]) / 1024
    return out


def fill(work: Path, entries: int, concurrency: int, http_authz: bool = False,
         env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """RSS before and after caching ``entries`` unique tokens."""
    print(f"minting {entries:,} unique nested tokens ...", flush=True)
    started = time.perf_counter()
    tokens = h.mint_tokens(work, entries + 1, "RS256", "ECDH-ES", f"m{entries}")
    minted = time.perf_counter() - started
    payloads = [h.envoy_like_request(t) for t in tokens]
    warm = payloads.pop()  # not part of the fill: evicted by it
    del tokens
    log = work / f"server-{entries}.log"
    for attempt in range(3):
        # a port picked free a moment ago may be taken meanwhile: new ports, start again
        http_port, port = h.free_port(), h.free_port()
        config = h.write_config(work, grpc_port=port, http_port=http_port,
                                cache_entries=entries, cache_ttl=3600, decisions="deny",
                                http_authz_port=h.free_port() if http_authz else None)  # fmt: skip
        command = [h.PYTHON, "-m", "extauthz", "serve", "--config", str(config)]
        proc = h.spawn(command, log=log, env={**os.environ, **(env or {})})
        try:
            h.wait_serving(port, proc=proc)
            break
        except RuntimeError:
            h.stop_process(proc)
            if attempt == 2:
                raise RuntimeError("extauthz did not start:\n" + log.read_text()[-2000:]) from None
    try:
        # a few Checks of one token: every code path imported and warm, one entry cached
        loadgen.grpc_closed_loop(port, [warm], 0.5, 4)
        idle = h.rss_mb(proc.pid)
        idle_split = rss_split(proc.pid)
        before = cache_counts(http_port)
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in idle_split.items())
        print(f"filling the cache of pid {proc.pid} ({idle:.1f} MB: {kinds}) ...", flush=True)
        started = time.perf_counter()
        result = loadgen.grpc_closed_loop(port, payloads, 3600, concurrency, cycle=False)
        filled = time.perf_counter() - started
        if result.errors or result.non_2xx:
            raise RuntimeError(f"fill: {result.errors} errors, {result.non_2xx} denies")
        full = h.rss_mb(proc.pid)
        full_split = rss_split(proc.pid)
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in full_split.items())
        print(f"full: {full:.1f} MB: {kinds}", flush=True)
        after = cache_counts(http_port)
        # the oldest of the fill still cached: a hit, not a miss
        loadgen.grpc_closed_loop(port, payloads[:1], 0.2, 1)
        final = cache_counts(http_port)
    finally:
        h.stop_process(proc)
    misses = after.get("miss", 0) - before.get("miss", 0)
    return {
        "entries": entries, "idle_rss_mb": idle, "full_rss_mb": full,
        "idle_rss_split_mb": idle_split, "full_rss_split_mb": full_split,
        "per_entry_bytes": (full - idle) * 1024 * 1024 / entries,
        "fill_misses": misses, "oldest_still_cached": final.get("hit", 0) > after.get("hit", 0),
        "mint_seconds": minted, "fill_seconds": filled,
        "command": f"python -m extauthz serve --config CONFIG (cache.max_entries: {entries}"
                   f"{', listen.http_authz too' if http_authz else ''})"
                   + "".join(f" {k}={v}" for k, v in (env or {}).items()),
    }  # fmt: skip


def startup(work: Path, count: int, repeat: int) -> dict[str, Any]:
    """Median seconds from spawn to SERVING with ``count`` keys of each kind."""
    enc_dir, sig_dir = work / f"enc-{count}", work / f"sig-{count}"
    enc_dir.mkdir()
    sig_dir.mkdir()
    print(f"generating {count} RSA decryption + {count} verification keys ...", flush=True)
    for i in range(count):
        pair = h.KeyPair.generate("enc", "RSA-OAEP-256", f"enc-{i:03d}")
        (enc_dir / f"enc-{i:03d}.json").write_text(json.dumps(pair.jwk))
        sig = h.KeyPair.generate("sig", "RS256", f"sig-{i:03d}").jwk
        public = {k: v for k, v in sig.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        (sig_dir / f"sig-{i:03d}.json").write_text(json.dumps(public))
    times = []
    for _ in range(repeat):
        port = h.free_port()
        config = h.write_config(work, grpc_port=port, enc_dir=enc_dir, sig_dir=sig_dir,
                                decisions="deny")  # fmt: skip
        started = time.monotonic()
        proc = h.spawn([h.PYTHON, "-m", "extauthz", "serve", "--config", str(config)])
        try:
            times.append(h.wait_serving(port, proc=proc, poll=0.01) - started)
        finally:
            h.stop_process(proc)
    return {"keys": count, "seconds": statistics.median(times), "all": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", default="10000,100000", help="cache sizes to fill")
    parser.add_argument("--keys", type=int, default=100, help="keys for the start-up time")
    parser.add_argument("--repeat", type=int, default=3, help="starts per start-up figure")
    parser.add_argument(
        "--nice", type=int, default=0, help="priority of the benchmark and its servers (root: -10)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--http-authz", action="store_true",
                        help="also open the HTTP authorization listener")  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment of the server (e.g. MALLOC_ARENA_MAX=2)")  # fmt: skip
    args = parser.parse_args()
    h.prioritise(args.nice)
    out: dict[str, Any] = {"command": h.command_line(), "machine": h.machine(), "args": vars(args),
                           "memory": [], "startup": []}  # fmt: skip
    with h.scratch("extauthz-memory-") as work:
        print("start-up ...", flush=True)
        out["startup"] = [startup(work, 1, args.repeat)]
        if args.keys > 1:
            out["startup"].append(startup(work, args.keys, args.repeat))
        keys = h.Keys.generate(enc_algs=("ECDH-ES",), sig_algs=("RS256",))
        keys.write(work)
        for entries in (int(n) for n in args.entries.split(",")):
            env = dict(e.split("=", 1) for e in args.env)
            out["memory"].append(fill(work, entries, args.concurrency, args.http_authz, env))
    path = h.save("memory", out)
    print(table(out))
    print(f"\nraw results: {path}")


def table(out: dict[str, Any]) -> str:
    """The markdown tables of a memory run."""
    lines = [f"command: `{out['command']}`", "",
             "| cached tokens | RSS idle (1 entry) | RSS full | ÷ idle | bytes per entry | "
             "all fill Checks were misses | oldest entry still cached |",
             "|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for row in out["memory"]:
        lines.append(
            f"| {row['entries']:,} | {row['idle_rss_mb']:.1f} MB | {row['full_rss_mb']:.1f} MB | "
            f"{row['full_rss_mb'] / row['idle_rss_mb']:.2f}× | {row['per_entry_bytes']:,.0f} | "
            f"{'yes' if row['fill_misses'] == row['entries'] else row['fill_misses']} | "
            f"{'yes' if row['oldest_still_cached'] else 'no'} |"
        )
    base = out["startup"][0]["seconds"]
    lines += ["", "| keys (decryption + verification) | spawn → SERVING (median) | ÷ 1 key |",
              "|---:|---:|---:|"]  # fmt: skip
    for row in out["startup"]:
        lines.append(f"| {row['keys']} + {row['keys']} | {row['seconds']:.2f} s | "
                     f"{row['seconds'] / base:.2f}× |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
