"""How a backup run reports into its Backup: status (merge patch on the status subresource) and Events.

The run owns the run results (phase Running/Completed/Failed, size,
sha256, location, verified, duration, last successful/verified times,
``history``, the ``Succeeded`` and ``Verified`` conditions); the operator
owns ``observedGeneration``, ``nextScheduleTime`` and ``Ready``. Every write
is read-modify-write with a ``resourceVersion`` precondition and retried on
conflict, so neither writer loses the other's update (``history`` is a
whole list in a merge patch).

The mutations (``start``, ``finish``, ``record_verification``) are pure
functions of the status model, so their rules are testable without a
cluster.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from trading_operator.api.backup import HISTORY_LIMIT, BackupRun, BackupStatus
from trading_operator.api.status import set_condition
from trading_workers.errors import TransientError
from trading_workers.runtime.kube import Conflict, Kube

log = logging.getLogger("trading_workers.backup.status")
PLURAL = "backups"
CONFLICT_RETRIES = 10


def _condition(status: BackupStatus, type_: str, ok: bool, reason: str, message: str, now: dt.datetime,
               generation: int | None) -> None:
    set_condition(status.conditions, type_, ok, reason, message, now, generation)


def _put_run(status: BackupStatus, run: BackupRun) -> None:
    for i, old in enumerate(status.history):
        if old.id == run.id:
            status.history[i] = run
            break
    else:
        status.history.append(run)
    status.history = status.history[-HISTORY_LIMIT:]


def start(status: BackupStatus, run_id: str, now: dt.datetime, location: str) -> None:
    status.phase = "Running"
    _put_run(status, BackupRun(id=run_id, phase="Running", started_at=now, location=location))


def finish(status: BackupStatus, run: BackupRun, pruned: list[str], verify_wanted: bool,
           generation: int | None) -> None:
    """Record the end of a run: the run itself, the latest-run fields, and the runs retention removed."""
    assert run.completed_at is not None
    _put_run(status, run)
    gone = set(pruned)
    status.history = [h.model_copy(update={"phase": "Pruned"}) if h.id in gone else h for h in status.history]
    status.phase = "Failed" if run.phase == "Failed" else "Completed"
    status.size_bytes = run.size_bytes
    status.sha256 = run.sha256
    status.location = run.location
    status.verified = run.verified
    if run.started_at is not None:
        status.duration_seconds = round((run.completed_at - run.started_at).total_seconds(), 3)
    if run.phase == "Completed":
        status.last_successful_time = run.completed_at
        _condition(status, "Succeeded", True, "Completed", f"run {run.id} completed: {run.location}",
                   run.completed_at, generation)
    else:
        _condition(status, "Succeeded", False, "Failed", f"run {run.id} failed: {run.message}", run.completed_at,
                   generation)
    if run.verified:
        status.last_verified_time = run.completed_at
        _condition(status, "Verified", True, "Verified", f"run {run.id}: journal restored into a scratch database "
                   "and every table's row count and checksum matched; every artifact's sha256 matched",
                   run.completed_at, generation)
    elif run.verified is False:
        _condition(status, "Verified", False, "VerificationFailed", f"run {run.id}: {run.message}",
                   run.completed_at, generation)
    elif not verify_wanted:
        _condition(status, "Verified", False, "VerifyDisabled", "spec.verify is false", run.completed_at, generation)


def record_verification(status: BackupStatus, run_id: str, ok: bool, message: str, now: dt.datetime,
                        generation: int | None) -> None:
    """A later ``backup verify`` of one run: its history entry and, if it is the latest run, the latest fields."""
    latest = status.history[-1].id if status.history else None
    for i, run in enumerate(status.history):
        if run.id == run_id:
            update: dict[str, Any] = {"verified": ok, "message": message[:4096]}
            if not ok:
                update["phase"] = "Failed"
            status.history[i] = run.model_copy(update=update)
    if run_id == latest:
        status.verified = ok
        if not ok:
            status.phase = "Failed"
    if ok:
        status.last_verified_time = now
    _condition(status, "Verified", ok, "Verified" if ok else "VerificationFailed", f"run {run_id}: {message}", now,
               generation)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Top-level merge patch from ``old`` to ``new`` (removed keys become ``null``)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


class BackupApi:
    """The few API calls a backup run makes: read the Backup, session and policy; patch status; post Events."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.kube.get_backup(namespace, name)

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.kube.get_session(namespace, name)

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.kube.get_policy(namespace, name)

    async def update_status(self, namespace: str, name: str,
                            mutate: Callable[[BackupStatus, dict[str, Any]], None]) -> dict[str, Any]:
        """Read, mutate the status model, merge-patch it with a resourceVersion precondition; retry on conflict."""
        for _ in range(CONFLICT_RETRIES):
            body = await self.get(namespace, name)
            old = body.get("status") or {}
            status = BackupStatus.model_validate(old)
            mutate(status, body)
            patch = merge_patch(old, status.wire())
            if not patch:
                return body
            payload = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]}, "status": patch}
            try:
                return await self.kube.patch_backup_status(namespace, name, payload)
            except Conflict:
                continue
        raise TransientError(f"Backup {namespace}/{name}: status kept changing; gave up after {CONFLICT_RETRIES} tries")

    async def event(self, backup: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event on the Backup (best effort: a lost Event never fails a backup)."""
        from kubernetes import client

        meta = backup["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(api_version=backup["apiVersion"], kind=backup["kind"],
                                                     name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
            reason=reason, message=message[:1024], type=type_, first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="trading-backup"), reporting_component="trading-backup",
            reporting_instance="trading-backup")
        try:
            await self.kube.create_event(meta["namespace"], event)
        except Exception as exc:  # best effort, logged
            log.warning("could not post an Event", extra={"reason": reason, "error": str(exc)})
