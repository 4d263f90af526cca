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
from extauthz.pipeline.request import CheckInput
from extauthz.server.decisions import AnswerMemo, DecisionLog, trace_id

SERVICE = "envoy.service.auth.v3.Authorization"
METHOD = f"/{SERVICE}/Check"

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
#: google.rpc.Code for each HTTP status we deny with
#: (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE)
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 503: 14}

__all__ = ["METHOD", "SERVICE", "Authorizer", "to_input", "to_response", "trace_id"]


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


def _fill(options: Any, headers: tuple[tuple[str, str], ...]) -> None:
    """Append one overwriting ``HeaderValueOption`` per header to a repeated field
    (filled in place: building each message and copying it in costs half again)."""
    for key, value in headers:
        option = options.add()
        option.header.key = key
        option.header.value = value
        option.append_action = _OVERWRITE


def to_response(decision: Decision) -> Any:
    """Build the ``CheckResponse`` Envoy expects for ``decision``."""
    response = external_auth_pb2.CheckResponse()
    fields = response.dynamic_metadata.fields
    for key, value in decision.metadata.items():
        fields[key].string_value = value
    if decision.allowed:
        response.status.code = 0
        ok = response.ok_response
        _fill(ok.headers, decision.upstream_headers)
        ok.headers_to_remove.extend(decision.remove_headers)
        _fill(ok.response_headers_to_add, decision.response_headers)
        return response
    response.status.code = _GRPC_CODE.get(decision.status, 16)
    denied = response.denied_response
    denied.status.code = decision.status  # type: ignore[assignment]
    _fill(denied.headers, decision.response_headers)
    denied.body = decision.body
    return response


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
            lambda d: bytes(to_response(d).SerializeToString()),
            AnswerMemo.size_for(evaluator.config.cache.max_entries),
        )

    def check(self, request: Any, context: grpc.ServicerContext | None = None) -> bytes:
        """Answer one Check with the serialized ``CheckResponse``; never raises for an
        auth outcome."""
        start = self.clock()
        check_input = to_input(request)
        decision, fingerprint = self.evaluator.check(check_input)
        response = self.answers.get(decision)
        self.decisions.record(check_input, decision, fingerprint, self.clock() - start)
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler for ``Authorization/Check`` with protobuf (de)serializers."""
        method = grpc.unary_unary_rpc_method_handler(
            self.check,
            request_deserializer=external_auth_pb2.CheckRequest.FromString,
            response_serializer=None,  # check() returns bytes already
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Check": method})
