"""Keys from a mounted directory: every ``*.json`` (JWK or JWKS) and ``*.pem`` file.

Kubernetes mounts a Secret as symlinks into a ``..data`` directory that the kubelet
swaps atomically. We poll a cheap fingerprint of the directory (the *resolved*
inode, size and mtime of every candidate file) and re-read everything when it
changes, so both in-place edits and the ``..data`` symlink swap are seen.

A file that fails to parse keeps its own last good keys (and counts an error); a
file that disappears takes its keys with it at once.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, TypeVar

import structlog

from extauthz.errors import KeyMaterialError
from extauthz.keys.keyset import KeySink
from extauthz.keys.material import Key, MaterialMemo

log = structlog.get_logger("extauthz.keys.directory")

PATTERNS = ("*.json", "*.pem")

Fingerprint = tuple[tuple[str, int, int, int], ...]

SinkT = TypeVar("SinkT")


def fingerprint(path: Path, patterns: tuple[str, ...]) -> Fingerprint:
    """Name, resolved inode, size and mtime of every file matching ``patterns``: cheap
    to take, and it changes with an in-place edit and with the kubelet's swap alike."""
    entries: list[tuple[str, int, int, int]] = []
    for pattern in patterns:
        for file in path.glob(pattern):
            try:
                st = os.stat(file)  # follows the ..data symlink
            except OSError:
                continue
            entries.append((file.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


class DirectoryPoller(ABC, Generic[SinkT]):
    """A directory polled every ``interval`` seconds in a background thread (the first
    poll runs at once); subclasses say what one :meth:`poll` does with the files. Used
    for key directories and revocation-list directories alike."""

    kind = "directory"
    #: prefix of the thread's name and event logged if the loop dies
    thread_name = "dir"
    crash_event = "directory_source_crashed"

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.description = f"directory {path}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Fingerprint | None = None
        self._crashed = False

    def start(self, sink: SinkT) -> None:
        """Poll in a background thread."""
        self._thread = threading.Thread(
            target=self._run, args=(sink,), name=f"{self.thread_name}:{self.path}", daemon=True
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

    def _run(self, sink: SinkT) -> None:
        try:
            while not self._stop.is_set():
                self.poll(sink)
                self._stop.wait(self.interval)
        except BaseException:
            self._crashed = True
            log.exception(self.crash_event, path=str(self.path))
            raise

    @abstractmethod
    def poll(self, sink: SinkT) -> None:
        """Look at the directory once; report what changed to ``sink``."""


class DirectorySource(DirectoryPoller[KeySink]):
    """Polls ``path`` every ``interval`` seconds; publishes keys on change."""

    thread_name = "keys-dir"

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        super().__init__(path, interval)
        self._good: dict[str, list[Key]] = {}
        self._memo = MaterialMemo()  # unchanged files are not parsed again

    def _fingerprint(self) -> Fingerprint:
        return fingerprint(self.path, PATTERNS)

    def poll(self, sink: KeySink) -> None:
        """Check the directory once; reload and publish if anything changed."""
        if not self.path.is_dir():
            if self._last is None or self._last != ():
                sink.failed(KeyMaterialError(f"{self.path}: not a directory"))
                self._last = ()
            return
        fingerprint = self._fingerprint()
        if fingerprint == self._last:
            return
        self._last = fingerprint
        names = [name for name, *_ in fingerprint]
        errors: list[Exception] = []
        fresh: dict[str, list[Key]] = {}
        for name in names:
            file = self.path / name
            try:
                data = file.read_bytes()
                fresh[name] = self._memo.parse(data, str(file))
            except (OSError, KeyMaterialError) as exc:
                errors.append(exc)
                if name in self._good:
                    fresh[name] = self._good[name]
        for gone in set(self._good) - set(fresh):
            self._memo.forget(str(self.path / gone))
        self._good = fresh
        if fresh or not errors:
            if not fresh:
                log.warning("directory_has_no_keys", path=str(self.path))
            sink.publish([key for name in sorted(fresh) for key in fresh[name]])
        # failures after the publish: the source stays "down" while a file is broken
        for error in errors:
            sink.failed(error)
