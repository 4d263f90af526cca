"""Our trimmed ext_authz protobufs are fresh and wire-compatible with Envoy's own.

``extauthz._proto`` is generated from our trimmed copies of Envoy's ``.proto`` files
(``proto/``). A wrong field number or type there would not fail at import time: Envoy's
fields would silently land in "unknown fields" and a header or a deny status would go
missing. So these tests hold the declarations against the reference, xds-protos:

- the committed generated code is what ``tools/protogen.py`` produces now;
- every message, field and enum value we declare has upstream's name, number, type and
  label (descriptor comparison);
- CheckRequests built by xds-protos parse with ours to the same content, with nothing
  left unknown; CheckResponses built by ours parse with xds-protos to the same content.

xds-protos registers the same file and message names as ours in protobuf's default
descriptor pool, so it runs in a subprocess (``tests/xds_peer.py``), never here.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, json_format, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from extauthz._proto.envoy.config.core.v3 import address_pb2, base_pb2
from extauthz._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from extauthz._proto.envoy.type.v3 import http_status_pb2
from extauthz._proto.google.rpc import code_pb2, status_pb2
from tests.xds_peer import unknown_paths

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "extauthz" / "_proto"
PEER = Path(__file__).resolve().with_name("xds_peer.py")

HeaderValueOption = base_pb2.HeaderValueOption


def _peer(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request through the xds-protos process and return its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(PEER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _to_dict(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _generated_files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix in {".py", ".pyi"} and "__pycache__" not in p.parts
    }


def _protogen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "protogen.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------- freshness


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    """Regenerating from proto/ reproduces extauthz/_proto byte for byte."""
    done = _protogen("--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    fresh = _generated_files(tmp_path)
    committed = _generated_files(GENERATED)
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], "run `make proto` (python tools/protogen.py)"


def test_check_mode_reports_a_stale_copy(tmp_path: Path) -> None:
    """``protogen.py --check`` exits 1 and names the file when the copy is stale."""
    out = tmp_path / "out"
    shutil.copytree(GENERATED, out, ignore=shutil.ignore_patterns("__pycache__"))
    assert _protogen("--check", "--out", str(out)).returncode == 0
    target = out / "envoy" / "type" / "v3" / "http_status_pb2.py"
    target.write_text(target.read_text() + "# hand edit\n")
    done = _protogen("--check", "--out", str(out))
    assert done.returncode == 1
    assert "changed: envoy/type/v3/http_status_pb2.py" in done.stderr


def test_generated_modules_live_under_the_package() -> None:
    """Generated classes belong to extauthz._proto and the service keeps Envoy's name."""
    assert external_auth_pb2.CheckRequest.__module__ == external_auth_pb2.__name__
    assert external_auth_pb2.__name__.startswith("extauthz._proto.")
    assert callable(external_auth_pb2_grpc.add_AuthorizationServicer_to_server)
    service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    assert service.full_name == "envoy.service.auth.v3.Authorization"
    assert [m.name for m in service.methods] == ["Check"]


# --------------------------------------------------------------------------- descriptors

OUR_FILES = {
    module.DESCRIPTOR.name: module
    for module in (
        address_pb2,
        external_auth_pb2,
        attribute_context_pb2,
        base_pb2,
        http_status_pb2,
        status_pb2,
        code_pb2,
    )
}
# Files we copy verbatim (not trimmed): their descriptors must equal upstream's exactly.
VERBATIM = {"google/rpc/status.proto", "google/rpc/code.proto"}


@pytest.fixture(scope="module")
def upstream_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Upstream's FileDescriptorProto for each of our files, from xds-protos."""
    answer = _peer({"op": "describe", "files": sorted(OUR_FILES)})
    return {
        name: descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(data))
        for name, data in answer.items()
    }


def _ours(name: str) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    OUR_FILES[name].DESCRIPTOR.CopyToProto(proto)
    return proto


def _field_shape(
    message: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto
) -> tuple[object, ...]:
    oneof = message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
    return (field.number, field.type, field.label, field.type_name, oneof, field.proto3_optional)


