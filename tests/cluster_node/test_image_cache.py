"""The image cache on a shared machine: an archive another checkout built or used recently is not pruned."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from trading_dev.cluster import oci, rootfs


def test_prune_keeps_what_another_checkout_built_or_used_recently(tmp_path: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "images_dir", lambda: tmp_path)
    stale, recent, used, new = (tmp_path / f"workers-{n}.tar" for n in ("stale", "recent", "used", "new"))
    for path in (stale, recent, used, new):
        path.write_bytes(b"x")
    old = time.time() - rootfs.PRUNE_AFTER_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(used, (old, old))
    rootfs._used(used)  # a cache hit by another run marks it used now
    (tmp_path / "operator-stale.tar").write_bytes(b"x")
    os.utime(tmp_path / "operator-stale.tar", (old, old))

    rootfs._prune("workers", keep=new)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "operator-stale.tar", "workers-new.tar", "workers-recent.tar", "workers-used.tar"]


def test_prune_keeps_at_most_two_recent_others(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several checkouts building at once must not fill the disk (6 GB each): the two newest others stay."""
    monkeypatch.setattr(rootfs, "images_dir", lambda: tmp_path)
    now = time.time()
    for i in range(5):
        path = tmp_path / f"workers-{i}.tar"
        path.write_bytes(b"x")
        os.utime(path, (now - 60 * (5 - i), now - 60 * (5 - i)))  # workers-4 is the newest
    rootfs._prune("workers", keep=tmp_path / "workers-4.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workers-2.tar", "workers-3.tar", "workers-4.tar"]


def test_an_interrupted_archive_leaves_nothing_behind(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a (several GB) image is written removes the partial archive."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("x")
    out = tmp_path / "out" / "workers-k.tar"
    out.parent.mkdir()

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(oci, "_add_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        oci.archive_from_dir(root, oci.ImageConfig(), "trading.dev/x:1", out)
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    oci.archive_from_dir(root, oci.ImageConfig(), "trading.dev/x:1", out)
    assert [p.name for p in out.parent.iterdir()] == ["workers-k.tar"]
