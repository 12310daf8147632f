"""Runs in an object store (an S3 destination): upload, check what was stored, download, retention.

An S3 run is produced exactly like a PVC run — written, manifested and verified in a local staging
directory (the Job's ``/tmp``) — and then uploaded to ``<destination>/<backup>/<run-id>/``:
the artifacts first, then ``manifest.json`` and its sha256, then ``verify.json``, so a run without a
manifest in the bucket is one that never finished, as on a volume. After the upload every stored
object is read back and its sha256 compared with the manifest's (:func:`check_stored`): a run is
only reported good when the bucket holds exactly what was verified.

``verify`` and ``restore`` download the run into the staging directory first and then check and use
it as they use a directory (the same code, the same checks). Retention decides from the bucket's
manifests and ``verify.json`` files with the same rule as for directories (``retention.plan``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import pathlib
from collections.abc import Iterable

from trading_workers import objectstore
from trading_workers.backup import manifest as mf
from trading_workers.backup import retention

log = logging.getLogger("trading_workers.backup.remote")

_LAST = (mf.MANIFEST, mf.MANIFEST_SUM, retention.VERIFY_RESULT)


def upload_run(run_dir: pathlib.Path, store: objectstore.Store) -> int:
    """Upload every file of ``run_dir`` to ``store`` (which is ``<destination>/<backup>/<run-id>``); bytes sent."""
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
    first = [p for p in files if p.relative_to(run_dir).as_posix() not in _LAST]
    last = [run_dir / name for name in _LAST if (run_dir / name).is_file()]
    sent = 0
    for path in [*first, *last]:
        store.put_file(path.relative_to(run_dir).as_posix(), path)
        sent += path.stat().st_size
    return sent


def check_stored(store: objectstore.Store, manifest: mf.Manifest, manifest_sha: str) -> list[mf.Problem]:
    """Read every stored artifact (and the manifest) back and compare size and sha256 with the manifest."""
    problems: list[mf.Problem] = []
    for name, want_sha, want_size in [(mf.MANIFEST, manifest_sha, None),
                                      *((a.path, a.sha256, a.size) for a in manifest.artifacts)]:
        try:
            sha, size = store.digest(name)
        except objectstore.ObjectNotFound:
            problems.append(mf.Problem(name, f"missing in {store.uri}"))
            continue
        if want_size is not None and size != want_size:
            problems.append(mf.Problem(name, f"stored size {size} != {want_size} in the manifest"))
        elif sha != want_sha:
            problems.append(mf.Problem(name, f"stored sha256 {sha} != {want_sha} in the manifest"))
    return problems


def download_run(store: objectstore.Store, run_dir: pathlib.Path) -> int:
    """Copy every object of a stored run into ``run_dir``; the number of files."""
    objects = store.objects()
    for obj in objects:
        store.get_file(obj.key, run_dir / obj.key)
    return len(objects)


def run_ids(store: objectstore.Store) -> list[str]:
    """The run ids stored under a Backup's prefix (``store`` = ``<destination>/<backup>``)."""
    return sorted({o.key.split("/", 1)[0] for o in store.objects() if mf.is_run_id(o.key.split("/", 1)[0])})


def scan(store: objectstore.Store) -> list[retention.RunInfo]:
    """Every stored run of a Backup and whether it is good (completed, verification not failed)."""
    keys: dict[str, set[str]] = {}
    for obj in store.objects():
        run, _, rest = obj.key.partition("/")
        if mf.is_run_id(run):
            keys.setdefault(run, set()).add(rest)
    runs: list[retention.RunInfo] = []
    for run, names in keys.items():
        started = retention.run_time(run)
        if mf.MANIFEST not in names:
            runs.append(retention.RunInfo(run, started, good=False))
            continue
        try:
            manifest = mf.Manifest.from_json(store.get_bytes(f"{run}/{mf.MANIFEST}").decode())
        except (objectstore.ObjectStoreError, ValueError, KeyError, TypeError):
            runs.append(retention.RunInfo(run, started, good=False))
            continue
        failed = False
        if retention.VERIFY_RESULT in names:
            try:
                failed = not json.loads(store.get_bytes(f"{run}/{retention.VERIFY_RESULT}")).get("ok", False)
            except (objectstore.ObjectStoreError, ValueError):
                failed = True
        runs.append(retention.RunInfo(run, manifest.started_at, good=manifest.status == "Completed" and not failed))
    return runs


def newest_good(store: objectstore.Store) -> str | None:
    good = sorted((r for r in scan(store) if r.good), key=lambda r: (r.started_at, r.id))
    return good[-1].id if good else None


def apply_retention(store: objectstore.Store, keep_last: int, max_age: dt.timedelta | None, now: dt.datetime,
                    protect: Iterable[str] = ()) -> list[str]:
    """Delete the expired runs' objects; their ids, oldest first."""
    pruned = retention.plan(scan(store), keep_last, max_age, now, protect)
    for run in pruned:
        store.delete([f"{run}/{o.key}" for o in store.child(run).objects()])
        log.info("pruned backup run", extra={"run": run, "location": store.uri})
    return pruned
