"""The gRPC edge writes its ``CheckResponse`` bytes by hand: they must read back as
exactly the message the generated classes build for the same decision, for any
decision — allow and every deny status, any header text, lengths that need a
multi-byte varint, with and without a body, a removal list, ``enc_kid``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz._proto.envoy.config.core.v3 import base_pb2
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.errors import Reason
from extauthz.pipeline.decision import Decision
from extauthz.server.authz import encode_response

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 503: 14}


def reference(decision: Decision) -> Any:
    """The same answer built with the generated classes (the reading of the spec the
    hand-written encoder must match)."""
    response = external_auth_pb2.CheckResponse()
    for key, value in decision.metadata.items():
        response.dynamic_metadata.fields[key].string_value = value

    def fill(options: Any, headers: tuple[tuple[str, str], ...]) -> None:
        for key, value in headers:
            header = base_pb2.HeaderValue(key=key, value=value)
            options.append(base_pb2.HeaderValueOption(header=header, append_action=_OVERWRITE))

    if decision.allowed:
        response.status.SetInParent()
        ok = response.ok_response
        ok.SetInParent()
        fill(ok.headers, decision.upstream_headers)
        ok.headers_to_remove.extend(decision.remove_headers)
        fill(ok.response_headers_to_add, decision.response_headers)
        return response
    response.status.code = _GRPC_CODE.get(decision.status, 16)
    denied = response.denied_response
    denied.status.code = decision.status  # type: ignore[assignment]
    fill(denied.headers, decision.response_headers)
    denied.body = decision.body
    return response


def same(decision: Decision) -> None:
    wire = encode_response(decision)
    parsed = external_auth_pb2.CheckResponse.FromString(wire)
    expected = reference(decision)
    assert parsed == expected
    assert parsed.HasField("status")
    assert parsed.WhichOneof("http_response") == (
        "ok_response" if decision.allowed else "denied_response"
    )
    # nothing more on the wire than the reference's fields (no stray or repeated field)
    assert len(wire) == expected.ByteSize()


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
_headers = st.lists(st.tuples(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=40),
                              _text), max_size=6).map(tuple)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    allowed=st.booleans(),
    status=st.sampled_from([200, 400, 401, 403, 413, 431, 500, 503]),
    upstream=_headers, response=_headers,
    remove=st.lists(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=200),
                    max_size=5).map(tuple),
    body=_text, sub=_text, kid=_text, enc_kid=_text,
)  # fmt: skip
def test_any_decision_encodes_as_the_generated_classes_build_it(
    allowed: bool, status: int, upstream: tuple[tuple[str, str], ...],
    response: tuple[tuple[str, str], ...], remove: tuple[str, ...], body: str, sub: str,
    kid: str, enc_kid: str,
) -> None:  # fmt: skip
    if allowed:
        decision = Decision(
            allowed=True, status=200, reason=Reason.OK, rule="orders", upstream_headers=upstream,
            remove_headers=remove, response_headers=response, sub=sub, iss="https://idp",
            kid=kid, enc_kid=enc_kid,
        )  # fmt: skip
    else:
        decision = Decision(
            allowed=False, status=status, reason=Reason.MISSING_TOKEN, rule="orders",
            response_headers=response, body=body, sub=sub, kid=kid, enc_kid=enc_kid,
        )  # fmt: skip
    same(decision)


def test_the_smallest_answers() -> None:
    same(Decision(allowed=True, status=200, reason=Reason.ANONYMOUS, rule="health"))
    same(Decision(allowed=False, status=401, reason=Reason.MISSING_TOKEN, rule=""))


def test_long_values_take_multi_byte_lengths() -> None:
    """A value of 200 and one of 20,000 bytes: two- and three-byte varint lengths at
    every level that holds them."""
    for size in (127, 128, 200, 16_383, 16_384, 20_000):
        same(Decision(
            allowed=True, status=200, reason=Reason.OK, rule="r",
            upstream_headers=(("x-auth-groups", "g" * size),), sub="s" * size,
        ))  # fmt: skip
        same(Decision(allowed=False, status=403, reason=Reason.INSUFFICIENT_SCOPE, rule="r",
                      body="b" * size))  # fmt: skip
