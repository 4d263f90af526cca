"""Runs last in the end-to-end suite: nothing it logged contains a token, an
``authorization`` value or a cookie value."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def test_no_token_authorization_or_cookie_value_in_any_log_line(log_capture: Any) -> None:
    text = log_capture.text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) >= 20, "the end-to-end suite should have logged its decisions"
    assert any(line.get("event") == "check" for line in lines)
    assert log_capture.secrets, "tokens were minted during the suite"
    leaked = [s[:16] for s in log_capture.secrets if s in text]
    assert leaked == []
    assert "access_token=" not in text
    assert "Bearer " not in text
