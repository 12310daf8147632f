"""The admin kubeconfig a foreground cluster publishes at ``.dev/kubeconfig`` while it runs.

``make cluster``, ``make cluster-api``, ``make up`` and ``make demo`` copy their cluster's kubeconfig
there for the user's kubectl and remove it when they stop (Ctrl-C, SIGTERM, an error): a kubeconfig left pointing at a
stopped cluster only misleads the next kubectl. A file someone replaced meanwhile is left alone.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
from collections.abc import Iterator


def publish(source: pathlib.Path, target: pathlib.Path) -> bytes:
    """Copy ``source`` to ``target``; returns what was written (for ``unpublish``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target.read_bytes()


def unpublish(target: pathlib.Path, written: bytes) -> None:
    """Remove ``target`` if it still holds what ``publish`` wrote."""
    with contextlib.suppress(OSError):
        if target.read_bytes() == written:
            target.unlink()


@contextlib.contextmanager
def published(source: pathlib.Path, target: pathlib.Path) -> Iterator[pathlib.Path]:
    """``source`` copied to ``target`` for the duration of the block, then removed."""
    written = publish(source, target)
    try:
        yield target
    finally:
        unpublish(target, written)
