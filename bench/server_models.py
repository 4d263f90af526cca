"""The gRPC server models for the Check workload, same handler, same load: grpcio's sync
server, grpc.aio, and extauthz's call loop on gRPC core (``server.grpc_server: core``).

    python bench/server_models.py [--seconds 5] [--concurrency 16] [--workload cached|unique]

Every server runs the real ``Authorizer`` (decode, evaluate, log, encode) in a child
process; a grpc.aio client in another process keeps ``--concurrency`` Checks in
flight, either with one cached nested-JWE token (a client reusing its token) or with
4,000 unique nested RSA-OAEP-256/RS256 tokens (every Check decrypts and verifies).
Reported: Checks/s and the server's CPU µs per Check, each ÷ the sync server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import sys
import time
from typing import Any

import structlog


def build_authorizer(workload: str) -> tuple[Any, list[str]]:
    """The real Authorizer, and the tokens to send: one (cached) or 4,000 unique ones."""
    sys.path.insert(0, os.path.dirname(__file__))
    from check_cost import setup

    s = setup("RSA-OAEP-256", "RS256")
    return s.authorizer, [s.token() for _ in range(1 if workload == "cached" else 4000)]


def quiet() -> None:
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()),
        cache_logger_on_first_use=True,
    )


def serve_until(server: Any, port_q: Any, token_q: Any, token: Any, stop: Any) -> None:
    """Start a sync-style server on a free port, report it, serve until ``stop``; the
    CPU used in between goes back through ``port_q``."""
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_q.put(port)
    token_q.put((token, time.process_time()))
    stop.wait()
    port_q.put(time.process_time())
    server.stop(0)


def serve_sync(port_q: Any, token_q: Any, stop: Any, workload: str) -> None:
    from concurrent import futures

    import grpc

    quiet()
    authorizer, token = build_authorizer(workload)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[authorizer.handler()])
    serve_until(server, port_q, token_q, token, stop)


def serve_core(port_q: Any, token_q: Any, stop: Any, workload: str) -> None:
    from extauthz.server.callpool import CallPool
    from extauthz.server.grpc_core import CoreServer

    quiet()
    authorizer, token = build_authorizer(workload)
    pool = CallPool(8)
    server = CoreServer(authorizer.fast_method(), pool)
    serve_until(server, port_q, token_q, token, stop)


def serve_aio(port_q: Any, token_q: Any, stop: Any, workload: str) -> None:
    import grpc

    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
    from extauthz.server.authz import SERVICE

    quiet()
    authorizer, token = build_authorizer(workload)

    async def check(request: Any, context: Any) -> bytes:
        return bytes(authorizer.check(request, None))

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check,
                    request_deserializer=external_auth_pb2.CheckRequest.FromString,
                    response_serializer=None,
                )
            },
        )
        server = grpc.aio.server(handlers=[handler])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_q.put(port)
        token_q.put((token, time.process_time()))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        port_q.put(time.process_time())
        await server.stop(0)

    asyncio.run(main())


def load(port: int, tokens: list[str], seconds: float, concurrency: int, out: Any) -> None:
    import grpc

    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
    from extauthz.client import build_request
    from extauthz.server.authz import METHOD

    payloads = [
        build_request({"authorization": f"Bearer {t}"}, "/orders").SerializeToString()
        for t in tokens
    ]
    sent = iter(range(10**9))

    async def main() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                METHOD,
                request_serializer=None,
                response_deserializer=external_auth_pb2.CheckResponse.FromString,
            )
            deadline = time.monotonic() + seconds
            done = 0

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    await call(payloads[next(sent) % len(payloads)], timeout=5)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done

    out.put(asyncio.run(main()))


def run(model: Any, seconds: float, concurrency: int, workload: str) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    port_q, token_q, out, stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    server = ctx.Process(target=model, args=(port_q, token_q, stop, workload))
    server.start()
    port, (token, cpu0) = port_q.get(timeout=120), token_q.get(timeout=120)
    # warm up (first Check pays the decrypt), then measure
    warm = ctx.Process(target=load, args=(port, token[:1], 0.5, 2, out))
    warm.start()
    warm.join()
    out.get()
    client = ctx.Process(target=load, args=(port, token, seconds, concurrency, out))
    client.start()
    client.join()
    done = out.get()
    stop.set()
    cpu = port_q.get(timeout=30) - cpu0  # serving only (warm-up included), not start-up
    server.join()
    return done / seconds, cpu / max(done, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workload", choices=["cached", "unique"], default="cached")
    args = parser.parse_args()
    models = [
        ("grpcio sync (ThreadPoolExecutor, 8 threads)", serve_sync),
        ("grpc.aio", serve_aio),
        ("extauthz call loop on gRPC core (8 Check threads)", serve_core),
    ]
    rows = [(name, *run(model, args.seconds, args.concurrency, args.workload))
            for name, model in models]  # fmt: skip
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| server | Checks/s | ÷ sync | server CPU µs/Check | ÷ sync |")
    print("|---|---:|---:|---:|---:|")
    _name, sync_rate, sync_cpu = rows[0]
    for name, rate, cpu in rows:
        print(f"| {name} | {rate:,.0f} | {rate / sync_rate:.2f}× | {cpu:,.0f} | "
              f"{cpu / sync_cpu:.2f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
