"""The xds-protos side of the wire-compatibility tests in ``tests/test_proto.py``.

Why a separate process: xds-protos registers the same ``.proto`` file names and message
names as our generated ``extauthz._proto`` in protobuf's default descriptor pool, so the
two can never be imported by one interpreter. ``test_proto.py`` runs this script with
``sys.executable``, sends one JSON request on stdin and reads one JSON answer on stdout.
It never imports ``extauthz``; importing this module does not import xds-protos either
(only ``main`` does), so ``test_proto.py`` can reuse :func:`unknown_paths`.

Requests (``type`` is a fully-qualified message name such as
``envoy.service.auth.v3.CheckRequest``)::

    {"op": "encode", "type": T, "samples": {name: proto3-JSON dict}}
        -> {name: {"wire": base64 of the deterministic serialization,
                   "dict": MessageToDict(parsed sample)}}
    {"op": "decode", "type": T, "samples": {name: base64 wire bytes}}
        -> {name: {"dict": MessageToDict(message), "unknown": [paths of unknown fields]}}
    {"op": "describe", "files": [proto file names]}
        -> {file name: base64 of its serialized FileDescriptorProto}
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet


def _message_class(full_name: str) -> type[Message]:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def _to_dict(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def unknown_paths(message: Message, prefix: str = "") -> list[str]:
    """List ``path#number`` for every unknown field anywhere in *message*."""
    found = [f"{prefix or '.'}#{field.field_number}" for field in UnknownFieldSet(message)]
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        path = f"{prefix}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    found += unknown_paths(item, f"{path}[{key}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                found += unknown_paths(item, f"{path}[{index}]")
        else:
            found += unknown_paths(value, path)
    return found


def _encode(type_name: str, samples: dict[str, Any]) -> dict[str, Any]:
    cls = _message_class(type_name)
    answer = {}
    for name, sample in samples.items():
        message = json_format.ParseDict(sample, cls())
        wire = message.SerializeToString(deterministic=True)
        answer[name] = {"wire": base64.b64encode(wire).decode(), "dict": _to_dict(message)}
    return answer


def _decode(type_name: str, samples: dict[str, str]) -> dict[str, Any]:
    cls = _message_class(type_name)
    answer = {}
    for name, wire in samples.items():
        message = cls.FromString(base64.b64decode(wire))
        answer[name] = {"dict": _to_dict(message), "unknown": unknown_paths(message)}
    return answer


def _describe(files: list[str]) -> dict[str, str]:
    answer = {}
    for name in files:
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
        answer[name] = base64.b64encode(proto.SerializeToString(deterministic=True)).decode()
    return answer


def main() -> None:
    """Answer the one request read from stdin."""
    # Imported for their side effect: registering Envoy's ext_authz files (and everything
    # they depend on) in the default pool. Never at module level: see the docstring.
    from envoy.service.auth.v3 import external_auth_pb2  # type: ignore[import-untyped]  # noqa: F401
    from google.rpc import code_pb2  # type: ignore[import-untyped]  # noqa: F401

    request = json.load(sys.stdin)
    op = request["op"]
    if op == "encode":
        answer = _encode(request["type"], request["samples"])
    elif op == "decode":
        answer = _decode(request["type"], request["samples"])
    elif op == "describe":
        answer = _describe(request["files"])
    else:
        raise SystemExit(f"unknown op {op!r}")
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
