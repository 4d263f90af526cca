"""Where a loaded extauthz server spends its time: py-spy on the real process.

    python bench/profile_server.py [--workload cached|unique|unique-ec|invalid] [--seconds 10]
                            [--concurrency 16] [--decisions deny|all] [--threads 8]

Starts ``python -m extauthz serve`` (as :mod:`direct` does), loads it with the
gRPC client of :mod:`loadgen`, and samples it with ``py-spy record`` (installed
from PyPI into the virtualenv when missing; ``--native`` frames off, idle threads
off). Prints the share of samples per cost centre (a sample counts for the first
centre, in the order below, that any of its frames falls in) and the top functions
by own time and by inclusive time.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import harness as h
import loadgen

#: cost centres: (name, regex on a "function (file:line)" frame); first match wins
CENTRES: list[tuple[str, str]] = [
    ("decision log (structlog)", r"structlog|extauthz/logging\.py|_log \(extauthz/server"),
    ("metrics (prometheus_client)", r"prometheus_client|extauthz/metrics\.py"),
    ("JWE decrypt (joserfc/cryptography)", r"joserfc/(_rfc7516|jwe)|decrypt"),
    ("JWS verify (joserfc/cryptography)", r"joserfc/(_rfc7515|jws|jwt)|verify"),
    ("protobuf parse (CheckRequest)", r"FromString|ParseFromString"),
    ("CheckRequest -> CheckInput", r"to_input \(extauthz"),
    ("pipeline (evaluate, cache, policy)", r"extauthz/pipeline"),
    ("gRPC server machinery (grpc/_server.py, futures)", r"grpc/_server|concurrent/futures"),
    ("threading", r"threading\.py"),
]


def ensure_py_spy() -> str:
    """Path of ``py-spy`` (pip-installed into this interpreter's environment if missing)."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
        found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("py-spy is not available")
    return found


def summarise(collapsed: str, top: int = 15) -> str:
    """Cost centres and top functions of a py-spy ``--format raw`` (collapsed) profile."""
    centre_re = [(name, re.compile(rx)) for name, rx in CENTRES]
    centres: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith(("process ", "thread ")) or frames[0].startswith("Thread"):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
        for name, rx in centre_re:
            if any(rx.search(f) for f in frames):
                centres[name] += count
                break
        else:
            centres["other"] += count
    lines = [f"{total} samples", "", "| cost centre | share of samples |", "|---|---:|"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in centres.most_common()]
    lines += ["", "| function (own time) | share |", "|---|---:|"]
    lines += [f"| `{f}` | {n / total:.1%} |" for f, n in own.most_common(top)]
    lines += ["", "| function (inclusive) | share |", "|---|---:|"]
    lines += [f"| `{f}` | {n / total:.1%} |" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    path = re.sub(r".*/(site-packages|lib/python3\.\d+|main)/", "", match[2])
    return f"{match[1]} ({path})"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (grouped: ``check_3`` -> ``check_N``) of ``pid``."""
    out: collections.Counter[str] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = re.sub(r"\d+", "N", stat[stat.index("(") + 1 : stat.rindex(")")])
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] += (int(fields[11]) + int(fields[12])) / h._TICK
    return dict(out)


def payloads_for(workload: str, work: Path, count: int) -> tuple[list[bytes], bool, bool]:
    """(payloads, cycle, expect_allow) for a workload."""
    keys = h.load_keys(work)
    if workload == "cached":
        return [h.envoy_like_request(h.token(keys, "cached-user"))], True, True
    if workload == "invalid":
        rogue = h.Keys(enc=keys.enc, sig={"RS256": h.KeyPair.generate("sig", "RS256",
                                                                     "sig-rs256")})  # fmt: skip
        return [h.envoy_like_request(h.token(rogue, "mallory"))], True, False
    sig, enc = ("RS256", "RSA-OAEP-256") if workload == "unique" else ("ES256", "ECDH-ES")
    tokens = h.mint_tokens(work, count, sig, enc, workload)
    return [h.envoy_like_request(t) for t in tokens], False, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="cached",
                        choices=["cached", "unique", "unique-ec", "invalid"])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--decisions", default="deny", choices=["deny", "all"])
    parser.add_argument("--threads", type=int, default=None, help="server.threads")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    spy = ensure_py_spy()
    with h.scratch("extauthz-profile-") as work:
        h.Keys.generate().write(work)
        payloads, cycle, allow = payloads_for(args.workload, work, int(1500 * args.seconds))
        log = work / "decisions.log" if args.decisions == "all" else None
        with h.extauthz(work, decisions=args.decisions, log=log, threads=args.threads) as server:
            loadgen.grpc_closed_loop(server.port, payloads[:1], 0.5, 4, True, allow)
            raw = work / "profile.txt"
            record = [spy, "record", "--pid", str(server.pid), "--duration",
                      str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                      "--output", str(raw), "--nonblocking", "--gil"]  # fmt: skip
            spied = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result: dict[str, Any] = {}
            load = threading.Thread(target=lambda: result.update(
                loadgen.grpc_closed_loop(server.port, payloads[1:] or payloads, args.seconds + 1,
                                         args.concurrency, cycle, allow).as_dict()))  # fmt: skip
            threads0, cpu0 = thread_cpu(server.pid), server.cpu()
            load.start()
            _, err = spied.communicate(timeout=args.seconds + 60)
            load.join()
            threads1, cpu1 = thread_cpu(server.pid), server.cpu()
            if spied.returncode:
                raise RuntimeError(f"py-spy failed: {err.decode()}")
            collapsed = raw.read_text()
    print(f"command: `{h.command_line()}`\n")
    print(f"load: {result.get('rps', 0):,.0f} Checks/s, p50 {result.get('p50_ms', 0):.2f} ms\n")
    checks = max(int(result.get("requests", 0)), 1)
    print(f"server CPU: {(cpu1 - cpu0) / checks * 1e6:,.0f} µs/Check\n")
    print("| server thread | CPU µs/Check |\n|---|---:|")
    for name, seconds in sorted(threads1.items(), key=lambda kv: -kv[1]):
        used = seconds - threads0.get(name, 0.0)
        if used > 0:
            print(f"| {name} | {used / checks * 1e6:,.0f} |")
    print()
    print(summarise(collapsed))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
