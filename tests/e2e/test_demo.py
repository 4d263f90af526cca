"""``make run`` works: the demo starts Envoy, extauthz and the upstream, and the valid,
expired, tampered and missing tokens get 200, 401, 401, 401."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e


def test_demo_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--once", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all as expected: [200, 401, 401, 401]" in result.stdout
    assert 'upstream saw: {"x-auth-subject": "alice"' in result.stdout
    assert "curl -si" in result.stdout
    log = (tmp_path / "extauthz.log").read_text()
    for name in ("valid", "expired", "tampered"):
        token = (tmp_path / f"{name}.jwe").read_text().strip()
        assert token not in log
