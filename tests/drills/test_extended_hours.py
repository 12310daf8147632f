"""Drill: limited trading in PreMarket — the RiskPolicy's extendedHours, enforced by the executor.

With ``extendedHours: {allowed: true, limitOrdersOnly: true, maxOrderNotionalScale: 0.5}`` a market
order sent in PreMarket is refused by the pre-trade checks (reason ExtendedHours, journaled, never
at the exchange); a limit order is sent, reaches the simulated exchange marked extended-hours (the
flag Alpaca receives) and fills there; a limit order above half the notional limit is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.drills.harness import Drill, wait_until
from trading_workers import bus as bus_mod
from trading_workers.brokers.simulated import initial_price

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def test_premarket_refuses_a_market_order_and_accepts_a_limit_order(make_drill: Callable[..., Drill]) -> None:
    price = initial_price(7, "AAPL")
    d = make_drill(wait="PreMarket", at="2026-11-24T09:20:00", speed=10.0,
                   policy={"orderControls": {"maxOrderNotional": 100 * price},
                           "extendedHours": {"allowed": True, "limitOrdersOnly": True,
                                             "maxOrderNotionalScale": 0.5}})
    # Trading in PreMarket: the checklist passed, the executor Active, quotes on the bus.
    d.wait_status(lambda st: st.get("phase") == "PreMarket" and st.get("tradingState") == "Active"
                  and (st.get("executor") or {}).get("tradingState") == "Active", "the executor Active in PreMarket")
    wait_until(lambda: d.redis.xlen(f"{d.prefix}:stream:{bus_mod.MARKET_DATA}") >= 2 * len(d.symbols), timeout=30,
               what="quotes on the bus")

    market = d.order_outcome(d.send_intent("AAPL", "buy", 5))
    assert market.refused and market.reason == "ExtendedHours" and not market.reached_exchange, market

    coid = d.send_intent("AAPL", "buy", 5, order_type="limit", limit_price=round(price * 1.02, 2))
    limit = d.wait_order_status(coid, "filled")
    assert limit.reached_exchange and limit.status == "filled", limit
    assert d.exchange().orders[coid].extended_hours

    too_big = d.order_outcome(d.send_intent("AAPL", "buy", 60, order_type="limit",
                                            limit_price=round(price * 1.0, 2)))
    assert too_big.refused and too_big.reason == "MaxOrderNotional", too_big   # 60 x price > 0.5 x 100 x price
    assert d.status()["phase"] == "PreMarket", "the drill must run before the open"
