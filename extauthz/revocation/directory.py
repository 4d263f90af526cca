"""Revocation lists from a mounted directory: every ``*.json`` / ``*.yaml`` / ``*.yml`` file.

The directory is one list object: a ConfigMap mounted as a volume is swapped whole
by the kubelet (the ``..data`` symlink), so every change is read as one version,
taken whole or not at all. We poll a cheap fingerprint (the *resolved* inode, size
and mtime of every candidate file) and re-read everything when it changes.

A directory that does not exist at start keeps the service not ready; one that
disappears later keeps its last list in force (logged and counted as an error).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from extauthz.keys.sources.directory import DirectoryPoller, Fingerprint, fingerprint
from extauthz.revocation.store import ListSink

log = structlog.get_logger("extauthz.revocation.directory")

PATTERNS = ("*.json", "*.yaml", "*.yml")


class DirectoryListSource(DirectoryPoller[ListSink]):
    """Polls ``path`` every ``interval`` seconds; reports each new version to the sink."""

    thread_name = "revocation-dir"
    crash_event = "revocation_directory_crashed"

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        super().__init__(path, interval)
        self._present: bool | None = None  # None: not looked yet
        self._unreadable: Fingerprint | None = None  # reported once per version

    def _fingerprint(self) -> Fingerprint:
        return fingerprint(self.path, PATTERNS)

    def poll(self, sink: ListSink) -> None:
        """Look at the directory once; report a new version if anything changed."""
        name = str(self.path)
        if not self.path.is_dir():
            if self._present is None:
                sink.synced(missing=[name])
            elif self._present:
                sink.delete(name)
            self._present = False
            self._last = None
            return
        fingerprint = self._fingerprint()
        if fingerprint == self._last:
            return
        data: dict[str, bytes] = {}
        try:
            for file, *_ in fingerprint:
                data[file] = (self.path / file).read_bytes()
        except OSError as exc:
            if self._unreadable != fingerprint:
                self._unreadable = fingerprint
                sink.failed(OSError(f"{self.path / file}: {exc.strerror}"))
            return  # try again next time: the fingerprint is not recorded
        self._last = fingerprint
        sink.update(name, data)
        if not self._present:
            sink.synced()
        self._present = True
