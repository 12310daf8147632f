"""Backup reconcile: keep the one Job or CronJob in place, and the operator's part of the status.

Who writes what in a Backup's status, so the two writers never fight:

* the backup run (``trading-platform backup run``, in the Job's pod) owns
  the run results: ``phase`` Running/Completed/Failed, size, sha256,
  location, verified, duration, the last successful/verified times,
  ``history`` and the ``Succeeded``/``Verified`` conditions;
* this reconcile owns ``observedGeneration``, ``nextScheduleTime`` and the
  ``Ready`` condition, and writes ``phase`` only in two cases the run cannot
  report itself: ``Pending`` before any run, and ``Failed`` when the Job
  failed without the run saying so (image pull, OOM kill, a crash).

Both write with a ``resourceVersion`` precondition, so a lost race is
retried against fresh data, never overwrites the other writer.

``decide`` is pure (Backup, live children, time -> what to apply, delete,
patch, and the Events); ``reconcile`` does the I/O. ``nextScheduleTime``
comes from croniter, evaluated in ``spec.timeZone`` like the CronJob (``timeZone``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from trading_operator import names
from trading_operator.api.backup import Backup, BackupRun, BackupStatus
from trading_operator.api.status import get_condition, set_condition
from trading_operator.build import backup as build_backup
from trading_operator.kube import is_subset
from trading_operator.reconcile.conditions import Event
from trading_operator.settings import Settings

OWNED_FIELDS = ("phase", "observedGeneration", "nextScheduleTime", "conditions", "history")



@dataclass
class Observed:
    backup: Backup
    jobs: list[dict[str, Any]]          # Jobs labelled for this Backup: the one-shot, or the CronJob's
    cronjob: dict[str, Any] | None
    model_uri: str | None               # the session's model (a pvc:// one is mounted into the pod)
    now: dt.datetime


@dataclass
class Decision:
    status: BackupStatus
    apply: dict[str, Any] | None = None
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, plural, name)
    events: list[Event] = field(default_factory=list)


def next_run(schedule: str, after: dt.datetime, time_zone: str = "Etc/UTC") -> dt.datetime:
    """The first time strictly after ``after`` that ``schedule``, read in ``time_zone``, fires (returned in UTC).

    Raises ValueError for an invalid schedule or an unknown zone.
    """
    if not croniter.is_valid(schedule):
        raise ValueError(f"invalid cron schedule {schedule!r}")
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {time_zone!r}") from exc
    nxt: dt.datetime = croniter(schedule, after.astimezone(zone)).get_next(dt.datetime)
    return nxt.astimezone(dt.UTC)


def _created(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("creationTimestamp") or "")


def job_failure(job: dict[str, Any]) -> str | None:
    """Why a Job failed (its ``Failed`` condition), or None while it has not."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return f"{cond.get('reason') or 'Failed'}: {cond.get('message') or 'the backup pod failed'}"
    return None


def comparable(desired: dict[str, Any]) -> dict[str, Any]:
    """The parts of a desired CronJob worth comparing with the live one (server defaults add the rest)."""
    spec = desired["spec"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    return {"spec": {
        "schedule": spec["schedule"], "suspend": spec["suspend"], "timeZone": spec["timeZone"],
        "concurrencyPolicy": spec["concurrencyPolicy"],
        "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{k: c[k] for k in ("name", "image", "command", "env", "volumeMounts")}
                           for c in pod["containers"]],
            "volumes": pod["volumes"]}}}}}}


