"""The worker Deployments and the session ConfigMap of a TradingSession.

Pods meet the ``restricted`` Pod Security Standard. Inference goes to the
GPU pool (extended-resource limit, nodeSelector, toleration from settings)
unless the model says ``device: cpu``. The config hash annotation on the
pod template makes a config change roll the workers; the Secret-versions
annotation (``secret_versions``, decided by the rotation step of
``reconcile.session``) makes a rotated Secret roll the roles that read it.

The inference pods get the model's storage: a ``pvc://CLAIM/...`` model's claim
is mounted read-only at ``/models/CLAIM`` (``TRADING_MODEL_ROOT=/models``, where the
worker resolves it); an ``s3://`` model's endpoint and region come as env and its
key pair as ``secretKeyRef`` env, and the download cache is the pod's ``/tmp``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from trading_operator import names
from trading_operator.api import workerconfig as wc
from trading_operator.api.session import Role, TradingSession
from trading_operator.build import security
from trading_operator.settings import Settings

CONFIG_MOUNT = "/etc/trading"
ENV_MODEL_ROOT = "TRADING_MODEL_ROOT"      # where trading_workers resolves pvc:// models
ENV_MODEL_CACHE = "TRADING_MODEL_CACHE"    # where it keeps verified s3:// downloads


def model_claim(ts: TradingSession) -> str | None:
    """The PVC of a ``pvc://CLAIM/...`` model (mounted read-only into the inference pods)."""
    model = ts.spec.strategy.model
    if model is None:
        return None
    parsed = urllib.parse.urlsplit(model.uri)
    return parsed.netloc if parsed.scheme == "pvc" and parsed.netloc else None


def config_map(ts: TradingSession) -> dict[str, Any]:
    cfg = wc.WorkerConfig.from_session(ts)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.configmap(ts.metadata.name),
            "namespace": ts.metadata.namespace,
            "labels": names.labels(ts.metadata.name),
            "annotations": {names.ANNOTATION_CONFIG_HASH: cfg.digest()},
        },
        "data": {wc.CONFIG_KEY: cfg.to_json()},
    }


def config_hash(ts: TradingSession) -> str:
    return wc.WorkerConfig.from_session(ts).digest()


def uses_gpu(ts: TradingSession) -> bool:
    model = ts.spec.strategy.model
    return model is None or model.device == "cuda"


def _strategy(ts: TradingSession, role: Role) -> dict[str, Any]:
    """Replace, don't surge, for the executor (it must never run twice) and for GPU-bound inference: a
    surge pod asks for a GPU the old pod still holds, so on a pool with no spare GPU it stays Pending and
    the rollout never ends (seen on the real node, whose pool has one GPU)."""
    if role is Role.EXECUTOR or (role is Role.INFERENCE and uses_gpu(ts)):
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def desired_replicas(ts: TradingSession, role: Role, suspended: bool) -> int:
    return 0 if suspended else ts.spec.workers.for_role(role).replicas


def _env(ts: TradingSession, role: Role, settings: Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": wc.ENV_SESSION, "value": f"{ts.metadata.namespace}/{ts.metadata.name}"},
        {"name": wc.ENV_ROLE, "value": role.value},
        {"name": wc.ENV_CONFIG, "value": f"{CONFIG_MOUNT}/{wc.CONFIG_KEY}"},
        *security.connection_env(settings),
        {"name": wc.ENV_HTTP_PORT, "value": str(settings.worker_http_port)},
        # The pod's own Secret versions (the executor reports them: how a rotation knows it is done).
        {"name": wc.ENV_SECRET_VERSIONS,
         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_SECRET_VERSIONS}']"}}},
    ]
    model = ts.spec.strategy.model
    if role is Role.INFERENCE and model is not None:
        env.append({"name": ENV_MODEL_ROOT, "value": names.MODEL_MOUNT})
        if model.s3 is not None:  # the stable model or a rollout's candidate may be s3://, whatever spec.uri says
            env += [*security.s3_env(model.s3), {"name": ENV_MODEL_CACHE, "value": "/tmp/models"}]
    secret = ts.spec.broker.credentials_secret_ref
    # The executor trades with the keys; Alpaca's market data (stream and REST) needs the same account keys.
    needs_keys = role is Role.EXECUTOR or (role is Role.MARKET_DATA and ts.spec.broker.kind == "alpaca")
    if needs_keys and secret is not None:
        for env_name, key in ((wc.ENV_BROKER_KEY_ID, secret.key_id_key), (wc.ENV_BROKER_SECRET, secret.secret_key_key)):
            env.append(security.secret_env(env_name, secret.name, key))
    return env


