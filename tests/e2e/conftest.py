"""End-to-end fixtures: every log line the service writes during this suite is captured
to a file, and every token minted is recorded, so the redaction guarantee can be
checked against everything that actually happened (tests/e2e/test_zz_redaction.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from extauthz import logging as logging_mod


class Capture:
    """The captured log file and the secrets that must never appear in it."""

    def __init__(self, path: Path, stream: TextIO) -> None:
        self.path = path
        self.stream = stream
        self.secrets: set[str] = set()

    def text(self) -> str:
        self.stream.flush()
        return self.path.read_text()


@pytest.fixture(scope="session")
def log_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    path = tmp_path_factory.mktemp("logs") / "extauthz.jsonl"
    with path.open("w") as stream:
        structlog.reset_defaults()
        logging_mod.configure("debug", "json", stream=stream)
        yield Capture(path, stream)
        structlog.reset_defaults()


@pytest.fixture(scope="session")
def mint_token(mint_token: Callable[..., str], log_capture: Capture) -> Callable[..., str]:
    """The shared minter, recording every token so the redaction test can look for it."""

    def make(**kwargs: Any) -> str:
        token = mint_token(**kwargs)
        log_capture.secrets.add(token)
        for part in token.split("."):
            if len(part) >= 16:
                log_capture.secrets.add(part)
        return token

    return make
