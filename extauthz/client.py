"""A small client for one Check (``extauthz check``, the dev mode, and tests)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from extauthz._proto.envoy.config.core.v3 import base_pb2
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.server.authz import METHOD


def build_request(
    headers: Mapping[str, str], path: str = "/", method: str = "GET",
    context: Mapping[str, str] | None = None, raw: bool = False,
) -> Any:  # fmt: skip
    """A ``CheckRequest`` as Envoy would send it (``raw``: the ``header_map`` form)."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = "localhost"
    http.scheme = "http"
    pseudo = {":method": method, ":path": path, ":authority": "localhost", ":scheme": "http"}
    all_headers = {**pseudo, **{k.lower(): v for k, v in headers.items()}}
    if raw:
        http.header_map.headers.extend(
            base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in all_headers.items()
        )
    else:
        http.headers.update(all_headers)
    request.attributes.context_extensions.update(dict(context or {}))
    return request


def describe(response: Any) -> dict[str, Any]:
    """A CheckResponse as a plain dict: decision, status, headers, body, metadata."""
    allowed = response.status.code == 0
    out: dict[str, Any] = {
        "decision": "allow" if allowed else "deny",
        "grpc_status": response.status.code,
        "metadata": json_format.MessageToDict(response.dynamic_metadata),
    }
    if allowed:
        ok = response.ok_response
        out["upstream_headers"] = {h.header.key: h.header.value for h in ok.headers}
        out["headers_to_remove"] = list(ok.headers_to_remove)
        out["response_headers"] = {h.header.key: h.header.value for h in ok.response_headers_to_add}
    else:
        denied = response.denied_response
        out["http_status"] = denied.status.code
        out["headers"] = {h.header.key: h.header.value for h in denied.headers}
        try:
            out["body"] = json.loads(denied.body) if denied.body else None
        except ValueError:
            out["body"] = denied.body
    return out


@dataclass(frozen=True)
class ClientTls:
    """TLS for ``extauthz check``: the CA that signed the server's certificate, an
    optional client certificate (mTLS) and the name to expect in the server's one."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """For the HTTP listener."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file or self.cert_file))
        return context

    def channel(self, address: str) -> grpc.Channel:
        """For the gRPC listener."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(address, credentials, options=options)


def check(
    address: str, headers: Mapping[str, str], path: str = "/", method: str = "GET",
    context: Mapping[str, str] | None = None, timeout: float = 5.0,
    tls: ClientTls | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Send one Check to ``address`` over gRPC (plaintext unless ``tls``) and describe
    the answer."""
    with tls.channel(address) if tls else grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        response = call(build_request(headers, path, method, context), timeout=timeout)
    return describe(response)


def check_http(
    url: str, headers: Mapping[str, str], path: str = "/", method: str = "GET",
    timeout: float = 5.0, tls: ClientTls | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Send one request to an HTTP authorization listener (``http://host:port[/prefix]``)
    as Envoy's ``http_service`` would, and describe the answer like :func:`describe`."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout,
            context=(tls or ClientTls()).ssl_context(),
        )  # fmt: skip
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(
            method, parts.path.rstrip("/") + path, headers={**headers, "content-length": "0"}
        )
        response = connection.getresponse()
        body = response.read()
        answer = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    metadata = {
        k.removeprefix("x-extauthz-"): v for k, v in answer.items() if k.startswith("x-extauthz-")
    }
    out: dict[str, Any] = {
        "decision": "allow" if response.status == 200 else "deny",
        "http_status": response.status,
        "metadata": metadata,
    }
    if response.status == 200:
        removed = answer.get("x-envoy-auth-headers-to-remove", "")
        out["upstream_headers"] = {
            k: v for k, v in answer.items()
            if not k.startswith("x-extauthz-") and k not in _HTTP_FRAMING
            and k != "x-envoy-auth-headers-to-remove"
        }  # fmt: skip
        out["headers_to_remove"] = [h.strip() for h in removed.split(",") if h.strip()]
        return out
    out["headers"] = {k: v for k, v in answer.items() if k not in _HTTP_FRAMING}
    try:
        out["body"] = json.loads(body) if body else None
    except ValueError:
        out["body"] = body.decode(errors="replace")
    return out


#: headers of the HTTP exchange itself, never part of a decision
_HTTP_FRAMING = frozenset({"content-length", "connection", "date", "server", "keep-alive"})


def reason_of(result: Mapping[str, Any]) -> str:
    """The reason class of a described decision (``""`` when the answer carries none)."""
    metadata = result.get("metadata") or {}
    reason = metadata.get("reason") if isinstance(metadata, Mapping) else None
    if not reason and isinstance(result.get("body"), Mapping):
        reason = result["body"].get("reason")
    return str(reason or "")
