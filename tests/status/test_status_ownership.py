"""Status writes without contention (decision 0015), on the real API server.

The operator writes its own status fields and the latches as a JSON Patch whose ``test`` operations
are the latches as it read them (the whole resourceVersion when it clears one); the workers merge
their reports into fields only they write. So a report merged between the operator's read and its
write neither fails the write nor is overwritten by it, while a latch raised in between fails it
(ApiConflict: re-read, re-decide) and survives. Driven through ``reconcile.session.reconcile`` itself,
with views made stale on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.api import Api, G, V
from trading_dev.controlplane import server
from trading_operator import errors, kube
from trading_operator.api import transactions
from trading_operator.api.riskpolicy import RiskPolicy
from trading_operator.api.session import Role, TradingSessionStatus
from trading_operator.reconcile import session as rs
from trading_operator.settings import Settings

pytestmark = pytest.mark.cluster
PLURAL = "tradingsessions"
POLICY = {"apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": "p", "generation": 1},
          "spec": {"mode": "Active"}}
HALT = {"active": True, "source": "Risk", "action": "Halt", "reason": "daily loss 3.2% >= 3%", "id": "h-risk1",
        "since": "2026-12-01T15:00:00Z", "rule": "dailyLoss"}
REDUCING = {"source": "Risk", "rule": "concentration", "reason": "AAPL 60% >= 30%", "id": "r-risk1",
            "since": "2026-12-01T15:00:00Z"}


@pytest.fixture
def operator_kube(control_plane: server.ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    kube.api_client.cache_clear()
    yield
    monkeypatch.undo()
    kube.api_client.cache_clear()


def _session(api: Api, ns: str, name: str) -> dict[str, Any]:
    return api.create(ns, PLURAL, {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": name},
                                   "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"},
                                            "workers": {r.value: {"replicas": 0} for r in Role}}})


async def _reconcile(body: dict[str, Any]) -> dict[str, Any] | None:
    _, written = await rs.reconcile(body, POLICY, dict.fromkeys(Role), Settings(), lambda event: None, None,
                                    children=False)
    return written


async def test_a_report_merged_since_the_read_neither_fails_the_write_nor_is_overwritten(
        api: Api, namespace: str, operator_kube: None) -> None:
    _session(api, namespace, "s1")
    assert await _reconcile(api.get(namespace, PLURAL, "s1")) is not None  # the first status (guard: none yet)
    api.patch(namespace, PLURAL, "s1", {"spec": {"halted": True, "haltReason": "desk check"}})
    view = api.get(namespace, PLURAL, "s1")
    # The executor and the risk worker report after the operator's read (merges of their own fields).
    api.patch_status(namespace, PLURAL, "s1", {"executor": {"openOrders": 7, "heartbeat": "2026-12-01T15:00:01Z"}})
    api.patch_status(namespace, PLURAL, "s1", {"summary": {"orders": 3}})

    written = await _reconcile(view)  # the user's halt, from the stale view: no conflict

    assert written is not None
    status = api.get(namespace, PLURAL, "s1")["status"]
    assert status["halt"]["source"] == "User" and status["halt"]["reason"] == "desk check"
    assert status["tradingState"] == "Halted"
    assert status["executor"]["openOrders"] == 7 and status["summary"]["orders"] == 3, "a report was overwritten"


async def test_a_latch_raised_since_the_read_fails_the_write_and_survives(
        api: Api, namespace: str, operator_kube: None) -> None:
    _session(api, namespace, "s2")
    await _reconcile(api.get(namespace, PLURAL, "s2"))
    api.patch(namespace, PLURAL, "s2", {"spec": {"halted": True}})
    view = api.get(namespace, PLURAL, "s2")
    api.patch_status(namespace, PLURAL, "s2", {"halt": HALT})  # the risk worker's halt, after the read

    with pytest.raises(errors.ApiConflict):
        await _reconcile(view)  # would have raised a User halt over the Risk one

    assert api.get(namespace, PLURAL, "s2")["status"]["halt"]["id"] == "h-risk1"
    # Re-decided on the newest state (what the loop does after a conflict): the Risk halt is kept.
    await _reconcile(api.get(namespace, PLURAL, "s2"))
    status = api.get(namespace, PLURAL, "s2")["status"]
    assert status["halt"]["id"] == "h-risk1" and status["halt"]["source"] == "Risk"

    # Escalation under the same id (Halt -> Flatten) is a change of latch too.
    api.patch(namespace, PLURAL, "s2", {"spec": {"haltReason": "still halted"}})
    view = api.get(namespace, PLURAL, "s2")
    api.patch_status(namespace, PLURAL, "s2", {"reducing": REDUCING})
    with pytest.raises(errors.ApiConflict):
        await kube.json_patch_status(PLURAL, namespace, "s2", transactions.latch_guard(view["status"])
                                     + transactions.status_ops(view["status"], {"phase": "Halted"}, ["phase"]))
    view = api.get(namespace, PLURAL, "s2")
    api.patch_status(namespace, PLURAL, "s2", {"halt": {**HALT, "action": "Flatten"}})
    with pytest.raises(errors.ApiConflict):
        await kube.json_patch_status(PLURAL, namespace, "s2", transactions.latch_guard(view["status"])
                                     + transactions.status_ops(view["status"], {"phase": "Halted"}, ["phase"]))


async def test_a_resume_decides_on_every_input_so_any_write_since_the_read_fails_it(
        api: Api, namespace: str, operator_kube: None) -> None:
    _session(api, namespace, "s3")
    await _reconcile(api.get(namespace, PLURAL, "s3"))
    api.patch(namespace, PLURAL, "s3", {"spec": {"halted": True}})
    await _reconcile(api.get(namespace, PLURAL, "s3"))
    halt_id = api.get(namespace, PLURAL, "s3")["status"]["halt"]["id"]
    api.patch(namespace, PLURAL, "s3", {"spec": {"halted": False}})
    view = api.get(namespace, PLURAL, "s3")
    decided = rs.decide(rs.Observed(rs.TradingSession.model_validate(view), RiskPolicy.model_validate(POLICY), None,
                                    dict.fromkeys(Role),
                                    rs.dt.datetime.now(rs.dt.UTC)), Settings())
    assert decided.status.halt is None, "the stale view would resume"
    # A breach reported after the read: the resume must be decided again, on it.
    api.patch_status(namespace, PLURAL, "s3", {"risk": {"breaches": [
        {"rule": "dailyLoss", "action": "Halt", "value": 3.2, "threshold": 3.0, "message": "daily loss 3.2%"}]}})

    with pytest.raises(errors.ApiConflict):
        await _reconcile(view)

    await _reconcile(api.get(namespace, PLURAL, "s3"))
    status = api.get(namespace, PLURAL, "s3")["status"]
    assert status["halt"]["id"] == halt_id, "resumed past a blocking breach"
    resumable = next(c for c in status["conditions"] if c["type"] == "Resumable")
    assert resumable["reason"] == "ResumeBlocked" and "dailyLoss" in resumable["message"]


async def test_a_refused_write_is_not_taken_for_a_conflict(api: Api, namespace: str, operator_kube: None) -> None:
    # A JSON Patch the schema refuses is an invalid write, not a lost race: no endless re-read and retry.
    _session(api, namespace, "s4")
    await _reconcile(api.get(namespace, PLURAL, "s4"))
    view = api.get(namespace, PLURAL, "s4")
    with pytest.raises(errors.InvalidSpec):
        await kube.json_patch_status(PLURAL, namespace, "s4", transactions.latch_guard(view["status"])
                                     + transactions.status_ops(view["status"], {"phase": "Sideways"}, ["phase"]))


def test_every_status_field_has_one_kind_of_owner() -> None:
    fields = {info.alias or name for name, info in TradingSessionStatus.model_fields.items()}
    owners = [set(transactions.OPERATOR_FIELDS), set(transactions.WORKER_FIELDS), set(transactions.LATCH_FIELDS)]
    assert set().union(*owners) == fields
    assert sum(len(o) for o in owners) == len(fields)
    assert {"phase", "conditions", "tradingState", "lastHalt"} <= owners[0]
