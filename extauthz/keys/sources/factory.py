"""Build a key source from its config item. Clients are imported only when used."""

from __future__ import annotations

from extauthz.config import (
    DirectorySourceConfig,
    JwksSourceConfig,
    KeySourceConfig,
    KubernetesSourceConfig,
)
from extauthz.keys.keyset import KeySource


def build_source(item: KeySourceConfig, issuer: str | None = None) -> KeySource:
    """The :class:`KeySource` for one ``keys:`` item (``issuer`` for JWKS/discovery)."""
    if isinstance(item, DirectorySourceConfig):
        from extauthz.keys.sources.directory import DirectorySource

        return DirectorySource(item.path, interval=item.interval_seconds)
    if isinstance(item, KubernetesSourceConfig):
        from extauthz.keys.sources.kubernetes import KubernetesSource

        return KubernetesSource(
            item.namespace, secrets=item.secrets, label_selector=item.label_selector
        )
    if isinstance(item, JwksSourceConfig):
        from extauthz.keys.sources.jwks import JwksSource

        if issuer is None:
            raise ValueError("a JWKS source belongs to a provider")
        return JwksSource(
            item.uri,
            issuer=issuer,
            discovery=item.uri is None,
            ca_file=item.ca_file,
            allow_http=item.allow_http,
            min_refresh=item.refresh_min_seconds,
            max_refresh=item.refresh_max_seconds,
            refetch_interval=item.refetch_interval_seconds,
            connect_timeout=min(item.timeout_seconds, 2.0),
            read_timeout=item.timeout_seconds,
        )
    raise TypeError(f"unknown key source {item!r}")
