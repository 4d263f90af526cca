"""Test helpers for talking to a running extauthz over a real gRPC channel."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.client import build_request, describe
from extauthz.server.authz import METHOD


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Client:
    """A real gRPC channel to the service: Check (described as a dict) and Health."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._check = self.channel.unary_unary(
            METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(
        self,
        token: str | None = None,
        path: str = "/",
        method: str = "GET",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        return describe(self._check(build_request(all_headers, path, method, **kw), timeout=5))

    def status(self, service: str = "") -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(self.health.Check(request, timeout=5).status)
