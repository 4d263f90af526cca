"""The floor of a Python HTTP authorization hop: allow everything, do nothing else.

    python bench/trivial_http_authz.py --port PORT [--processes N]

An asyncio server on uvloop whose protocol feeds each connection's bytes to an
``httptools`` request parser and, at the end of every request, writes one
precomputed answer: ``200``, ``content-length: 0`` and one claim header — what an
authorization server for Envoy's ``http_service`` sends on an allow, with no work
behind it. Keep-alive as the client asks. Whatever extauthz does on top of this over
HTTP is the cost of its real work. ``--processes N`` runs N such servers sharing the
port with SO_REUSEPORT, like extauthz ``--workers N``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import signal
import socket
from typing import cast

import httptools
import uvloop

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-auth-subject: alice\r\n\r\n"


class AllowAll(asyncio.Protocol):
    """One connection: parse requests, answer each with :data:`ANSWER`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        """httptools callback: one whole request has been read."""
        if self.transport is None:
            return
        self.transport.write(ANSWER)
        if not self.parser.should_keep_alive():
            self.transport.close()


def serve(port: int, reuse_port: bool) -> None:
    """Serve until SIGTERM/SIGINT."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        server = await loop.create_server(AllowAll, sock=sock, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    reuse = args.processes > 1
    others = [
        mp.get_context("spawn").Process(target=serve, args=(args.port, True))
        for _ in range(args.processes - 1)
    ]
    for proc in others:
        proc.start()
    try:
        serve(args.port, reuse)
    finally:
        for proc in others:
            proc.terminate()
            proc.join(5)


if __name__ == "__main__":
    main()
