"""Drill: the user's halt switch (spec.halted) stops the executor, and un-setting it resumes trading.

Runbook: ``kubectl patch tradingsession X --type=merge -p '{"spec":{"halted":true,"haltReason":"..."}}'``
stops every new order at once and moves the session to Halted; ``halted: false`` resumes it.
Asserted from what the executor did (journal, and the simulated exchange's own record of submits),
then from what status and Events say.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.drills.harness import Drill

pytestmark = [pytest.mark.drill, pytest.mark.e2e]

REASON = "drill: desk asked to stop"


def test_user_halt_stops_orders_and_resume_restarts_them(make_drill: Callable[..., Drill]) -> None:
    d = make_drill()

    # Trading: a market buy reaches the exchange and fills.
    first = d.order_outcome(d.send_intent("AAPL", "buy", 10))
    assert first.sent, first
    assert first.status in ("accepted", "partially_filled", "filled"), first

    # The user halts.
    d.patch_spec({"halted": True, "haltReason": REASON})
    st = d.wait_status(lambda s: s.get("phase") == "Halted" and (s.get("halt") or {}).get("active"),
                       "phase Halted with an active halt")
    halt = st["halt"]
    assert halt["source"] == "User" and halt["reason"] == REASON, halt
    assert st["tradingState"] == "Halted"
    halted = d.condition("Halted", st)
    assert halted is not None and halted["status"] == "True" and halted["reason"] == "HaltedByUser", halted
    # The executor applied onHalt (CancelOpenOrders) for this very halt: the operator's resume guard needs it.
    d.wait_status(lambda s: (s.get("executor") or {}).get("haltHandled") == halt["id"],
                  f"the executor to report halt {halt['id']} handled")

    # While halted, an intent is refused by the pre-trade check and never reaches the exchange.
    submits_before = len(d.exchange().submits)
    refused = d.order_outcome(d.send_intent("AAPL", "buy", 10))
    assert refused.refused and refused.reason == "TradingHalted", refused
    assert not refused.reached_exchange
    assert d.metric("executor", "trading_executor_halted") == 1.0
    assert len(d.exchange().submits) == submits_before, "the exchange received a submit while halted"
    reasons = d.event_reasons()
    assert "Halted" in reasons and "PhaseChanged" in reasons, reasons

    # The user resumes: the session walks back to the phase the calendar dictates and trading restarts.
    d.patch_spec({"halted": False, "haltReason": None})
    st = d.wait_status(lambda s: s.get("phase") == "MarketOpen" and not (s.get("halt") or {}).get("active"),
                       "MarketOpen with no halt in force")
    assert d.condition("Halted", st)["status"] == "False"  # type: ignore[index]
    d.wait_event("Resumed")
    d.wait_status(lambda s: (s.get("executor") or {}).get("tradingState") == "Active", "the executor Active again")
    assert d.metric("executor", "trading_executor_halted") == 0.0
    resumed = d.order_outcome(d.send_intent("MSFT", "buy", 5))
    assert resumed.sent, resumed
    assert resumed.status in ("accepted", "partially_filled", "filled"), resumed

    # The journal holds exactly the drill's two orders; the refusal is journaled apart.
    assert [o["client_order_id"] for o in d.journal_orders()] == [first.client_order_id, resumed.client_order_id]
    assert [r["reason"] for r in d.journal_rejections()] == ["TradingHalted"]
