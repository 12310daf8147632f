"""Pre-trade checks: the last gate before an order is journaled and sent.

These are the SEC 15c3-5 / FIA style controls from the RiskPolicy's
``orderControls`` plus the session's trading state. They run on every
order intent inside the executor, so they are plain Python over floats and
a few dicts: no I/O, no pydantic, no allocation beyond a tuple key, and
the clock is injected (tests drive it; the benchmark measures it). The
policy is converted once into ``CheckLimits`` when it changes, never per
order.

Every rejection has a ``Reason`` (a stable code that is journaled, logged
and exported as the ``reason`` label of
``trading_pretrade_rejections_total``). The order of the checks matters
only for which reason is reported when several apply; stateful checks
(duplicate window, order-rate bucket) run last and only consume state when
the order passes, so a rejected order never uses up rate budget.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trading_operator.api import metric_names as mn
from trading_operator.api.riskpolicy import ExtendedHours, OrderControls


class TradingState(enum.StrEnum):
    """What the executor may do (NautilusTrader's trading states)."""

    ACTIVE = "Active"
    REDUCING = "Reducing"   # only orders that reduce exposure
    HALTED = "Halted"       # no new orders; cancels allowed


class Reason(enum.StrEnum):
    """Why a pre-trade check refused an order (stable codes: journal, logs, metrics)."""

    TRADING_HALTED = "TradingHalted"
    REDUCE_ONLY = "ReduceOnly"
    RESTRICTED_SYMBOL = "RestrictedSymbol"
    INVALID_ORDER = "InvalidOrder"
    NO_REFERENCE_PRICE = "NoReferencePrice"
    PRICE_COLLAR = "PriceCollar"
    MAX_ORDER_NOTIONAL = "MaxOrderNotional"
    MAX_POSITION = "MaxPosition"
    MAX_OPEN_ORDERS = "MaxOpenOrders"
    DUPLICATE_ORDER = "DuplicateOrder"
    ORDER_RATE = "OrderRate"
    EXTENDED_HOURS = "ExtendedHours"   # PreMarket/AfterHours: not allowed, or a market order when limit-only
    STALE_INTENT = "StaleIntent"       # the intent waited on the bus longer than maxIntentAgeSeconds


REJECTIONS = mn.collector(mn.PRETRADE_REJECTIONS)
PASSED = mn.collector(mn.PRETRADE_PASSED)
_REJECTION_CHILDREN = {reason: REJECTIONS.labels(reason.value) for reason in Reason}


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """The policy's order controls as plain numbers (built once per policy generation)."""

    max_order_notional: float = 100_000.0
    max_position_notional: float = 250_000.0
    max_orders_per_second: float = 50.0
    price_collar_pct: float = 5.0
    duplicate_window_seconds: float = 1.0
    max_open_orders: int = 200
    restricted_symbols: frozenset[str] = frozenset()
    extended_allowed: bool = True
    extended_limit_only: bool = False
    extended_notional_scale: float = 1.0
    max_intent_age_seconds: float = 30.0

    @classmethod
    def from_controls(cls, controls: OrderControls, scale: float = 1.0,
                      extended: ExtendedHours | None = None) -> CheckLimits:
        """``scale`` < 1 tightens notional, position and rate limits (market circuit breaker);
        ``extended`` is the policy's extendedHours (PreMarket and AfterHours)."""
        extended = extended or ExtendedHours()
        return cls(
            extended_allowed=extended.allowed, extended_limit_only=extended.limit_orders_only,
            extended_notional_scale=extended.max_order_notional_scale,
            max_order_notional=controls.max_order_notional * scale,
            max_position_notional=controls.max_position_notional * scale,
            max_orders_per_second=controls.max_orders_per_second * scale,
            price_collar_pct=controls.price_collar_pct,
            duplicate_window_seconds=controls.duplicate_window_seconds,
            max_open_orders=controls.max_open_orders,
            restricted_symbols=frozenset(controls.restricted_symbols),
            max_intent_age_seconds=controls.max_intent_age_seconds,
        )


class TokenBucket:
    """Order-rate limit: ``rate`` tokens per second, burst of ``max(1, rate)``."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.last = now

    def retune(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = min(self.tokens, self.capacity)

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.last) * self.rate
        self.last = now
        if tokens > self.capacity:
            tokens = self.capacity
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


_DupKey = tuple[str, int, float, float]


class PreTradeChecks:
    """Stateful checker (rate bucket, duplicate window) over immutable ``CheckLimits``.

    Not thread-safe: one executor, one event loop.
    """

    def __init__(self, limits: CheckLimits, clock: Callable[[], float] = time.monotonic,
                 count_metrics: bool = True) -> None:
        self.limits = limits
        self.clock = clock
        self.count_metrics = count_metrics
        self.bucket = TokenBucket(limits.max_orders_per_second, clock())
        self.recent: dict[_DupKey, float] = {}
        self._expiry: deque[tuple[float, _DupKey]] = deque()  # (time recorded, key), oldest first

    def update_limits(self, limits: CheckLimits) -> None:
        """Apply a new policy generation without losing the rate/duplicate state."""
        self.limits = limits
        self.bucket.retune(limits.max_orders_per_second)

    def check(self, symbol: str, side_sign: int, qty: float, limit_price: float | None,
              last_price: float | None, position_qty: float, open_orders: int,
              state: TradingState, *, extended_hours: bool = False, market: bool = False,
              age: float | None = None) -> Reason | None:
        """``None`` if the order may be sent, else the first reason it may not.

        ``position_qty`` is the signed exposure the order would add to (position plus
        the remaining quantity of open orders); ``open_orders`` counts orders open now.
        ``extended_hours``: the phase is PreMarket or AfterHours; ``market``: a market order.
        ``age``: seconds since the intent was written to the bus (None: unknown, not checked).
        """
        reason = self._check(symbol, side_sign, qty, limit_price, last_price, position_qty, open_orders, state,
                             extended_hours, market, age)
        if self.count_metrics:
            if reason is None:
                PASSED.inc()
            else:
                _REJECTION_CHILDREN[reason].inc()
        return reason

    def _check(self, symbol: str, side_sign: int, qty: float, limit_price: float | None,
               last_price: float | None, position_qty: float, open_orders: int,
               state: TradingState, extended_hours: bool = False, market: bool = False,
               age: float | None = None) -> Reason | None:
        limits = self.limits
        if state is TradingState.HALTED:
            return Reason.TRADING_HALTED
        if age is not None and 0.0 < limits.max_intent_age_seconds < age:
            return Reason.STALE_INTENT
        if extended_hours and (not limits.extended_allowed or (market and limits.extended_limit_only)):
            return Reason.EXTENDED_HOURS
        if not (qty > 0.0) or math.isinf(qty) or side_sign not in (1, -1):
            return Reason.INVALID_ORDER
        new_position = position_qty + side_sign * qty
        reduces = abs(new_position) < abs(position_qty) and (new_position == 0.0 or
                                                             (new_position > 0.0) == (position_qty > 0.0))
        if state is TradingState.REDUCING and not reduces:
            return Reason.REDUCE_ONLY
        if symbol in limits.restricted_symbols:
            return Reason.RESTRICTED_SYMBOL
        if limit_price is not None and not (limit_price > 0.0 and limit_price < math.inf):
            return Reason.INVALID_ORDER
        if last_price is None or not (last_price > 0.0):
            return Reason.NO_REFERENCE_PRICE
        if limit_price is not None:
            if abs(limit_price - last_price) * 100.0 > limits.price_collar_pct * last_price:
                return Reason.PRICE_COLLAR
            price = limit_price
        else:
            price = last_price
        max_notional = limits.max_order_notional
        if extended_hours:
            max_notional *= limits.extended_notional_scale
        if qty * price > max_notional:
            return Reason.MAX_ORDER_NOTIONAL
        if not reduces and abs(new_position) * price > limits.max_position_notional:
            return Reason.MAX_POSITION
        if open_orders >= limits.max_open_orders:
            return Reason.MAX_OPEN_ORDERS
        now = self.clock()
        key: _DupKey = (symbol, side_sign, qty, -1.0 if limit_price is None else limit_price)
        window = limits.duplicate_window_seconds
        if window > 0.0:
            self._expire(now, window)
            if key in self.recent:
                return Reason.DUPLICATE_ORDER
        if not self.bucket.take(now):
            return Reason.ORDER_RATE
        if window > 0.0:
            self.recent[key] = now
            self._expiry.append((now, key))
        return None

    def _expire(self, now: float, window: float) -> None:
        """Forget orders older than the window: amortised O(1) per order, no periodic sweep (no latency spikes)."""
        expiry, recent = self._expiry, self.recent
        while expiry and now - expiry[0][0] >= window:
            at, key = expiry.popleft()
            if recent.get(key) == at:
                del recent[key]


def reason_codes() -> Iterable[str]:
    """Every reason code (documentation and tests)."""
    return (r.value for r in Reason)
