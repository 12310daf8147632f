"""Drills: position exits — the risk worker closes or cuts positions through the executor, once.

Asserted from the journal (the exit orders the executor journaled and sent, with their signal ids)
and the positions that result; then that a restarted risk worker sends nothing again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.drills.harness import Drill, wait_until
from trading_workers.brokers.simulated import initial_price

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def exit_orders(d: Drill, rule: str) -> list[dict[str, object]]:
    return [o for o in d.journal_orders() if str(o["signal_id"]).startswith(f"exit:{rule}:")]


def position(d: Drill, symbol: str) -> Decimal:
    rows = d._rows("SELECT symbol, qty FROM positions WHERE session = %s")
    return next((r["qty"] for r in rows if r["symbol"] == symbol), Decimal(0))


def test_gross_exposure_cap_cuts_the_largest_position_once(make_drill: Callable[..., Drill]) -> None:
    price = initial_price(7, "AAPL")
    d = make_drill(policy={"exits": {"enabled": True, "maxGrossExposure": 5.5 * price}})
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent
    orders = wait_until(lambda: exit_orders(d, "grossExposure") or None, timeout=30,
                        what="the gross-exposure exit order")
    assert len(orders) == 1 and orders[0]["side"] == "sell" and orders[0]["symbol"] == "AAPL", orders
    # Journaled before it was sent, then sent: the exchange accepted (and here filled) it.
    sent = d.wait_order_status(str(orders[0]["client_order_id"]), "accepted", "partially_filled", "filled")
    assert sent.reached_exchange, sent
    wait_until(lambda: position(d, "AAPL") <= 5 or None, timeout=30, what="the position cut under the cap")
    assert "grossExposure" in d.wait_event("PositionExit")["message"]
    # The risk worker restarts (SIGKILL; the runtime starts it again): no second exit for this position.
    risk = d.replicas("risk")[0]
    assert risk.proc is not None
    old_pid = risk.proc.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: ((r := d.replicas("risk")) and r[0].proc is not None and r[0].proc.pid != old_pid
               and r[0].alive()) or None, timeout=60, what="the risk worker restarted")
    d.wait_status(lambda s: (s.get("risk") or {}).get("updatedAt"), "a report from the new risk worker")
    time.sleep(5)
    assert len(exit_orders(d, "grossExposure")) == 1


def test_stop_loss_or_take_profit_closes_the_position(make_drill: Callable[..., Drill]) -> None:
    # Thresholds this tight trip on the first quote that moves: which one depends on the direction.
    d = make_drill(policy={"exits": {"enabled": True, "stopLossPct": 0.0001, "takeProfitPct": 0.0001}})
    assert d.order_outcome(d.send_intent("MSFT", "buy", 7)).sent
    wait_until(lambda: (exit_orders(d, "stopLoss") + exit_orders(d, "takeProfit")) or None, timeout=60,
               what="a stop-loss or take-profit exit")
    wait_until(lambda: position(d, "MSFT") == 0 or None, timeout=30, what="the position closed")
    orders = exit_orders(d, "stopLoss") + exit_orders(d, "takeProfit")
    assert len(orders) == 1 and orders[0]["side"] == "sell" and Decimal(str(orders[0]["qty"])) == 7, orders
