"""The node's disk check: images the disk cannot hold are refused before they are loaded, with the
numbers, instead of a node tainted disk-pressure that schedules nothing (seen in CI)."""

from __future__ import annotations

import pathlib
import shutil
from collections import namedtuple

import pytest

from trading_dev.cluster import deploy, node

GiB = 2**30
Usage = namedtuple("Usage", "total used free")


def archives(tmp_path: pathlib.Path, *sizes: int) -> list[pathlib.Path]:
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"image-{i}.tar"
        with open(path, "wb") as fh:
            fh.truncate(size)  # sparse: the size is what counts
        paths.append(path)
    return paths


def test_the_need_is_every_image_unpacked_the_largest_blob_the_kubelet_reserve_and_a_margin(
        tmp_path: pathlib.Path) -> None:
    found = archives(tmp_path, 6 * GiB, GiB, GiB // 2)
    assert deploy.disk_needed(found, total=200 * GiB) == (
        (6 + 1 + 0.5) * GiB + 6 * GiB + 200 * GiB * node.DISK_RESERVE_PERCENT // 100 + GiB)


def test_a_disk_too_small_is_refused_with_what_is_missing(tmp_path: pathlib.Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    found = archives(tmp_path, 6 * GiB, GiB)
    need = deploy.disk_needed(found, total=100 * GiB)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(100 * GiB, 0, need - 3 * GiB))
    with pytest.raises(node.ClusterError) as refused:
        deploy.check_disk(found)
    said = str(refused.value)
    assert f"need {need / GiB:.1f} GiB free" in said and f"has {(need - 3 * GiB) / GiB:.1f} GiB" in said
    assert "free 3.0 GiB" in said
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(100 * GiB, 0, need))
    deploy.check_disk(found)  # enough: no error
