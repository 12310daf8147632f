"""The latches at admission: the chart's status policy on the real API server, tested by impersonation.

For every identity that can reach a TradingSession's status subresource through RBAC — the
operator's ServiceAccount, a worker of the session, a worker of another session, a user with edit
rights on sessions, a cluster admin (system:masters) — what the API server lets it write. RBAC in
the test namespace grants each of them status writes on purpose: what refuses is the policy.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.security.conftest import OPERATOR, SCOPE_LABEL, as_identity, render, service_account
from trading_operator.api import transactions
from trading_operator.api.session import HaltStatus, ReducingStatus, TradingSessionStatus

pytestmark = pytest.mark.cluster
NOW = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
USER = "alice@desk"


def _yaml(obj: Any) -> str:
    return json.dumps(obj)


def _setup(kubectl: Kubectl) -> tuple[str, str, str]:
    """A labelled namespace, a session, RBAC for every identity; returns (namespace, session, its worker)."""
    ns = f"latch-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns, check=True)
    kubectl("label", "namespace", ns, f"{SCOPE_LABEL}=true", check=True)
    session = "s1"
    worker, other = service_account(ns, f"trading-worker-{session}"), service_account(ns, "trading-worker-s2")
    kubectl("apply", "-n", ns, "-f", "-", check=True, input=_yaml({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "sessions-edit"},
         "rules": [{"apiGroups": ["trading.dev"], "resources": ["tradingsessions", "tradingsessions/status"],
                    "verbs": ["get", "list", "watch", "patch", "update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "sessions-edit"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sessions-edit"},
         "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}
                      for name in (OPERATOR, worker, other, USER)]},
        {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": session},
         "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "limits"}}},
    ]}))
    return ns, session, worker


def _status(ns: str, session: str, kubectl: Kubectl) -> dict[str, Any]:
    return json.loads(kubectl("get", "tradingsession", session, "-n", ns, "-o", "json", check=True).stdout)["status"]


def _write(kubectl: Kubectl, user: str | None, ns: str, session: str, status: dict[str, Any]):  # type: ignore[no-untyped-def]
    return as_identity(kubectl, user, "patch", "tradingsession", session, "-n", ns, "--subresource=status",
                       "--type=merge", "-p", _yaml({"status": status}))


def _halt(hid: str, action: str = "Halt") -> dict[str, Any]:
    return HaltStatus(active=True, source="Risk", reason="daily loss", since=NOW, id=hid, action=action).wire()


def _reducing(rid: str) -> dict[str, Any]:
    return ReducingStatus(source="Risk", rule="dailyLoss", reason="daily loss 2%", since=NOW, id=rid).wire()


def test_only_the_operator_clears_a_latch_workers_raise_and_report_users_write_spec(status_admission: Kubectl) -> None:
    kubectl = status_admission
    ns, session, worker = _setup(kubectl)
    other = service_account(ns, "trading-worker-s2")
    refused = _write(kubectl, USER, ns, session, {"executor": {"openOrders": 1}})
    deadline = time.monotonic() + 30  # the API server loads a new policy within a second or so
    while refused.returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        refused = _write(kubectl, USER, ns, session, {"executor": {"openOrders": 1}})

    # A user with edit rights on sessions: spec yes, status never.
    assert refused.returncode != 0 and "written by the operator and its own workers only" in refused.stderr, \
        refused.stderr
    assert USER in refused.stderr
    spec = as_identity(kubectl, USER, "patch", "tradingsession", session, "-n", ns, "--type=merge",
                       "-p", _yaml({"spec": {"haltReason": "desk check"}}))
    assert spec.returncode == 0, spec.stderr

    # The operator writes status; a worker of the session raises a halt and a Reducing latch and reports.
    assert _write(kubectl, OPERATOR, ns, session, {"phase": "Initializing"}).returncode == 0
    for status in ({"halt": _halt("h-1")}, {"reducing": _reducing("r-1")}, {"executor": {"openOrders": 2}},
                   {"halt": _halt("h-1", action="Flatten")}):  # escalation under the same id is a raise
        wrote = _write(kubectl, worker, ns, session, status)
        assert wrote.returncode == 0, (status, wrote.stderr)
    st = _status(ns, session, kubectl)
    assert st["halt"]["id"] == "h-1" and st["halt"]["action"] == "Flatten" and st["reducing"]["id"] == "r-1"

    # Nobody but the operator clears or replaces them: not the session's worker, not a cluster admin.
    # (The admin is refused by the first rule, status is not theirs to write, so its message names that.)
    for status, message in (({"halt": None}, "only the operator clears halt h-1"),
                            ({"halt": {**_halt("h-2")}}, "only the operator clears halt h-1"),
                            ({"halt": {"active": False}}, "only the operator clears halt h-1"),
                            ({"reducing": None}, "only the operator clears Reducing r-1"),
                            ({"reducing": _reducing("r-2")}, "only the operator clears Reducing r-1")):
        out = _write(kubectl, worker, ns, session, status)
        assert out.returncode != 0 and message in out.stderr, (status, out.stderr)
        admin = _write(kubectl, None, ns, session, status)
        assert admin.returncode != 0 and "its own workers only, not by admin" in admin.stderr, (status, admin.stderr)
    admin = _write(kubectl, None, ns, session, {"executor": {"openOrders": 3}})
    assert admin.returncode != 0 and "written by the operator" in admin.stderr, admin.stderr
    # A worker writes no field the operator owns, and a worker of another session writes nothing here.
    for status in ({"phase": "Halted"}, {"conditions": []}, {"lastHalt": _halt("h-0")}, {"observedGeneration": 9}):
        out = _write(kubectl, worker, ns, session, status)
        assert out.returncode != 0 and "belongs to the operator" in out.stderr, (status, out.stderr)
    out = _write(kubectl, other, ns, session, {"executor": {"openOrders": 0}})
    assert out.returncode != 0 and "written by the operator and its own workers only" in out.stderr

    # The operator clears both (after its guards, in decide()).
    cleared = TradingSessionStatus.model_validate(_status(ns, session, kubectl))
    last = cleared.halt.model_copy(update={"active": False, "cleared_at": NOW}).wire()  # type: ignore[union-attr]
    out = _write(kubectl, OPERATOR, ns, session, {"halt": None, "lastHalt": last, "reducing": None})
    assert out.returncode == 0, out.stderr
    st = _status(ns, session, kubectl)
    assert "halt" not in st and "reducing" not in st and st["lastHalt"]["id"] == "h-1"
    assert st["executor"]["openOrders"] == 2  # nothing refused above was written


def _json_patch(kubectl: Kubectl, user: str | None, ns: str, session: str, ops: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    return as_identity(kubectl, user, "patch", "tradingsession", session, "-n", ns, "--subresource=status",
                       "--type=json", "-p", json.dumps(ops))


def test_the_guarded_json_patches_go_through_the_same_policy(status_admission: Kubectl) -> None:
    """Decision 0015's write method: the operator's and the workers' JSON Patches (latch guards + field
    operations, as ``transactions`` builds them) are admitted or refused exactly like merge patches."""
    kubectl = status_admission
    ns, session, worker = _setup(kubectl)
    deadline = time.monotonic() + 30  # the API server loads a new policy within a second or so
    while _write(kubectl, USER, ns, session, {"executor": {"openOrders": 1}}).returncode == 0:
        assert time.monotonic() < deadline, "the status policy never took effect"
        time.sleep(0.5)
    ops = transactions.latch_guard(None) + transactions.status_ops(None, {"phase": "Initializing"}, ["phase"])
    out = _json_patch(kubectl, OPERATOR, ns, session, ops)
    assert out.returncode == 0, out.stderr
    st = _status(ns, session, kubectl)
    # A worker raises a halt with the guard it read; a user cannot, even with a guard that holds.
    raise_ops = transactions.latch_guard(st) + transactions.status_ops(st, {"halt": _halt("h-7")}, ["halt"])
    refused = _json_patch(kubectl, USER, ns, session, raise_ops)
    assert refused.returncode != 0 and "written by the operator and its own workers only" in refused.stderr
    out = _json_patch(kubectl, worker, ns, session, raise_ops)
    assert out.returncode == 0, out.stderr
    st = _status(ns, session, kubectl)
    # The worker cannot clear it nor write an operator field with a JSON Patch either.
    clear = transactions.latch_guard(st) + transactions.status_ops(st, {}, ["halt"])
    out = _json_patch(kubectl, worker, ns, session, clear)
    assert out.returncode != 0 and "only the operator clears halt h-7" in out.stderr, out.stderr
    out = _json_patch(kubectl, worker, ns, session,
                      transactions.latch_guard(st) + transactions.status_ops(st, {"phase": "Halted"}, ["phase"]))
    assert out.returncode != 0 and "belongs to the operator" in out.stderr, out.stderr
    # The operator clears it under the whole resourceVersion, as a resume does.
    rv = json.loads(kubectl("get", "tradingsession", session, "-n", ns, "-o", "json", check=True).stdout)[
        "metadata"]["resourceVersion"]
    last = {**_halt("h-7"), "active": False}
    out = _json_patch(kubectl, OPERATOR, ns, session, transactions.version_guard(rv) + transactions.status_ops(
        st, {"lastHalt": last}, ["halt", "lastHalt"]))
    assert out.returncode == 0, out.stderr
    st = _status(ns, session, kubectl)
    assert "halt" not in st and st["lastHalt"]["id"] == "h-7"


def test_the_policy_names_every_status_field_it_guards(helm: Any) -> None:
    """A new TradingSessionStatus field is either a worker's (listed here) or the operator's (in the policy)."""
    workers_write = {"risk", "summary", "executor", "report", "model", "halt", "reducing", "inference", "modelCandidate"}
    rendered = render(helm, "statusadmission.yaml")
    fields = {info.alias or name for name, info in TradingSessionStatus.model_fields.items()}
    for field in fields - workers_write:
        assert f"object.?status.?{field} != oldObject.?status.?{field}" in rendered, field
    assert not any(f"object.?status.?{f} != oldObject" in rendered for f in workers_write - {"halt", "reducing"})
    # The same split as the writers' (decision 0015): the operator writes its fields, the workers merge theirs.
    assert workers_write == transactions.WORKER_FIELDS | set(transactions.LATCH_FIELDS)
    assert fields - workers_write == set(transactions.OPERATOR_FIELDS)