def _compare_enum(
    ours: descriptor_pb2.EnumDescriptorProto,
    theirs: descriptor_pb2.EnumDescriptorProto,
    where: str,
) -> list[str]:
    upstream = {value.name: value.number for value in theirs.value}
    return [
        f"{where}.{value.name} = {value.number}, upstream {upstream.get(value.name)}"
        for value in ours.value
        if upstream.get(value.name) != value.number
    ]


def _compare_message(
    ours: descriptor_pb2.DescriptorProto,
    theirs: descriptor_pb2.DescriptorProto,
    where: str,
) -> list[str]:
    problems = []
    upstream_fields = {field.name: field for field in theirs.field}
    for field in ours.field:
        if field.name not in upstream_fields:
            problems.append(f"{where}.{field.name}: not upstream")
            continue
        mine = _field_shape(ours, field)
        ref = _field_shape(theirs, upstream_fields[field.name])
        if mine != ref:
            problems.append(f"{where}.{field.name}: {mine} != upstream {ref}")
    upstream_nested = {nested.name: nested for nested in theirs.nested_type}
    for nested in ours.nested_type:
        if nested.name not in upstream_nested:
            problems.append(f"{where}.{nested.name}: not upstream")
        else:
            problems += _compare_message(
                nested, upstream_nested[nested.name], f"{where}.{nested.name}"
            )
    upstream_enums = {enum.name: enum for enum in theirs.enum_type}
    for enum in ours.enum_type:
        if enum.name not in upstream_enums:
            problems.append(f"{where}.{enum.name}: not upstream")
        else:
            problems += _compare_enum(enum, upstream_enums[enum.name], f"{where}.{enum.name}")
    return problems


