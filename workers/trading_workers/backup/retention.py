"""Retention: which runs of a Backup to delete, decided from the run directories alone.

The rule (``plan`` is pure; ``apply`` deletes):

* a **good** run is one that completed and did not fail verification;
* the newest ``keepLast`` good runs are kept, whatever their age — so the
  newest good run is never pruned (``keepLast`` is at least 1);
* runs that are not good (failed, failed verification, never finished) do
  not count towards ``keepLast``;
* with ``maxAge``, every run younger than ``maxAge`` is kept as well, and
  nothing older survives except those newest good runs;
* without ``maxAge``, the newest ``keepLast`` failed runs that are *newer
  than the newest good run* are kept too, so a failing schedule leaves its
  recent failures to diagnose; they go once a good run supersedes them;
* the run in progress is never touched; everything else is pruned.

So ``keepLast: 1, maxAge: 7d`` is "a week of backups, and never none";
``keepLast: 24`` without ``maxAge`` is "the last 24".

Why decide from the directories and not from ``status.history``: the
files are the backups; the status is a bounded, best-effort summary.
"""

from __future__ import annotations

import datetime as dt
import logging
import pathlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from trading_workers.backup import manifest as mf

log = logging.getLogger("trading_workers.backup.retention")
VERIFY_RESULT = "verify.json"


@dataclass(frozen=True)
class RunInfo:
    id: str
    started_at: dt.datetime
    good: bool


def plan(runs: Iterable[RunInfo], keep_last: int, max_age: dt.timedelta | None, now: dt.datetime,
         protect: Iterable[str] = ()) -> list[str]:
    """Ids of the runs to prune, oldest first."""
    ordered = sorted(runs, key=lambda r: (r.started_at, r.id), reverse=True)  # newest first
    keep_last = max(1, keep_last)
    good = [r for r in ordered if r.good]
    kept = {r.id for r in good[:keep_last]} | set(protect)
    if max_age is not None:
        kept |= {r.id for r in ordered if now - r.started_at <= max_age}
    else:
        newest_good = good[0].started_at if good else None
        recent_bad = [r for r in ordered if not r.good and (newest_good is None or r.started_at > newest_good)]
        kept |= {r.id for r in recent_bad[:keep_last]}
    return [r.id for r in reversed(ordered) if r.id not in kept]


def run_time(run_id: str) -> dt.datetime:
    return dt.datetime.strptime(run_id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def scan(backup_dir: pathlib.Path) -> list[RunInfo]:
    """Every run directory under ``<root>/<backup>/`` with whether it is good."""
    runs: list[RunInfo] = []
    if not backup_dir.is_dir():
        return runs
    for child in backup_dir.iterdir():
        if not child.is_dir() or not mf.is_run_id(child.name):
            continue
        try:
            manifest = mf.read(child)
        except (OSError, ValueError, KeyError, TypeError):
            runs.append(RunInfo(child.name, run_time(child.name), good=False))
            continue
        good = manifest.status == "Completed" and not _verify_failed(child)
        runs.append(RunInfo(child.name, manifest.started_at, good))
    return runs


def _verify_failed(run_dir: pathlib.Path) -> bool:
    import json

    path = run_dir / VERIFY_RESULT
    if not path.exists():
        return False
    try:
        return not json.loads(path.read_text()).get("ok", False)
    except (OSError, ValueError):
        return True


def newest_good(backup_dir: pathlib.Path) -> str | None:
    good = sorted((r for r in scan(backup_dir) if r.good), key=lambda r: (r.started_at, r.id))
    return good[-1].id if good else None


def apply(backup_dir: pathlib.Path, keep_last: int, max_age: dt.timedelta | None, now: dt.datetime,
          protect: Iterable[str] = ()) -> list[str]:
    """Delete the expired runs; returns their ids (oldest first)."""
    pruned = plan(scan(backup_dir), keep_last, max_age, now, protect)
    for run_id in pruned:
        shutil.rmtree(backup_dir / run_id)
        log.info("pruned backup run", extra={"run": run_id})
    return pruned
