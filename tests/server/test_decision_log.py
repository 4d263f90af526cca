"""The decision log: one line per Check with the fields of SPEC §7, a human explanation
on every deny, the W3C trace id, and the deny-only / sampled modes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from extauthz import config as config_mod
from extauthz.client import build_request
from extauthz.pipeline.evaluate import Evaluator
from extauthz.server.app import Sources
from extauthz.server.authz import Authorizer

TRACE = "0af7651916cd43dd8448eb211c80319c"


_STARTED: list[Sources] = []


@pytest.fixture(autouse=True)
def _stop_sources() -> Iterator[None]:
    yield
    while _STARTED:
        _STARTED.pop().stop()


def authorizer(write_config: Callable[..., Path], **logging: Any) -> Authorizer:
    config = config_mod.load(write_config(logging={"level": "info", **logging}))
    sources = Sources.from_config(config)
    sources.start()
    _STARTED.append(sources)
    assert sources.store.wait_ready(5)
    return Authorizer(Evaluator(config, sources.store), config.logging)


def check(auth: Authorizer, headers: dict[str, str], path: str = "/orders?x=1") -> list[Any]:
    with capture_logs() as logs:
        auth.check(build_request(headers, path))
    return [line for line in logs if line["event"] == "check"]


def test_one_line_per_check_with_the_spec_fields(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    auth = authorizer(write_config)
    headers = {
        "authorization": f"Bearer {mint_token()}",
        "x-request-id": "req-1",
        "traceparent": f"00-{TRACE}-b7ad6b7169203331-01",
    }
    (line,) = check(auth, headers)
    for field in (
        "decision",
        "reason",
        "status",
        "sub",
        "iss",
        "kid",
        "rule",
        "method",
        "path",
        "request_id",
        "token_fp",
        "latency_us",
    ):
        assert field in line, field
    assert line["path"] == "/orders"  # never the query
    assert line["request_id"] == "req-1"
    assert line["trace_id"] == TRACE
    assert len(line["token_fp"]) == 12
    assert "description" not in line


def test_every_deny_carries_reason_and_explanation(write_config: Callable[..., Path]) -> None:
    auth = authorizer(write_config)
    (line,) = check(auth, {"authorization": "Bearer a.b.c", "traceparent": "garbage"})
    assert line["decision"] == "deny"
    assert line["reason"] == "malformed"
    assert line["description"] == "the token is not a well-formed JWS or JWE"
    assert "trace_id" not in line


@pytest.mark.parametrize(
    ("mode", "rate", "allows_logged"),
    [("deny", 0.0, 0), ("sample", 0.0, 0), ("sample", 1.0, 5), ("all", 0.0, 5)],
)
def test_deny_only_and_sampled_modes(
    write_config: Callable[..., Path],
    mint_token: Callable[..., str],
    mode: str,
    rate: float,
    allows_logged: int,
) -> None:
    auth = authorizer(write_config, decisions=mode, allow_sample_rate=rate)
    token = mint_token()
    allows = sum(len(check(auth, {"authorization": f"Bearer {token}"})) for _ in range(5))
    denies = sum(len(check(auth, {})) for _ in range(3))
    assert allows == allows_logged
    assert denies == 3  # denies are always logged