@pytest.mark.parametrize("name", sorted(OUR_FILES))
def test_declarations_match_upstream(
    name: str, upstream_files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    """Every message, field, enum value and rpc we declare is upstream's, same numbers."""
    ours, theirs = _ours(name), upstream_files[name]
    assert ours.package == theirs.package
    assert set(ours.dependency) <= set(theirs.dependency)
    problems: list[str] = []
    upstream_messages = {message.name: message for message in theirs.message_type}
    for message in ours.message_type:
        if message.name not in upstream_messages:
            problems.append(f"{message.name}: not upstream")
        else:
            problems += _compare_message(message, upstream_messages[message.name], message.name)
    upstream_enums = {enum.name: enum for enum in theirs.enum_type}
    for enum in ours.enum_type:
        if enum.name not in upstream_enums:
            problems.append(f"{enum.name}: not upstream")
        else:
            problems += _compare_enum(enum, upstream_enums[enum.name], enum.name)
    upstream_services = {
        service.name: [(m.name, m.input_type, m.output_type) for m in service.method]
        for service in theirs.service
    }
    for service in ours.service:
        mine = [(m.name, m.input_type, m.output_type) for m in service.method]
        if upstream_services.get(service.name) != mine:
            problems.append(f"service {service.name}: {mine}")
    assert problems == []


@pytest.mark.parametrize("name", sorted(VERBATIM))
def test_verbatim_copies_are_identical(
    name: str, upstream_files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    """google/rpc files equal googleapis' exactly, so both can share one process."""
    assert _ours(name) == upstream_files[name]


# --------------------------------------------------------------------------- CheckRequest

_ENVOY_HEADERS = {
    ":authority": "api.example.test",
    ":method": "GET",
    ":path": "/reports/2024?format=csv&q=a%20b",
    ":scheme": "http",
    "authorization": "Bearer first,Bearer second",
    "user-agent": "curl/8.5.0",
    "x-forwarded-proto": "http",
    "x-request-id": "5f0c7e8e-1a2b-4c3d-9e8f-0123456789ab",
}

# proto3-JSON descriptions of what Envoy sends; the peer builds them with xds-protos.
REQUEST_SAMPLES: dict[str, dict[str, Any]] = {
    "headers_map_and_context_extensions": {
        "attributes": {
            "source": {"address": {"socket_address": {"address": "10.1.2.3", "port_value": 51234}}},
            "destination": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}}
            },
            "request": {
                "time": "2025-01-02T03:04:05.678901Z",
                "http": {
                    "id": "14071418306545387428",
                    "method": "GET",
                    "headers": _ENVOY_HEADERS,
                    "path": "/reports/2024?format=csv&q=a%20b",
                    "host": "api.example.test",
                    "scheme": "http",
                    "size": "-1",
                    "protocol": "HTTP/1.1",
                },
            },
            "context_extensions": {"rule": "reports", "scopes": "reports:read audit"},
        }
    },
    "raw_header_map": {
        "attributes": {
            "request": {
                "http": {
                    "id": "1",
                    "method": "POST",
                    "header_map": {
                        "headers": [
                            {"key": ":authority", "raw_value": _b64(b"api.example.test")},
                            {"key": ":path", "raw_value": _b64(b"/x?y=1")},
                            {"key": "authorization", "raw_value": _b64(b"Bearer first")},
                            {"key": "authorization", "raw_value": _b64(b"Bearer second")},
                            {"key": "x-binary", "raw_value": _b64(b"\xff\xfe\x00\x80")},
                            {"key": "x-both", "value": "text", "raw_value": _b64(b"raw")},
                        ]
                    },
                    "path": "/x?y=1",
                    "protocol": "HTTP/2",
                }
            }
        }
    },
    "body_and_query_fields": {
        "attributes": {
            "request": {
                "http": {
                    "method": "POST",
                    "headers": {"content-type": "application/json", "content-length": "17"},
                    "path": "/submit",
                    "query": "a=1",
                    "fragment": "frag",
                    "size": "17",
                    "body": '{"hello":"wörld"}',
                    "raw_body": _b64(b'{"hello":"w\xc3\xb6rld"}\x00\xff'),
                }
            }
        }
    },
    "peers_metadata_tls": {
        "attributes": {
            "source": {
                "address": {
                    "socket_address": {
                        "protocol": "UDP",
                        "address": "2001:db8::7",
                        "named_port": "https",
                        "resolver_name": "custom",
                        "ipv4_compat": True,
                    }
                },
                "service": "frontend",
                "principal": "spiffe://cluster.local/ns/app/sa/frontend",
                "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                "labels": {"app": "frontend", "version": "v2"},
            },
            "destination": {"address": {"pipe": {"path": "/run/envoy.sock", "mode": 384}}},
            "metadata_context": {
                "filter_metadata": {
                    "envoy.filters.http.jwt_authn": {"claims": {"sub": "alice", "n": 3}}
                },
                "typed_filter_metadata": {
                    "typed": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": "x",
                    }
                },
            },
            "route_metadata_context": {"filter_metadata": {"extauthz": {"rule": "admin"}}},
            "tls_session": {"sni": "api.example.test"},
        }
    },
    "internal_address": {
        "attributes": {
            "source": {
                "address": {
                    "envoy_internal_address": {
                        "server_listener_name": "internal",
                        "endpoint_id": "ep-1",
                    }
                }
            }
        }
    },
    "empty": {},
}


@pytest.fixture(scope="module")
def xds_requests() -> dict[str, Any]:
    """The samples built, serialized and described by xds-protos."""
    return _peer(
        {"op": "encode", "type": "envoy.service.auth.v3.CheckRequest", "samples": REQUEST_SAMPLES}
    )


@pytest.mark.parametrize("name", sorted(REQUEST_SAMPLES))
def test_check_request_from_envoy_parses_with_ours(name: str, xds_requests: dict[str, Any]) -> None:
    """A CheckRequest serialized by Envoy's classes reads back the same with ours."""
    built = xds_requests[name]
    ours = external_auth_pb2.CheckRequest.FromString(base64.b64decode(built["wire"]))
    assert unknown_paths(ours) == []
    assert _to_dict(ours) == built["dict"]


def test_envoy_request_fields_read_as_expected(xds_requests: dict[str, Any]) -> None:
    """Spot-check typed access to the fields the pipeline reads."""
    wire = base64.b64decode(xds_requests["headers_map_and_context_extensions"]["wire"])
    attributes = external_auth_pb2.CheckRequest.FromString(wire).attributes
    http = attributes.request.http
    assert http.headers["authorization"] == "Bearer first,Bearer second"
    assert http.path == "/reports/2024?format=csv&q=a%20b"
    assert http.size == -1
    assert dict(attributes.context_extensions) == {
        "rule": "reports",
        "scopes": "reports:read audit",
    }
    assert attributes.source.address.socket_address.port_value == 51234
    assert attributes.request.time.ToJsonString() == "2025-01-02T03:04:05.678901Z"

    wire = base64.b64decode(xds_requests["raw_header_map"]["wire"])
    http = external_auth_pb2.CheckRequest.FromString(wire).attributes.request.http
    assert [(h.key, h.raw_value) for h in http.header_map.headers][2:5] == [
        ("authorization", b"Bearer first"),
        ("authorization", b"Bearer second"),
        ("x-binary", b"\xff\xfe\x00\x80"),
    ]


