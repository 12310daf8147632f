"""The daily report's figures (``trading_workers.report``) against a day computed by hand.

The day (docs/daily-report.md uses the same one):

=====  ===================  ======  ====  ===  =====  =========================
order  signal id            symbol  side  qty  price  closes
=====  ===================  ======  ====  ===  =====  =========================
o1     momentum:AAPL:1      AAPL    buy   10   100
o2     momentum:AAPL:2      AAPL    sell  10   103    10 x (103-100) = +30
o3     momentum:MSFT:3      MSFT    buy   5    200
o4     exit:stopLoss:MSFT   MSFT    sell  5    190    5 x (190-200) = -50
o5     momentum:AAPL:4      AAPL    buy   4    100
o6     drill-6              AAPL    sell  2    105    2 x (105-100) = +10
=====  ===================  ======  ====  ===  =====  =========================

AAPL is left long 2 @ 100, marked at 106: unrealized 2 x 6 = +12. Three pre-trade rejections:
momentum:AAPL:5 (PriceCollar), momentum:MSFT:6 (PriceCollar), drill-7 on GME (RestrictedSymbol).
Equity snapshots 100, 110, 99, 108.9: returns +10 %, -10 %, +10 %.
"""

from __future__ import annotations

import math

import pytest

from trading_workers import report
from trading_workers.domain import Fill, Position, Side

ORDERS = [("o1", "momentum:AAPL:1", "AAPL", Side.BUY, 10, 100.0), ("o2", "momentum:AAPL:2", "AAPL", Side.SELL, 10, 103.0),
          ("o3", "momentum:MSFT:3", "MSFT", Side.BUY, 5, 200.0), ("o4", "exit:stopLoss:MSFT", "MSFT", Side.SELL, 5, 190.0),
          ("o5", "momentum:AAPL:4", "AAPL", Side.BUY, 4, 100.0), ("o6", "drill-6", "AAPL", Side.SELL, 2, 105.0)]


def the_day() -> report.DailyReport:
    orders = [report.OrderRow(coid, sid, sym, "filled") for coid, sid, sym, *_ in ORDERS]
    fills = [Fill(coid, sym, side, qty, price, float(i), f"f{i}")
             for i, (coid, _, sym, side, qty, price) in enumerate(ORDERS)]
    rejections = [report.RejectionRow("momentum:AAPL:5", "AAPL", "PriceCollar"),
                  report.RejectionRow("momentum:MSFT:6", "MSFT", "PriceCollar"),
                  report.RejectionRow("drill-7", "GME", "RestrictedSymbol")]
    return report.build(orders=orders, fills=fills, rejections=rejections, equities=[100.0, 110.0, 99.0, 108.9],
                        positions={"AAPL": Position("AAPL", 2, 100.0, 40.0), "MSFT": Position("MSFT", 0, 0.0, -50.0)},
                        marks={"AAPL": 106.0, "MSFT": 180.0})


def test_session_figures() -> None:
    r = the_day()
    t = r.total
    assert t.realized_pnl == pytest.approx(30 - 50 + 10)
    assert t.unrealized_pnl == pytest.approx(12.0)
    assert (t.trades, t.wins, t.losses) == (3, 2, 1)
    assert t.win_rate_pct == pytest.approx(200 / 3)
    assert t.average_win == pytest.approx(20.0)          # (30 + 10) / 2
    assert t.average_loss == pytest.approx(-50.0)
    assert t.profit_factor == pytest.approx(0.8)         # 40 / 50
    assert (t.orders, t.fills, t.rejected) == (6, 6, 3)
    assert r.rejections_by_reason == {"PriceCollar": 2, "RestrictedSymbol": 1}
    assert r.orders_by_status == {"filled": 6}
    # returns 0.1, -0.1, 0.1: mean 1/30, population sd sqrt(2)/15 -> sqrt(2)/4
    assert r.sharpe == pytest.approx(math.sqrt(2) / 4)
    assert r.max_drawdown_pct == pytest.approx(10.0)     # 110 -> 99


def test_per_symbol() -> None:
    s = the_day().symbols
    assert list(s) == ["AAPL", "GME", "MSFT"]
    assert (s["AAPL"].realized_pnl, s["AAPL"].unrealized_pnl, s["AAPL"].trades) == (pytest.approx(40.0), 12.0, 2)
    assert (s["AAPL"].win_rate_pct, s["AAPL"].average_win, s["AAPL"].average_loss) == (100.0, 20.0, None)
    assert s["AAPL"].profit_factor is None               # no losing trade: undefined
    assert (s["AAPL"].orders, s["AAPL"].fills, s["AAPL"].rejected) == (4, 4, 1)
    assert (s["MSFT"].realized_pnl, s["MSFT"].win_rate_pct, s["MSFT"].profit_factor) == (-50.0, 0.0, 0.0)
    assert (s["MSFT"].orders, s["MSFT"].fills, s["MSFT"].rejected, s["MSFT"].unrealized_pnl) == (2, 2, 1, 0.0)
    assert (s["GME"].orders, s["GME"].rejected, s["GME"].trades, s["GME"].win_rate_pct) == (0, 1, 0, None)


def test_per_strategy_by_the_closing_order() -> None:
    s = the_day().strategies
    assert list(s) == ["exit", "manual", "momentum"]
    assert (s["momentum"].orders, s["momentum"].fills, s["momentum"].rejected) == (4, 4, 2)
    assert (s["momentum"].realized_pnl, s["momentum"].trades) == (pytest.approx(30.0), 1)
    assert (s["exit"].realized_pnl, s["exit"].trades, s["exit"].orders) == (-50.0, 1, 1)
    assert (s["manual"].realized_pnl, s["manual"].rejected) == (10.0, 1)
    assert all(f.unrealized_pnl is None for f in s.values())   # positions are per symbol only


def test_edges() -> None:
    assert report.strategy_of("momentum:AAPL:1") == "momentum"
    assert report.strategy_of("drill-1") == report.strategy_of(":x") == "manual"
    assert report.win_rate_pct([]) is None and report.profit_factor([5.0]) is None
    assert report.profit_factor([0.0, -2.0]) == 0.0
    assert report.sharpe([100.0, 101.0]) is None and report.sharpe([1.0, 1.0, 1.0]) is None
    assert report.max_drawdown_pct([]) == 0.0 and report.max_drawdown_pct([1.0, 2.0, 3.0]) == 0.0
    # A flat trade (0 P&L) counts as a trade, neither a win nor a loss.
    flat = report.trades([Fill("a", "X", Side.BUY, 1, 10.0, 0.0), Fill("b", "X", Side.SELL, 1, 10.0, 1.0)])
    assert [t.pnl for t in flat] == [0.0] and report.win_rate_pct([0.0]) == 0.0
    # A reversal closes the old side (one trade) and opens the new one.
    rev = report.trades([Fill("a", "X", Side.BUY, 2, 10.0, 0.0), Fill("b", "X", Side.SELL, 5, 12.0, 1.0),
                         Fill("c", "X", Side.BUY, 3, 11.0, 2.0)])
    assert [t.pnl for t in rev] == [pytest.approx(4.0), pytest.approx(3.0)]
