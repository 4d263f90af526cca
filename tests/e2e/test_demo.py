"""``make run`` works: the demo starts Envoy, extauthz and the upstream, and the valid,
expired, tampered and missing tokens get 200, 401, 401, 401; the `extauthz check`
command it prints works as pasted; its port is configurable and a busy one is reported
plainly before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

DEMO = str(REPO / "tools" / "demo.py")


def test_demo_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, DEMO, "--once", "--port", "0", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all as expected: [200, 401, 401, 401]" in result.stdout
    assert 'upstream saw: {"x-auth-subject": "alice"' in result.stdout
    assert "curl -si" in result.stdout
    # the printed extauthz command ran, as pasted, and allowed the valid token
    assert "== extauthz check (valid token): exit 0" in result.stdout
    assert "decision: allow, ok" in result.stdout
    log = (tmp_path / "extauthz.log").read_text()
    for name in ("valid", "expired", "tampered"):
        token = (tmp_path / f"{name}.jwe").read_text().strip()
        assert token not in log


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_busy_port_is_reported_before_anything_starts(tmp_path: Path, how: str) -> None:
    """Something listens on the demo port: exit 2 with a message naming the port and the
    way out; no extauthz was started (its log does not exist)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [sys.executable, DEMO, "--once", "--workdir", str(tmp_path)]
        env = dict(os.environ)
        if how == "flag":
            args += ["--port", str(port)]
        else:
            env["DEMO_PORT"] = str(port)
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"DEMO_PORT={port + 1} make run" in result.stderr
    assert not (tmp_path / "extauthz.log").exists()


def test_a_malformed_port_is_refused(tmp_path: Path) -> None:
    """DEMO_PORT that is not a port number: exit 2, saying so."""
    env = {**os.environ, "DEMO_PORT": "ten-thousand"}
    result = subprocess.run(
        [sys.executable, DEMO, "--once", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert "'ten-thousand' is not a number" in result.stderr