def _probe(path: str, port: int, period: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": 3}


def secret_names(pod_spec: dict[str, Any]) -> list[str]:
    """Every Secret a pod reads: env ``secretKeyRef``, ``envFrom`` and secret volumes (sorted, once each)."""
    found: set[str] = set()
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        for item in container.get("env", []):
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                found.add(ref["name"])
        for item in container.get("envFrom", []):
            if "secretRef" in item:
                found.add(item["secretRef"]["name"])
    for volume in pod_spec.get("volumes", []):
        if "secret" in volume:
            found.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources", []):
            if "secret" in source:
                found.add(source["secret"]["name"])
    return sorted(found)


def role_secrets(ts: TradingSession, settings: Settings) -> dict[Role, list[str]]:
    """The Secrets each role's pods read, from the Deployments this module builds (one truth)."""
    return {role: secret_names(deployment(ts, role, settings)["spec"]["template"]["spec"]) for role in Role}


def deployment(ts: TradingSession, role: Role, settings: Settings, suspended: bool = False,
               config_digest: str | None = None, secret_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """``config_digest``: ``config_hash(ts)`` when the caller has it already (it is the same for every role).
    ``secret_versions``: the Secret versions the pods run with (None: not tracked, no annotation)."""
    session = ts.metadata.name
    worker = ts.spec.workers.for_role(role)
    resources: dict[str, Any] = {k: dict(v) for k, v in worker.resources.wire().items() if v}
    node_selector = dict(worker.node_selector)
    tolerations = [t.wire() for t in worker.tolerations]
    if role is Role.INFERENCE and uses_gpu(ts):
        resources.setdefault("limits", {})[settings.gpu_resource] = "1"
        node_selector = {**settings.gpu_node_selector, **node_selector}
        tolerations = [*settings.gpu_tolerations, *tolerations]
    container: dict[str, Any] = {
        "name": names.ROLE_SLUG[role],
        "image": worker.image or settings.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [*settings.worker_command, "worker", role.value, "--session",
                    f"{ts.metadata.namespace}/{session}"],
        "env": _env(ts, role, settings),
        "ports": [{"name": "http", "containerPort": settings.worker_http_port, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", settings.worker_http_port, 2),
        "livenessProbe": _probe("/healthz", settings.worker_http_port, 10),
        # A worker imports pandas, exchange_calendars and (inference) torch before it serves /healthz:
        # tens of seconds on a busy node, where the liveness probe alone killed it before it started.
        "startupProbe": {**_probe("/healthz", settings.worker_http_port, 2), "failureThreshold": 90},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": security.container_security(),
    }
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": names.configmap(session)}},
                                     {"name": "tmp", "emptyDir": {}}]
    claim = model_claim(ts) if role is Role.INFERENCE else None
    if claim is not None:
        container["volumeMounts"].append({"name": "model", "mountPath": f"{names.MODEL_MOUNT}/{claim}",
                                          "readOnly": True})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "serviceAccountName": names.worker_service_account(session),  # build.rbac: this session only
        "automountServiceAccountToken": True,
        "terminationGracePeriodSeconds": 30,
        "securityContext": security.pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    selector = names.selector(session, role)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": names.deployment(session, role), "namespace": ts.metadata.namespace,
                     "labels": names.labels(session, role)},
        "spec": {
            "replicas": desired_replicas(ts, role, suspended),
            "selector": {"matchLabels": selector},
            "strategy": _strategy(ts, role),
            "template": {
                "metadata": {"labels": {**names.labels(session, role), **selector},
                             "annotations": {names.ANNOTATION_CONFIG_HASH: config_digest or config_hash(ts),
                                             **({names.ANNOTATION_SECRET_VERSIONS: wc.format_versions(secret_versions)}
                                                if secret_versions is not None else {})}},
                "spec": pod_spec,
            },
        },
    }


def all_deployments(ts: TradingSession, settings: Settings, suspended: bool = False) -> list[dict[str, Any]]:
    return [deployment(ts, role, settings, suspended) for role in Role]
