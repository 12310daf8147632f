"""Drills: the end-of-day reconciliation on the simulated exchange (its own persisted state) and the journal.

A clean day reconciles clean at the close, and a restarted executor does not reconcile it again.
A day with injected differences — a fill the journal lost,
a position the journal holds differently, an order at the exchange the journal never saw — is
reconciled on demand (``kubectl trading reconcile``): each difference is named exactly (symbol,
quantities, order, fill), the unknown order is adopted (the simulated exchange is the session's own),
``Reconciled`` turns False and a Warning Event names the differences; the result is in the journal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable

import psycopg
import pytest
import redis.asyncio as aioredis

from tests.conftest import ROOT
from tests.drills.harness import Drill, wait_until
from trading_workers.brokers.simulated import SimulatedExchange
from trading_workers.domain import Order, OrderType, Side

pytestmark = [pytest.mark.drill, pytest.mark.e2e]
PLUGIN = ROOT / "plugin" / "kubectl-trading"


def plugin(d: Drill, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PLUGIN), *args, "--kubeconfig", str(d.platform.kubeconfig), "-n", d.namespace],
                          capture_output=True, text=True, timeout=120)


def reconciliation(st: dict[str, object]) -> dict[str, object]:
    return ((st.get("executor") or {}).get("reconciliation") or {})  # type: ignore[union-attr,return-value]


def test_a_clean_day_reconciles_clean_at_the_close(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(at="2026-11-24T15:48:00", speed=10.0)   # 72 s of wall time to the close
    assert d.wait_order_status(d.send_intent("AAPL", "buy", 10), "filled").status == "filled"
    assert d.wait_order_status(d.send_intent("AAPL", "sell", 4), "filled").status == "filled"
    assert d.wait_order_status(d.send_intent("MSFT", "buy", 3), "filled").status == "filled"

    st = d.wait_status(lambda s: reconciliation(s).get("trigger") == "Close", "the close reconciliation", timeout=150)
    rec = reconciliation(st)
    fills = d._rows("SELECT fill_id FROM fills WHERE session = %s")
    assert rec["clean"] is True and rec["day"] == "2026-11-24", rec
    assert (rec["positions"], rec["fills"], rec.get("differences", [])) == (2, len(fills), [])
    cond = d.wait_condition("Reconciled", "True", reason="ReconciledClean")
    assert f"2 positions, {len(fills)} fills" in cond["message"]
    assert "ReconciledClean" in d.event_reasons() and "ReconciliationMismatch" not in d.event_reasons()
    assert d.metric("executor", "trading_reconciliation_differences", kind="PositionMismatch") == 0.0
    rows = d._rows("SELECT * FROM reconciliations WHERE session = %s")
    assert [(r["trigger"], r["clean"], str(r["day"]), r["broker"]) for r in rows] == [
        ("Close", True, "2026-11-24", "simulated")]

    # A restarted executor, still in a close phase, finds the day's close reconciliation in the journal.
    executor = d.replicas("executor")[0]
    assert executor.proc is not None
    old_pid, killed = executor.proc.pid, dt.datetime.now(dt.UTC)
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: ((r := d.replicas("executor")) and r[0].proc is not None and r[0].proc.pid != old_pid
               and r[0].alive()) or None, timeout=60, what="the executor restarted")
    st = d.wait_status(lambda s: (s.get("executor") or {}).get("brokerConnected") and _after(
        (s.get("executor") or {}).get("heartbeat"), killed + dt.timedelta(seconds=3)), "the new executor's report")
    assert st["phase"] in ("MarketClose", "AfterHours"), st["phase"]
    time.sleep(5)
    rows = d._rows("SELECT trigger FROM reconciliations WHERE session = %s")
    assert [r["trigger"] for r in rows] == ["Close"]


def _after(stamp: object, when: dt.datetime) -> bool:
    return isinstance(stamp, str) and dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) >= when


def test_injected_differences_are_named_exactly_and_raise_a_condition_and_an_event(
        make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    buy = d.send_intent("AAPL", "buy", 10)
    assert d.wait_order_status(buy, "filled").status == "filled"
    assert d.wait_order_status(d.send_intent("MSFT", "buy", 3), "filled").status == "filled"
    shown = plugin(d, "reconcile", d.name)
    assert shown.returncode == 0 and "clean" in shown.stdout, shown.stdout + shown.stderr

    # 1. The journal loses a fill (the broker still reports it); 2. it holds one MSFT more than the exchange;
    # 3. an order reaches the exchange that the journal never saw.
    with psycopg.connect(d.dsn, autocommit=True) as conn:
        lost = conn.execute("SELECT fill_id, qty FROM fills WHERE session = %s AND client_order_id = %s "
                            "ORDER BY ts LIMIT 1", (d.key, buy)).fetchone()
        assert lost is not None
        conn.execute("DELETE FROM fills WHERE session = %s AND fill_id = %s", (d.key, lost[0]))
        conn.execute("UPDATE positions SET qty = qty + 1 WHERE session = %s AND symbol = 'MSFT'", (d.key,))
    asyncio.run(_stray_order(d))

    asked = plugin(d, "reconcile", d.name)
    assert asked.returncode == 1, asked.stdout + asked.stderr   # differences found
    st = d.status()
    rec = reconciliation(st)
    named = sorted((x["kind"], x["symbol"], x.get("brokerQty"), x.get("journalQty"), x.get("orderId"),
                    x.get("fillId"), x["action"]) for x in rec["differences"])  # type: ignore[attr-defined]
    assert named == sorted([
        ("FillMissingInJournal", "AAPL", float(lost[1]), None, buy, lost[0], "Flagged"),
        ("PositionMismatch", "MSFT", 3.0, 4.0, None, None, "Flagged"),
        ("UnknownBrokerOrder", "AAPL", 5.0, None, "stray-by-hand", None, "Adopted"),
    ]), rec
    assert (rec["clean"], rec["adopted"], rec["flagged"], rec["trigger"]) == (False, 1, 2, "Request")
    for line in ("FillMissingInJournal", "PositionMismatch", "UnknownBrokerOrder", "stray-by-hand", lost[0]):
        assert line in asked.stdout, asked.stdout

    for kind, count in (("FillMissingInJournal", 1), ("PositionMismatch", 1), ("UnknownBrokerOrder", 1),
                        ("FillMissingAtBroker", 0)):   # the gauge behind the chart's TradingReconciliationMismatch
        assert d.metric("executor", "trading_reconciliation_differences", kind=kind) == count, kind
    cond = d.wait_condition("Reconciled", "False", reason="ReconciliationMismatch")
    assert "PositionMismatch MSFT: broker 3, journal 4" in cond["message"]
    event = d.wait_event("ReconciliationMismatch")
    assert event["type"] == "Warning"
    assert f"FillMissingInJournal AAPL: broker {float(lost[1]):g}, journal none, order {buy}" in event["message"]
    # The unknown order was adopted (journaled under the broker's signal id) and the result is in the journal.
    adopted = [o for o in d.journal_orders() if o["client_order_id"] == "stray-by-hand"]
    assert len(adopted) == 1 and adopted[0]["signal_id"] == "broker:stray-by-hand"
    rows = d._rows("SELECT * FROM reconciliations WHERE session = %s ORDER BY id")
    assert [(r["trigger"], r["clean"], r["adopted"], r["flagged"]) for r in rows] == [
        ("Request", True, 0, 0), ("Request", False, 1, 2)]
    assert len(rows[1]["differences"]) == 3


async def _stray_order(d: Drill) -> None:
    """A far-away limit order placed at the session's exchange by someone other than the executor."""
    client = aioredis.Redis.from_url(d.redis_url)
    try:
        exchange = SimulatedExchange(seed=7, redis_client=client, key_prefix=d.prefix)
        await exchange.connect()
        placed = await exchange.submit(Order("stray-by-hand", "AAPL", Side.BUY, 5, OrderType.LIMIT, limit_price=1.0))
        assert placed.status.is_open
    finally:
        await client.aclose()
