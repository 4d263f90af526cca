"""The directory source: every *.json / *.yaml file is one version of one list, the
kubelet's ``..data`` symlink swap is followed, a bad version keeps the last good list,
a missing directory keeps the service not ready, a vanished one keeps its list."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from extauthz import config as config_mod
from extauthz.revocation.directory import DirectoryListSource
from extauthz.revocation.service import Revocation
from extauthz.revocation.store import BY_JTI, RevocationStore

ISS = "https://idp.example.test"


def revoked(store: RevocationStore, jti: str) -> bool:
    return store.lists.match(b"\0" * 32, ISS, jti, "", None, 0.0, 0) == BY_JTI


def doc(*jtis: str) -> str:
    return json.dumps({"revoked": [{"jti": j} for j in jtis]})


def kubelet_swap(root: Path, files: dict[str, str], version: int) -> None:
    """What the kubelet does for a ConfigMap volume: a new timestamped directory, then
    ``..data`` re-pointed in one rename, files are symlinks through ``..data``."""
    target = root / f"..v{version}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, root / "..data")
    for name in files:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_loads_every_list_file_and_follows_the_kubelet_swap(tmp_path: Path) -> None:
    root = tmp_path / "revoked"
    root.mkdir()
    kubelet_swap(root, {"a.json": doc("a"), "b.yaml": "revoked: [{jti: b}]\n"}, 1)
    (root / "notes.txt").write_text("not a list")
    store = RevocationStore()
    source = DirectoryListSource(root)
    sink = store.attach(source)
    source.poll(sink)
    assert store.ready
    assert revoked(store, "a")
    assert revoked(store, "b")
    generation = store.lists.generation
    source.poll(sink)
    assert store.lists.generation == generation  # unchanged: nothing re-read
    kubelet_swap(root, {"a.json": doc("c"), "b.yaml": "revoked: []\n"}, 2)
    source.poll(sink)
    assert not revoked(store, "a")
    assert not revoked(store, "b")
    assert revoked(store, "c")


def test_a_bad_file_rejects_the_whole_version(tmp_path: Path) -> None:
    root = tmp_path / "revoked"
    root.mkdir()
    (root / "a.json").write_text(doc("a"))
    store = RevocationStore()
    source = DirectoryListSource(root)
    sink = store.attach(source)
    source.poll(sink)
    generation = store.lists.generation
    (root / "a.json").write_text(doc("a", "x"))
    (root / "b.json").write_text('{"revoked": [{"jti": "b", "exp": "soon"}]}')
    source.poll(sink)
    assert store.lists.generation == generation
    assert revoked(store, "a")
    assert not revoked(store, "x")  # the good file of a bad version is not taken either
    (root / "b.json").write_text(doc("b"))
    source.poll(sink)
    assert revoked(store, "x")
    assert revoked(store, "b")


def test_a_missing_directory_is_not_ready_and_a_vanished_one_keeps_its_list(
    tmp_path: Path,
) -> None:
    root = tmp_path / "revoked"
    store = RevocationStore()
    source = DirectoryListSource(root)
    sink = store.attach(source)
    source.poll(sink)
    assert not store.ready
    assert store.pending() == [f"directory {root}: {root} missing"]
    root.mkdir()
    (root / "a.json").write_text(doc("a"))
    source.poll(sink)
    assert store.ready
    assert revoked(store, "a")
    (root / "a.json").unlink()
    root.rmdir()
    source.poll(sink)
    assert store.ready
    assert revoked(store, "a")


def test_the_background_thread_polls_until_stopped(tmp_path: Path) -> None:
    root = tmp_path / "revoked"
    root.mkdir()
    (root / "a.json").write_text(doc("a"))
    store = RevocationStore()
    source = DirectoryListSource(root, interval=0.05)
    source.start(store.attach(source))
    try:
        assert store.wait_ready(5)
        generation = store.lists.generation
        (root / "a.json").write_text(doc("a", "b"))
        assert store.wait_generation(generation, 5)
        assert revoked(store, "b")
        assert source.alive()
    finally:
        source.stop()


def test_the_config_builds_a_directory_source(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    root = tmp_path / "revoked"
    root.mkdir()
    (root / "a.json").write_text(doc("a"))
    revocation = {"sources": [{"directory": str(root), "interval_seconds": 0.05}],
                  "max_entries": 5}  # fmt: skip
    built = Revocation.from_config(config_mod.load(write_config(revocation=revocation)))
    assert built is not None
    assert built.store.max_entries == 5
    (source,) = built.sources
    assert isinstance(source, DirectoryListSource)
    built.start()
    try:
        assert built.wait_ready(5)
        assert revoked(built.store, "a")
        assert built.dead() == []
    finally:
        built.stop()
    assert Revocation.from_config(config_mod.load(write_config())) is None
