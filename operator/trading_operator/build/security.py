"""What every pod the operator builds shares: the ``restricted`` Pod Security Standard and credentials by reference.

Worker Deployments and backup Jobs both run the workers' image as a
non-root user with a read-only root filesystem, no capabilities and the
runtime's default seccomp profile; a namespace labelled
``pod-security.kubernetes.io/enforce=restricted`` admits them unchanged.

Credentials reach a pod only as ``secretKeyRef`` env, resolved by the
kubelet: no manifest the operator writes (and so no Deployment, Job,
CronJob, ``kubectl get -o yaml`` or audit log of them) carries a password,
and the operator itself needs no RBAC on Secrets to build them.
"""

from __future__ import annotations

from typing import Any

from trading_operator.api import workerconfig as wc
from trading_operator.settings import Settings

RUN_AS = 10001


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"}}


def secret_env(env_name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def connection_env(settings: Settings) -> list[dict[str, Any]]:
    """The bus and journal addresses: plain when they carry no password (Settings refuses one), else a Secret."""
    out = []
    for env_name, plain, secret, key in (
            (wc.ENV_REDIS_URL, settings.redis_url, settings.redis_url_secret_name, settings.redis_url_secret_key),
            (wc.ENV_JOURNAL_DSN, settings.journal_dsn, settings.journal_dsn_secret_name,
             settings.journal_dsn_secret_key)):
        out.append(secret_env(env_name, secret, key) if secret else {"name": env_name, "value": plain})
    return out


ENV_S3_ENDPOINT = "TRADING_S3_ENDPOINT"     # the names trading_workers.objectstore reads
ENV_S3_REGION = "TRADING_S3_REGION"
ENV_S3_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_S3_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"


def s3_env(access: Any) -> list[dict[str, Any]]:
    """An object store's endpoint and region as plain env, its key pair as ``secretKeyRef`` (``api.common.S3Access``)."""
    ref = access.credentials_secret_ref
    env: list[dict[str, Any]] = [{"name": ENV_S3_REGION, "value": access.region}]
    if access.endpoint:
        env.insert(0, {"name": ENV_S3_ENDPOINT, "value": access.endpoint})
    env += [secret_env(ENV_S3_ACCESS_KEY, ref.name, ref.access_key_id_key),
            secret_env(ENV_S3_SECRET_KEY, ref.name, ref.secret_access_key_key)]
    return env
