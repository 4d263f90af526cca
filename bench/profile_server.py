"""Where a loaded extauthz server spends its time: py-spy on the real process.

    python bench/profile_server.py [--transport grpc|http] [--workload cached|unique|...]
                                   [--seconds 10] [--concurrency 16] [--decisions deny|all]
    python bench/profile_server.py --matrix [--seconds 10]

Starts ``python -m extauthz serve`` (as :mod:`direct` does; ``--transport http`` also
opens ``listen.http_authz``), loads it — gRPC: the grpc.aio client of :mod:`loadgen`
with Envoy-shaped CheckRequests; HTTP: ``wrk`` straight at the HTTP authorization
listener with the headers Envoy's ``http_service`` sends (a Lua script hands out
unique tokens) — and samples it with ``py-spy record --gil`` (only the thread
holding the GIL: Python-level CPU; native frames off). Prints the share of samples
per cost centre (a sample counts for the first centre, in the order below, that any
of its frames falls in) and the top functions by own and by inclusive time.
``--matrix`` records cached and unique-token profiles over both transports, one
after the other, and saves each summary to ``bench/results/profile-*.json``.
``--inprocess cached|cached-http|unique-rsa|unique-ec`` profiles an edge alone instead
(``bench/check_cost.py --loop``: no server, no network, every sample is a Check).
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
    ("metrics (prometheus_client)", r"prometheus_client|extauthz/metrics\.py"),
    ("decision log (logging.py, structlog)",
     r"structlog|orjson|extauthz/logging\.py|DecisionLog"),
    ("answer rendering (CheckResponse / HTTP bytes, memoized per decision)",
     r"AnswerMemo|encode_response \(extauthz|render \(extauthz"),
    ("strict JSON of headers and claims (keys/material.py strict_json_loads)",
     r"strict_json_loads"),
    ("base64url checks (pipeline/b64url.py)", r"b64decode \(extauthz|extauthz/pipeline/b64url"),
    ("JWE decrypt (joserfc, or cryptography directly in pipeline/jwe_direct.py)",
     r"joserfc/(_rfc7516|jwe\.py)|jwe_algs|jwe_encs|extauthz/pipeline/jwe_direct"),
    ("JWS verify (joserfc/cryptography)", r"joserfc/(_rfc7515|jws\.py|jwt\.py)|jws_algs"),
    ("other joserfc (key objects, registries)", r"joserfc/"),
    ("protobuf parse (CheckRequest)", r"FromString|ParseFromString"),
    ("request -> CheckInput (to_input)", r"to_input \(extauthz"),
    ("pipeline (evaluate, cache, policy)", r"extauthz/pipeline"),
    ("HTTP edge (parse with httptools, write the answer)", r"extauthz/server/http_authz"),
    ("gRPC server machinery (grpc/_server.py, the call loop, the call pool)",
     r"grpc/_server|extauthz/server/grpc_core|extauthz/server/callpool"),
    ("thread pool hand-offs (concurrent.futures)", r"concurrent/futures"),
    ("event loop (asyncio, uvloop)", r"asyncio/|uvloop"),
    ("threading", r"threading\.py"),
]  # fmt: skip


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
    jose = sum(n for name, n in centres.items() if "joserfc" in name)
    lines = [f"{total} samples; joserfc + cryptography {jose / max(total, 1):.1%}, "
             f"everything else {1 - jose / max(total, 1):.1%}", "",
             "| cost centre | share of samples |", "|---|---:|"]  # fmt: skip
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
    out: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = re.sub(r"\d+", "N", stat[stat.index("(") + 1 : stat.rindex(")")])
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] += (int(fields[11]) + int(fields[12])) / h._TICK
    return dict(out)


def tokens_for(workload: str, work: Path, count: int) -> tuple[list[str], bool, bool]:
    """(tokens, cycle, expect_allow) for a workload."""
    keys = h.load_keys(work)
    if workload == "cached":
        return [h.token(keys, "cached-user")], True, True
    if workload == "invalid":
        rogue = h.Keys(enc=keys.enc, sig={"RS256": h.KeyPair.generate("sig", "RS256",
                                                                     "sig-rs256")})  # fmt: skip
        return [h.token(rogue, "mallory")], True, False
    sig, enc = ("RS256", "RSA-OAEP-256") if workload == "unique" else ("ES256", "ECDH-ES")
    return h.mint_tokens(work, count, sig, enc, workload), False, True


def load(server: h.Server, transport: str, tokens: list[str], cycle: bool, allow: bool,
         seconds: float, concurrency: int, work: Path) -> dict[str, Any]:  # fmt: skip
    """Load ``server`` over ``transport`` for ``seconds``; the load's result."""
    if transport == "grpc":
        payloads = [h.envoy_like_request(t) for t in tokens]
        return loadgen.grpc_closed_loop(server.port, payloads, seconds, concurrency, cycle,
                                        allow).as_dict()  # fmt: skip
    assert server.http_port is not None
    url = f"http://127.0.0.1:{server.http_port}{PATH}"
    script = None if cycle else loadgen.unique_token_script(work, tokens, PATH)
    headers = {"authorization": f"Bearer {tokens[0]}", "x-envoy-internal": "true"}
    result, _ = loadgen.wrk(url, headers if cycle else {}, seconds, concurrency,
                            script=script)  # fmt: skip
    row = result.as_dict()
    if allow and row["non_2xx"]:
        raise RuntimeError(f"{row['non_2xx']} of {row['requests']} Checks were denied")
    return row


PATH = "/orders/42"


