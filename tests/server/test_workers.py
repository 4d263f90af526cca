"""``--workers N``: processes sharing the port, aggregated metrics, readiness, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from extauthz.client import check
from tests.envoy_harness import free_port
from tests.service_client import wait_for


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def test_two_workers_share_the_port_and_metrics_add_up(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    grpc_port, http_port = free_port(), free_port()
    path = write_config(
        listen={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
        shutdown={"drain_seconds": 0.5, "grace_seconds": 2},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_ready(proc, base)
        token = mint_token()
        n = 40
        for _ in range(n):  # fresh channels: the kernel spreads connections over workers
            assert (
                check(f"127.0.0.1:{grpc_port}", {"authorization": f"Bearer {token}"})["decision"]
                == "allow"
            )
        # each worker applies its samples within a second (metrics.FLUSH_INTERVAL)
        assert checks_counted(base, "grpc") == n
        status, text = get(base + "/metrics")
        assert status == 200
        assert "extauthz_build_info" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def wait_ready(proc: subprocess.Popen[bytes], base: str) -> None:
    """Until the supervisor's /readyz is 200 (every worker SERVING), within 30 s."""
    deadline = time.monotonic() + 30
    while get(base + "/readyz")[0] != 200:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "workers never became ready"
        time.sleep(0.2)


def checks_counted(base: str, transport: str, settle: float = 5.0) -> float:
    """The allowed Checks of ``transport`` on the supervisor's /metrics, once the count
    has held still for longer than the workers' flush interval (or ``settle`` passed)."""
    pattern = (
        rf'extauthz_checks_total\{{decision="allow",reason="ok",transport="{transport}"\}} (\S+)'
    )
    deadline = time.monotonic() + settle
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        match = re.search(pattern, get(base + "/metrics")[1])
        value = float(match.group(1)) if match else 0.0
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since > 1.5:
            break
        time.sleep(0.1)
    return last


def children_of(pid: int) -> list[int]:
    """The worker processes of the supervisor ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_workers_share_the_http_listener_and_a_frozen_worker_fails_liveness(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    """Both listeners are shared; the supervisor's /healthz follows each worker's
    heartbeat, so a worker that stops answering (SIGSTOP) makes the pod unlive."""
    grpc_port, authz_port, http_port = free_port(), free_port(), free_port()
    path = write_config(
        listen={"grpc": f"127.0.0.1:{grpc_port}", "http_authz": f"127.0.0.1:{authz_port}",
                "http": f"127.0.0.1:{http_port}"},
        shutdown={"drain_seconds": 0.2, "grace_seconds": 2},
        server={"liveness_interval_seconds": 0.2},
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{http_port}"
    workers: list[int] = []
    try:
        wait_ready(proc, base)
        token = mint_token()
        for _ in range(20):  # a fresh connection each: the kernel spreads them
            request = urllib.request.Request(
                f"http://127.0.0.1:{authz_port}/orders",
                headers={"authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                assert response.headers["x-auth-subject"] == "alice"
        assert checks_counted(base, "http") == 20
        assert get(base + "/healthz")[0] == 200
        workers = children_of(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGSTOP)
        assert wait_for(lambda: get(base + "/healthz")[0] == 503, 10, 0.1), (
            "a frozen worker never failed liveness"
        )
        os.kill(workers[0], signal.SIGCONT)
        assert wait_for(lambda: get(base + "/healthz")[0] == 200, 10, 0.1), (
            "a thawed worker never became live again"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_workers_exit_when_the_supervisor_is_killed(write_config: Callable[..., Path]) -> None:
    """A SIGKILLed supervisor cannot forward SIGTERM: its workers notice and exit, so none
    is left holding the port."""
    grpc_port, http_port = free_port(), free_port()
    path = write_config(listen={"grpc": f"127.0.0.1:{grpc_port}",
                                "http": f"127.0.0.1:{http_port}"})  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    workers: list[int] = []
    try:
        wait_ready(proc, base)
        workers = children_of(proc.pid)
        assert len(workers) == 2
        proc.kill()
        proc.wait(10)
        assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
                        10, 0.1), "a worker outlived its supervisor"  # fmt: skip
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
