"""The three backup commands: run (back up, verify, prune, report), verify (one run again), restore.

A run, step by step (each step logged, so the Job's log is the progress report):

1. status ``Running`` and a ``Running`` history entry for the new run id;
2. each target in ``spec.targets`` writes into ``<root>/<backup>/<run-id>/`` —
   a target that fails does not stop the others, but fails the run;
3. ``manifest.json`` (sizes, sha256s, the journal's per-table counts and
   checksums from the dump's own snapshot) and its sha256;
4. with ``spec.verify``: every artifact's sha256 is checked against the
   manifest and the journal dump is restored into a scratch database and
   compared table by table; the result is kept in ``verify.json``;
   with an S3 destination (``Places.remote``) the run directory is a local
   staging copy: it is then uploaded (manifest last) and every stored object
   is read back and checked against the manifest (``remote.py``);
5. retention (``retention.py``) prunes expired runs (in the bucket for S3);
6. status ``Completed`` or ``Failed`` with size, sha256, location, verified,
   duration, the history, and an Event.

A restore refuses while the session is trading — it would rewrite the
journal under a live executor. "Trading" is the API's own answer:
``status.phase`` is not ``Halted`` and ``spec.suspend`` is not true.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import pathlib
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from trading_operator.api.backup import Backup, BackupRun, BackupStatus, parse_duration
from trading_workers import objectstore
from trading_workers.backup import files, postgres, redis_rdb, remote, retention
from trading_workers.backup import manifest as mf
from trading_workers.backup import status as st
from trading_workers.bus import session_prefix
from trading_workers.errors import ConfigError, PermanentError, TradingError
from trading_workers.journal import archive

log = logging.getLogger("trading_workers.backup")


class RestoreRefused(PermanentError):
    """The restore would be unsafe (the session is trading) or does not match the Backup."""


@dataclass(frozen=True)
class Places:
    """Where runs live and how to reach the journal and Redis."""

    root: pathlib.Path          # holds <backup>/<run-id>/ (with ``remote``: the local staging directory)
    location: str               # how the destination is named in status (pvc://claim/path, file:///dir, s3://b/p)
    journal_dsn: str
    redis_url: str
    remote: objectstore.Store | None = None   # an S3 destination: holds <backup>/<run-id>/


@dataclass
class Outcome:
    run_id: str
    ok: bool
    message: str
    run_dir: pathlib.Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def split_key(key: str, what: str) -> tuple[str, str]:
    if key.count("/") != 1 or not all(key.split("/")):
        raise ConfigError(f"{what} must be NAMESPACE/NAME, got {key!r}")
    ns, name = key.split("/")
    return ns, name


# --------------------------------------------------------------------------- run

async def _targets(backup: Backup, body: dict[str, Any], api: st.BackupApi, places: Places, run_dir: pathlib.Path,
                   man: mf.Manifest) -> list[str]:
    """Run every target; returns the errors (one per failed target)."""
    ns = backup.metadata.namespace
    session_name = backup.spec.session_ref.name
    errors: list[str] = []
    session: dict[str, Any] | None = None
    try:
        session = await api.get_session(ns, session_name)
    except TradingError as exc:
        errors.append(f"session {ns}/{session_name}: {exc}")
    for target in backup.spec.targets:
        started = time.monotonic()
        log.info("target started", extra={"target": target})
        try:
            if target == "journal":
                if not places.journal_dsn:
                    raise ConfigError("no journal DSN (TRADING_JOURNAL_DSN)")
                path = run_dir / postgres.DUMP_NAME
                man.details["journal"] = await postgres.dump(places.journal_dsn, path)
                man.artifacts.append(mf.Artifact.of(run_dir, path, target))
            elif target == "redis":
                rdb = run_dir / redis_rdb.RDB_NAME
                keys = run_dir / redis_rdb.KEYS_NAME
                details = await redis_rdb.snapshot_rdb(places.redis_url, rdb)
                details |= await redis_rdb.dump_session_keys(places.redis_url, session_prefix(ns, session_name), keys)
                man.details["redis"] = details
                man.artifacts += [mf.Artifact.of(run_dir, rdb, target), mf.Artifact.of(run_dir, keys, target)]
            elif target == "models":
                if session is None:
                    raise PermanentError("the session could not be read")
                paths, details = files.copy_models(session, run_dir)
                man.details["models"] = details
                man.artifacts += [mf.Artifact.of(run_dir, p, target) for p in paths]
            elif target == "resources":
                if session is None:
                    raise PermanentError("the session could not be read")
                policy_name = str(session["spec"]["riskPolicyRef"]["name"])
                try:
                    policy: dict[str, Any] | None = await api.get_policy(ns, policy_name)
                except TradingError:
                    policy = None
                paths, details = files.write_resources(session, policy, run_dir)
                man.details["resources"] = details
                man.artifacts += [mf.Artifact.of(run_dir, p, target) for p in paths]
        except Exception as exc:  # any failure fails this target, and the run, with its reason
            errors.append(f"{target}: {exc}")
            log.error("target failed", extra={"target": target, "error": str(exc)}, exc_info=not isinstance(
                exc, TradingError | OSError))
        else:
            log.info("target done", extra={"target": target, "seconds": round(time.monotonic() - started, 3)})
    return errors


async def verify_dir(run_dir: pathlib.Path, journal_dsn: str, expected_sha: str | None = None) -> list[str]:
    """Artifacts against the manifest, then the journal dump by a scratch restore. Returns problems (each names its artifact)."""
    manifest, problems = mf.check(run_dir, expected_sha)
    messages = [str(p) for p in problems]
    if manifest is None:
        return messages
    dump = manifest.artifact("journal", ".dump")
    broken = {p.artifact for p in problems}
    if dump is not None and dump.path not in broken:
        if not journal_dsn:
            messages.append(f"{dump.path}: cannot restore-check it without a journal DSN")
        else:
            try:
                journal = manifest.details.get("journal", {})
                diffs = await postgres.verify(run_dir / dump.path, journal_dsn, journal.get("tables", {}),
                                              journal.get("checksum", postgres.CHECKSUM_LEGACY))
            except Exception as exc:  # a restore that fails is a verification that fails
                diffs = [f"scratch restore failed: {exc}"]
            messages += [f"{dump.path}: {d}" for d in diffs]
    (run_dir / retention.VERIFY_RESULT).write_text(json.dumps(
        {"ok": not messages, "problems": messages, "at": _now().isoformat()}, indent=2) + "\n")
    return messages


async def run_backup(api: st.BackupApi, namespace: str, name: str, places: Places) -> Outcome:
    body = await api.get(namespace, name)
    backup = Backup.model_validate(body)
    started = _now()
    run_id = mf.new_run_id(started, secrets.token_hex(2))
    backup_dir = places.root / name
    run_dir = backup_dir / run_id
    run_dir.mkdir(parents=True)
    location = f"{places.location.rstrip('/')}/{name}/{run_id}"
    log.info("backup started", extra={"run": run_id, "targets": backup.spec.targets, "location": location})
    await api.update_status(namespace, name, lambda s, _: st.start(s, run_id, started, location))
    await api.event(body, "Normal", "BackupStarted", f"run {run_id} started: {', '.join(backup.spec.targets)}")
    try:
        return await _complete_run(api, body, backup, places, run_id, run_dir, started, location)
    except BaseException as exc:
        # Whatever went wrong, the Backup must not stay Running: report the crash, then let it propagate.
        log.exception("backup crashed", extra={"run": run_id})
        crashed = BackupRun(id=run_id, phase="Failed", started_at=started, completed_at=_now(), location=location,
                            message=f"backup crashed: {exc.__class__.__name__}: {exc}"[:4096])
        try:
            await api.update_status(namespace, name, lambda s, _: st.finish(s, crashed, [], backup.spec.verify, None))
        except Exception as report_exc:
            log.error("could not report the crash", extra={"error": str(report_exc)})
        raise


async def _complete_run(api: st.BackupApi, body: dict[str, Any], backup: Backup, places: Places, run_id: str,
                        run_dir: pathlib.Path, started: dt.datetime, location: str) -> Outcome:
    namespace, name = backup.metadata.namespace, backup.metadata.name
    backup_dir = run_dir.parent
    man = mf.Manifest(backup=f"{namespace}/{name}", session=f"{namespace}/{backup.spec.session_ref.name}",
                      run=run_id, started_at=started, targets=list(backup.spec.targets))
    errors = await _targets(backup, body, api, places, run_dir, man)
    man.completed_at = _now()
    man.status = "Failed" if errors else "Completed"
    man.error = "; ".join(errors) or None
    manifest_sha = mf.write(run_dir, man)
    log.info("manifest written", extra={"sha256": manifest_sha, "artifacts": len(man.artifacts), "bytes": man.size})

    verified: bool | None = None
    message = man.error or ""
    if not errors and backup.spec.verify:
        log.info("verification started")
        problems = await verify_dir(run_dir, places.journal_dsn, manifest_sha)
        verified = not problems
        if problems:
            message = "verification failed: " + "; ".join(problems)
    if places.remote is not None:
        stored = places.remote.child(f"{name}/{run_id}")
        try:
            sent = await asyncio.to_thread(remote.upload_run, run_dir, stored)
            log.info("run uploaded", extra={"location": stored.uri, "bytes": sent})
            if not errors:
                stored_problems = await asyncio.to_thread(remote.check_stored, stored, man, manifest_sha)
                if stored_problems:
                    verified = False
                    message = "verification failed: " + "; ".join(f"uploaded {p}" for p in stored_problems)
        except objectstore.ObjectStoreError as exc:
            errors.append(f"upload: {exc}")
            message = "; ".join(errors)
    ok = not errors and verified is not False
    pruned: list[str] = []
    try:
        max_age = parse_duration(backup.spec.retention.max_age) if backup.spec.retention.max_age else None
        if places.remote is not None:
            pruned = await asyncio.to_thread(remote.apply_retention, places.remote.child(name),
                                             backup.spec.retention.keep_last, max_age, _now(), [run_id])
            shutil.rmtree(run_dir, ignore_errors=True)       # the staging copy: the bucket holds the run
        else:
            pruned = retention.apply(backup_dir, backup.spec.retention.keep_last, max_age, _now(), protect=[run_id])
    except (OSError, ValueError, objectstore.ObjectStoreError) as exc:
        log.error("retention failed", extra={"error": str(exc)})
    if ok and "journal" in backup.spec.targets:
        await _release_archive(places, man.session, started)
    completed = _now()
    if ok:
        message = f"{len(man.artifacts)} artifacts, {man.size} bytes" + (", verified" if verified else "")
    run = BackupRun(id=run_id, phase="Completed" if ok else "Failed", started_at=started, completed_at=completed,
                    size_bytes=man.size, sha256=manifest_sha, location=location, verified=verified,
                    message=message[:4096])
    await api.update_status(namespace, name, lambda s, b: st.finish(
        s, run, pruned, backup.spec.verify, int(b["metadata"].get("generation") or 0) or None))
    if ok:
        await api.event(body, "Normal", "BackupCompleted", f"run {run_id}: {message}; {location}")
    elif verified is False:
        await api.event(body, "Warning", "VerificationFailed", f"run {run_id}: {message}")
    else:
        await api.event(body, "Warning", "BackupFailed", f"run {run_id}: {message}")
    if pruned:
        await api.event(body, "Normal", "Pruned", f"retention pruned {len(pruned)} runs: {', '.join(pruned)}")
    log.info("backup finished", extra={"run": run_id, "ok": ok, "detail": message, "pruned": pruned,
                                       "seconds": round((completed - started).total_seconds(), 3)})
    return Outcome(run_id, ok, message, run_dir)


async def _release_archive(places: Places, session: str, started: dt.datetime) -> None:
    """The run holds the session's archived P&L snapshots: release them from the journal (journal.archive)."""
    try:
        released = await archive.release(places.journal_dsn, session, started)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:   # the backup itself succeeded; the next run releases them
        log.warning("archived snapshots not released", extra={"error": str(exc)})
        return
    log.info("archived snapshots released", extra={"rows": released})


