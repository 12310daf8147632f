"""One identity per session: the ServiceAccount, Role and RoleBinding its workers run under.

Least privilege per session: every rule that can name its object does (``resourceNames``), so a
worker of session A can read and watch A (a watch with ``fieldSelector=metadata.name=A``, which is
how ``trading_workers.runtime.SessionWatch`` watches), patch A's status, read A's RiskPolicy and
ConfigMap, and nothing of session B. Events are the exception: ``create`` cannot name an object that
does not exist yet and a repeated Event's name is random, so Events are namespace-wide (post and
count only, never read). No Secrets: credentials arrive as ``secretKeyRef`` env, resolved by the
kubelet. The operator can grant these rules because it holds each of them itself (RBAC refuses to
let anyone grant more than they have). The ServiceAccount does not automount its token; worker pods
ask for it (``automountServiceAccountToken: true`` on the pod), backup pods do not use it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trading_operator import names
from trading_operator.api.session import TradingSession

RBAC_API = "rbac.authorization.k8s.io/v1"


def _meta(ts: TradingSession) -> dict[str, Any]:
    return {"name": names.worker_service_account(ts.metadata.name), "namespace": ts.metadata.namespace,
            "labels": names.labels(ts.metadata.name)}


def service_account(ts: TradingSession) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(ts), "automountServiceAccountToken": False}


def rules(ts: TradingSession) -> list[dict[str, Any]]:
    session = ts.metadata.name
    return [
        {"apiGroups": ["trading.dev"], "resources": ["tradingsessions"], "resourceNames": [session],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["trading.dev"], "resources": ["tradingsessions/status"], "resourceNames": [session],
         "verbs": ["get", "patch"]},
        {"apiGroups": ["trading.dev"], "resources": ["riskpolicies"], "resourceNames": [ts.spec.risk_policy_ref.name],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [names.configmap(session)], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]


def role(ts: TradingSession) -> dict[str, Any]:
    return {"apiVersion": RBAC_API, "kind": "Role", "metadata": _meta(ts), "rules": rules(ts)}


def role_binding(ts: TradingSession) -> dict[str, Any]:
    name = names.worker_service_account(ts.metadata.name)
    return {"apiVersion": RBAC_API, "kind": "RoleBinding", "metadata": _meta(ts),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ts.metadata.namespace}]}


def all_objects(ts: TradingSession) -> list[dict[str, Any]]:
    return [service_account(ts), role(ts), role_binding(ts)]


def digest(ts: TradingSession) -> str:
    """Changes when the objects would (a new riskPolicyRef) or the session was re-created (its uid: the old
    objects went with the old session): the reconcile re-applies them then only."""
    return hashlib.sha256(json.dumps([ts.metadata.uid, *all_objects(ts)], sort_keys=True).encode()).hexdigest()[:16]
