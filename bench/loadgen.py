"""Load generators: closed-loop gRPC Checks, closed-loop HTTP (wrk), fixed-rate HTTP.

- :func:`grpc_closed_loop` keeps ``concurrency`` Checks in flight over one grpc.aio
  channel (what Envoy's one-connection-per-worker looks like from the server) and
  records each call's latency.
- :func:`wrk` runs Debian's ``wrk`` (installed with apt-get when missing) for
  saturation throughput through Envoy.
- :func:`hey` runs Debian's ``hey`` at a fixed rate (``-q`` per connection): the
  reference for added latency at 1,000 requests/s. Each of its connections waits for
  its answer before the next request, so it is open-loop only while every answer
  comes back within one tick (16 ms at 62.5 requests/s per connection).
- :func:`fixed_rate` is an open-loop HTTP/1.1 generator on asyncio: request *i* is
  due at ``start + i / rate`` whatever happened before, on whichever of several
  keep-alive connections is idle, and its latency runs from when it was *due* — so a
  stall shows up in the tail instead of silently lowering the rate (no coordinated
  omission).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import percentile


@dataclass
class Result:
    """What one load run measured (latencies in milliseconds)."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int = 0
    non_2xx: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _result(latencies: list[float], seconds: float, errors: int = 0, non_2xx: int = 0) -> Result:
    latencies.sort()
    return Result(
        requests=len(latencies), seconds=seconds, rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50) * 1e3, p90_ms=percentile(latencies, 0.90) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3, errors=errors, non_2xx=non_2xx,
    )  # fmt: skip


# --------------------------------------------------------------------------- gRPC


def grpc_closed_loop(
    port: int, payloads: Sequence[bytes], seconds: float, concurrency: int,
    cycle: bool = True, expect_allow: bool | None = True,
) -> Result:  # fmt: skip
    """Send Checks of ``payloads`` (serialized CheckRequests) for ``seconds``.

    ``cycle``: start over when the payloads run out (a cached token is one payload);
    otherwise stop there (unique tokens: each is checked once). ``expect_allow``
    counts answers that are not the expected decision as errors (None: don't check).
    """
    return asyncio.run(_grpc(port, payloads, seconds, concurrency, cycle, expect_allow))


async def _grpc(port: int, payloads: Sequence[bytes], seconds: float, concurrency: int,
                cycle: bool, expect_allow: bool | None) -> Result:  # fmt: skip
    import grpc

    method = "/envoy.service.auth.v3.Authorization/Check"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        latencies: list[float] = []
        errors = 0
        wrong = 0
        index = 0
        clock = time.perf_counter
        start = clock()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal index, errors, wrong
            while True:
                now = clock()
                if now >= deadline or (not cycle and index >= len(payloads)):
                    return
                payload = payloads[index % len(payloads)]
                index += 1
                try:
                    reply: bytes = await call(payload, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(clock() - now)
                if expect_allow is not None:
                    # CheckResponse.status (field 1) is empty for code 0: b"\n\x00"
                    allowed = reply.startswith(b"\n\x00")
                    wrong += allowed != expect_allow
            return

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = clock() - start
    return _result(latencies, elapsed, errors=errors, non_2xx=wrong)


# --------------------------------------------------------------------------- wrk


def ensure_tool(name: str) -> str:
    """Path of ``name`` (``wrk``, ``hey``); installs the Debian package of the same name
    (after ``apt-get update``) if missing."""
    found = shutil.which(name)
    if found:
        return found
    print(f"{name} not found: apt-get update && apt-get install -y {name}", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", name], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed and apt-get could not install it")
    return found


def ensure_wrk() -> str:
    """Path of ``wrk`` (see :func:`ensure_tool`)."""
    return ensure_tool("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def wrk(url: str, headers: dict[str, str], seconds: float, connections: int,
        threads: int = 2, script: str | None = None) -> tuple[Result, str]:  # fmt: skip
    """Run wrk; return its result and the command line (for the report).

    ``script``: a Lua script for wrk (``-s``), e.g. from :func:`unique_token_script`.
    """
    command = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
               "--latency", "--timeout", "5s"]  # fmt: skip
    if script is not None:
        command += ["-s", script]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    pct = dict(re.findall(r"^\s*(50|90|99)%\s+(\S+)\s*$", out, re.M))
    if len(pct) != 3:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)  # fmt: skip
    shown = [c if not c.startswith("authorization: ") else "authorization: Bearer $TOKEN"
             for c in command]  # fmt: skip
    shown[0] = "wrk"
    result = Result(
        requests=requests, seconds=seconds, rps=rps, p50_ms=_ms(pct["50"]),
        p90_ms=_ms(pct["90"]), p99_ms=_ms(pct["99"]),
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )  # fmt: skip
    return result, " ".join(shown)