# --------------------------------------------------------------------------- verify

async def fetch_run(places: Places, name: str, run_id: str | None) -> pathlib.Path:
    """The run's directory: in place on a volume, or downloaded from the bucket into the staging directory."""
    if places.remote is None:
        return pick_run(places.root / name, run_id)
    stored = places.remote.child(name)
    if run_id:
        if not mf.is_run_id(run_id) or run_id not in await asyncio.to_thread(remote.run_ids, stored):
            raise ConfigError(f"no run {run_id!r} under {stored.uri}")
    else:
        run_id = await asyncio.to_thread(remote.newest_good, stored)
        if run_id is None:
            raise ConfigError(f"no good run (completed, not failing verification) under {stored.uri}")
    run_dir = places.root / name / run_id
    shutil.rmtree(run_dir, ignore_errors=True)
    count = await asyncio.to_thread(remote.download_run, stored.child(run_id), run_dir)
    log.info("run downloaded", extra={"run": run_id, "location": f"{stored.uri}/{run_id}", "files": count})
    return run_dir


def pick_run(backup_dir: pathlib.Path, run_id: str | None) -> pathlib.Path:
    if run_id:
        if not mf.is_run_id(run_id) or not (backup_dir / run_id).is_dir():
            raise ConfigError(f"no run {run_id!r} under {backup_dir}")
        return backup_dir / run_id
    newest = retention.newest_good(backup_dir)
    if newest is None:
        raise ConfigError(f"no good run (completed, not failing verification) under {backup_dir}")
    return backup_dir / newest


