"""Every benchmark of docs/benchmarks.md, one after the other, then the report.

    python bench/all.py [--nice -10] [--quick]

Runs, each as its own process (so one failing does not hide the others' results):
``envoy_bench.py`` (both transports through Envoy); ``check_cost.py`` (one Check
in-process);
``memory.py`` (RSS with 100k cached tokens, start-up with 100 keys);
``check_cost.py --memory-sites`` (where a cached token's bytes go);
``profile_server.py --matrix`` and ``--inprocess`` (py-spy profiles); then
``report.py --write`` (docs/benchmarks.md tables and chart). ``--quick`` shortens
every run to check that the whole chain works (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def plan(quick: bool) -> list[list[str]]:
    """The commands, in order."""
    if quick:
        return [
            ["envoy_bench.py", "--seconds", "1", "--rate-seconds", "1", "--rounds", "1"],
            ["check_cost.py", "--n", "30", "--repeat", "1", "--cached", "2000"],
            ["memory.py", "--entries", "2000", "--keys", "5", "--repeat", "1", "--http-authz"],
            ["check_cost.py", "--memory-sites", "300"],
            ["profile_server.py", "--matrix", "--seconds", "2"],
            ["profile_server.py", "--inprocess", "cached", "--seconds", "2"],
            ["profile_server.py", "--inprocess", "cached-http", "--seconds", "2"],
            ["profile_server.py", "--inprocess", "unique-rsa", "--seconds", "2"],
            ["profile_server.py", "--inprocess", "unique-ec", "--seconds", "2"],
        ]
    return [
        ["envoy_bench.py", "--rounds", "3"],
        ["check_cost.py"],
        ["memory.py", "--entries", "100000", "--repeat", "1", "--http-authz"],
        ["check_cost.py", "--memory-sites", "20000"],
        ["profile_server.py", "--matrix", "--seconds", "8"],
        ["profile_server.py", "--inprocess", "cached", "--seconds", "6"],
        ["profile_server.py", "--inprocess", "cached-http", "--seconds", "6"],
        ["profile_server.py", "--inprocess", "unique-rsa", "--seconds", "6"],
        ["profile_server.py", "--inprocess", "unique-ec", "--seconds", "6"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nice", type=int, default=0, help="priority (root: -10)")
    parser.add_argument("--quick", action="store_true", help="a short run of the whole chain")
    args = parser.parse_args()
    failed = []
    for step in plan(args.quick):
        command = [sys.executable, str(BENCH / step[0]), *step[1:]]
        if args.nice:
            command += ["--nice", str(args.nice)]
        print(f"\n=== {' '.join(step)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command)
        print(f"=== {step[0]}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(" ".join(step))
    if not args.quick:
        subprocess.check_call([sys.executable, str(BENCH / "report.py"), "--write"])
    if failed:
        raise SystemExit(f"failed: {'; '.join(failed)}")


if __name__ == "__main__":
    main()
