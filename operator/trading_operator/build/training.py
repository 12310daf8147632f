"""The training Job (and the retraining CronJob) of a TradingSession's model. Pure.

The pod runs the workers' image as ``trading-platform train --session NS/NAME --out URI ...``:
it trains a model (``trading_workers.inference.retrain``), publishes it as a new version (model file
and manifest) under ``spec.strategy.model.retrain.output`` — an ``s3://`` output with the model's
bucket access as env (keys by ``secretKeyRef``) — and offers it to the staged rollout by writing
``status.modelCandidate`` with the session's own worker ServiceAccount (which may patch that
session's status and nothing else's). A ``pvc://`` output is mounted read-write at
``/models/<claim>``, where ``pvc://`` URIs resolve.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

from trading_operator import names
from trading_operator.api import workerconfig as wc
from trading_operator.api.session import RetrainSpec, TradingSession
from trading_operator.build import security
from trading_operator.settings import Settings

BACKOFF_LIMIT = 1
ACTIVE_DEADLINE_SECONDS = 3600
TTL_SECONDS = 7 * 86_400
ENV_MODEL_ROOT = "TRADING_MODEL_ROOT"
JOB_LABEL = "trading.dev/training"


def job_name(session: str, token: str) -> str:
    """``<session>-train-<hash>``, at most 63 characters (a label value and a pod name prefix)."""
    digest = hashlib.sha256(f"{session}/{token}".encode()).hexdigest()[:8]
    return f"{session[:45].rstrip('-')}-train-{digest}"


def cronjob_name(session: str) -> str:
    return f"{session[:44].rstrip('-')}-retrain"


def command(ts: TradingSession, settings: Settings, retrain: RetrainSpec, job: str | None) -> list[str]:
    cmd = [*settings.worker_command, "train", "--session", f"{ts.metadata.namespace}/{ts.metadata.name}",
           "--out", retrain.output, "--samples", str(retrain.samples), "--epochs", str(retrain.epochs)]
    if retrain.seed is not None:
        cmd += ["--seed", str(retrain.seed)]
    return [*cmd, "--job", job] if job else cmd


def pod_template(ts: TradingSession, settings: Settings, retrain: RetrainSpec, job: str | None) -> dict[str, Any]:
    session = ts.metadata.name
    env: list[dict[str, Any]] = [
        {"name": wc.ENV_SESSION, "value": f"{ts.metadata.namespace}/{session}"},
        *security.connection_env(settings),
        {"name": ENV_MODEL_ROOT, "value": names.MODEL_MOUNT},
        {"name": "HOME", "value": "/tmp"},
    ]
    model = ts.spec.strategy.model
    if retrain.output.startswith("s3://") and model is not None and model.s3 is not None:
        env += security.s3_env(model.s3)   # the model's bucket access: endpoint, region, keys by secretKeyRef
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    parsed = urllib.parse.urlsplit(retrain.output)
    if parsed.scheme == "pvc" and parsed.netloc:
        mounts.append({"name": "models", "mountPath": f"{names.MODEL_MOUNT}/{parsed.netloc}"})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": parsed.netloc}})
    labels = {**names.labels(session), JOB_LABEL: "true"}
    return {
        "metadata": {"labels": labels},
        "spec": {
            "serviceAccountName": names.worker_service_account(session),  # patches this session's status only
            "automountServiceAccountToken": True,
            "restartPolicy": "Never",
            "securityContext": security.pod_security(),
            "containers": [{
                "name": "train",
                "image": ts.spec.workers.inference.image or settings.worker_image,
                "imagePullPolicy": "IfNotPresent",
                "command": command(ts, settings, retrain, job),
                "env": env,
                "volumeMounts": mounts,
                "securityContext": security.container_security(),
            }],
            "volumes": volumes,
        },
    }


def job(ts: TradingSession, settings: Settings, retrain: RetrainSpec, name: str) -> dict[str, Any]:
    """One training run the operator starts (a request or an automatic trigger)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ts.metadata.namespace,
                     "labels": {**names.labels(ts.metadata.name), JOB_LABEL: "true"}},
        "spec": {"backoffLimit": BACKOFF_LIMIT, "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
                 "ttlSecondsAfterFinished": TTL_SECONDS,
                 "template": pod_template(ts, settings, retrain, name)},
    }


def cronjob(ts: TradingSession, settings: Settings, retrain: RetrainSpec) -> dict[str, Any]:
    """The scheduled retraining (``retrain.schedule``); its Jobs name themselves in the candidate they offer."""
    assert retrain.schedule is not None
    labels = {**names.labels(ts.metadata.name), JOB_LABEL: "true"}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name(ts.metadata.name), "namespace": ts.metadata.namespace, "labels": labels},
        "spec": {
            "schedule": retrain.schedule,
            "timeZone": retrain.time_zone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": labels},
                            "spec": {"backoffLimit": BACKOFF_LIMIT, "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
                                     "template": pod_template(ts, settings, retrain, None)}},
        },
    }
