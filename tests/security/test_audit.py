"""The local control plane's audit log (devtools/trading_dev/controlplane/audit-policy.yaml, the policy
docs/security.md shows for a real cluster): who wrote what to a TradingSession is on record, bodies
included; a Secret's content never is."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.security.conftest import as_identity
from trading_dev.controlplane import server

pytestmark = pytest.mark.cluster


def _events(cp: server.ControlPlane) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cp.audit_log.read_text().splitlines() if line.strip()]


def test_who_halted_is_in_the_audit_log_and_secret_content_is_not(control_plane: server.ControlPlane,
                                                                   crds_installed: Kubectl) -> None:
    kubectl, ns, marker = crds_installed, f"audit-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    kubectl("create", "namespace", ns, check=True)
    kubectl("create", "secret", "generic", "keys", "-n", ns, f"--from-literal=k={marker}", check=True)
    kubectl("apply", "-n", ns, "-f", "-", check=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "edit"},
         "rules": [{"apiGroups": ["trading.dev"], "resources": ["tradingsessions"], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "edit"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edit"},
         "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]},
        {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "s"},
         "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}}]}))
    out = as_identity(kubectl, "alice", "patch", "tradingsession", "s", "-n", ns, "--type=merge",
                      "-p", '{"spec":{"halted":true,"haltReason":"audit"}}')
    assert out.returncode == 0, out.stderr

    def halt_event() -> dict[str, Any] | None:
        return next((e for e in _events(control_plane)
                     if e.get("verb") == "patch" and e["objectRef"].get("resource") == "tradingsessions"
                     and e["objectRef"].get("namespace") == ns and e.get("stage") == "ResponseComplete"), None)

    deadline, found = time.monotonic() + 30, None  # batch mode: the log is written within a second or so
    while found is None and time.monotonic() < deadline:
        time.sleep(0.5)
        found = halt_event()
    assert found is not None, "no audit event for the halt"
    assert found["user"]["username"] == "admin" and found["impersonatedUser"]["username"] == "alice", found
    assert found["requestObject"]["spec"]["halted"] is True
    secret = [e for e in _events(control_plane) if e["objectRef"].get("resource") == "secrets"
              and e["objectRef"].get("namespace") == ns]
    assert secret and all(e["level"] == "Metadata" for e in secret)
    assert marker not in control_plane.audit_log.read_text()


def test_docs_show_the_same_policy() -> None:
    policy = server.AUDIT_POLICY.read_text().rstrip()
    assert policy in (server.AUDIT_POLICY.parents[3] / "docs" / "security.md").read_text()
