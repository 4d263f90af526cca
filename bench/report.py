"""Turn ``bench/results/*.json`` into the tables, the targets and the chart of the docs.

    python bench/report.py [--write]

Prints the markdown of the last ``envoy_bench``, ``check_cost``, ``memory`` (and, when
present, ``direct``) runs with every target next to its same-run baseline, met or
not. ``--write`` also replaces the part of ``docs/benchmarks.md`` between
``<!-- results:begin -->`` and ``<!-- results:end -->`` and redraws
``docs/benchmarks.png`` (matplotlib); the profiles' summaries go between
``<!-- profiles:begin -->`` and ``<!-- profiles:end -->``.
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

Target = tuple[str, str, str, str, bool]


def load(name: str) -> dict[str, Any] | None:
    path = h.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def memory_targets(memory: dict[str, Any]) -> list[Target]:
    """The RSS target, and start-up time with many keys (kept from the first round)."""
    found: list[Target] = []
    for row in memory["memory"]:
        if row["entries"] == 100000:
            found.append(("RSS ≤ 150 MB with 100k cached tokens",
                          f"{row['full_rss_mb']:.0f} MB", f"idle {row['idle_rss_mb']:.0f} MB, "
                          f"{row['per_entry_bytes']:,.0f} B/entry", "≤ 150 MB",
                          row["full_rss_mb"] <= 150))  # fmt: skip
    base = memory["startup"][0]["seconds"] if memory["startup"] else 0.0
    for row in memory["startup"]:
        if row["keys"] >= 100:
            found.append((f"start-up to SERVING ≤ 1.5 s with {row['keys']} + {row['keys']} keys",
                          f"{row['seconds']:.2f} s", f"1 + 1 keys {base:.2f} s", "≤ 1.5 s",
                          row["seconds"] <= 1.5))  # fmt: skip
    return found


def all_targets() -> list[tuple[str, list[Target]]]:
    """Every target with a result, grouped by the run that measured it."""
    import check_cost
    import envoy_bench

    groups: list[tuple[str, list[Target]]] = []
    envoy, cost, memory = load("envoy"), load("check_cost"), load("memory")
    if envoy:
        groups.append(("through Envoy (`bench/envoy_bench.py`)", envoy_bench.targets(envoy)))
    if cost:
        groups.append(("in-process (`bench/check_cost.py`)", check_cost.targets(cost)))
    if memory:
        groups.append(("memory (`bench/memory.py`)", memory_targets(memory)))
    return groups


def targets_markdown() -> str:
    """One table of every target: measured, same-run baseline, aim, met."""
    lines = ["| run | target | measured | baseline (same run) | aim | met |",
             "|---|---|---:|---|---:|---|"]  # fmt: skip
    for group, found in all_targets():
        for target, value, base, aim, met in found:
            lines.append(f"| {group} | {target} | {value} | {base} | {aim} | "
                         f"{'✅ yes' if met else '❌ no'} |")  # fmt: skip
    return "\n".join(lines)


def markdown() -> str:
    """The generated part of docs/benchmarks.md."""
    import check_cost
    import direct as direct_mod
    import envoy_bench
    import memory as memory_mod

    envoy, cost, memory, direct = load("envoy"), load("check_cost"), load("memory"), load("direct")
    parts = []
    if envoy:
        m = envoy["machine"]
        parts += ["### Machine", "",
                  f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
                  f"grpcio {m['grpcio']}, joserfc {m['joserfc']}; load average "
                  f"{m['loadavg_at_start']:.1f} when the Envoy run started.", ""]  # fmt: skip
    parts += ["### Targets", "", targets_markdown()]
    if envoy:
        parts += ["", "### Through Envoy, both transports", "", envoy_bench.table(envoy)]
    if cost:
        parts += ["", "### One Check in-process", "", check_cost.table(cost)]
    if memory:
        parts += ["", "### Memory and start-up", "", memory_mod.table(memory)]
    sites = load("memory_sites")
    if sites:
        parts += ["", "Where a cached token's bytes go (`tracemalloc`, in-process):", "",
                  sites["markdown"]]  # fmt: skip
    if direct:
        parts += ["", "### extauthz alone under a gRPC client", "", direct_mod.table(direct)]
    parts += ["", "![benchmarks](benchmarks.png)"]
    return "\n".join(parts)


PROFILES = [
    ("grpc-cached", "cached token, gRPC, through the server"),
    ("http-cached", "cached token, HTTP, through the server"),
    ("grpc-unique", "unique RSA-OAEP-256 / RS256 tokens, gRPC, through the server"),
    ("http-unique", "unique RSA-OAEP-256 / RS256 tokens, HTTP, through the server"),
    ("inprocess-cached", "cached token, gRPC edge in-process (every decision logged)"),
    ("inprocess-cached-http", "cached token, HTTP edge in-process (every decision logged)"),
    ("inprocess-unique-rsa", "unique RSA-OAEP-256 / RS256 tokens, gRPC edge in-process"),
    ("inprocess-unique-ec", "unique ECDH-ES / ES256 tokens, gRPC edge in-process"),
]
PROFILES_BEGIN, PROFILES_END = "<!-- profiles:begin -->", "<!-- profiles:end -->"


def profiles_markdown(top: int = 8) -> str:
    """The cost centres and top functions of each saved profile, condensed."""
    from profile_server import summarise

    parts: list[str] = []
    for name, title in PROFILES:
        found = load(f"profile-{name}")
        if not found:
            continue
        load_ = found["load"]
        rate = (f"{load_['rps']:,.0f} Checks/s under load, "
                if "rps" in load_ else "")  # fmt: skip
        # summarised again from the raw stacks: the cost centres may have been refined
        text = summarise(found["collapsed"]) if found.get("collapsed") else found["summary"]
        summary = text.split("\n")
        head = summary[0]
        centres = summary[summary.index("| cost centre | share of samples |") :]
        centres = centres[: centres.index("")]
        own = summary[summary.index("| function (own time) | share |") :]
        own = own[: 2 + top]
        parts += [f"**{title}** — {rate}{found['cpu_us']:,.0f} µs CPU per Check; {head}", "",
                  *centres, "", *own, "",
                  f"`{found.get('command', '')}`", ""]  # fmt: skip
    return "\n".join(parts).rstrip()


COLORS = {"none": "#999999", "jwt_authn": "#4c72b0", "allow-all": "#dd8452",
          "allow-all parsed": "#f1b27c", "allow-all loop": "#c44e52", "extauthz": "#55a868",
          "extauthz no metadata": "#8fd19e"}  # fmt: skip


def chart(path: Path) -> None:
    """Four panels: throughput through Envoy, added p99 latency at the fixed rate,
    authorization CPU per request, and the in-process cost of one Check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envoy, cost = load("envoy"), load("check_cost")
    fig, axes = plt.subplots(2, 2, figsize=(17, 11))
    if envoy:
        rows = envoy["rows"]
        names = list(rows)[::-1]
        colors = [COLORS[rows[n]["kind"]] for n in names]
        anchor = rows["jwt_authn RS256"]["saturation"]["rps"] if "jwt_authn RS256" in rows else 0
        rps = [rows[n]["saturation"]["rps"] for n in names]
        ax = axes[0][0]
        bars = ax.barh(names, rps, color=colors)
        for bar, value in zip(bars, rps, strict=True):
            note = f" ({value / anchor:.0%} of jwt_authn)" if anchor else ""
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f" {value:,.0f}{note}", va="center", fontsize=8)  # fmt: skip
        ax.set_xlabel("requests/s through Envoy (wrk, closed loop)")
        ax.set_title("Throughput, cached token (green: extauthz; orange: allow-all servers)")
        ax.set_xlim(0, max(rps) * 1.45)
        ax.tick_params(axis="y", labelsize=8)

        ax = axes[0][1]
        base = rows["no auth"]["fixed"]
        shown = [n for n in names if n != "no auth"]
        y = list(range(len(shown)))
        p99 = [rows[n]["fixed"]["p99_ms"] - base["p99_ms"] for n in shown]
        p50 = [rows[n]["fixed"]["p50_ms"] - base["p50_ms"] for n in shown]
        ax.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#c44e52")
        ax.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color="#8172b2")
        ax.set_yticks(y, shown, fontsize=8)
        ax.set_xlabel(f"ms added over no auth at {envoy['args']['rate']:g} requests/s (hey)")
        ax.set_title("Latency added at a fixed rate")
        ax.legend(loc="lower right")

        ax = axes[1][0]
        with_authz = [n for n in names if rows[n]["authz_cpu_us"] is not None]
        left = [0.0] * len(with_authz)
        for slot in range(3):
            widths = []
            for n in with_authz:
                procs = [p for p in rows[n]["authz_processes"] if p["label"] != "resource tracker"]
                widths.append(procs[slot]["cpu_us"] if slot < len(procs) else 0.0)
            ax.barh(with_authz, widths, left=left, color=["#55a868", "#8fd19e", "#c9ebd1"][slot],
                    edgecolor="white", label=f"process {slot + 1}")  # fmt: skip
            left = [a + b for a, b in zip(left, widths, strict=True)]
        for i, total in enumerate(left):
            ax.text(total, i, f" {total:,.0f}", va="center", fontsize=8)
        ax.set_xlabel("authorization-server CPU µs per request (all its processes)")
        ax.set_title("What each request costs the authorization server")
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(loc="lower right", fontsize=8)
    if cost:
        ax = axes[1][1]
        labels, values, colors = [], [], []
        for name, row in cost["cached"].items():
            labels.append(name)
            values.append(row["cpu_us"])
            colors.append("#55a868")
        for label, pair in cost["unique"].items():
            labels += [f"unique {label}: extauthz (gRPC edge)", f"unique {label}: bare joserfc"]
            values += [pair["edge"]["cpu_us"], pair["bare"]["cpu_us"]]
            colors += ["#55a868", "#4c72b0"]
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        for i, value in enumerate(values[::-1]):
            ax.text(value, i, f" {value:,.1f}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("CPU µs per Check in-process (log scale)")
        ax.set_title("One Check in-process vs bare joserfc")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md/png")
    args = parser.parse_args()
    text = markdown()
    print(text, "", profiles_markdown(), sep="\n")
    if args.write:
        doc = DOC.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{DOC}: no {BEGIN} ... {END} section")
        doc = pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc)
        profiles = re.compile(re.escape(PROFILES_BEGIN) + ".*?" + re.escape(PROFILES_END), re.S)
        if profiles.search(doc):
            block = profiles_markdown()
            doc = profiles.sub(lambda _: f"{PROFILES_BEGIN}\n{block}\n{PROFILES_END}", doc)
        DOC.write_text(doc)
        chart(CHART)
        print(f"\nwrote {DOC} and {CHART}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
