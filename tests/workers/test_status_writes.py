"""Status writes of the risk worker against the real API server: halts latch, Reducing, conditions, summary."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.workers.conftest import SessionHandle
from trading_workers.risk.status import SessionStatus
from trading_workers.runtime import Kube

pytestmark = pytest.mark.cluster


async def test_halt_latches_and_never_touches_spec(make_session: Callable[..., SessionHandle], control_plane: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    session = make_session(symbols=["AAPL"])
    writer = SessionStatus(Kube(), session.namespace, session.name)

    await writer.request_reducing(reason="daily loss 2.1% >= 2%", condition_reason="DailyLossReduce")
    status = session.status()
    assert status["tradingState"] == "Reducing"
    assert status["phase"] == "MarketOpen", "the phase is the operator's, untouched"

    first = await writer.raise_halt(source="Risk", reason="daily loss 3.2% >= 3%", condition_reason="DailyLossHalt")
    assert re.fullmatch(r"h-[a-z0-9]{1,60}", first)
    second = await writer.raise_halt(source="Risk", reason="drawdown 11% >= 10%", condition_reason="MaxDrawdownHalt")
    assert second == first
    obj = session.get()
    assert obj["status"]["halt"]["reason"] == "daily loss 3.2% >= 3%" and obj["status"]["halt"]["source"] == "Risk"
    assert obj["spec"]["halted"] is False
    cond = [c for c in obj["status"]["conditions"] if c["type"] == "RiskBreached"]
    assert len(cond) == 1 and cond[0]["reason"] == "MaxDrawdownHalt" and cond[0]["status"] == "True"

    # Someone else's condition survives our read-modify-write of the list.
    session.patch_status({"conditions": [*obj["status"]["conditions"], {
        "type": "Ready", "status": "True", "reason": "Fine", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    await writer.clear_breach()
    conds = {c["type"]: c for c in session.status()["conditions"]}
    assert conds["RiskBreached"]["status"] == "False" and conds["Ready"]["reason"] == "Fine"
    assert session.status()["halt"]["active"] is True, "clearing the breach does not resume: halts latch"

    await writer.write_summary({"orders": 3, "fills": 2, "dailyPnlPct": -3.2})
    assert session.status()["summary"]["orders"] == 3
