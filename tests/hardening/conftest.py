"""Fixtures of the hardening suite: keys and in-memory pipelines (fuzz profiles are in
``fuzzing.py`` beside this file)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.pipeline.support import Env, Kit, make_env, make_kit


@pytest.fixture(scope="session")
def hkit() -> Kit:
    """Every key of the pipeline tests (tests/pipeline/support.py), generated once."""
    return make_kit()


@pytest.fixture(scope="session")
def new_henv(hkit: Kit) -> Callable[..., Env]:
    """``new_henv(overrides, ...)``: a fresh in-memory pipeline with the shared keys."""

    def factory(*args: Any, **kwargs: Any) -> Env:
        return make_env(hkit, *args, **kwargs)

    return factory
