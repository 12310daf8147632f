"""Drills: the gates — pre-market checklist, suspend, live trading, market circuit breaker, silent feed.

Each drives the whole local platform into the situation and asserts what the executor did (or that
no executor ran at all), then that status says exactly that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.drills.harness import Drill
from trading_workers.brokers.simulated import initial_price

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def test_failing_pre_market_checklist_sends_nothing_and_the_day_ends_in_initializing(
        make_drill: Callable[..., Drill]) -> None:
    # 15:50 New York at x20: the market is open, but without a risk worker nobody vouches for the
    # data's freshness, so the checklist fails; at 16:00 (30 s later) the day is over.
    d = make_drill(risk=False, at="2026-11-24T15:50:00", speed=20, wait="PreMarket")
    cond = d.wait_condition("PreMarketChecks", "False", reason="ChecksFailing")
    assert "market data fresh" in cond["message"], cond
    st = d.status()
    assert st["tradingState"] == "Halted" and d.condition("Ready", st)["reason"] == "PreMarketChecksFailing"  # type: ignore[index]
    d.wait_status(lambda s: (s.get("executor") or {}).get("brokerConnected"), "executor up")
    submits = len(d.exchange().submits)
    refused = d.order_outcome(d.send_intent("AAPL", "buy", 10))
    assert refused.refused and refused.reason == "TradingHalted" and not refused.reached_exchange, refused
    assert len(d.exchange().submits) == submits
    assert d.status()["phase"] == "PreMarket", "MarketOpen must wait for the checklist"
    # The close comes: the session leaves PreMarket for Initializing (never MarketClose unopened).
    st = d.wait_status(lambda s: s.get("phase") == "Initializing", "back to Initializing at the close", timeout=60)
    last = st["transitions"][-1]
    assert (last["from"], last["to"]) == ("PreMarket", "Initializing"), last
    assert "MarketOpen" not in [t["to"] for t in st["transitions"]]


def test_suspend_scales_to_zero_and_ready_says_suspended(make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    d.patch_spec({"suspend": True})
    ready = d.wait_condition("Ready", "False", reason="Suspended")
    assert "suspended" in ready["message"]
    d.wait_condition("WorkersAvailable", "False", reason="Suspended")
    d.wait_condition("Suspended", "True", reason="Suspended")
    st = d.wait_status(lambda s: all(c["desired"] == 0 for c in s["workers"].values()), "every role desired 0")
    assert st["tradingState"] == "Halted"
    deadline = time.monotonic() + 20
    while d.replicas("executor") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not d.replicas("executor"), "an executor still runs while suspended"
    submits = len(d.exchange().submits)
    coid = d.send_intent("AAPL", "buy", 1)
    time.sleep(2)
    assert d.outcome_now(coid) is None and len(d.exchange().submits) == submits


def test_live_trading_needs_the_label_and_allow_live_and_no_executor_runs_without(
        make_drill: Callable[..., Drill]) -> None:
    # The simulated broker with paper: false: the same gate applies to every non-paper session.
    d = make_drill(spec={"broker": {"paper": False}}, wait=None)
    cond = d.wait_condition("LiveTradingAllowed", "False", reason="LiveTradingNotAllowed")
    assert "allowLive" in cond["message"] and "trading.dev/live=enabled" in cond["message"], cond
    d.wait_event("LiveTradingRefused")
    st = d.wait_status(lambda s: s.get("workers", {}).get("executor", {}).get("desired") == 0, "executor held at 0")
    assert st["tradingState"] == "Halted"
    time.sleep(2)
    assert not d.replicas("executor"), "an executor was started for a live session that was not cleared"
    coid = d.send_intent("AAPL", "buy", 1)
    time.sleep(2)
    assert d.outcome_now(coid) is None and not d.exchange().submits, "an order reached the broker"
    # Clearing one half is not enough.
    d.patch_policy({"allowLive": True})
    time.sleep(2)
    assert d.condition("LiveTradingAllowed")["status"] == "False"  # type: ignore[index]
    assert not d.replicas("executor")
    # Both halves: the executor is started, connects, and trades.
    d.core.patch_namespace(d.namespace, {"metadata": {"labels": {"trading.dev/live": "enabled"}}})
    d.patch_spec({"haltReason": "wake"})  # the namespace is not watched: any change reconciles
    d.wait_condition("LiveTradingAllowed", "True", reason="LiveAllowed", timeout=30)
    d.wait_trading(timeout=90)
    # The intent queued before the clearance was handled only once an executor existed (never sent
    # before); a new one is sent.
    assert d.order_outcome(coid, timeout=30).status is not None
    out = d.order_outcome(d.send_intent("AAPL", "buy", 1), timeout=30)
    assert out.sent, out


def test_circuit_breaker_scales_per_order_limits(make_drill: Callable[..., Drill]) -> None:
    # The simulated VIX opens between 12 and 20: a vixLevel of 5 trips the breaker at once.
    price = initial_price(7, "AAPL")
    d = make_drill(policy={"orderControls": {"maxOrderNotional": 20 * price},
                           "circuitBreaker": {"enabled": True, "volatilitySymbol": "VIX", "vixLevel": 5,
                                              "indexDropPct": 50, "limitScale": 0.3, "action": "Alert"}})
    st = d.wait_status(lambda s: ((s.get("risk") or {}).get("circuitBreaker") or {}).get("tripped"), "tripped")
    breaker = st["risk"]["circuitBreaker"]
    assert breaker["limitScale"] == 0.3 and "VIX" in breaker["reason"], breaker
    assert breaker["scaledLimits"]["maxOrderNotional"] == pytest.approx(20 * price * 0.3)
    d.wait_condition("CircuitBreaker", "True", reason="Tripped")
    # 10 shares pass the policy's limit (20 shares' worth) but not the scaled one (6 shares' worth).
    refused = d.order_outcome(d.send_intent("AAPL", "buy", 10))
    assert refused.refused and refused.reason == "MaxOrderNotional" and not refused.reached_exchange, refused
    assert d.order_outcome(d.send_intent("AAPL", "buy", 5)).sent
    # The breaker resets (its level raised): the policy's own limit applies again.
    d.patch_policy({"circuitBreaker": {"vixLevel": 500}})
    d.wait_condition("CircuitBreaker", "False", reason="NotTripped")
    d.wait_status(lambda s: not ((s.get("risk") or {}).get("circuitBreaker") or {}).get("tripped"), "reset")
    time.sleep(1)  # the executor sees the reset through its session watch
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent


def test_silent_feed_turns_data_fresh_false_and_halts(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(policy={"limits": {"dataFreshness": {"maxAgeSeconds": 3, "action": "Halt"}}})
    d.wait_condition("DataFresh", "True", reason="QuotesFresh")
    # The feed goes silent: market data scaled to zero.
    d.patch_spec({"workers": {"marketData": {"replicas": 0}}})
    cond = d.wait_condition("DataFresh", "False", reason="QuotesStale", timeout=30)
    assert "AAPL" in cond["message"], cond
    st = d.wait_status(lambda s: (s.get("halt") or {}).get("rule") == "dataFreshness", "a dataFreshness halt")
    assert st["halt"]["source"] == "Risk"
    refused = d.order_outcome(d.send_intent("AAPL", "buy", 1))
    assert refused.refused and refused.reason == "TradingHalted", refused
    assert "QuotesStale" in d.event_reasons()
