"""Worker status writes against the real API server: the shared transactions latch, never touch spec."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.workers.conftest import SessionHandle
from trading_operator.api import transactions
from trading_operator.api.status import HaltAction, HaltSource, ReducingSource
from trading_workers.runtime import Kube
from trading_workers.session_status import CONFLICTS, EventRecorder, SessionStatus

pytestmark = pytest.mark.cluster


async def test_latches_through_the_shared_transactions(make_session: Callable[..., SessionHandle], control_plane: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    session = make_session(symbols=["AAPL"])
    writer = SessionStatus(Kube(), session.namespace, session.name)

    (rid, changed), _ = await writer.transact(lambda st, now: transactions.request_reducing(
        st, source=ReducingSource.RISK, reason="daily loss 2.1% >= 2%", now=now, rule="dailyLoss"))
    assert changed and re.fullmatch(r"r-[a-z0-9]{10}", rid)
    (again, changed), _ = await writer.transact(lambda st, now: transactions.request_reducing(
        st, source=ReducingSource.RISK, reason="other", now=now, rule="concentration"))
    assert (again, changed) == (rid, False), "a latch in force is never overwritten"
    status = session.status()
    assert status["reducing"]["rule"] == "dailyLoss" and status["phase"] == "MarketOpen"

    (first, _), _ = await writer.transact(lambda st, now: transactions.raise_halt(
        st, source=HaltSource.RISK, reason="daily loss 3.2% >= 3%", now=now, rule="dailyLoss"))
    assert re.fullmatch(r"h-[a-z0-9]{1,60}", first)
    (second, _), _ = await writer.transact(lambda st, now: transactions.raise_halt(
        st, source=HaltSource.RISK, reason="drawdown 11% >= 10%", now=now, action=HaltAction.FLATTEN,
        rule="maxDrawdown"))
    assert second == first, "one halt in force; a Flatten escalates it under the same id"
    obj = session.get()
    assert obj["status"]["halt"]["action"] == "Flatten" and obj["status"]["halt"]["source"] == "Risk"
    assert obj["spec"]["halted"] is False

    # A concurrent writer's field survives: only the fields the transaction changed are written.
    session.patch_status({"summary": {"orders": 3}})
    await writer.transact(lambda st, now: transactions.clear_reducing(st, now))
    status = session.status()
    assert "reducing" not in status and status["lastReducing"]["id"] == rid
    assert status["summary"]["orders"] == 3 and status["halt"]["active"] is True


async def test_events_are_deduplicated_and_counted(make_session: Callable[..., SessionHandle], control_plane: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    session = make_session(symbols=["AAPL"])
    kube = Kube()
    recorder = EventRecorder(kube, session.namespace, session.name, "risk")
    for _ in range(3):
        await recorder.record("Warning", "RiskBreached", "concentration (Reduce): 60% >= 30%")
    await recorder.record("Normal", "BreachCleared", "concentration (Reduce) back within its limit")
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client)
    events = await asyncio.to_thread(core.list_namespaced_event, session.namespace,
                                     field_selector=f"involvedObject.name={session.name}")
    by_reason = {e.reason: e for e in events.items}
    assert by_reason["RiskBreached"].count == 3 and by_reason["BreachCleared"].count == 1
    assert len([e for e in events.items if e.reason == "RiskBreached"]) == 1


class _Interleaved(Kube):
    """A Kube whose session reads are followed, before the caller writes, by another writer's status merge."""

    def __init__(self, session: SessionHandle, writes: list[dict[str, Any]]) -> None:
        super().__init__()
        self.session, self.writes, self.reads = session, writes, 0

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        obj = await super().get_session(namespace, name)
        self.reads += 1
        if self.writes:
            self.session.patch_status(self.writes.pop(0))
        return obj


async def test_a_report_between_read_and_write_is_no_conflict_a_latch_is(
        make_session: Callable[..., SessionHandle], control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Decision 0015: transact is guarded by the latches it decides on, not by the whole resourceVersion.
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    session = make_session(symbols=["AAPL"])
    conflicts = CONFLICTS.labels("transact")
    before = conflicts._value.get()
    kube = _Interleaved(session, [{"executor": {"openOrders": 4}}])
    runs: list[str] = []

    def reduce(st: Any, now: Any) -> Any:
        runs.append("run")
        return transactions.request_reducing(st, source=ReducingSource.RISK, reason="concentration", now=now,
                                             rule="concentration")

    (rid, changed), _ = await SessionStatus(kube, session.namespace, session.name).transact(reduce)
    assert changed and len(runs) == 1 and conflicts._value.get() == before, "the executor's report was a conflict"
    status = session.status()
    assert status["reducing"]["id"] == rid and status["executor"]["openOrders"] == 4

    # Another writer raises a halt between this worker's read and its write: re-read, re-run, keep theirs.
    theirs = {"active": True, "source": "Risk", "action": "Halt", "reason": "drawdown", "id": "h-theirs",
              "since": "2026-12-01T15:00:00Z"}
    kube = _Interleaved(session, [{"halt": theirs}])
    runs.clear()

    def halt(st: Any, now: Any) -> Any:
        runs.append("run")
        return transactions.raise_halt(st, source=HaltSource.RISK, reason="daily loss", now=now, rule="dailyLoss")

    (hid, changed), _ = await SessionStatus(kube, session.namespace, session.name).transact(halt)
    assert (hid, changed) == ("h-theirs", False) and len(runs) == 2
    assert conflicts._value.get() == before + 1
    assert session.status()["halt"]["id"] == "h-theirs"
