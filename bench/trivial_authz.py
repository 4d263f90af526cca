"""The floor of a Python ext_authz hop: allow everything, do nothing else.

    python bench/trivial_authz.py --port PORT [--processes N] [--threads 8] [--parse]
                                  [--loop] [--dump FILE]

A grpcio sync server with one generic handler for
``envoy.service.auth.v3.Authorization/Check`` that takes the raw request bytes (no
protobuf parse) and returns a precomputed serialized ``CheckResponse{status: OK}``
Whatever extauthz does on top of this is the cost of its real work.
``--parse`` deserializes every request into a full ``CheckRequest`` first (what any
server that reads the request must pay) and still answers the precomputed response.
Also serves ``grpc.health.v1`` (SERVING at once) so the benchmarks can wait for it.
``--processes N`` runs N such servers sharing the port with SO_REUSEPORT, like
extauthz ``--workers N``. ``--loop`` serves on extauthz's call loop on gRPC core
(``extauthz/server/grpc_core.py``) instead of grpcio's server: the floor of a gRPC
hop that does not pay grpcio's per-call Python. ``--dump FILE`` writes the first request's raw bytes
(a real Envoy CheckRequest, to replay in profiles).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "envoy.service.auth.v3.Authorization"


def ok_response() -> bytes:
    """``CheckResponse{status: {code: 0}, ok_response: {}}``, serialized once."""
    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2

    response = external_auth_pb2.CheckResponse()
    response.status.code = 0
    response.ok_response.SetInParent()
    return bytes(response.SerializeToString())


def serve(port: int, threads: int, reuse_port: bool, dump: str | None,
          parse: bool = False, loop: bool = False) -> None:  # fmt: skip
    """Serve until SIGTERM/SIGINT."""
    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2

    wire = ok_response()
    dumped = threading.Event()

    def check(request: Any, context: Any) -> bytes:
        if dump and not dumped.is_set():
            dumped.set()
            Path(dump).write_bytes(request if isinstance(request, bytes)
                                   else request.SerializeToString())  # fmt: skip
        return wire

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, response_serializer=None,
            request_deserializer=external_auth_pb2.CheckRequest.FromString if parse else None),
    })  # fmt: skip
    options = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    server: Any
    if loop:
        from extauthz.server.callpool import CallPool
        from extauthz.server.grpc_core import CoreServer, FastMethod

        decode = external_auth_pb2.CheckRequest.FromString if parse else bytes
        server = CoreServer(
            FastMethod(f"/{SERVICE}/Check", decode, lambda request: check(request, None),
                       lambda request: wire),
            CallPool(threads), options=options, inline=("/grpc.health.v1.Health/Check",),
        )  # fmt: skip
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                             handlers=[handler], options=options)  # fmt: skip
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    stop.wait()
    server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--dump", help="write the first request's bytes here")
    parser.add_argument("--parse", action="store_true", help="deserialize each CheckRequest")
    parser.add_argument("--loop", action="store_true", help="serve on extauthz's call loop")
    args = parser.parse_args()
    reuse = args.processes > 1
    others = [
        mp.get_context("spawn").Process(
            target=serve, args=(args.port, args.threads, True, None, args.parse, args.loop)
        )
        for _ in range(args.processes - 1)
    ]
    for proc in others:
        proc.start()
    try:
        serve(args.port, args.threads, reuse, args.dump, args.parse, args.loop)
    finally:
        for proc in others:
            proc.terminate()
            proc.join(5)


if __name__ == "__main__":
    main()
