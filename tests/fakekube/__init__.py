"""A small, faithful fake Kubernetes API server (core/v1 Secrets and ConfigMaps).

Real HTTP/1.1 on 127.0.0.1, driven by the real ``kubernetes`` client and ``kubectl``.
See :mod:`fakekube.server` for the protocol surface and the fault hooks, and
:mod:`fakekube.store` for the semantics it keeps faithful.
"""

from tests.fakekube.server import FakeKube, Request, Rule
from tests.fakekube.store import ApiError, ObjectStore, SecretStore

__all__ = ["ApiError", "FakeKube", "ObjectStore", "Request", "Rule", "SecretStore"]
