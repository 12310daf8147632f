"""Drill: a short session day on the simulated exchange ends with its daily report.

The day starts eight session minutes before the close (ten times wall speed). The drill buys, sells
part of it back, buys another symbol and has one order refused; asks for the report on demand
(``kubectl trading report --refresh``); then waits for the close. The final report must be in
``status.report`` and in the journal's ``daily_reports`` (the same document), consistent with the
journal's own orders, fills and rejections, exported as metrics, and printed by the plugin.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT
from tests.drills.harness import Drill, wait_until

pytestmark = [pytest.mark.drill, pytest.mark.e2e]
PLUGIN = ROOT / "plugin" / "kubectl-trading"


def plugin(d: Drill, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PLUGIN), *args, "--kubeconfig", str(d.platform.kubeconfig), "-n", d.namespace],
                          capture_output=True, text=True, timeout=120)


def journal_fills(d: Drill) -> list[dict[str, Any]]:
    return d._rows("SELECT * FROM fills WHERE session = %s ORDER BY ts, fill_id")


def test_the_day_ends_with_its_report(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(at="2026-11-24T15:52:00", speed=10.0)
    buy = d.send_intent("AAPL", "buy", 10)
    assert d.wait_order_status(buy, "filled").status == "filled"
    sell = d.send_intent("AAPL", "sell", 4)
    assert d.wait_order_status(sell, "filled").status == "filled"
    assert d.wait_order_status(d.send_intent("MSFT", "buy", 3), "filled").status == "filled"
    refused = d.order_outcome(d.send_intent("GME", "buy", 1))   # restricted by the drill's policy
    assert refused.refused

    # On demand: the plugin asks, the risk worker answers with an intraday report.
    asked = plugin(d, "report", d.name, "--refresh")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "intraday" in asked.stdout and "AAPL" in asked.stdout

    # The close: the final report, in status and in the journal.
    st = d.wait_status(lambda s: s.get("phase") in ("MarketClose", "AfterHours")
                       and (s.get("report") or {}).get("final"), "the final daily report", timeout=90)
    report = st["report"]
    orders, fills, rejections = d.journal_orders(), journal_fills(d), d.journal_rejections()
    total = report["total"]
    assert (total["orders"], total["fills"], total["rejected"]) == (len(orders), len(fills), len(rejections))
    assert report["rejectionsByReason"] == dict(Counter(r["reason"] for r in rejections))
    # AAPL: bought 10 (one or more fills), sold 4: one closing trade per sell fill, realizing
    # 4 x (sell price - average buy price).
    aapl = {f["name"]: f for f in report["symbols"]}["AAPL"]
    buys = [f for f in fills if f["symbol"] == "AAPL" and f["side"] == "buy"]
    sells = [f for f in fills if f["symbol"] == "AAPL" and f["side"] == "sell"]
    avg_buy = sum(f["qty"] * f["price"] for f in buys) / sum(f["qty"] for f in buys)
    realized = sum(f["qty"] * (f["price"] - avg_buy) for f in sells)
    assert aapl["trades"] == len(sells) and aapl["realizedPnl"] == pytest.approx(float(realized), abs=1e-3)
    assert (aapl["orders"], aapl["fills"]) == (2, len(buys) + len(sells))
    assert {f["name"] for f in report["strategies"]} == {"manual"}   # drill signal ids name no strategy
    assert report["total"]["realizedPnl"] == pytest.approx(float(realized), abs=1e-3)  # MSFT is still open

    rows = d._rows("SELECT day, final, report FROM daily_reports WHERE session = %s")
    assert len(rows) == 1 and rows[0]["final"] and str(rows[0]["day"]) == report["day"] == "2026-11-24"
    stored = rows[0]["report"] if isinstance(rows[0]["report"], dict) else json.loads(rows[0]["report"])
    assert stored == report

    assert d.metric("risk", "trading_report_final") == 1.0
    assert d.metric("risk", "trading_report_trades", symbol="AAPL") == aapl["trades"]
    for reason, count in report["rejectionsByReason"].items():
        assert d.metric("risk", "trading_report_rejections", reason=reason) == count

    shown = plugin(d, "report", d.name)
    assert shown.returncode == 0, shown.stderr
    assert "final" in shown.stdout and "SCOPE" in shown.stdout
    session_row = next(line for line in shown.stdout.splitlines() if line.strip().startswith("session"))
    assert f"{total['realizedPnl']:,.2f}" in session_row


def test_the_risk_worker_applies_snapshot_retention(make_drill: Callable[..., Drill]) -> None:
    """spec.journal.pnlSnapshots reaches the risk worker, which applies it at start (and hourly)."""
    d = make_drill(spec={"journal": {"pnlSnapshots": {"downsampleAfterDays": 7, "downsampleSeconds": 300,
                                                      "deleteAfterDays": 365}}})
    d.wait_status(lambda s: (s.get("risk") or {}).get("updatedAt"), "a risk report")
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    bucket = now - dt.timedelta(days=10, seconds=(now.timestamp() % 300))   # the start of a 5-minute bucket
    old = [now - dt.timedelta(days=400), now - dt.timedelta(days=400, minutes=1),
           bucket, bucket + dt.timedelta(minutes=1), bucket + dt.timedelta(minutes=2)]
    with psycopg.connect(d.dsn, autocommit=True) as conn:
        for at in old:
            conn.execute("INSERT INTO pnl_snapshots (session, at, equity, realized_pnl, unrealized_pnl, "
                         "daily_pnl_pct, drawdown_pct, exposure) VALUES (%s, %s, 1, 0, 0, 0, 0, 0)", (d.key, at))
    risk = d.replicas("risk")[0]
    assert risk.proc is not None
    old_pid = risk.proc.pid
    os.kill(old_pid, signal.SIGKILL)   # the runtime starts it again; retention runs at start

    def remaining() -> list[dt.datetime] | None:
        rows = d._rows("SELECT at FROM pnl_snapshots WHERE session = %s ORDER BY at")
        older = [r["at"] for r in rows if r["at"] < now - dt.timedelta(days=7)]
        return older if older == [bucket + dt.timedelta(minutes=2)] else None

    wait_until(remaining, timeout=60, what="the old snapshots downsampled and deleted")
    # What retention removed is archived in the journal (for the next backup), not lost.
    archived = d._rows("SELECT at, removed FROM pnl_snapshots_archive WHERE session = %s ORDER BY at")
    assert [(r["at"], r["removed"]) for r in archived] == [
        (old[1], "deleted"), (old[0], "deleted"), (bucket, "downsampled"), (bucket + dt.timedelta(minutes=1),
                                                                             "downsampled")]
