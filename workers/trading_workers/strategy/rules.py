"""Rule-based strategies: ``momentum`` and ``mean-reversion``. Pure: quotes in, order intents out.

Both are target-position strategies. Each symbol has a desired direction
(long +1, flat 0, short -1) computed from a rolling window of the last
``lookback`` + 1 prices; when the desired direction changes, one intent
moves the position there (``orderQty`` per unit of direction, so a flip
from long to short is one order of twice the size). A persistent view
never re-sends orders.

The intent's ``signal_id`` is ``<strategy>:<symbol>:<quote seq>``: a quote
the bus redelivers maps to the same signal and so, in the executor, to the
same ``client_order_id``. Quotes at or below the last seen ``seq`` of a
symbol are ignored for the same reason.

Parameters (``StrategySpec.params``):

``lookback``   window length in quotes (default 20, at least 2)
``threshold``  momentum: return over the window that counts as a trend
               (fraction, default 0.001); mean-reversion: z-score of the
               last price against the window that counts as stretched
               (default 1.5)
``exitZ``      mean-reversion only: back to flat once |z| falls below this
               (default 0.25)
``orderQty``   shares per unit of direction (default 1)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from trading_workers.domain import OrderIntent, Quote, Side
from trading_workers.errors import ConfigError


def _param(params: Mapping[str, Any], key: str, default: float, *, minimum: float, integer: bool = False) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"strategy param {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise ConfigError(f"strategy param {key} must be a number, got {value!r}") from exc
    if not math.isfinite(number) or number < minimum or (integer and number != int(number)):
        raise ConfigError(f"strategy param {key} must be {'an integer ' if integer else ''}>= {minimum}, got {value!r}")
    return number


class RuleStrategy:
    """Shared mechanics: windows, duplicate quotes, target positions, intents."""

    name = "rule"
    default_threshold = 0.0

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = params or {}
        self.lookback = int(_param(params, "lookback", 20, minimum=2, integer=True))
        self.threshold = _param(params, "threshold", self.default_threshold, minimum=0)
        self.order_qty = _param(params, "orderQty", 1, minimum=1e-9)
        self.windows: dict[str, deque[float]] = {}
        self.target: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}

    def desired(self, window: deque[float]) -> int | None:
        """Desired direction for a full window, or None to keep the current one."""
        raise NotImplementedError

    def on_quote(self, quote: Quote) -> OrderIntent | None:
        if quote.seq > 0:
            if quote.seq <= self.last_seq.get(quote.symbol, 0):
                return None
            self.last_seq[quote.symbol] = quote.seq
        window = self.windows.get(quote.symbol)
        if window is None:
            window = self.windows[quote.symbol] = deque(maxlen=self.lookback + 1)
        window.append(quote.price)
        if len(window) <= self.lookback:
            return None
        desired = self.desired(window)
        current = self.target.get(quote.symbol, 0)
        if desired is None or desired == current:
            return None
        self.target[quote.symbol] = desired
        delta = desired - current
        return OrderIntent(symbol=quote.symbol, side=Side.BUY if delta > 0 else Side.SELL,
                           qty=abs(delta) * self.order_qty, signal_id=f"{self.name}:{quote.symbol}:{quote.seq}")


class Momentum(RuleStrategy):
    """Follow the trend: long after a rise of more than ``threshold`` over the window, short after a fall."""

    name = "momentum"
    default_threshold = 0.001

    def desired(self, window: deque[float]) -> int | None:
        change = window[-1] / window[0] - 1.0
        if change > self.threshold:
            return 1
        if change < -self.threshold:
            return -1
        return None


class MeanReversion(RuleStrategy):
    """Fade stretches: short when the price is ``threshold`` standard deviations above its mean, long below."""

    name = "mean-reversion"
    default_threshold = 1.5

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.exit_z = _param(params or {}, "exitZ", 0.25, minimum=0)

    def desired(self, window: deque[float]) -> int | None:
        history = list(window)[:-1]
        mean = sum(history) / len(history)
        var = sum((p - mean) ** 2 for p in history) / len(history)
        if var <= 0:
            return None
        z = (window[-1] - mean) / math.sqrt(var)
        if z > self.threshold:
            return -1
        if z < -self.threshold:
            return 1
        if abs(z) < self.exit_z:
            return 0
        return None


STRATEGIES: dict[str, type[RuleStrategy]] = {"momentum": Momentum, "mean-reversion": MeanReversion}


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> RuleStrategy:
    try:
        return STRATEGIES[name](params)
    except KeyError as exc:
        raise ConfigError(f"no rule-based strategy named {name!r} (have {sorted(STRATEGIES)})") from exc
