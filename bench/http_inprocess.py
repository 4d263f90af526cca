"""Drive extauthz's HTTP authorization edge in-process, with no socket.

:func:`driver` returns a function that feeds one raw HTTP/1.1 request (the bytes Envoy's
``http_service`` sends) to one keep-alive connection of the edge — httptools parsing,
the cached-decision path, the memoized answer, the decision log — and returns the
bytes written back. A Check that must verify a token goes to the edge's thread pool
and is awaited, so the first call (the cache miss) works too. None when this
extauthz has no HTTP edge or its connection class cannot be driven this way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class _Sink(asyncio.Transport):
    """A transport that keeps what is written (the edge's answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def driver(evaluator: Any, config: Any, request: str) -> Callable[[int], bytes] | None:
    """A function ``run(i) -> answer bytes`` over the HTTP edge, or None."""
    try:
        from extauthz.server import http_authz
    except ImportError:
        return None
    connection_class = getattr(http_authz, "_Connection", None)
    if connection_class is None:
        print("http_inprocess: extauthz.server.http_authz has no _Connection; skipped")
        return None
    server = http_authz.HttpAuthzServer(evaluator, config.logging, "127.0.0.1:0")
    sink = _Sink()
    connection = connection_class(server)
    connection.connection_made(sink)
    wire = request.encode()

    def run(_i: int) -> bytes:
        sink.out.clear()
        connection.data_received(wire)
        if not sink.out:
            # a cache miss went to the thread pool: run the loop until it answers
            deadline = time.monotonic() + 10
            while not sink.out and time.monotonic() < deadline:
                server.loop.run_until_complete(asyncio.sleep(0.001))
        answer = b"".join(sink.out)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"HTTP edge did not allow: {answer[:200]!r}")
        return answer

    return run