_UNIQUE_LUA = """
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local threads, counter = {}, 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  step = %(threads)d
  index = id + 1
end
function request()
  local token = tokens[((index - 1) %% #tokens) + 1]
  index = index + step
  return wrk.format("GET", "%(path)s", {
    ["authorization"] = "Bearer " .. token,
    ["x-request-id"] = "5f0a4b1e-9a57-4f43-9c1e-5d1f0c2d8e11",
    ["x-envoy-internal"] = "true",
    ["x-envoy-expected-rq-timeout-ms"] = "2000",
    ["content-length"] = "0",
  })
end
"""


def unique_token_script(directory: Path, tokens: Sequence[str], path: str,
                        threads: int = 2) -> str:  # fmt: skip
    """A wrk Lua script sending each of ``tokens`` once, in turn, over ``threads``
    threads (they interleave, so no token is sent twice until the list is used up), with
    the headers Envoy's ``http_service`` adds. Returns the script's path."""
    listing = directory / "wrk-tokens.txt"
    listing.write_text("\n".join(tokens) + "\n")
    script = directory / "wrk-unique.lua"
    script.write_text(_UNIQUE_LUA % {"tokens": listing, "threads": threads, "path": path})
    return str(script)


# --------------------------------------------------------------------------- fixed rate


def fixed_rate(port: int, path: str, headers: dict[str, str], rate: float, seconds: float,
               connections: int = 16) -> Result:  # fmt: skip
    """Open-loop HTTP/1.1 GETs at ``rate`` per second for ``seconds`` (see module doc)."""
    return asyncio.run(_fixed_rate(port, path, headers, rate, seconds, connections))


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _fixed_rate(port: int, path: str, headers: dict[str, str], rate: float,
                      seconds: float, connections: int) -> Result:  # fmt: skip
    lines = [f"GET {path} HTTP/1.1", f"host: 127.0.0.1:{port}",
             *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = []
    for _ in range(connections):
        conn = await asyncio.open_connection("127.0.0.1", port)
        opened.append(conn[1])
        idle.put_nowait(conn)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    non_2xx = 0

    async def one(due: float) -> None:
        nonlocal errors, non_2xx
        reader, writer = await idle.get()
        try:
            writer.write(request)
            status = await _read_response(reader)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            errors += 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
        else:
            latencies.append(loop.time() - due)
            non_2xx += not 200 <= status < 400
        idle.put_nowait((reader, writer))

    total = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    for writer in opened:
        writer.close()
    return _result(latencies, elapsed, errors=errors, non_2xx=non_2xx)


# --------------------------------------------------------------------------- hey


def hey(url: str, headers: dict[str, str], rate: float, seconds: float,
        connections: int = 16) -> tuple[Result, str]:  # fmt: skip
    """Run ``hey -z SECONDS -c CONNECTIONS -q RATE/CONNECTIONS``; its result and command.

    hey prints latencies in whole 0.1 ms: finer differences are below its resolution.
    """
    command = [ensure_tool("hey"), "-z", f"{seconds:g}s", "-c", str(connections),
               "-q", f"{rate / connections:g}", "-t", "5"]  # fmt: skip
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    pct = {q: float(v) * 1e3 for q, v in re.findall(r"^\s*(50|90|99)% in ([\d.]+) secs", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if len(pct) != 3 or not rps:
        raise RuntimeError(f"unexpected hey output:\n{out}")
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = out.partition("Error distribution:")[2]
    shown = [c if not c.startswith("authorization: ") else "authorization: Bearer $TOKEN"
             for c in command]  # fmt: skip
    shown[0] = "hey"
    result = Result(
        requests=sum(statuses.values()), seconds=seconds, rps=float(rps[1]),
        p50_ms=pct["50"], p90_ms=pct["90"], p99_ms=pct["99"],
        errors=sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", errors, re.M)),
        non_2xx=sum(n for code, n in statuses.items() if not 200 <= code < 300),
    )  # fmt: skip
    return result, " ".join(shown)