# --------------------------------------------------------------------------- CheckResponse


def _header(key: str, value: str, **options: Any) -> base_pb2.HeaderValueOption:
    return HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        **options,
    )


def _metadata(**fields: Any) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update(fields)
    return metadata


_SECURITY_HEADERS = [
    _header("strict-transport-security", "max-age=31536000; includeSubDomains"),
    _header("x-content-type-options", "nosniff"),
]


def _denied(
    status: http_status_pb2.StatusCode,
    code: int,
    reason: str,
    *headers: base_pb2.HeaderValueOption,
) -> external_auth_pb2.CheckResponse:
    body = json.dumps({"error": reason, "error_description": reason})
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=[*headers, _header("content-type", "application/json"), *_SECURITY_HEADERS],
            body=body,
        ),
        dynamic_metadata=_metadata(decision="deny", reason=reason, rule="default"),
    )


# Built with ours; the peer parses them with xds-protos.
RESPONSE_SAMPLES: dict[str, external_auth_pb2.CheckResponse] = {
    "allow_with_claim_headers": external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                _header("x-auth-subject", "alice"),
                _header("x-auth-roles", "admin,reader"),
                _header("authorization", "Bearer inner.jws.token"),
            ],
            headers_to_remove=["x-auth-email", "x-auth-scope"],
            response_headers_to_add=_SECURITY_HEADERS,
        ),
        dynamic_metadata=_metadata(
            decision="allow",
            reason="ok",
            sub="alice",
            iss="https://idp.example.test",
            kid="sig-2025",
            enc_kid="enc-2025",
            rule="reports",
            latency_ms=0.25,
            cached=False,
            scopes=["reports:read", "audit"],
            nested={"a": {"b": None}},
        ),
    ),
    "allow_query_and_keep_empty": external_auth_pb2.CheckResponse(
        status=status_pb2.Status(),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                _header("x-auth-empty", "", keep_empty_value=True),
                HeaderValueOption(
                    header=base_pb2.HeaderValue(key="x-legacy", value="1"),
                    append=wrappers_pb2.BoolValue(value=False),
                ),
                HeaderValueOption(
                    header=base_pb2.HeaderValue(key="x-add", value="2"),
                    append_action=HeaderValueOption.ADD_IF_ABSENT,
                ),
                HeaderValueOption(
                    header=base_pb2.HeaderValue(key="x-over", value="3"),
                    append_action=HeaderValueOption.OVERWRITE_IF_EXISTS,
                ),
            ],
            query_parameters_to_set=[base_pb2.QueryParameter(key="tenant", value="t1")],
            query_parameters_to_remove=["access_token"],
        ),
    ),
    "deny_401_missing_token": _denied(
        http_status_pb2.Unauthorized,
        code_pb2.UNAUTHENTICATED,
        "missing_token",
        _header("www-authenticate", 'Bearer realm="extauthz"'),
    ),
    "deny_403_insufficient_scope": _denied(
        http_status_pb2.Forbidden,
        code_pb2.PERMISSION_DENIED,
        "insufficient_scope",
        _header(
            "www-authenticate",
            'Bearer realm="extauthz", error="insufficient_scope", scope="admin"',
        ),
    ),
    "deny_503_not_ready": _denied(
        http_status_pb2.ServiceUnavailable,
        code_pb2.UNAVAILABLE,
        "not_ready",
        _header("retry-after", "1"),
    ),
    "error_response": external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.INTERNAL),
        error_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.InternalServerError)
        ),
    ),
}


@pytest.fixture(scope="module")
def xds_responses() -> dict[str, Any]:
    """Our response samples as xds-protos reads them."""
    samples = {
        name: _b64(message.SerializeToString(deterministic=True))
        for name, message in RESPONSE_SAMPLES.items()
    }
    return _peer(
        {"op": "decode", "type": "envoy.service.auth.v3.CheckResponse", "samples": samples}
    )


