"""The gRPC edge of the pipeline: ``CheckRequest`` -> :class:`CheckInput`, and
:class:`Decision` -> ``CheckResponse``. Protobuf types stop here.

Header options set ``append_action: OVERWRITE_IF_EXISTS_OR_ADD`` and leave ``append``
unset: Envoy 1.40 overwrites when ``append`` is unset and newer Envoy honours
``append_action``, so a client-sent claim header is replaced either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from extauthz._proto.envoy.config.core.v3 import base_pb2
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.config import LoggingConfig
from extauthz.pipeline.decision import Decision
from extauthz.pipeline.evaluate import Evaluator
from extauthz.pipeline.memo import Memo
from extauthz.pipeline.request import CheckInput
from extauthz.server.decisions import AnswerMemo, DecisionLog, trace_id
from extauthz.server.grpc_core import FastMethod

SERVICE = "envoy.service.auth.v3.Authorization"
METHOD = f"/{SERVICE}/Check"

#: google.rpc.Code for each HTTP status we deny with
#: (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE)
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 503: 14}

__all__ = ["METHOD", "SERVICE", "Authorizer", "encode_response", "to_input", "trace_id"]


def to_input(request: Any) -> CheckInput:
    """Read the parts of a ``CheckRequest`` the pipeline uses (both header forms)."""
    http = request.attributes.request.http
    headers = http.headers  # the protobuf map is a read-only Mapping: no copy
    raw: tuple[tuple[str, str], ...] = ()
    if http.HasField("header_map"):
        raw = tuple(
            (h.key.lower(), h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
            for h in http.header_map.headers
        )

    def first(name: str) -> str:
        if name in headers:
            return str(headers[name])
        return next((v for k, v in raw if k == name), "")

    return CheckInput(
        method=http.method or first(":method") or "GET",
        path=http.path or first(":path") or "/",
        headers=headers,
        raw_headers=raw,
        context=request.attributes.context_extensions,
        # the x-request-id Envoy logs, so a decision joins its access-log line; the
        # stream id (http.id) is internal to one Envoy and only a fallback
        request_id=first("x-request-id") or http.id,
        header_bytes=max(http.ByteSize() - len(http.body) - len(http.raw_body), 1),
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: varints below 128 are one byte: the common lengths and every code we send
_SMALL = [bytes((n,)) for n in range(128)]


def _size(n: int) -> bytes:
    return _SMALL[n] if n < 128 else _varint(n)


def _text(tag: bytes, value: str) -> bytes:
    """A string field; UTF-8 strictly, as protobuf encodes it."""
    data = value.encode()
    return b"%b%b%b" % (tag, _size(len(data)), data)


def _option(tag: bytes, key: str, value: str) -> bytes:
    """An overwriting ``HeaderValueOption{header{key, value}}`` (an empty string is the
    proto3 default and is not written)."""
    k, v = key.encode(), value.encode()
    header = (b"\x0a%b%b" % (_size(len(k)), k) if k else b"") + (
        b"\x12%b%b" % (_size(len(v)), v) if v else b""
    )
    option = b"\x0a%b%b\x18%b" % (_size(len(header)), header, _OVERWRITE)
    return b"%b%b%b" % (tag, _size(len(option)), option)


def _entry(key: str, value: str) -> bytes:
    """One ``Struct.fields`` map entry ``{key, Value{string_value}}``."""
    text = _text(b"\x1a", value)
    entry = _text(b"\x0a", key) + b"\x12" + _size(len(text)) + text
    return b"\x0a%b%b" % (_size(len(entry)), entry)


#: HeaderValueOption.append_action
_OVERWRITE = _SMALL[base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD]
#: the metadata entries but ``sub`` per (allowed, reason, rule, iss, kid, enc_kid):
#: a few per rule and key; bounded anyway
_METADATA: Memo[tuple[Any, ...], bytes] = Memo(1024)


def _metadata(decision: Decision) -> bytes:
    key = (decision.allowed, decision.reason, decision.rule, decision.iss, decision.kid,
           decision.enc_kid)  # fmt: skip
    fixed = _METADATA.get(key)
    if fixed is None:
        fixed = _METADATA.keep(key, b"".join(
            _entry(name, value) for name, value in decision.metadata.items() if name != "sub"
        ))  # fmt: skip
    fields = fixed + _entry("sub", decision.sub)
    return b"\x22%b%b" % (_size(len(fields)), fields)


def encode_response(decision: Decision) -> bytes:
    """The serialized ``CheckResponse`` Envoy expects for ``decision``.

    Encoded by hand, only the fields we send: building the message with the generated
    classes and serializing it cost almost twice as much, and every new token's
    decision pays it. ``tests/server/test_grpc_answer.py`` proves the bytes equal,
    field for field, to the message built with the generated classes, and
    ``tests/test_proto.py`` reads them with Envoy's own classes.

    Field numbers: CheckResponse status = 1 (google.rpc.Status code = 1),
    denied_response = 2 (DeniedHttpResponse status = 1 (HttpStatus code = 1),
    headers = 2, body = 3), ok_response = 3 (OkHttpResponse headers = 2,
    headers_to_remove = 5, response_headers_to_add = 6), dynamic_metadata = 4
    (Struct fields = 1: map entries key = 1, value = 2 (Value string_value = 3)).
    HeaderValueOption header = 1 (HeaderValue key = 1, value = 2), append_action = 3.
    """
    if decision.allowed:
        parts = [_option(b"\x12", k, v) for k, v in decision.upstream_headers]
        if decision.remove_headers:
            parts.extend(_text(b"\x2a", name) for name in decision.remove_headers)
        if decision.response_headers:
            parts.extend(_option(b"\x32", k, v) for k, v in decision.response_headers)
        ok = b"".join(parts)
        # the status present with code 0 (an empty message), and ok_response even when
        # empty: what tells Envoy "allowed"
        return b"\x0a\x00\x1a%b%b%b" % (_size(len(ok)), ok, _metadata(decision))
    denied = b"".join([
        b"\x0a%b\x08%b" % (_size(1 + len(_varint(decision.status))), _varint(decision.status)),
        *(_option(b"\x12", k, v) for k, v in decision.response_headers),
        _text(b"\x1a", decision.body) if decision.body else b"",
    ])  # fmt: skip
    code = _GRPC_CODE.get(decision.status, 16)
    return b"\x0a\x02\x08%b\x12%b%b%b" % (_SMALL[code], _size(len(denied)), denied,
                                           _metadata(decision))  # fmt: skip


class Authorizer:
    """The ``Check`` handler: decode, evaluate, record, encode."""

    def __init__(
        self, evaluator: Evaluator, logging: LoggingConfig,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:  # fmt: skip
        self.evaluator = evaluator
        self.clock = clock
        self.decisions = DecisionLog(logging, "grpc")
        #: serialized CheckResponse per Decision: those the token cache memoizes at
        #: once, plus the memoized anonymous denies
        self.answers = AnswerMemo(
            encode_response,
            AnswerMemo.size_for(evaluator.config.cache.max_entries),
        )

    def check(self, request: Any, context: grpc.ServicerContext | None = None) -> bytes:
        """Answer one Check with the serialized ``CheckResponse``; never raises for an
        auth outcome."""
        start = self.clock()
        check_input = to_input(request)
        return self._answer(start, check_input, self.evaluator.check(check_input))

    def _answer(self, start: float, check_input: CheckInput,
                decided: tuple[Decision, str]) -> bytes:  # fmt: skip
        decision, fingerprint = decided
        response = self.answers.get(decision)
        self.decisions.record(check_input, decision, fingerprint, self.clock() - start)
        return response

    def fast_method(self) -> FastMethod:
        """``Check`` for the call loop of :mod:`.grpc_core`: a cached token is answered
        on the loop, any other request on a pool thread; the same answers, metrics and
        decision lines as :meth:`check`."""

        def read(data: bytes) -> tuple[float, CheckInput]:
            start = self.clock()
            return start, to_input(external_auth_pb2.CheckRequest.FromString(data))

        def cached(read: tuple[float, CheckInput]) -> bytes | None:
            decided = self.evaluator.check_cached(read[1])
            return None if decided is None else self._answer(read[0], read[1], decided)

        def full(read: tuple[float, CheckInput]) -> bytes:
            return self._answer(read[0], read[1], self.evaluator.check(read[1]))

        return FastMethod(METHOD, read, cached, full)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler for ``Authorization/Check`` with protobuf (de)serializers."""
        method = grpc.unary_unary_rpc_method_handler(
            self.check,
            request_deserializer=external_auth_pb2.CheckRequest.FromString,
            response_serializer=None,  # check() returns bytes already
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Check": method})
