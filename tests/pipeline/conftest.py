"""Session-scoped keys and a factory for configured in-memory pipelines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .support import Env, Kit, make_env, make_kit


@pytest.fixture(scope="session")
def kit() -> Kit:
    """Every key the pipeline tests use, generated once (RSA keygen is slow)."""
    return make_kit()


@pytest.fixture(scope="session")
def new_env(kit: Kit) -> Callable[..., Env]:
    """``new_env(overrides, idp=..., ...)``: a fresh pipeline with the shared keys."""

    def factory(*args: Any, **kwargs: Any) -> Env:
        return make_env(kit, *args, **kwargs)

    return factory


@pytest.fixture
def env(new_env: Callable[..., Env]) -> Env:
    """A fresh pipeline with the default (documented example-like) config."""
    return new_env()
