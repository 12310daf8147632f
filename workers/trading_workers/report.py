"""The daily report: the session day's performance, as pure functions over the journal's rows.

Why pure: every figure is defined in ``docs/daily-report.md`` and unit-tested against a hand
computation (``tests/workers/test_report.py``); the risk worker only reads the journal, calls
``build`` and writes the result to the journal, the session's status and its metrics.

What the journal can tell, and what it cannot:

* **Per symbol**: everything (orders, fills, rejections, trades, realized P&L; unrealized P&L
  from the journal's positions at the latest marks).
* **Per strategy**: the strategy is the part of an order's ``signal_id`` before the first ``:``
  (``momentum:AAPL:17`` -> ``momentum``; a position exit ``exit:stopLoss:…`` -> ``exit``; an id
  without ``:`` -> ``manual``). Orders, fills, rejections, trades and realized P&L are attributed
  to the strategy of the order whose fill *closes* the trade. Positions are kept per symbol, not
  per strategy, so unrealized P&L, Sharpe and drawdown exist only for the whole session.
* **Trades** are the day's fills replayed from flat, per symbol: a fill that reduces a position is
  one closing trade whose P&L is the P&L it realizes. A position carried in from an earlier day
  is not part of the day's replay, so its close counts as an opening fill.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from trading_workers.domain import Fill, Position

MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class OrderRow:
    """The part of a journaled order the report reads."""

    client_order_id: str
    signal_id: str
    symbol: str
    status: str


@dataclass(frozen=True, slots=True)
class RejectionRow:
    """The part of a journaled pre-trade rejection the report reads."""

    signal_id: str
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class Trade:
    """One closing fill: the symbol, the strategy of its order, and the P&L it realized."""

    symbol: str
    strategy: str
    pnl: float


@dataclass(slots=True)
class Figures:
    """The figures reported for the session, one symbol or one strategy."""

    realized_pnl: float = 0.0
    unrealized_pnl: float | None = None   # None: the journal cannot tell (per strategy)
    trades: int = 0
    wins: int = 0
    losses: int = 0
    win_rate_pct: float | None = None
    average_win: float | None = None
    average_loss: float | None = None
    profit_factor: float | None = None
    orders: int = 0
    fills: int = 0
    rejected: int = 0


@dataclass(slots=True)
class DailyReport:
    total: Figures
    sharpe: float | None
    max_drawdown_pct: float
    rejections_by_reason: dict[str, int]
    orders_by_status: dict[str, int]
    symbols: dict[str, Figures] = field(default_factory=dict)
    strategies: dict[str, Figures] = field(default_factory=dict)


def strategy_of(signal_id: str) -> str:
    """The strategy that produced a signal id (``<strategy>:…``); ``manual`` when it names none."""
    head, sep, _ = signal_id.partition(":")
    return head if sep and head else MANUAL


def trades(fills: Iterable[Fill], strategy_by_order: Mapping[str, str] | None = None) -> list[Trade]:
    """The day's closing trades: ``fills`` (oldest first) replayed from flat, per symbol."""
    strategy_by_order = strategy_by_order or {}
    book: dict[str, Position] = {}
    out: list[Trade] = []
    for fill in fills:
        position = book.setdefault(fill.symbol, Position(fill.symbol))
        closing = position.qty != 0 and (position.qty > 0) != (fill.side.sign > 0)
        before = position.realized_pnl
        position.apply(fill)
        if closing:
            out.append(Trade(fill.symbol, strategy_by_order.get(fill.client_order_id, MANUAL),
                             position.realized_pnl - before))
    return out


def win_rate_pct(pnls: Sequence[float]) -> float | None:
    """Winning trades (P&L > 0) as percent of all closing trades; None without trades."""
    return sum(1 for p in pnls if p > 0) / len(pnls) * 100.0 if pnls else None


def average_win(pnls: Sequence[float]) -> float | None:
    """Mean P&L of the winning trades; None without one."""
    wins = [p for p in pnls if p > 0]
    return statistics.fmean(wins) if wins else None


def average_loss(pnls: Sequence[float]) -> float | None:
    """Mean P&L of the losing trades (a negative number); None without one."""
    losses = [p for p in pnls if p < 0]
    return statistics.fmean(losses) if losses else None


