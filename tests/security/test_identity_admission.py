"""Who asked, stamped by the API server: the chart's MutatingAdmissionPolicies on the real API server.

The identity written next to a halt, a resume, a Reducing clear, a RiskPolicy mode change and a
new status latch is the one the API server authenticated (here: impersonated users and
ServiceAccounts), never what the client sent: a forged annotation or raisedBy is overwritten.
Where the API server does not serve MutatingAdmissionPolicy (Kubernetes 1.35), the chart renders
none and this test proves that instead.
"""

from __future__ import annotations

import json
import pathlib
import time
import uuid
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.security.conftest import MAP, OPERATOR, SCOPE_LABEL, as_identity, render, service_account
from trading_operator import names

pytestmark = pytest.mark.cluster


def _get(kubectl: Kubectl, kind: str, ns: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", ns, "-o", "json", check=True).stdout)  # type: ignore[no-any-return]


def _patch(kubectl: Kubectl, user: str | None, kind: str, ns: str, name: str, body: dict[str, Any],
           status: bool = False) -> None:
    out = as_identity(kubectl, user, "patch", kind, name, "-n", ns, "--type=merge", "-p", json.dumps(body),
                      *(["--subresource=status"] if status else []))
    assert out.returncode == 0, out.stderr


def test_identities_are_stamped_by_the_api_server(identity_admission: bool, crds_installed: Kubectl,
                                                  helm: pathlib.Path) -> None:
    kubectl = crds_installed
    if not identity_admission:
        assert "kind: MutatingAdmissionPolicy" not in render(helm, None)
        assert "MutatingAdmissionPolicy" in render(helm, "identityadmission.yaml", api_versions=(MAP,))
        return
    ns = f"who-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns, check=True)
    kubectl("label", "namespace", ns, f"{SCOPE_LABEL}=true", check=True)
    worker = service_account(ns, names.worker_service_account("s1"))
    users = ("alice", "bob", "carol", "mallory")
    kubectl("apply", "-n", ns, "-f", "-", check=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "edit"},
         "rules": [{"apiGroups": ["trading.dev"], "verbs": ["get", "list", "create", "patch", "update"],
                    "resources": ["tradingsessions", "tradingsessions/status", "riskpolicies"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "edit"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edit"},
         "subjects": [{"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}
                      for u in (*users, worker, OPERATOR)]}]}))
    policy = {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": "p"}, "spec": {}}
    session = {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "s1"},
               "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}}
    # The policy takes a moment to load: create as carol until the stamp appears.
    deadline = time.monotonic() + 30
    while True:
        assert as_identity(kubectl, "carol", "apply", "-n", ns, "-f", "-", input=json.dumps(policy)).returncode == 0
        stamped = _get(kubectl, "riskpolicy", ns, "p")["metadata"].get("annotations", {}).get(names.ANNOTATION_MODE_BY)
        if stamped or time.monotonic() > deadline:
            break
        kubectl("delete", "riskpolicy", "p", "-n", ns, check=True)
        time.sleep(0.5)
    assert stamped == "carol"
    assert as_identity(kubectl, "alice", "create", "-n", ns, "-f", "-", input=json.dumps(session)).returncode == 0

    def annotations() -> dict[str, str]:
        return _get(kubectl, "tradingsession", ns, "s1")["metadata"].get("annotations", {})

    assert names.ANNOTATION_HALT_BY not in annotations()  # created unhalted: nobody halted it
    _patch(kubectl, "alice", "tradingsession", ns, "s1", {"spec": {"halted": True, "haltReason": "desk"}})
    assert annotations()[names.ANNOTATION_HALT_BY] == "alice"
    # A forged or removed stamp is put back; a write that changes nothing of the halt keeps it.
    _patch(kubectl, "mallory", "tradingsession", ns, "s1",
           {"metadata": {"annotations": {names.ANNOTATION_HALT_BY: "bob", names.ANNOTATION_RESUME_BY: "bob"}}})
    _patch(kubectl, "mallory", "tradingsession", ns, "s1", {"spec": {"haltReason": "desk, still"}})
    assert annotations()[names.ANNOTATION_HALT_BY] == "alice"
    _patch(kubectl, "mallory", "tradingsession", ns, "s1",
           {"metadata": {"annotations": {names.ANNOTATION_HALT_BY: None}}})
    assert annotations()[names.ANNOTATION_HALT_BY] == "alice"
    _patch(kubectl, "bob", "tradingsession", ns, "s1", {"spec": {"halted": False}})
    assert annotations()[names.ANNOTATION_RESUME_BY] == "bob"
    _patch(kubectl, "carol", "tradingsession", ns, "s1", {"spec": {"resumeHaltId": "h-2", "clearReducingId": "r-2"}})
    assert annotations()[names.ANNOTATION_RESUME_BY] == "carol"
    assert annotations()[names.ANNOTATION_CLEAR_REDUCING_BY] == "carol"
    _patch(kubectl, "mallory", "riskpolicy", ns, "p", {"spec": {"mode": "Halted"}})
    assert _get(kubectl, "riskpolicy", ns, "p")["metadata"]["annotations"][names.ANNOTATION_MODE_BY] == "mallory"

    # Status: the writer of a new latch, whatever raisedBy it claims; kept while the latch continues.
    halt = {"active": True, "source": "Risk", "reason": "daily loss", "id": "h-1", "raisedBy": "the-operator"}
    _patch(kubectl, worker, "tradingsession", ns, "s1", {"status": {"halt": halt}}, status=True)
    st = _get(kubectl, "tradingsession", ns, "s1")["status"]
    assert st["halt"]["raisedBy"] == worker
    _patch(kubectl, OPERATOR, "tradingsession", ns, "s1",
           {"status": {"halt": {"action": "Flatten", "raisedBy": "someone"}}}, status=True)
    assert _get(kubectl, "tradingsession", ns, "s1")["status"]["halt"]["raisedBy"] == worker
    _patch(kubectl, OPERATOR, "tradingsession", ns, "s1",
           {"status": {"reducing": {"source": "Risk", "reason": "r", "id": "r-1"}}}, status=True)
    assert _get(kubectl, "tradingsession", ns, "s1")["status"]["reducing"]["raisedBy"] == OPERATOR