async def verify_run(api: st.BackupApi, namespace: str, name: str, places: Places, run_id: str | None) -> Outcome:
    body = await api.get(namespace, name)
    run_dir = await fetch_run(places, name, run_id)
    status = BackupStatus.model_validate(body.get("status") or {})
    recorded = next((h.sha256 for h in status.history if h.id == run_dir.name), None)
    log.info("verification started", extra={"run": run_dir.name})
    problems = await verify_dir(run_dir, places.journal_dsn, recorded)
    if places.remote is not None:   # the result beside the run in the bucket, as on a volume
        await asyncio.to_thread(places.remote.child(f"{name}/{run_dir.name}").put_file,
                                retention.VERIFY_RESULT, run_dir / retention.VERIFY_RESULT)
    ok = not problems
    message = "verified: artifacts match the manifest; journal restore matches" if ok else (
        "verification failed: " + "; ".join(problems))
    await api.update_status(namespace, name, lambda s, b: st.record_verification(
        s, run_dir.name, ok, message, _now(), int(b["metadata"].get("generation") or 0) or None))
    await api.event(body, "Normal" if ok else "Warning", "Verified" if ok else "VerificationFailed",
                    f"run {run_dir.name}: {message}")
    log.info("verification finished", extra={"run": run_dir.name, "ok": ok, "problems": problems})
    return Outcome(run_dir.name, ok, message, run_dir)


