"""The Dockerfile's steps, replayed without a container engine.

The image cannot be built here (no container engine), so its steps are replayed on this
machine, as close to the image as a test can get:

1. the build context is exactly what `.dockerignore` lets through (its allow-list is
   copied into an empty directory), and the wheel is built from that alone
   (`pip wheel --no-deps .`, as the builder stage does);
2. the wheel is installed into a clean virtualenv (`python -m venv`), bytecode is
   compiled (`compileall`), and the whole tree is made read-only;
3. the service runs from that venv as uid/gid 65532 with the image's environment
   (`HOME=/tmp`, `TMPDIR=/tmp`, `PYTHONDONTWRITEBYTECODE=1`; a private directory stands in
   for the pod's /tmp emptyDir): `extauthz serve --config` becomes ready and
   `extauthz check --expect deny:missing_token` passes, as the chart's `helm test` pod.

What differs from the image: the base is the system's CPython 3.11 (the image's is
python:3.11-slim), and the dependencies come from the development virtualenv (a `.pth`
file) instead of being downloaded again (the pinned versions are the same; a test cannot
fetch 350 MB). Running as another uid needs root and a system Python 3.11 that uid can
execute: the test is skipped without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from extauthz import mint
from tests.chart.helmtest import REPO
from tests.envoy_harness import free_port

pytestmark = pytest.mark.slow

UID = GID = 65532
#: a CPython 3.11 outside any user's home, so uid 65532 can run it
BASE_PYTHON = Path("/usr/bin/python3.11")


def _pattern(rule: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` within one path segment, `**` any depth."""
    regex = ""
    for segment in rule.strip("/").split("/"):
        if segment == "**":
            regex += "(?:[^/]+/)*"
            continue
        piece = ""
        for char in segment:
            piece += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        regex += piece + "/"
    return re.compile(regex.removesuffix("/"))


def build_context(target: Path) -> list[str]:
    """Copy what `.dockerignore` admits, with its rules: the last matching pattern wins,
    `!` re-includes, and a pattern matching a directory covers everything in it."""
    rules = [
        (line.startswith("!"), _pattern(line.lstrip("!")))
        for line in (
            raw.strip() for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        )
        if line and not line.startswith("#")
    ]
    copied = []
    for path in sorted(REPO.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(REPO).as_posix()
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        included = True
        for negate, pattern in rules:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                included = negate
        if included:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)
            copied.append(rel)
    return copied


def make_read_only(root: Path) -> None:
    """Every file and directory under ``root``: no write bit for anyone."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def snapshot(root: Path) -> set[str]:
    """Every path under ``root``."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory uid 65532 can traverse (pytest's own tmp_path is private to root)."""
    with tempfile.TemporaryDirectory(prefix="extauthz-image-") as name:
        root = Path(name)
        root.chmod(0o755)
        try:
            yield root
        finally:  # read-only trees cannot be removed until writable again
            for path in [root, *root.rglob("*")]:
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as uid 65532 needs root")
@pytest.mark.skipif(not BASE_PYTHON.exists(), reason=f"needs {BASE_PYTHON}")
def test_image_steps_replayed_run_as_65532_on_a_read_only_tree(image_root: Path) -> None:
    """Context -> wheel -> clean venv -> read-only -> serve and check as 65532."""
    tmp_path = image_root
    # 1. the build context, and the wheel built from it alone
    context = tmp_path / "context"
    copied = build_context(context)
    assert "pyproject.toml" in copied
    assert any(rel.startswith("extauthz/") for rel in copied)
    assert not any(rel.startswith(("tests/", "charts/", ".venv/", ".git/")) for rel in copied)
    assert not any("__pycache__" in rel for rel in copied)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(context)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = wheels.glob("extauthz-*.whl")

    # 2. a clean venv with the wheel, the dependencies of the development venv, bytecode
    venv = tmp_path / "opt" / "venv"
    subprocess.run(
        [str(BASE_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--no-deps", str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    )  # fmt: skip
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "compileall", "-q", str(venv / "lib")],
        check=True,
        timeout=120,
    )
    assert (venv / "bin" / "extauthz").exists()  # the image's ENTRYPOINT

    # the config and keys, read-only as a mounted ConfigMap/Secret
    etc = tmp_path / "etc" / "extauthz"
    (etc / "decrypt").mkdir(parents=True)
    (etc / "verify").mkdir()
    enc = mint.generate_jwk("enc", "RSA-OAEP-256", "enc-1")
    sig = mint.generate_jwk("sig", "ES256", "sig-1")
    (etc / "decrypt" / "enc.json").write_text(json.dumps(enc))
    (etc / "verify" / "sig.json").write_text(json.dumps({k: v for k, v in sig.items() if k != "d"}))
    grpc, ops = free_port(), free_port()
    config = {
        "apiVersion": "extauthz/v1",
        "listen": {"grpc": f"127.0.0.1:{grpc}", "http": f"127.0.0.1:{ops}"},
        "decryption": {"keys": [{"directory": str(etc / "decrypt")}]},
        "providers": [
            {
                "name": "idp",
                "issuer": "https://idp.example.test",
                "keys": [{"directory": str(etc / "verify")}],
            }
        ],
    }
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    for root in (tmp_path / "opt", tmp_path / "etc"):
        make_read_only(root)
    tmp_path.chmod(0o755)  # traversable by 65532, not writable
    before = snapshot(tmp_path / "opt") | {f"etc/{p}" for p in snapshot(tmp_path / "etc")}

    # 3. run as 65532 with the image's environment; its own writable "/tmp"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.chown(scratch, UID, GID)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
    }
    log = (scratch / "serve.log").open("wb")
    serve = subprocess.Popen(
        ["extauthz", "serve", "--config", str(etc / "config.yaml")],
        env=env, user=UID, group=GID, extra_groups=[], stdout=log, stderr=subprocess.STDOUT,
        cwd=scratch,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert serve.poll() is None, (scratch / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ops}/readyz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, (scratch / "serve.log").read_text()
                time.sleep(0.2)
        check = subprocess.run(
            ["extauthz", "check", "--address", f"127.0.0.1:{grpc}", "--path", "/",
             "--expect", "deny:missing_token"],
            env=env, user=UID, group=GID, extra_groups=[], capture_output=True, text=True,
            timeout=60, cwd=scratch,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
    assert serve.returncode == 0, (scratch / "serve.log").read_text()
    # nothing was written into the image's tree or the mounted config
    after = snapshot(tmp_path / "opt") | {f"etc/{p}" for p in snapshot(tmp_path / "etc")}
    assert after == before
    assert "Traceback" not in (scratch / "serve.log").read_text()
