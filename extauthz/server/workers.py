"""``--workers N``: N processes share the gRPC port with SO_REUSEPORT.

Envoy opens one HTTP/2 connection per worker thread, and the kernel spreads those
connections over the processes, so N processes use N cores for the CPU-bound crypto
that one Python process (one GIL) cannot. Each worker runs its own key sources.

Both authorization listeners (``listen.grpc`` and ``listen.http_authz``) are shared
that way. This supervisor process serves the HTTP endpoints: ``/metrics`` aggregates
every worker (prometheus-client multiprocess mode), ``/readyz`` is 200 only when every
worker is SERVING (each marks it with a file), ``/healthz`` when every worker runs and
its liveness heartbeat is fresh (each worker touches a file after every round of
self-checks of its own listeners: a loopback check from here could reach any worker).
SIGTERM is forwarded; each worker drains as a single process would. A worker that
dies unexpectedly takes the whole set down (exit 1) so Kubernetes restarts the pod.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from extauthz.config import Config
from extauthz.server.liveness import heartbeat_fresh, liveness_timings

log = structlog.get_logger("extauthz.workers")

WORKER_DIR_ENV = "EXTAUTHZ_WORKER_DIR"


def worker_ready_file() -> Path | None:
    """In a worker: the file to create once SERVING (None outside workers mode)."""
    directory = os.environ.get(WORKER_DIR_ENV)
    return Path(directory) / f"ready-{os.getpid()}" if directory else None


def worker_heartbeat_file() -> Path | None:
    """In a worker: the file touched after each good liveness round (None outside)."""
    directory = os.environ.get(WORKER_DIR_ENV)
    return Path(directory) / f"live-{os.getpid()}" if directory else None


def run_workers(config: Config, count: int) -> int:
    """Start ``count`` workers and supervise them until SIGTERM/SIGINT or a failure."""
    if config.source is None:
        raise ValueError("workers mode needs a config file")
    for key in ("grpc", "http_authz"):
        address = getattr(config.listen, key)
        if address is not None and address.endswith(":0"):
            print(f"extauthz: --workers needs a fixed listen.{key} port", file=sys.stderr)
            return 2
    state = Path(tempfile.mkdtemp(prefix="extauthz-workers-"))
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(state), WORKER_DIR_ENV: str(state)}
    command = [sys.executable, "-m", "extauthz", "serve", "--config", str(config.source),
               "--worker"]  # fmt: skip
    started = time.time()
    children = [subprocess.Popen(command, env=env) for _ in range(count)]  # noqa: S603
    log.info("workers_started", pids=[c.pid for c in children])

    from extauthz import __version__, metrics
    from extauthz.server.http import HttpEndpoints

    metrics.aggregate_workers(str(state))
    metrics.set_build_info(__version__)

    def ready() -> bool:
        return all(c.poll() is None and (state / f"ready-{c.pid}").exists() for c in children)

    timings = liveness_timings(config.server.liveness_interval_seconds)

    def live() -> bool:
        return all(
            c.poll() is None and heartbeat_fresh(state / f"live-{c.pid}", started, timings)
            for c in children
        )

    http = None
    if config.listen.http:
        try:
            http = HttpEndpoints(config.listen.http, ready=ready, live=live)
        except OSError as exc:
            print(f"extauthz serve: listen.http: cannot listen on {config.listen.http}: "
                  f"{exc.strerror}", file=sys.stderr)  # fmt: skip
            for child in children:
                child.terminate()
                child.wait()
            shutil.rmtree(state, ignore_errors=True)
            return 2
        http.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        while not stop.wait(0.5):
            dead = [c for c in children if c.poll() is not None]
            if dead:
                log.error("worker_died", pids=[c.pid for c in dead],
                          codes=[c.returncode for c in dead])  # fmt: skip
                code = 1
                for child in children:
                    if child.poll() is None:
                        child.terminate()
                break
        limit = config.shutdown.drain_seconds + config.shutdown.grace_seconds + 5
        for child in children:
            try:
                child_code = child.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                child.kill()
                child_code = child.wait()
            metrics.worker_exited(child.pid)
            code = code or (1 if child_code else 0)
    finally:
        if http is not None:
            http.stop()
        shutil.rmtree(state, ignore_errors=True)
    return code
