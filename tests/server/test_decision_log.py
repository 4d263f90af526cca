"""The decision log: one line per Check with the documented fields, a human explanation
on every deny, the W3C trace id, and the deny-only / sampled modes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from extauthz import config as config_mod
from extauthz import logging as logging_mod
from extauthz.client import build_request
from extauthz.pipeline.evaluate import Evaluator
from extauthz.server.authz import Authorizer
from tests.conftest import LoadReady

TRACE = "0af7651916cd43dd8448eb211c80319c"


def authorizer(load_ready: LoadReady, **logging: Any) -> Authorizer:
    config, store = load_ready(logging={"level": "info", **logging})
    return Authorizer(Evaluator(config, store), config.logging)


def check(auth: Authorizer, headers: dict[str, str], path: str = "/orders?x=1") -> list[Any]:
    with capture_logs() as logs:
        auth.check(build_request(headers, path))
    return [line for line in logs if line["event"] == "check"]


def test_one_line_per_check_with_the_spec_fields(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    auth = authorizer(load_ready)
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


def test_every_deny_carries_reason_and_explanation(load_ready: LoadReady) -> None:
    auth = authorizer(load_ready)
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
    load_ready: LoadReady,
    mint_token: Callable[..., str],
    mode: str,
    rate: float,
    allows_logged: int,
) -> None:
    auth = authorizer(load_ready, decisions=mode, allow_sample_rate=rate)
    token = mint_token()
    allows = sum(len(check(auth, {"authorization": f"Bearer {token}"})) for _ in range(5))
    denies = sum(len(check(auth, {})) for _ in range(3))
    assert allows == allows_logged
    assert denies == 3  # denies are always logged


def test_both_transports_write_the_same_line_but_for_the_transport_field(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    import http.client

    from extauthz.server.app import App

    app = App(
        config_mod.load(write_config(listen={"grpc": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}))
    )
    app.start()
    try:
        assert app.store.wait_ready(5)
        assert app.http_authz is not None
        headers = {"authorization": f"Bearer {mint_token()}", "x-request-id": "req-9",
                   "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}  # fmt: skip
        (over_grpc,) = check(app.authorizer, headers)
        with capture_logs() as logs:
            conn = http.client.HTTPConnection("127.0.0.1", app.http_authz.port, timeout=5)
            conn.request("GET", "/orders?x=1", headers=headers)
            assert conn.getresponse().status == 200
            conn.close()
        (over_http,) = [line for line in logs if line["event"] == "check"]
    finally:
        app.stop_now()
    assert (over_grpc["transport"], over_http["transport"]) == ("grpc", "http")
    ignore = {"transport", "latency_us"}
    assert {k: v for k, v in over_http.items() if k not in ignore} == {
        k: v for k, v in over_grpc.items() if k not in ignore
    }


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Leave logging as it was: other suites may be capturing it."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    saved_structlog = structlog.get_config()
    saved_sink, saved_lines = logging_mod._FLUSHER.sink, logging_mod._FLUSHER.lines
    try:
        yield
    finally:
        logging_mod._FLUSHER.attach(saved_sink)
        logging_mod._FLUSHER.lines = saved_lines
        structlog.configure(**saved_structlog)
        root.handlers[:], root.level = saved[0], saved[1]


def test_configuring_logging_again_keeps_one_flush_thread(tmp_path: Path) -> None:
    streams: list[io.TextIOWrapper] = []
    try:
        with logging_restored():
            for index in range(5):
                streams.append(open(tmp_path / f"log{index}", "w", encoding="utf-8"))  # noqa: SIM115
                logging_mod.configure("info", "json", stream=streams[-1])
            flushers = [t for t in threading.enumerate() if t.name == "log-flush"]
            assert len(flushers) == 1
            structlog.get_logger("t").info("written", n=1)
            logging_mod._FLUSHER.flush()
            assert b'"written"' in (tmp_path / "log4").read_bytes()
    finally:
        for stream in streams:
            stream.close()


JWS = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def test_the_direct_decision_line_is_the_line_structlog_writes(tmp_path: Path) -> None:
    """The decision line skips structlog's chain when JSON goes to a real stream: same
    keys in the same order, same redaction, same timestamp format, same level filter —
    and back through structlog whenever structlog is configured otherwise."""
    fields = {"path": f"/a/{JWS}", "token": "secret", "status": 200, "dropped": ["x"]}
    log = logging_mod.EventLog("extauthz.decision")
    with logging_restored(), (tmp_path / "log").open("w", encoding="utf-8") as stream:
        logging_mod.configure("info", "json", stream=stream)
        lines = logging_mod._FLUSHER.lines
        assert lines is not None
        assert lines.active()
        log.line("warning", "check", dict(fields))
        structlog.get_logger("extauthz.decision").warning("check", **fields)
        log.line("info", "check", dict(fields, status=403))
        logging_mod._FLUSHER.flush()
        direct, chain, info = (json.loads(x) for x in (tmp_path / "log").read_text().splitlines())
        with capture_logs() as captured:  # another configuration: through structlog
            assert not lines.active()
            log.line("warning", "check", {"n": 1})
        assert captured == [{"n": 1, "event": "check", "log_level": "warning"}]
        logging_mod.configure("warning", "json", stream=stream)
        log.line("info", "check", {"n": 2})  # below the level: not written
        log.line("warning", "check", {"n": 3})
        logging_mod._FLUSHER.flush()
        written = [json.loads(x) for x in (tmp_path / "log").read_text().splitlines()]
    assert list(direct) == list(chain) == ["path", "token", "status", "dropped", "event",
                                           "level", "timestamp"]  # fmt: skip
    assert STAMP.fullmatch(direct["timestamp"])
    assert STAMP.fullmatch(chain["timestamp"])
    assert {k: v for k, v in direct.items() if k != "timestamp"} == {
        k: v for k, v in chain.items() if k != "timestamp"
    }
    assert direct["path"] == "/a/[redacted]"
    assert direct["token"] == "[redacted]"
    assert (info["level"], info["status"]) == ("info", 403)
    assert [line.get("n") for line in written[3:]] == [3]


def test_request_id_is_the_x_request_id_envoy_logs_not_its_stream_id(
    load_ready: LoadReady, mint_token: Callable[..., str]
) -> None:
    """Envoy fills ``attributes.request.http.id`` with its own stream id; the access log
    prints ``x-request-id``: the decision line must carry the latter to be joinable."""
    auth = authorizer(load_ready)
    request = build_request({"authorization": f"Bearer {mint_token()}", "x-request-id": "req-7"})
    request.attributes.request.http.id = "13990138581372549021"
    with capture_logs() as logs:
        auth.check(request)
    (line,) = [entry for entry in logs if entry["event"] == "check"]
    assert line["request_id"] == "req-7"


def test_a_value_with_a_unicode_line_separator_stays_on_its_line(tmp_path: Path) -> None:
    """U+0085, U+2028 and U+2029 are valid raw in JSON, and orjson writes them raw; many
    readers (``str.splitlines``, JavaScript) break lines there, so a path or claim
    carrying one could split a line or forge the next. They are escaped, on the direct
    decision line and on structlog's lines alike."""
    forged = '\u2028{"event":"check","decision":"allow"}\u2029x\x85y'
    log = logging_mod.EventLog("extauthz.decision")
    with logging_restored(), (tmp_path / "log").open("w", encoding="utf-8") as stream:
        logging_mod.configure("info", "json", stream=stream)
        log.line("warning", "check", {"path": f"/a{forged}", "sub": "é"})
        structlog.get_logger("extauthz").error("configuration_error", rule=forged)
        logging_mod._FLUSHER.flush()
        text = (tmp_path / "log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 2
    assert text.count("\n") == 2
    direct, chain = (json.loads(line) for line in lines)
    assert direct["path"] == f"/a{forged}"
    assert direct["sub"] == "é"  # other non-ASCII text stays as it is
    assert chain["rule"] == forged
    assert "é" in text