# --------------------------------------------------------------------------- restore

def trading_reason(session: dict[str, Any]) -> str | None:
    """Why a restore must not touch this session now (None: it is halted or suspended)."""
    phase = (session.get("status") or {}).get("phase")
    suspended = bool((session.get("spec") or {}).get("suspend"))
    if phase == "Halted" or suspended:
        return None
    return f"it is trading (phase {phase or 'unknown'}, not Halted, and spec.suspend is not true)"


async def restore(api: st.BackupApi, namespace: str, name: str, places: Places, run_id: str | None,
                  session_key: str, targets: list[str] | None = None) -> Outcome:
    """Restore the session from a run: ``targets`` (journal, redis), or whichever of them the run holds."""
    body = await api.get(namespace, name)
    backup = Backup.model_validate(body)
    s_ns, s_name = split_key(session_key, "--session")
    if (s_ns, s_name) != (namespace, backup.spec.session_ref.name):
        raise RestoreRefused(f"Backup {namespace}/{name} backs up session {namespace}/{backup.spec.session_ref.name}, "
                             f"not {session_key}; refusing to restore another session's data")
    session = await api.get_session(s_ns, s_name)
    reason = trading_reason(session)
    if reason is not None:
        raise RestoreRefused(
            f"refusing to restore session {session_key}: {reason}. Halt it first and wait for phase Halted:\n"
            f"  kubectl -n {s_ns} patch tradingsession {s_name} --type=merge "
            "-p '{\"spec\":{\"halted\":true,\"haltReason\":\"restore from backup\"}}'")
    run_dir = await fetch_run(places, name, run_id)
    manifest, problems = mf.check(run_dir)
    if manifest is None or problems:
        raise RestoreRefused(f"run {run_dir.name} does not match its manifest, refusing to restore it: "
                             + "; ".join(str(p) for p in problems))
    dump = manifest.artifact("journal", ".dump")
    keys = manifest.artifact("redis", ".jsonl")
    held = [t for t, art in (("journal", dump), ("redis", keys)) if art is not None]
    missing = [t for t in targets or [] if t not in held]
    if missing or not held:
        raise RestoreRefused(f"run {run_dir.name} holds no {' or '.join(missing or ['journal', 'redis'])} to restore "
                             f"(it has: {', '.join(manifest.targets)})")
    targets = targets or held
    log.info("restore started", extra={"run": run_dir.name, "session": session_key, "targets": targets})
    done: list[str] = []
    if "journal" in targets and dump is not None:
        if not places.journal_dsn:
            raise ConfigError("no journal DSN (TRADING_JOURNAL_DSN or --journal-dsn)")
        rows = await postgres.restore_session(run_dir / dump.path, places.journal_dsn, session_key)
        done.append("journal (" + ", ".join(f"{t} {n}" for t, n in rows.items()) + ")")
    if "redis" in targets and keys is not None:
        count = await redis_rdb.restore_session_keys(places.redis_url, session_prefix(s_ns, s_name),
                                                     run_dir / keys.path)
        done.append(f"redis ({count} keys)")
    message = f"restored session {session_key} from run {run_dir.name}: " + "; ".join(done)
    await api.event(body, "Normal", "Restored", message)
    log.info("restore finished", extra={"run": run_dir.name, "restored": done})
    return Outcome(run_dir.name, True, message, run_dir)
