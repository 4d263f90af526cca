"""The revocation sources of a config, attached to one store: what the app starts,
stops, supervises and asks about readiness."""

from __future__ import annotations

from dataclasses import dataclass, field

from extauthz.config import Config, DirectorySourceConfig, KubernetesSourceConfig
from extauthz.revocation.store import ListSink, ListSource, RevocationStore


def build_source(item: DirectorySourceConfig | KubernetesSourceConfig) -> ListSource:
    """The :class:`ListSource` for one ``revocation.sources`` item."""
    if isinstance(item, DirectorySourceConfig):
        from extauthz.revocation.directory import DirectoryListSource

        return DirectoryListSource(item.path, interval=item.interval_seconds)
    from extauthz.revocation.kubernetes import KubernetesListSource

    return KubernetesListSource(
        item.namespace, kind=item.kind, names=item.names, label_selector=item.label_selector
    )


@dataclass
class Revocation:
    """A store and the sources that feed it."""

    store: RevocationStore
    sources: list[ListSource] = field(default_factory=list)
    sinks: list[ListSink] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Config) -> Revocation | None:
        """Build (not start) the configured sources; None when no list is configured, so
        a Check pays nothing for revocation."""
        items = config.revocation.sources
        if not items:
            return None
        revocation = cls(RevocationStore(config.revocation.max_entries))
        for item in items:
            source = build_source(item)
            revocation.sources.append(source)
            revocation.sinks.append(revocation.store.attach(source))
        return revocation

    @property
    def ready(self) -> bool:
        """Every source loaded once and every named object existed (latched)."""
        return self.store.ready

    def wait_ready(self, timeout: float) -> bool:
        """Block until ready or ``timeout`` seconds."""
        return self.store.wait_ready(timeout)

    def pending(self) -> list[str]:
        """What readiness still waits for."""
        return self.store.pending()

    def start(self) -> None:
        """Start every source's background loading."""
        for source, sink in zip(self.sources, self.sinks, strict=True):
            source.start(sink)

    def stop(self) -> None:
        """Stop every source."""
        for source in self.sources:
            source.stop()

    def dead(self) -> list[str]:
        """Descriptions of sources whose background work died."""
        return [s.description for s in self.sources if not s.alive()]