def profit_factor(pnls: Sequence[float]) -> float | None:
    """Gross profit over gross loss (both positive); None without a losing trade (undefined)."""
    gross_loss = -sum(p for p in pnls if p < 0)
    if gross_loss <= 0:
        return None
    return sum(p for p in pnls if p > 0) / gross_loss


def sharpe(equities: Sequence[float]) -> float | None:
    """Mean over population standard deviation of the simple returns between successive equity
    snapshots (per snapshot interval, not annualized); None with fewer than three snapshots or no
    variation."""
    steps = [b / a - 1.0 for a, b in itertools.pairwise(equities) if a > 0]
    if len(steps) < 2:
        return None
    sd = statistics.pstdev(steps)
    if sd <= 0:
        return None
    return statistics.fmean(steps) / sd


def max_drawdown_pct(equities: Sequence[float]) -> float:
    """Largest fall from a running peak of equity, percent of that peak (0 if equity never fell)."""
    peak, worst = -math.inf, 0.0
    for equity in equities:
        peak = max(peak, equity)
        if peak > 0:
            worst = max(worst, (peak - equity) / peak * 100.0)
    return worst


def _trade_figures(figures: Figures, pnls: Sequence[float]) -> Figures:
    figures.realized_pnl = sum(pnls)
    figures.trades = len(pnls)
    figures.wins = sum(1 for p in pnls if p > 0)
    figures.losses = sum(1 for p in pnls if p < 0)
    figures.win_rate_pct = win_rate_pct(pnls)
    figures.average_win = average_win(pnls)
    figures.average_loss = average_loss(pnls)
    figures.profit_factor = profit_factor(pnls)
    return figures


def unrealized(positions: Mapping[str, Position], marks: Mapping[str, float]) -> dict[str, float]:
    """Per symbol: qty times (mark - average price); a symbol without a mark is valued at its average price."""
    return {s: p.qty * (marks.get(s, p.avg_price) - p.avg_price) for s, p in positions.items() if p.qty != 0}


def build(*, orders: Sequence[OrderRow], fills: Sequence[Fill], rejections: Sequence[RejectionRow],
          equities: Sequence[float], positions: Mapping[str, Position], marks: Mapping[str, float]) -> DailyReport:
    """The report for one session day.

    ``orders``, ``fills`` and ``rejections`` are the day's rows (fills oldest first), ``equities`` the
    day's P&L snapshots' equity (oldest first), ``positions`` the journal's positions now and ``marks``
    the latest price per symbol.
    """
    strategy_by_order = {o.client_order_id: strategy_of(o.signal_id) for o in orders}
    day_trades = trades(fills, strategy_by_order)
    open_pnl = unrealized(positions, marks)

    total = _trade_figures(Figures(), [t.pnl for t in day_trades])
    total.unrealized_pnl = sum(open_pnl.values())
    total.orders, total.fills, total.rejected = len(orders), len(fills), len(rejections)

    symbol_names = sorted({o.symbol for o in orders} | {f.symbol for f in fills} | {r.symbol for r in rejections}
                          | set(open_pnl))
    symbols: dict[str, Figures] = {}
    for name in symbol_names:
        figures = _trade_figures(Figures(), [t.pnl for t in day_trades if t.symbol == name])
        figures.unrealized_pnl = open_pnl.get(name, 0.0)
        figures.orders = sum(1 for o in orders if o.symbol == name)
        figures.fills = sum(1 for f in fills if f.symbol == name)
        figures.rejected = sum(1 for r in rejections if r.symbol == name)
        symbols[name] = figures

    strategy_names = sorted(set(strategy_by_order.values()) | {strategy_of(r.signal_id) for r in rejections})
    strategies: dict[str, Figures] = {}
    for name in strategy_names:
        figures = _trade_figures(Figures(), [t.pnl for t in day_trades if t.strategy == name])
        figures.orders = sum(1 for o in orders if strategy_by_order[o.client_order_id] == name)
        figures.fills = sum(1 for f in fills if strategy_by_order.get(f.client_order_id, MANUAL) == name)
        figures.rejected = sum(1 for r in rejections if strategy_of(r.signal_id) == name)
        strategies[name] = figures

    return DailyReport(total=total, sharpe=sharpe(equities), max_drawdown_pct=max_drawdown_pct(equities),
                       rejections_by_reason=dict(sorted(Counter(r.reason for r in rejections).items())),
                       orders_by_status=dict(sorted(Counter(o.status for o in orders).items())),
                       symbols=symbols, strategies=strategies)
