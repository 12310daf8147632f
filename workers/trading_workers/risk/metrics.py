"""Portfolio risk figures, as pure functions over plain numbers.

Kept free of I/O so each figure is unit-tested against a hand computation
and the risk worker is only plumbing. Percentages are 0..100; P&L figures
are signed (a loss is negative); ``*_pct`` limits in the RiskPolicy are
compared against the loss/usage side (positive numbers).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from trading_workers.domain import Fill, Position


def daily_pnl_pct(equity: float, start_equity: float) -> float:
    """P&L since the start of the day, percent of start-of-day equity (negative is a loss)."""
    if start_equity <= 0:
        return 0.0
    return (equity / start_equity - 1.0) * 100.0


def drawdown_pct(equity: float, peak_equity: float) -> float:
    """Peak-to-current equity drop, percent of the peak (0 at a new high)."""
    if peak_equity <= 0 or equity >= peak_equity:
        return 0.0
    return (peak_equity - equity) / peak_equity * 100.0


def concentration_pct(exposures: Mapping[str, float]) -> float:
    """Largest single position as percent of gross exposure (0 without exposure)."""
    gross = sum(abs(v) for v in exposures.values())
    if gross <= 0:
        return 0.0
    return max(abs(v) for v in exposures.values()) / gross * 100.0


def margin_usage_pct(gross_exposure: float, equity: float, leverage: float = 2.0) -> float:
    """Gross exposure as percent of the margin available (equity times Reg-T style leverage)."""
    if equity <= 0:
        return 100.0 if gross_exposure > 0 else 0.0
    return gross_exposure / (equity * leverage) * 100.0


def returns(prices: Sequence[float]) -> list[float]:
    """Simple returns of a price series."""
    return [b / a - 1.0 for a, b in itertools.pairwise(prices) if a > 0]


def pnl_scenarios(exposures: Mapping[str, float], history: Mapping[str, Sequence[float]],
                  lookback: int) -> list[float]:
    """Historical simulation: today's positions revalued with each of the last ``lookback`` returns."""
    series = {s: returns(history.get(s, ()))[-lookback:] for s, v in exposures.items() if v}
    if not series:
        return []
    n = min(len(r) for r in series.values())
    return [sum(exposures[s] * r[len(r) - n + i] for s, r in series.items()) for i in range(n)]


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def historical_var_pct(scenarios: Sequence[float], equity: float, confidence: float,
                       horizon_scale: float = 1.0) -> float:
    """Value-at-risk at ``confidence``, percent of equity (a positive loss; 0 if the tail is a gain).

    ``horizon_scale`` scales per-step scenarios to the limit's horizon (square-root-of-time).
    """
    if not scenarios or equity <= 0:
        return 0.0
    loss = -quantile(scenarios, 1.0 - confidence) * horizon_scale
    return max(0.0, loss / equity * 100.0)


def win_rate(fills: Iterable[Fill]) -> tuple[float, int]:
    """(percent of closing trades with a positive realized P&L, number of closing trades)."""
    positions: dict[str, Position] = {}
    wins = trades = 0
    for fill in fills:
        position = positions.setdefault(fill.symbol, Position(fill.symbol))
        before = position.realized_pnl
        closing = position.qty != 0 and (position.qty > 0) != (fill.side.sign > 0)
        position.apply(fill)
        if closing:
            trades += 1
            if position.realized_pnl > before:
                wins += 1
    return (wins / trades * 100.0 if trades else 100.0), trades


def correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    n = min(len(a), len(b))
    if n < 3:
        return None
    a, b = a[-n:], b[-n:]
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va <= 0 or vb <= 0:
        return None
    return cov / math.sqrt(va * vb)


def average_pairwise_correlation(history: Mapping[str, Sequence[float]], symbols: Iterable[str]) -> float | None:
    """Mean correlation of returns over every pair of ``symbols`` (None with fewer than two)."""
    rets = {s: returns(history.get(s, ())) for s in symbols}
    names = sorted(s for s, r in rets.items() if len(r) >= 3)
    values = [c for i, x in enumerate(names) for y in names[i + 1:]
              if (c := correlation(rets[x], rets[y])) is not None]
    return sum(values) / len(values) if values else None


def drop_pct(reference: float, last: float) -> float:
    """How far ``last`` is below ``reference``, percent (0 if above)."""
    if reference <= 0 or last >= reference:
        return 0.0
    return (reference - last) / reference * 100.0


def sharpe_ratio(equities: Sequence[float]) -> float | None:
    """Mean over standard deviation of the returns between successive equity values (per step, not
    annualized); None with fewer than three values or no variation."""
    steps = returns(equities)
    if len(steps) < 2:
        return None
    sd = statistics.pstdev(steps)
    if sd <= 0:
        return None
    return statistics.fmean(steps) / sd
