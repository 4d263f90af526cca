"""``--workers N``: processes sharing the port, aggregated metrics, readiness, SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from envoy_harness import free_port

from extauthz.client import check


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
        deadline = time.monotonic() + 30
        while get(base + "/readyz")[0] != 200:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.2)
        token = mint_token()
        n = 40
        for _ in range(n):  # fresh channels: the kernel spreads connections over workers
            assert (
                check(f"127.0.0.1:{grpc_port}", {"authorization": f"Bearer {token}"})["decision"]
                == "allow"
            )
        status, text = get(base + "/metrics")
        assert status == 200
        match = re.search(
            r'extauthz_checks_total\{decision="allow",reason="ok",transport="grpc"\} (\S+)', text
        )
        assert match
        assert float(match.group(1)) == n
        assert "extauthz_build_info" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