def decide(obs: Observed, settings: Settings) -> Decision:
    backup, now = obs.backup, obs.now
    spec, gen = backup.spec, backup.metadata.generation
    status = backup.status.model_copy(deep=True)
    conds = status.conditions
    decision = Decision(status=status)
    events = decision.events

    def condition(ok: bool, reason: str, message: str, event: tuple[str, str] | None = None) -> None:
        old = get_condition(conds, "Ready")
        changed = set_condition(conds, "Ready", ok, reason, message, now, gen)
        if event is not None and (changed or old is None or old.reason != reason):
            events.append(Event(event[0], event[1], message))

    next_time: dt.datetime | None = None
    # Jobs from an earlier Backup of the same name (deleted and re-created, e.g. by an Argo CD hook) are not ours.
    born = backup.metadata.creation_timestamp.isoformat() if backup.metadata.creation_timestamp else ""
    jobs = [j for j in obs.jobs if _created(j) >= born.replace("+00:00", "Z")]
    oneshot = next((j for j in obs.jobs if j["metadata"]["name"] == names.backup_job(backup.metadata.name)), None)
    stale = oneshot is not None and backup.metadata.uid and not any(
        o.get("uid") == backup.metadata.uid for o in oneshot["metadata"].get("ownerReferences") or [])
    if spec.schedule:
        try:
            next_time = next_run(spec.schedule, now, spec.time_zone)
        except ValueError as exc:
            condition(False, "InvalidSchedule", f"{exc}; no CronJob is created", ("Warning", "InvalidSchedule"))
        else:
            want = build_backup.cronjob(backup, settings, obs.model_uri)
            live = obs.cronjob
            if live is None or not is_subset(comparable(want), live):
                decision.apply = want
            cron = names.backup_cronjob(backup.metadata.name)
            if spec.suspend:
                next_time = None
                condition(True, "Suspended", f"CronJob {cron} is suspended; no run is scheduled",
                          ("Normal", "Suspended"))
            else:
                condition(True, "Scheduled", f"CronJob {cron} runs {spec.schedule!r} ({spec.time_zone})",
                          ("Normal", "Scheduled"))
    else:
        if obs.cronjob is not None:
            decision.delete.append(("batch/v1", "cronjobs", obs.cronjob["metadata"]["name"]))
        ran = bool(status.history) or status.phase in ("Running", "Completed", "Failed")
        if stale and not ran:
            assert oneshot is not None
            decision.delete.append(("batch/v1", "jobs", oneshot["metadata"]["name"]))  # created on a later pass
        elif oneshot is None and not ran:
            decision.apply = build_backup.job(backup, settings, obs.model_uri)
        condition(True, "JobCreated", f"Job {names.backup_job(backup.metadata.name)} runs the backup once",
                  ("Normal", "JobCreated"))

    if status.phase is None:
        status.phase = "Pending"
    newest = max(jobs, key=_created, default=None)
    failure = job_failure(newest) if newest is not None else None
    if failure is not None and status.phase in ("Pending", "Running"):
        job_name = newest["metadata"]["name"] if newest is not None else "?"
        message = f"Job {job_name} failed before the run reported: {failure}"
        status.phase = "Failed"
        if status.history and status.history[-1].phase == "Running":
            status.history[-1] = status.history[-1].model_copy(
                update={"phase": "Failed", "completed_at": now, "message": message[:4096]})
        else:
            status.history = [*status.history, BackupRun(id=job_name[:64], phase="Failed", completed_at=now,
                                                         message=message[:4096])][-100:]
        events.append(Event("Warning", "BackupFailed", message))
    status.next_schedule_time = next_time
    status.observed_generation = gen
    return decision


def status_patch(old: BackupStatus, new: BackupStatus) -> dict[str, Any]:
    """A merge patch of the operator-owned fields that changed (``null`` deletes)."""
    before, after = old.wire(), new.wire()
    return {k: after.get(k) for k in OWNED_FIELDS if before.get(k) != after.get(k)}


# ---------------------------------------------------------------------------------- I/O

def export_metrics(backup: Backup) -> None:
    from trading_operator import metrics

    ns, name, st = backup.metadata.namespace, backup.metadata.name, backup.status
    if st.last_successful_time is not None:
        metrics.BACKUP_LAST_SUCCESS.labels(ns, name).set(st.last_successful_time.timestamp())
    if st.last_verified_time is not None:
        metrics.BACKUP_LAST_VERIFIED.labels(ns, name).set(st.last_verified_time.timestamp())
    if st.size_bytes is not None:
        metrics.BACKUP_SIZE.labels(ns, name).set(st.size_bytes)
    if st.duration_seconds is not None:
        metrics.BACKUP_DURATION.labels(ns, name).set(st.duration_seconds)
    metrics.BACKUP_FAILED.labels(ns, name).set(1 if st.phase == "Failed" else 0)


def forget_metrics(namespace: str, name: str) -> None:
    from trading_operator import metrics

    for gauge in (metrics.BACKUP_LAST_SUCCESS, metrics.BACKUP_LAST_VERIFIED, metrics.BACKUP_SIZE,
                  metrics.BACKUP_DURATION, metrics.BACKUP_FAILED):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


async def reconcile(body: dict[str, Any], jobs: list[dict[str, Any]], cronjob: dict[str, Any] | None,
                    model_uri: str | None, settings: Settings, post_event: Callable[[Event], None]) -> None:
    """One reconcile of one Backup."""
    import time

    from trading_operator import kube, metrics

    started = time.monotonic()
    metrics.RECONCILES.labels("Backup").inc()
    backup = Backup.model_validate(body)
    decision = decide(Observed(backup, jobs, cronjob, model_uri, dt.datetime.now(dt.UTC)), settings)
    for api_version, plural, name in decision.delete:
        await kube.delete(api_version, plural, backup.metadata.namespace, name)
        why = "the Backup is no longer scheduled" if plural == "cronjobs" else "left by an earlier Backup of this name"
        post_event(Event("Normal", "Deleted", f"deleted {plural[:-1]} {name}: {why}"))
    if decision.apply is not None:
        await kube.apply(decision.apply, owner=body)
        kind, name = decision.apply["kind"], decision.apply["metadata"]["name"]
        verb = "updated" if kind == "CronJob" and cronjob is not None else "created"
        post_event(Event("Normal", f"{kind}{verb.capitalize()}", f"{verb} {kind} {name}"))
    patch = status_patch(backup.status, decision.status)
    if patch:
        await kube.patch_status("backups", backup.metadata.namespace, backup.metadata.name, patch,
                                backup.metadata.resource_version)
        for event in decision.events:
            post_event(event)
    export_metrics(backup)
    metrics.RECONCILE_SECONDS.labels("Backup").observe(time.monotonic() - started)
