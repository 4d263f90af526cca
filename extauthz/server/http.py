"""The HTTP listener: ``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from extauthz import metrics


class HttpEndpoints:
    """A small threaded HTTP server on ``address`` (``host:port``)."""

    def __init__(self, address: str, ready: Callable[[], bool], live: Callable[[], bool]) -> None:
        host, _, port = address.rpartition(":")
        self._ready = ready
        self._live = live
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "extauthz"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = metrics.exposition()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    ok = outer._live()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                elif path == "/readyz":
                    ok = outer._ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes and scrapes are not worth a log line each

        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (shutdown() would wait forever for a
        serve loop that never started, e.g. after a start-up error)."""
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
