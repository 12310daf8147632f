"""Position exits: which positions to close (or cut) now, as reduce-only order intents. Pure.

Given the session's positions, the latest marks, each position's best mark so far and the
policy's ``exits``, ``decide_exits`` returns the intents to send. Each intent's ``signal_id``
names the rule, the symbol and the position state (signed quantity and average price), so the
executor's deterministic ``client_order_id`` makes a repeated exit (the same position, the risk
worker restarted, the intent redelivered) the same order, never a second one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from trading_operator.api.riskpolicy import PositionExits
from trading_workers.domain import OrderIntent, OrderType, Position, Side

STOP_LOSS, TAKE_PROFIT, TRAILING_STOP, GROSS_EXPOSURE = "stopLoss", "takeProfit", "trailingStop", "grossExposure"


@dataclass(frozen=True, slots=True)
class Exit:
    rule: str
    intent: OrderIntent
    reason: str


def position_key(position: Position) -> str:
    return f"{position.qty:g}@{position.avg_price:.6f}"


def _signal(rule: str, position: Position) -> str:
    return f"exit:{rule}:{position.symbol}:{position_key(position)}"


def _close(rule: str, position: Position, qty: float, reason: str) -> Exit:
    side = Side.SELL if position.qty > 0 else Side.BUY
    return Exit(rule, OrderIntent(position.symbol, side, qty, OrderType.MARKET, None, _signal(rule, position)), reason)


def decide_exits(exits: PositionExits, positions: Mapping[str, Position], marks: Mapping[str, float],
                 best: Mapping[str, float]) -> list[Exit]:
    """The exits due now (at most one per position; the cap cuts the largest position only)."""
    if not exits.enabled:
        return []
    out: list[Exit] = []
    closing: set[str] = set()
    for symbol, position in sorted(positions.items()):
        mark = marks.get(symbol)
        if not position.qty or mark is None or position.avg_price <= 0:
            continue
        direction = 1.0 if position.qty > 0 else -1.0
        move_pct = (mark / position.avg_price - 1.0) * 100.0 * direction   # positive: in the position's favour
        qty = abs(position.qty)
        if exits.stop_loss_pct is not None and move_pct <= -exits.stop_loss_pct:
            out.append(_close(STOP_LOSS, position, qty, f"{symbol} {move_pct:+.3f}% against the average price "
                                                         f"(stop loss {exits.stop_loss_pct:g}%)"))
        elif exits.take_profit_pct is not None and move_pct >= exits.take_profit_pct:
            out.append(_close(TAKE_PROFIT, position, qty, f"{symbol} {move_pct:+.3f}% in favour "
                                                           f"(take profit {exits.take_profit_pct:g}%)"))
        elif exits.trailing_stop_pct is not None and symbol in best:
            peak = best[symbol]
            from_peak = (mark / peak - 1.0) * 100.0 * direction if peak > 0 else 0.0
            if from_peak <= -exits.trailing_stop_pct:
                out.append(_close(TRAILING_STOP, position, qty, f"{symbol} {from_peak:+.3f}% from its best "
                                                                 f"{peak:g} (trailing stop {exits.trailing_stop_pct:g}%)"))
        if out and out[-1].intent.symbol == symbol:
            closing.add(symbol)
    if exits.max_gross_exposure is not None:
        exposure = {s: abs(p.qty) * marks[s] for s, p in positions.items() if p.qty and s in marks and s not in closing}
        gross = sum(exposure.values())  # positions being closed above no longer count
        excess = gross - exits.max_gross_exposure
        if excess > 0 and exposure:
            largest = max(exposure, key=lambda s: (exposure[s], s))
            position, mark = positions[largest], marks[largest]
            qty = min(abs(position.qty), math.ceil(excess / mark))
            out.append(_close(GROSS_EXPOSURE, position, qty,
                              f"gross exposure {gross:,.0f} > cap {exits.max_gross_exposure:,.0f}: "
                              f"{largest} cut by {qty:g}"))
    return out


def update_best(best: dict[str, float], positions: Mapping[str, Position], marks: Mapping[str, float]) -> None:
    """Each open position's best mark so far (highest for a long, lowest for a short); flat ones forgotten."""
    for symbol in list(best):
        if not positions.get(symbol) or not positions[symbol].qty:
            del best[symbol]
    for symbol, position in positions.items():
        mark = marks.get(symbol)
        if not position.qty or mark is None:
            continue
        current = best.get(symbol)
        if current is None or (mark > current if position.qty > 0 else mark < current):
            best[symbol] = mark
