"""Drills: each RiskPolicy action on the whole platform — Alert, Reduce, Halt, Flatten.

The rule used is margin usage (gross exposure over twice the equity), with a threshold so low that
the drill's first position breaches it: the drill controls exactly when the rule enters and leaves
breach. Every other rule maps to the same four actions through the same code (the risk engine's
``evaluate`` and the worker's ``_apply``); their entry conditions are unit-tested in
tests/workers/test_units.py. Each drill asserts what the executor did (orders sent, refused,
cancelled, flattened), then what status and Events say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.drills.harness import Drill

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def margin_rule(action: str, threshold: float = 0.1) -> dict[str, Any]:
    return {"limits": {"marginUsage": {"thresholdPct": threshold, "action": action}}}


def positions(d: Drill) -> dict[str, Decimal]:
    return {r["symbol"]: r["qty"] for r in d._rows("SELECT symbol, qty FROM positions WHERE session = %s")}


def breach_of(st: dict[str, Any], rule: str) -> dict[str, Any] | None:
    return next((b for b in (st.get("risk") or {}).get("breaches") or [] if b["rule"] == rule), None)


def test_alert_records_an_event_and_blocks_nothing(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(policy=margin_rule("Alert"))
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent
    st = d.wait_status(lambda s: breach_of(s, "marginUsage"), "marginUsage in breach (Alert)")
    d.wait_condition("RiskAlert", "True", reason="Alerting")
    event = d.wait_event("RiskBreached")
    assert "marginUsage (Alert)" in event["message"], event
    # Nothing is blocked: no latch, still Active and Ready, and the next buy is sent.
    st = d.status()
    assert "halt" not in st and "reducing" not in st and st["tradingState"] == "Active"
    assert d.condition("RiskBreached", st)["status"] == "False"  # type: ignore[index]
    # Ready stays (or comes back, if a worker's probe flapped on a loaded machine) True: Trading.
    d.wait_condition("Ready", "True", reason="Trading")
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent
    # The same breach re-evaluated every second is one Event with a count, not a storm.
    time.sleep(2)
    breached = [e for e in d.events() if e["reason"] == "RiskBreached"]
    assert len(breached) == 1, breached


def test_reduce_latches_refuses_growth_allows_reduction_and_is_cleared_by_name(
        make_drill: Callable[..., Drill]) -> None:
    d = make_drill(policy=margin_rule("Reduce"))
    assert d.order_outcome(d.send_intent("AAPL", "buy", 20)).sent
    st = d.wait_status(lambda s: s.get("reducing"), "the Reducing latch")
    latch = st["reducing"]
    assert (latch["source"], latch["rule"]) == ("Risk", "marginUsage"), latch
    d.wait_status(lambda s: (s.get("executor") or {}).get("tradingState") == "Reducing", "the executor Reducing")

    # Growth refused, reduction sent.
    grow = d.order_outcome(d.send_intent("AAPL", "buy", 5))
    assert grow.refused and grow.reason == "ReduceOnly" and not grow.reached_exchange, grow
    shrink = d.order_outcome(d.send_intent("AAPL", "sell", 5))
    assert shrink.sent, shrink

    # Reducing holds through many operator reconciles (reconcile interval 0.5 s; each patch wakes one).
    for k in range(6):
        d.patch_spec({"haltReason": f"nudge {k}"})
        time.sleep(0.5)
    st = d.status()
    assert st["tradingState"] == "Reducing" and st["reducing"]["id"] == latch["id"], st
    ready = d.condition("Ready", st)
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Reducing"), ready
    assert d.order_outcome(d.send_intent("AAPL", "buy", 1)).reason == "ReduceOnly"

    # Clearing while still breached is refused, naming the rule.
    d.patch_spec({"clearReducingId": latch["id"]})
    cond = d.wait_condition("Reducing", "True", reason="ClearBlocked")
    assert "marginUsage" in cond["message"], cond
    # Back within limits (the position closed), the same command clears it.
    assert d.order_outcome(d.send_intent("AAPL", "sell", 15)).sent
    d.wait_event("BreachCleared")
    d.patch_spec({"clearReducingId": None})
    d.patch_spec({"clearReducingId": latch["id"]})
    st = d.wait_status(lambda s: "reducing" not in s and s.get("tradingState") == "Active", "Reducing cleared")
    assert st["lastReducing"]["id"] == latch["id"]
    d.wait_event("ReducingCleared")


def test_halt_latches_cancels_open_orders_and_blocks_resume_while_breached(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(policy=margin_rule("Halt"))
    resting = d.order_outcome(d.send_intent("MSFT", "buy", 1, order_type="limit", limit_price=410.0))
    assert resting.sent and resting.status == "accepted", resting
    assert d.order_outcome(d.send_intent("AAPL", "buy", 20)).sent
    st = d.wait_status(lambda s: (s.get("halt") or {}).get("source") == "Risk", "a Risk halt")
    halt = st["halt"]
    assert (halt["action"], halt["rule"]) == ("Halt", "marginUsage"), halt
    d.wait_phase("Halted")
    d.wait_status(lambda s: (s.get("executor") or {}).get("haltHandled") == halt["id"], "onHalt done")
    assert d.wait_order_status(resting.client_order_id, "canceled").status == "canceled"
    refused = d.order_outcome(d.send_intent("AAPL", "sell", 1))
    assert refused.refused and refused.reason == "TradingHalted", refused

    # A resume naming the halt waits while the rule is still breached, and says which rule.
    d.patch_spec({"resumeHaltId": halt["id"]})
    cond = d.wait_condition("Resumable", "False", reason="ResumeBlocked")
    assert "marginUsage" in cond["message"], cond
    assert d.status()["halt"]["id"] == halt["id"]
    # The risk owner raises the limit: the breach clears and the resume goes through.
    d.patch_policy({"limits": {"marginUsage": {"thresholdPct": 90}}})
    st = d.wait_status(lambda s: "halt" not in s and s.get("phase") == "MarketOpen", "resumed", timeout=45)
    assert st["lastHalt"]["id"] == halt["id"]
    assert d.order_outcome(d.send_intent("AAPL", "sell", 1)).sent


def test_flatten_halts_and_closes_the_sessions_positions(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(policy=margin_rule("Flatten"))
    assert d.order_outcome(d.send_intent("AAPL", "buy", 20)).sent
    assert d.order_outcome(d.send_intent("MSFT", "buy", 10)).sent
    st = d.wait_status(lambda s: (s.get("halt") or {}).get("action") == "Flatten", "a Flatten halt")
    halt = st["halt"]
    d.wait_status(lambda s: (s.get("executor") or {}).get("haltHandled") == halt["id"], "flatten done", timeout=45)
    # The executor sent one closing order per position, and the positions are flat.
    closing = [o for o in d.journal_orders() if str(o["signal_id"]).startswith("flatten:")]
    assert {(o["symbol"], o["side"]) for o in closing} == {("AAPL", "sell"), ("MSFT", "sell")}, closing
    assert all(qty == 0 for qty in positions(d).values()), positions(d)
    assert d.order_outcome(d.send_intent("AAPL", "buy", 1)).reason == "TradingHalted"
