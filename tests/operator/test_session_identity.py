"""One identity per session, on the real API server, tested by impersonation.

The operator creates each session's ServiceAccount, Role and RoleBinding (owned by the session) and
deletes them with it; a worker of session A — impersonated as A's ServiceAccount — can read, watch
and patch the status of A, read A's RiskPolicy and ConfigMap, and cannot read, patch or halt B,
read B's ConfigMap or policy, read any Secret (A's or B's), or write spec.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import pytest

from tests.conftest import Kubectl, wait_for
from trading_operator import names

pytestmark = pytest.mark.cluster


def _session(name: str, policy: str) -> dict[str, Any]:
    return {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": name},
            "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": policy},
                     "broker": {"kind": "alpaca", "paper": True, "credentialsSecretRef": {"name": f"{name}-keys"}}}}


def test_each_session_runs_under_its_own_identity(operator: pathlib.Path, crds_installed: Kubectl,
                                                  namespace: str) -> None:
    kubectl, ns = crds_installed, namespace
    items: list[dict[str, Any]] = [
        {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": p}, "spec": {}}
        for p in ("pa", "pb")]
    items += [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{s}-keys"},
               "stringData": {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}} for s in ("a", "b")]
    items += [_session("a", "pa"), _session("b", "pb")]
    kubectl("apply", "-n", ns, "-f", "-", check=True, input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                        "items": items}))
    sa_a = names.worker_service_account("a")
    for kind in ("serviceaccount", "role", "rolebinding"):
        for s in ("a", "b"):
            wait_for(lambda k=kind, s=s: kubectl("get", k, names.worker_service_account(s), "-n", ns).returncode == 0,
                     what=f"{kind} of session {s}")
    owner = json.loads(kubectl("get", "role", sa_a, "-n", ns, "-o", "json", check=True).stdout)
    assert owner["metadata"]["ownerReferences"][0]["name"] == "a"
    wait_for(lambda: kubectl("get", "configmap", names.configmap("b"), "-n", ns).returncode == 0, what="b's ConfigMap")
    for role in names.ROLE_SLUG:
        dep = json.loads(kubectl("get", "deployment", names.deployment("a", role), "-n", ns, "-o", "json",
                                 check=True).stdout)
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa_a

    def as_a(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl(f"--as=system:serviceaccount:{ns}:{sa_a}", "--as-group=system:serviceaccounts",
                       f"--as-group=system:serviceaccounts:{ns}", "--as-group=system:authenticated", *args, "-n", ns)

    allowed = [("get", "tradingsession", "a"), ("get", "riskpolicy", "pa"), ("get", "configmap", names.configmap("a")),
               ("get", "tradingsessions", "--field-selector=metadata.name=a")]
    for args in allowed:
        out = as_a(*args)
        assert out.returncode == 0, (args, out.stderr)
    assert as_a("patch", "tradingsession", "a", "--subresource=status", "--type=merge",
                "-p", '{"status":{"executor":{"openOrders":0}}}').returncode == 0
    denied = [("get", "tradingsession", "b"), ("get", "tradingsessions"), ("get", "riskpolicy", "pb"),
              ("get", "configmap", names.configmap("b")), ("get", "secret", "a-keys"), ("get", "secret", "b-keys"),
              ("patch", "tradingsession", "b", "--subresource=status", "--type=merge",
               "-p", '{"status":{"halt":{"active":true,"source":"Risk","reason":"x","id":"h-x"}}}'),
              ("patch", "tradingsession", "a", "--type=merge", "-p", '{"spec":{"halted":true}}'),
              ("patch", "tradingsession", "b", "--type=merge", "-p", '{"spec":{"halted":true}}')]
    for args in denied:
        out = as_a(*args)
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (args, out.stderr)

    # Deleting the session deletes its identity (the operator's finalizer; ownerReferences on a real cluster).
    kubectl("delete", "tradingsession", "a", "-n", ns, "--wait=false", check=True)
    for kind in ("serviceaccount", "role", "rolebinding"):
        wait_for(lambda k=kind: kubectl("get", k, sa_a, "-n", ns).returncode != 0, timeout=60,
                 what=f"{kind} of a deleted")
