"""Nothing the service logs contains a token, an ``authorization`` value or a cookie
value: checked against the session's whole log (every end-to-end test that ran before,
in whatever order), after this test has itself sent allowed and denied requests carrying
tokens in headers and cookies through a real Envoy, so it holds when run alone too."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Capture
from tests.e2e.test_envoy_e2e import app  # noqa: F401 - the fixture, used by name
from tests.envoy_harness import EnvoyProcess, http_get

pytestmark = pytest.mark.e2e


def test_no_token_authorization_or_cookie_value_in_any_log_line(
    envoy: EnvoyProcess,
    mint_token: Callable[..., str],
    log_capture: Capture,
) -> None:
    valid, expired = mint_token(), mint_token(ttl=-3600)
    tampered = valid[:-8] + ("A" * 8 if not valid.endswith("A" * 8) else "B" * 8)
    log_capture.secrets.add(tampered)
    for headers in (
        {"authorization": f"Bearer {valid}"},
        {"authorization": f"Bearer {expired}"},
        {"authorization": f"Bearer {tampered}"},
        {"cookie": f"theme=dark; access_token={valid}"},
        {"cookie": f"access_token={expired}"},
        {"authorization": f"Bearer {valid}", "x-auth-other": "spoof"},
    ):
        for path in ("/orders", "/admin/x", "/public/x"):
            status, _, _ = http_get(envoy.url + path, headers)
            assert status in (200, 401, 403), envoy.explain()
    text = log_capture.text()
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert sum(1 for line in lines if line.get("event") == "check") >= 18
    assert log_capture.secrets, "tokens were minted"
    leaked = [s[:16] for s in log_capture.secrets if s in text]
    assert leaked == []
    assert "access_token=" not in text
    assert "Bearer " not in text
