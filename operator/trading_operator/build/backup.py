"""The Job (one-shot) or CronJob (``spec.schedule``) that runs a Backup.

Why a Job at all, rather than the operator dumping the database itself:
a backup is long, I/O-heavy and needs ``pg_dump`` and the destination
volume; none of that belongs in the operator's process or its RBAC. The
pod runs the workers' image (which carries the journal, Redis and model
code the backup reads) as ``trading-platform backup run --backup NS/NAME``,
and that command reports into the Backup's status itself.

The pod meets the ``restricted`` Pod Security Standard like the workers;
a PVC destination is mounted at ``/backups`` and the run writes under
``/backups<path>/<backup>/<run-id>/``. An S3 destination is named by
``TRADING_BACKUP_URI`` (``s3://bucket/prefix``), with the endpoint and region as
env and the key pair as ``secretKeyRef`` env: the run is written and verified in
the pod's ``/tmp`` (an emptyDir), then uploaded. A ``pvc://`` model of the session
is mounted read-only at ``/models/<claim>`` so the models target can copy it.

``concurrencyPolicy: Forbid``: two runs of one Backup must never prune each
other's files. ``timeZone``: ``spec.timeZone`` (default ``Etc/UTC``); the
operator computes ``status.nextScheduleTime`` in the same zone, so the two agree
across daylight-saving changes.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import Any

from trading_operator import names
from trading_operator.api import backup as backup_api
from trading_operator.api import workerconfig as wc
from trading_operator.api.backup import Backup
from trading_operator.api.session import TradingSession
from trading_operator.build import security
from trading_operator.settings import Settings

BACKOFF_LIMIT = 2                    # a run is retried twice (a database restart); each try is its own run id
ACTIVE_DEADLINE_SECONDS = 6 * 3600
ENV_MODEL_ROOT = "TRADING_MODEL_ROOT"  # same name the inference workers resolve pvc:// models with


def command(backup: Backup, settings: Settings) -> list[str]:
    return [*settings.worker_command, "backup", "run", "--backup",
            f"{backup.metadata.namespace}/{backup.metadata.name}"]


STAGING = "/tmp/backup-staging"      # an S3 destination's run is written and verified here before upload


def destination_root(backup: Backup) -> str:
    """Directory inside the pod that holds ``<backup>/<run-id>/`` (the PVC mount plus ``spec.destination.pvc.path``)."""
    pvc = backup.spec.destination.pvc
    if pvc is None:
        return STAGING
    return posixpath.normpath(names.BACKUP_MOUNT + "/" + pvc.path.lstrip("/"))


def destination_location(backup: Backup) -> str:
    """How that directory is named in status: ``pvc://claim/path`` or ``s3://bucket/prefix``."""
    pvc, s3 = backup.spec.destination.pvc, backup.spec.destination.s3
    if s3 is not None:
        return f"s3://{s3.bucket}/{s3.prefix}".rstrip("/")
    assert pvc is not None
    path = posixpath.normpath("/" + pvc.path.lstrip("/")).rstrip("/")
    return f"pvc://{pvc.claim_name}{path}"


def model_claim(model_uri: str | None) -> str | None:
    """The PVC holding the session's model, when its URI is ``pvc://CLAIM/...``."""
    if not model_uri:
        return None
    parsed = urllib.parse.urlsplit(model_uri)
    return parsed.netloc if parsed.scheme == "pvc" and parsed.netloc else None


def session_model_uri(session: TradingSession | None) -> str | None:
    model = session.spec.strategy.model if session is not None else None
    return model.uri if model is not None else None


def pod_template(backup: Backup, settings: Settings, model_uri: str | None = None) -> dict[str, Any]:
    name, session_name = backup.metadata.name, backup.spec.session_ref.name
    env: list[dict[str, Any]] = [
        {"name": wc.ENV_SESSION, "value": f"{backup.metadata.namespace}/{session_name}"},
        *security.connection_env(settings),
        {"name": backup_api.ENV_BACKUP_ROOT, "value": destination_root(backup)},
        {"name": backup_api.ENV_BACKUP_LOCATION, "value": destination_location(backup)},
        {"name": ENV_MODEL_ROOT, "value": names.MODEL_MOUNT},
        {"name": "HOME", "value": "/tmp"},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    pvc, s3 = backup.spec.destination.pvc, backup.spec.destination.s3
    if pvc is not None:
        mounts.insert(0, {"name": "backups", "mountPath": names.BACKUP_MOUNT})
        volumes.insert(0, {"name": "backups", "persistentVolumeClaim": {"claimName": pvc.claim_name}})
    if s3 is not None:
        env += [{"name": backup_api.ENV_BACKUP_URI, "value": destination_location(backup)}, *security.s3_env(s3)]
    claim = model_claim(model_uri) if "models" in backup.spec.targets else None
    if claim is not None:
        mounts.append({"name": "models", "mountPath": f"{names.MODEL_MOUNT}/{claim}", "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    container: dict[str, Any] = {
        "name": "backup",
        "image": settings.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": command(backup, settings),
        "env": env,
        "volumeMounts": mounts,
        "securityContext": security.container_security(),
    }
    return {
        "metadata": {"labels": names.backup_labels(name, session_name)},
        "spec": {
            "serviceAccountName": settings.worker_service_account,  # get backups, patch backups/status
            "automountServiceAccountToken": True,
            "restartPolicy": "Never",
            "securityContext": security.pod_security(),
            "containers": [container],
            "volumes": volumes,
        },
    }


def job_spec(backup: Backup, settings: Settings, model_uri: str | None = None) -> dict[str, Any]:
    return {"backoffLimit": BACKOFF_LIMIT, "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "template": pod_template(backup, settings, model_uri)}


def job(backup: Backup, settings: Settings, model_uri: str | None = None) -> dict[str, Any]:
    """The one-shot Job (no TTL: a Job that vanished must not look like a Backup that never ran)."""
    name = backup.metadata.name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.backup_job(name), "namespace": backup.metadata.namespace,
                     "labels": names.backup_labels(name, backup.spec.session_ref.name)},
        "spec": job_spec(backup, settings, model_uri),
    }


def cronjob(backup: Backup, settings: Settings, model_uri: str | None = None) -> dict[str, Any]:
    name = backup.metadata.name
    labels = names.backup_labels(name, backup.spec.session_ref.name)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": names.backup_cronjob(name), "namespace": backup.metadata.namespace, "labels": labels},
        "spec": {
            "schedule": backup.spec.schedule,
            "timeZone": backup.spec.time_zone,
            "suspend": backup.spec.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": labels}, "spec": job_spec(backup, settings, model_uri)},
        },
    }


def desired(backup: Backup, settings: Settings, model_uri: str | None = None) -> dict[str, Any]:
    """The one child a Backup should have: a CronJob when scheduled, else a Job."""
    return cronjob(backup, settings, model_uri) if backup.spec.schedule else job(backup, settings, model_uri)
