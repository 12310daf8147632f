"""Who halted, who resumed, end to end: the chart's identity policies on the real API server, the
operator running, users impersonated. Status and Events name the identity the API server
authenticated. (Kubernetes 1.37: the tests/operator package runs on the newest supported minor only.)"""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any

from tests.conftest import Kubectl, wait_for
from tests.operator.conftest import Api
from tests.security.conftest import SCOPE_LABEL, as_identity, helm_binary, identity_policies


def _status(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "tradingsession", "s", "-n", ns, "-o", "json", check=True).stdout).get("status", {})  # type: ignore[no-any-return]


def test_status_and_events_name_who_halted_and_who_resumed(operator: pathlib.Path, crds_installed: Kubectl,
                                                          api: Api) -> None:
    kubectl = crds_installed
    with identity_policies(kubectl, helm_binary()) as served:
        assert served, "Kubernetes 1.37 serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy"
        ns = f"who-{uuid.uuid4().hex[:6]}"
        kubectl("create", "namespace", ns, check=True)
        kubectl("label", "namespace", ns, f"{SCOPE_LABEL}=true", check=True)
        kubectl("apply", "-n", ns, "-f", "-", check=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "edit"},
             "rules": [{"apiGroups": ["trading.dev"], "resources": ["tradingsessions", "riskpolicies"],
                        "verbs": ["get", "list", "create", "patch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "edit"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edit"},
             "subjects": [{"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}
                          for u in ("alice", "bob")]},
            {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": "p"}, "spec": {}},
            {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "s"},
             "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"},
                      "workers": {r: {"replicas": 0} for r in
                                  ("marketData", "strategy", "inference", "risk", "executor")}}}]}))
        wait_for(lambda: _status(kubectl, ns).get("phase"), what="the operator's first status")

        out = as_identity(kubectl, "alice", "patch", "tradingsession", "s", "-n", ns, "--type=merge",
                          "-p", '{"spec":{"halted":true,"haltReason":"desk check"}}')
        assert out.returncode == 0, out.stderr
        halt = wait_for(lambda: _status(kubectl, ns).get("halt"), what="the user halt")
        assert halt["source"] == "User" and halt["requestedBy"] == "alice", halt
        assert halt["raisedBy"] == "admin"  # the operator's identity here (it runs with the admin's kubeconfig)
        event = wait_for(lambda: [e for e in api.events(ns, "s") if e.reason == "Halted"], what="Halted event")[0]
        assert "(requested by alice)" in event.message, event.message

        out = as_identity(kubectl, "bob", "patch", "tradingsession", "s", "-n", ns, "--type=merge",
                          "-p", '{"spec":{"halted":false}}')
        assert out.returncode == 0, out.stderr
        last = wait_for(lambda: "halt" not in _status(kubectl, ns) and _status(kubectl, ns).get("lastHalt"),
                        what="the resume")
        assert last["id"] == halt["id"] and last["requestedBy"] == "alice" and last["resumeRequestedBy"] == "bob"
        event = wait_for(lambda: [e for e in api.events(ns, "s") if e.reason == "Resumed"], what="Resumed event")[0]
        assert "(resume requested by bob)" in event.message, event.message
