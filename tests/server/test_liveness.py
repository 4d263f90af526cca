"""Liveness: live while the authorization listeners answer, whatever the keys say.

A wedged listener (its event loop blocked, or every gRPC handler thread stuck) turns
``/healthz`` to 503 and the gRPC health service ``liveness`` to NOT_SERVING, so that
Kubernetes restarts the process; it turns live again when the listener recovers. A
process waiting for its keys is not ready, but live.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extauthz import config as config_mod
from extauthz.server.app import App
from extauthz.server.liveness import Liveness, LivenessTimings
from tests.service_client import Client, wait_for

LISTEN = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}
FAST = LivenessTimings(interval=0.1, deadline=0.3, failures=2)
SERVING, NOT_SERVING = 1, 2


def healthz(app: App, path: str = "/healthz") -> int:
    assert app.http is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.http.port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return error.code


def start(
    write_config: Callable[..., Path], ready: bool = True, timings: LivenessTimings = FAST
) -> App:
    app = App(config_mod.load(write_config(listen=LISTEN)), liveness=timings)
    app.start()
    if ready:
        assert app.store.wait_ready(5)
    return app


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = start(write_config)
    yield instance
    instance.stop_now()


def test_a_blocked_http_listener_turns_unlive_then_live_again(app: App) -> None:
    assert app.http_authz is not None
    assert healthz(app) == 200
    assert Client(app.grpc_port).status("liveness") == SERVING
    release = threading.Event()
    app.http_authz.loop.call_soon_threadsafe(release.wait, 10)  # the loop is stuck
    try:
        assert wait_for(lambda: healthz(app) == 503, timeout=5)
        assert Client(app.grpc_port).status("liveness") == NOT_SERVING
        assert Client(app.grpc_port).status("") == SERVING  # readiness is another matter
    finally:
        release.set()
    assert wait_for(lambda: healthz(app) == 200, timeout=5)
    assert Client(app.grpc_port).status("liveness") == SERVING


def test_stuck_grpc_handler_threads_turn_unlive(app: App) -> None:
    release = threading.Event()
    stuck = [app._pool.submit(release.wait, 10) for _ in range(app.config.server.threads)]
    try:
        assert wait_for(lambda: healthz(app) == 503, timeout=5)
    finally:
        release.set()
    assert wait_for(lambda: all(call.done() for call in stuck), timeout=5)
    assert wait_for(lambda: healthz(app) == 200, timeout=5)


def test_liveness_never_depends_on_keys(write_config: Callable[..., Path], key_dirs: Path) -> None:
    """A pod waiting for its keys is not ready, and must not be restarted for it."""
    for item in (key_dirs / "keys" / "verify").iterdir():
        item.unlink()
    patient = LivenessTimings(interval=0.1, deadline=2.0, failures=2)  # a loaded machine
    waiting = start(write_config, ready=False, timings=patient)
    try:
        time.sleep(patient.interval * 5)  # several rounds of self-checks
        assert healthz(waiting, "/readyz") == 503
        assert healthz(waiting) == 200
        assert Client(waiting.grpc_port).status("liveness") == SERVING
    finally:
        waiting.stop_now()


def test_one_slow_round_is_not_enough_and_a_stalled_checker_is(tmp_path: Path) -> None:
    answers = iter([False, True, False, False])
    changes: list[bool] = []
    heartbeat = tmp_path / "live"
    liveness = Liveness(
        {"x": lambda _deadline: next(answers)}, FAST, heartbeat=heartbeat, on_change=changes.append
    )
    assert liveness.run_once() is False
    assert liveness.live()  # one failed round: still live
    assert liveness.run_once() is True
    assert heartbeat.exists()  # a good round beats the heartbeat
    liveness.run_once()
    liveness.run_once()
    assert not liveness.live()
    assert changes == [False]
    # a checker thread that stopped running rounds is not live either
    fresh = Liveness({"x": lambda _deadline: True}, FAST)
    assert fresh.run_once()
    assert fresh.live()
    assert wait_for(lambda: not fresh.live(), timeout=FAST.stale_after + 2)
