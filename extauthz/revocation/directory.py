"""Revocation lists from a mounted directory: every ``*.json`` / ``*.yaml`` / ``*.yml`` file.

The directory is one list object: a ConfigMap mounted as a volume is swapped whole
by the kubelet (the ``..data`` symlink), so every change is read as one version,
taken whole or not at all. We poll a cheap fingerprint (the *resolved* inode, size
and mtime of every candidate file) and re-read everything when it changes.

A directory that does not exist at start keeps the service not ready; one that
disappears later keeps its last list in force (logged and counted as an error).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import structlog

from extauthz.revocation.store import ListSink

log = structlog.get_logger("extauthz.revocation.directory")

PATTERNS = ("*.json", "*.yaml", "*.yml")

Fingerprint = tuple[tuple[str, int, int, int], ...]


class DirectoryListSource:
    """Polls ``path`` every ``interval`` seconds; reports each new version to the sink."""

    kind = "directory"

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.description = f"directory {path}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Fingerprint | None = None
        self._present: bool | None = None  # None: not looked yet
        self._unreadable: Fingerprint | None = None  # reported once per version
        self._crashed = False

    def start(self, sink: ListSink) -> None:
        """Poll in a background thread (the first poll runs at once)."""
        self._thread = threading.Thread(
            target=self._run, args=(sink,), name=f"revocation-dir:{self.path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def alive(self) -> bool:
        """False if the poll loop died."""
        return not self._crashed

    def _run(self, sink: ListSink) -> None:
        try:
            while not self._stop.is_set():
                self.poll(sink)
                self._stop.wait(self.interval)
        except BaseException:
            self._crashed = True
            log.exception("revocation_directory_crashed", path=str(self.path))
            raise

    def _fingerprint(self) -> Fingerprint:
        entries: list[tuple[str, int, int, int]] = []
        for pattern in PATTERNS:
            for file in self.path.glob(pattern):
                try:
                    st = os.stat(file)  # follows the ..data symlink
                except OSError:
                    continue
                entries.append((file.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sorted(entries))

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