def profile(args: argparse.Namespace, transport: str, workload: str) -> dict[str, Any]:
    """Record one profile; returns its figures and summary."""
    spy = ensure_py_spy()
    with h.scratch("extauthz-profile-") as work:
        h.Keys.generate().write(work)
        tokens, cycle, allow = tokens_for(workload, work, int(1500 * (args.seconds + 2)))
        log = work / "decisions.log" if args.decisions == "all" else None
        with h.extauthz(work, decisions=args.decisions, log=log, threads=args.threads,
                        http_authz=transport == "http") as server:  # fmt: skip
            # warm-up: every code path imported, the cached token verified once
            load(server, transport, tokens[:1], True, allow, 1, 4, work)
            rest = tokens if cycle else tokens[1:]
            raw = work / "profile.txt"
            record = [spy, "record", "--pid", str(server.pid), "--duration",
                      str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                      "--output", str(raw), "--nonblocking", "--gil"]  # fmt: skip
            spied = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result: dict[str, Any] = {}
            runner = threading.Thread(target=lambda: result.update(load(
                server, transport, rest, cycle, allow, args.seconds + 1, args.concurrency,
                work)))  # fmt: skip
            threads0, cpu0 = thread_cpu(server.pid), server.cpu()
            runner.start()
            _, err = spied.communicate(timeout=args.seconds + 60)
            runner.join()
            threads1, cpu1 = thread_cpu(server.pid), server.cpu()
            if spied.returncode:
                raise RuntimeError(f"py-spy failed: {err.decode()}")
            collapsed = raw.read_text()
    checks = max(int(result.get("requests", 0)), 1)
    per_thread = {name: (seconds - threads0.get(name, 0.0)) / checks * 1e6
                  for name, seconds in threads1.items()
                  if seconds - threads0.get(name, 0.0) > 0}  # fmt: skip
    return {
        "transport": transport, "workload": workload, "load": result,
        "cpu_us": (cpu1 - cpu0) / checks * 1e6, "threads_cpu_us": per_thread,
        "summary": summarise(collapsed), "collapsed": collapsed,
    }  # fmt: skip


def inprocess(args: argparse.Namespace, workload: str) -> dict[str, Any]:
    """py-spy on ``check_cost.py --loop WORKLOAD`` once its tokens are minted."""
    spy = ensure_py_spy()
    command = [sys.executable, str(h.BENCH / "check_cost.py"), "--loop", workload,
               "--seconds", str(args.seconds + 2)]  # fmt: skip
    with h.scratch("extauthz-profile-") as work:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("check_cost.py --loop did not start")
            raw = work / "profile.txt"
            subprocess.run([spy, "record", "--pid", str(proc.pid), "--duration",
                            str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                            "--output", str(raw), "--nonblocking"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            words = proc.stdout.readline().split()  # "checks N cpu_us X"
            checks, cpu_us = int(words[1]), float(words[3])
            proc.wait(timeout=30)
            # the Check loop only (the log flusher's thread is idle, not work); all of
            # its samples, GIL held or not: OpenSSL's time counts in-process
            collapsed = "\n".join(line for line in raw.read_text().splitlines()
                                   if "loop (check_cost.py" in line)  # fmt: skip
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    edge = "HTTP" if workload.endswith("http") else "gRPC"
    return {"transport": f"in-process ({edge} edge)", "workload": workload,
            "load": {"requests": checks}, "cpu_us": cpu_us,
            "threads_cpu_us": {}, "summary": summarise(collapsed, top=25),
            "collapsed": collapsed}  # fmt: skip


def report(found: dict[str, Any]) -> str:
    """A profile's figures and summary as markdown."""
    load_ = found["load"]
    rate = (f"{load_['rps']:,.0f} Checks/s, p50 {load_['p50_ms']:.2f} ms; server CPU"
            if "rps" in load_ else f"{load_['requests']:,} Checks; CPU")  # fmt: skip
    lines = [f"**{found['transport']}, {found['workload']}**: {rate} "
             f"{found['cpu_us']:,.0f} µs/Check", ""]  # fmt: skip
    if found["threads_cpu_us"]:
        lines += ["| server thread | CPU µs/Check |", "|---|---:|"]
    for name, used in sorted(found["threads_cpu_us"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {used:,.0f} |")
    if found["threads_cpu_us"]:
        lines.append("")
    return "\n".join([*lines, found["summary"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--workload", default="cached",
                        choices=["cached", "unique", "unique-ec", "invalid"])  # fmt: skip
    parser.add_argument("--matrix", action="store_true",
                        help="cached and unique, over both transports")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--decisions", default="deny", choices=["deny", "all"])
    parser.add_argument("--threads", type=int, default=None, help="server.threads")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--nice", type=int, default=0, help="priority (root: -10)")
    parser.add_argument("--inprocess",
                        choices=["cached", "cached-http", "unique-rsa", "unique-ec"],
                        help="profile the edge in-process (check_cost.py --loop)")  # fmt: skip
    args = parser.parse_args()
    h.prioritise(args.nice)
    if args.inprocess:
        found = inprocess(args, args.inprocess)
        found["command"] = h.command_line()
        path = h.save(f"profile-inprocess-{args.inprocess}", found)
        print(f"command: `{h.command_line()}`\n", report(found), f"\nraw results: {path}",
              sep="\n")  # fmt: skip
        return
    plan = ([(t, w) for t in ("grpc", "http") for w in ("cached", "unique")] if args.matrix
            else [(args.transport, args.workload)])  # fmt: skip
    print(f"command: `{h.command_line()}`\n")
    for transport, workload in plan:
        found = profile(args, transport, workload)
        found["command"] = h.command_line()
        path = h.save(f"profile-{transport}-{workload}", found)
        print(report(found), f"\nraw results: {path}\n", sep="\n", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
