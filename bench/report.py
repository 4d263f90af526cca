"""Turn ``bench/results/*.json`` into the tables, the targets and the chart of the docs.

    python bench/report.py [--write]

Prints the markdown of the last ``direct``, ``envoy_bench`` and ``memory`` runs and
whether each target is met. ``--write`` also replaces the part of
``docs/benchmarks.md`` between ``<!-- results:begin -->`` and ``<!-- results:end -->``
and redraws ``docs/benchmarks.png`` (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import harness as h

DOC = h.ROOT / "docs" / "benchmarks.md"
CHART = h.ROOT / "docs" / "benchmarks.png"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = h.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def targets(direct: dict[str, Any] | None, envoy: dict[str, Any] | None,
            memory: dict[str, Any] | None) -> list[tuple[str, str, str, bool]]:  # fmt: skip
    """(target, measured, how, met) for every target of the issue."""
    out: list[tuple[str, str, str, bool]] = []
    if envoy:
        rows = envoy["rows"]
        trivial = rows["trivial Python ext_authz"]["saturation"]["rps"]
        anchor = rows["jwt_authn RS256"]["saturation"]["rps"]
        for name in ("extauthz nested JWE", "extauthz nested JWE --workers 2"):
            rps = rows[name]["saturation"]["rps"]
            out.append((f"cached valid token through Envoy ≥ 1.0× trivial Python ext_authz "
                        f"({name.removeprefix('extauthz ')})", f"{rps / trivial:.2f}×",
                        "req/s ÷ trivial server's, same run", rps / trivial >= 1.0))  # fmt: skip
            out.append((f"cached valid token through Envoy ≥ 35% of jwt_authn "
                        f"({name.removeprefix('extauthz ')})", f"{rps / anchor:.0%}",
                        "req/s ÷ jwt_authn's, same run", rps / anchor >= 0.35))  # fmt: skip
        base = rows["no auth"]["fixed"]["p99_ms"]
        rate = envoy["args"]["rate"]
        for name in ("extauthz RS256 JWS", "extauthz nested JWE"):
            added = rows[name]["fixed"]["p99_ms"] - base
            out.append((f"added p99 at {rate:g} req/s ≤ 2 ms ({name.removeprefix('extauthz ')})",
                        f"{added:+.2f} ms", "p99 − no-auth p99 at the same rate",
                        added <= 2.0))  # fmt: skip
    if direct:
        rps = direct["rows"]["unique RSA-OAEP-256/RS256"]["rps"]
        bare = direct["baselines"]["bare_joserfc_rsa"]["rps"]
        out.append(("unique nested RSA-OAEP-256/RS256 direct ≥ 80% of bare joserfc on one core",
                    f"{rps / bare:.0%}", "Checks/s ÷ joserfc decrypt+verify+claims loop",
                    rps / bare >= 0.8))  # fmt: skip
    if memory:
        for row in memory["memory"]:
            if row["entries"] == 100000:
                out.append(("RSS ≤ 150 MB with 100k cached tokens",
                            f"{row['full_rss_mb']:.0f} MB", "VmRSS after 100k unique Checks",
                            row["full_rss_mb"] <= 150))  # fmt: skip
        for row in memory["startup"]:
            if row["keys"] >= 100:
                out.append((f"start-up to SERVING ≤ 1.5 s with {row['keys']} keys",
                            f"{row['seconds']:.2f} s", "spawn → gRPC health SERVING, median",
                            row["seconds"] <= 1.5))  # fmt: skip
    return out


def markdown() -> str:
    """The generated part of docs/benchmarks.md."""
    sys.path.insert(0, str(h.BENCH))
    import direct as direct_mod
    import envoy_bench
    import memory as memory_mod

    direct, envoy, memory = load("direct"), load("envoy"), load("memory")
    parts = []
    if envoy:
        m = envoy["machine"]
        parts += ["### Machine", "",
                  f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
                  f"grpcio {m['grpcio']}, joserfc {m['joserfc']}; load average "
                  f"{m['loadavg_at_start']:.1f} when the Envoy run started (the machine is "
                  "shared: other work ran during every benchmark).", ""]  # fmt: skip
    parts += ["### Targets", "", "| target | measured | how | met |", "|---|---:|---|---|"]
    for target, value, how, met in targets(direct, envoy, memory):
        parts.append(f"| {target} | {value} | {how} | {'✅ yes' if met else '❌ no'} |")
    if envoy:
        parts += ["", "### Through Envoy", "", envoy_bench.table(envoy)]
    if direct:
        parts += ["", "### extauthz alone (gRPC)", "", direct_mod.table(direct)]
    if memory:
        parts += ["", "### Memory and start-up", "", memory_mod.table(memory)]
    parts += ["", "![benchmarks](benchmarks.png)"]
    return "\n".join(parts)


def chart(path: Path) -> None:
    """Three panels: Envoy throughput, added latency at the fixed rate, direct CPU/Check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envoy, direct = load("envoy"), load("direct")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    if envoy:
        rows = envoy["rows"]
        names = list(rows)
        anchor = rows["jwt_authn RS256"]["saturation"]["rps"]
        rps = [rows[n]["saturation"]["rps"] for n in names]
        ax = axes[0]
        colors = ["#999999", "#4c72b0", "#dd8452", "#dd8452", *["#55a868"] * (len(names) - 4)]
        bars = ax.barh(names[::-1], rps[::-1], color=colors[: len(names)][::-1])
        for bar, value in zip(bars, rps[::-1], strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f" {value:,.0f} ({value / anchor:.0%} of jwt_authn)", va="center",
                    fontsize=8)  # fmt: skip
        ax.set_xlabel("requests/s through Envoy (wrk, closed loop)")
        ax.set_title("Throughput, cached token")
        ax.set_xlim(0, max(rps) * 1.6)
        ax = axes[1]
        base = rows["no auth"]["fixed"]
        added = [(n, rows[n]["fixed"]["p50_ms"] - base["p50_ms"],
                  rows[n]["fixed"]["p99_ms"] - base["p99_ms"]) for n in names[1:]]  # fmt: skip
        y = range(len(added))
        ax.barh([i + 0.2 for i in y], [a[2] for a in added][::-1], height=0.4, label="p99",
                color="#c44e52")  # fmt: skip
        ax.barh([i - 0.2 for i in y], [a[1] for a in added][::-1], height=0.4, label="p50",
                color="#8172b2")  # fmt: skip
        ax.set_yticks(list(y), [a[0] for a in added][::-1], fontsize=8)
        ax.axvline(2.0, color="black", linestyle="--", linewidth=1)
        ax.text(2.0, len(added) - 0.5, " target: p99 +2 ms", fontsize=8)
        ax.set_xlabel(f"ms added over no auth at {envoy['args']['rate']:g} requests/s")
        ax.set_title("Latency added at a fixed rate")
        ax.legend(loc="lower right")
    if direct:
        rows = direct["rows"]
        names = list(rows)
        cpu = [rows[n]["server_cpu_us"] for n in names]
        ax = axes[2]
        ax.barh(names[::-1], cpu[::-1], color="#55a868")
        for label, key in (("bare joserfc RSA", "bare_joserfc_rsa"),
                           ("bare joserfc EC", "bare_joserfc_ec")):  # fmt: skip
            value = direct["baselines"][key]["cpu_us"]
            ax.axvline(value, color="#4c72b0", linestyle=":", linewidth=1)
            ax.text(value, len(names) - 0.4, f" {label}", fontsize=7, rotation=90, va="top")
        ax.set_xlabel("server CPU µs per Check (direct gRPC)")
        ax.set_title("extauthz alone: cost of one Check")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md/png")
    args = parser.parse_args()
    text = markdown()
    print(text)
    if args.write:
        doc = DOC.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{DOC}: no {BEGIN} ... {END} section")
        DOC.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc))
        chart(CHART)
        print(f"\nwrote {DOC} and {CHART}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