@pytest.mark.parametrize("name", sorted(RESPONSE_SAMPLES))
def test_check_response_from_ours_parses_with_envoys(
    name: str, xds_responses: dict[str, Any]
) -> None:
    """A CheckResponse serialized by ours reads back the same with Envoy's classes."""
    parsed = xds_responses[name]
    assert parsed["unknown"] == []
    assert parsed["dict"] == _to_dict(RESPONSE_SAMPLES[name])


def test_envoy_sees_overwrite_and_no_append(xds_responses: dict[str, Any]) -> None:
    """The Envoy 1.40 header recipe survives the wire: append_action set, append absent."""
    ok = xds_responses["allow_with_claim_headers"]["dict"]["ok_response"]
    for option in ok["headers"] + ok["response_headers_to_add"]:
        assert option["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
        assert "append" not in option
    denied = xds_responses["deny_401_missing_token"]["dict"]
    assert denied["status"]["code"] == 16
    assert denied["denied_response"]["status"]["code"] == "Unauthorized"
    assert xds_responses["deny_503_not_ready"]["dict"]["status"]["code"] == 14


def test_the_edges_answers_read_with_envoys_classes() -> None:
    """What ``encode_response`` writes for an allow and for each deny status reads back with
    Envoy's classes: a status on every answer (code 0 on allow), overwriting header
    options, the removal list, the HTTP status, body and metadata."""
    from extauthz.errors import Reason
    from extauthz.pipeline.decision import Decision
    from extauthz.server.authz import encode_response

    decisions = {
        "allow": Decision(
            allowed=True, status=200, reason=Reason.OK, rule="orders",
            upstream_headers=(("x-user", "alice"), ("x-scope", "read")),
            remove_headers=("x-claims",), response_headers=(("x-frame-options", "DENY"),),
            sub="alice", iss="https://idp.example", kid="k1", enc_kid="e1",
        ),
        "anonymous": Decision(allowed=True, status=200, reason=Reason.ANONYMOUS, rule="health"),
        **{
            f"deny_{status}": Decision(
                allowed=False, status=status, reason=reason, rule="orders", body='{"e":1}',
                response_headers=(("content-type", "application/json"),),
            )
            for status, reason in ((401, Reason.MISSING_TOKEN), (403, Reason.INSUFFICIENT_SCOPE),
                                   (503, Reason.NOT_READY))
        },
    }  # fmt: skip
    samples = {name: _b64(encode_response(d)) for name, d in decisions.items()}
    parsed = _peer(
        {"op": "decode", "type": "envoy.service.auth.v3.CheckResponse", "samples": samples}
    )
    for name in decisions:
        assert parsed[name]["unknown"] == [], name
        assert "status" in parsed[name]["dict"], name  # present, even with code 0
    allow = parsed["allow"]["dict"]
    assert allow["status"] == {}  # code 0, the default, on the wire as an empty Status
    ok = allow["ok_response"]
    assert [(o["header"]["key"], o["header"]["value"]) for o in ok["headers"]] == [
        ("x-user", "alice"), ("x-scope", "read")]  # fmt: skip
    assert all(o["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD" for o in ok["headers"])
    assert ok["headers_to_remove"] == ["x-claims"]
    assert ok["response_headers_to_add"][0]["header"]["key"] == "x-frame-options"
    assert allow["dynamic_metadata"]["decision"] == "allow"
    assert allow["dynamic_metadata"]["enc_kid"] == "e1"
    assert "ok_response" in parsed["anonymous"]["dict"]
    for status, grpc_code, name in ((401, 16, "Unauthorized"), (403, 7, "Forbidden"),
                                    (503, 14, "ServiceUnavailable")):  # fmt: skip
        deny = parsed[f"deny_{status}"]["dict"]
        assert deny["status"]["code"] == grpc_code
        assert deny["denied_response"]["status"]["code"] == name
        assert deny["denied_response"]["body"] == '{"e":1}'
        assert deny["denied_response"]["headers"][0]["append_action"] == (
            "OVERWRITE_IF_EXISTS_OR_ADD"
        )
