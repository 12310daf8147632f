"""Quotes → per-symbol price windows → one batch → model signals. Pure and synchronous.

Why a separate module: the worker loop (asyncio, bus, metrics) and the
decision logic change for different reasons. Here, with no runtime, the
tests feed quotes and read signals directly.

Signal rule (kept deliberately simple, target-direction style): a symbol's
desired direction is long when its score ≥ ``threshold``, short when
≤ ``-threshold``, else no view. A signal is emitted only when the desired
direction *changes* to long or short, so a persistent view does not
re-send an order on every quote. ``signal_id`` derives from the symbol and
the quote's sequence number, so a quote redelivered by the bus (at-least-once)
maps to the same signal and, downstream, the same ``client_order_id``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trading_workers.domain import Quote, Side, Signal
from trading_workers.inference.predictor import OK, REASON_NAN, BatchResult, Predictor, Verdict

DEFAULT_THRESHOLD = 0.3   # in units of the window's RMS return (the model's output scale)
DEFAULT_ORDER_QTY = 1.0


class WindowBook:
    """The last ``width`` prices of each symbol, and which symbols changed since the last batch."""

    def __init__(self, symbols: Sequence[str], width: int) -> None:
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.width = width
        self.prices = np.zeros((len(self.symbols), width), dtype=np.float64)
        self.count = np.zeros(len(self.symbols), dtype=np.int64)
        self.last_seq = np.full(len(self.symbols), -1, dtype=np.int64)
        self.last_quote: list[Quote | None] = [None] * len(self.symbols)
        self.dirty = np.zeros(len(self.symbols), dtype=bool)
        self.ignored = 0   # unknown symbols and redelivered quotes

    def observe(self, quote: Quote) -> bool:
        """Record a quote; True when its symbol now has a full window that changed."""
        i = self.index.get(quote.symbol)
        if i is None or (quote.seq > 0 and quote.seq <= self.last_seq[i]):
            self.ignored += 1
            return False
        row = self.prices[i]
        row[:-1] = row[1:]
        row[-1] = quote.price
        self.count[i] += 1
        if quote.seq > 0:
            self.last_seq[i] = quote.seq
        self.last_quote[i] = quote
        if self.count[i] >= self.width:
            self.dirty[i] = True
            return True
        return False

    def take_dirty(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ``[k, width]`` windows) of the changed symbols; clears their dirty flag."""
        idx = np.flatnonzero(self.dirty)
        self.dirty[idx] = False
        return idx, self.prices[idx]


@dataclass
class StepResult:
    signals: list[Signal] = field(default_factory=list)
    scored: int = 0
    batch: BatchResult | None = None

    @property
    def verdict(self) -> Verdict:
        return self.batch.verdict if self.batch is not None else OK


class SignalEngine:
    """Holds the windows and the last emitted direction per symbol; ``step`` scores what changed."""

    def __init__(self, predictor: Predictor, symbols: Sequence[str], params: Mapping[str, Any] | None = None,
                 model_uri: str = "builtin://default") -> None:
        params = params or {}
        self.predictor = predictor
        self.book = WindowBook(symbols, predictor.width)
        self.threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
        self.order_qty = float(params.get("orderQty", DEFAULT_ORDER_QTY))
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError("strategy.params.threshold must be a positive number")
        if not (math.isfinite(self.order_qty) and self.order_qty > 0):
            raise ValueError("strategy.params.orderQty must be a positive number")
        self.model_uri = model_uri
        self.direction = np.zeros(len(self.book.symbols), dtype=np.int8)
        # Online accuracy: each symbol's last directional prediction (direction, price it was made at),
        # judged against the symbol's next quote at a different price.
        self.pending: dict[int, tuple[int, float]] = {}
        self.hits = 0
        self.misses = 0

    def observe(self, quote: Quote) -> bool:
        i = self.book.index.get(quote.symbol)
        before = self.book.count[i] if i is not None else 0
        dirty = self.book.observe(quote)
        if i is not None and self.book.count[i] != before:
            self._judge(i, quote.price)
        return dirty

    def _judge(self, i: int, price: float) -> None:
        prediction = self.pending.get(i)
        if prediction is None or price == prediction[1] or not math.isfinite(price):
            return  # no prediction, or no move yet: wait for one
        direction, at = prediction
        del self.pending[i]
        if (price > at) == (direction > 0):
            self.hits += 1
        else:
            self.misses += 1

    def take_outcomes(self) -> tuple[int, int]:
        """(hits, misses) judged since the last call."""
        out = (self.hits, self.misses)
        self.hits = self.misses = 0
        return out

    def step(self) -> StepResult:
        """Score every symbol whose window changed; return the signals to publish and the guard's verdict."""
        idx, windows = self.book.take_dirty()
        if idx.size == 0:
            return StepResult()
        batch = self.predictor.predict(windows)
        result = StepResult(scored=int(idx.size), batch=batch)
        if batch.verdict.reason == REASON_NAN:
            return result   # a model emitting NaN is not trusted for any row of this batch
        desired = np.where(batch.scores >= self.threshold, 1, np.where(batch.scores <= -self.threshold, -1, 0))
        desired = np.where(batch.valid, desired, 0).astype(np.int8)
        for j in np.flatnonzero(desired):
            quote = self.book.last_quote[int(idx[j])]
            if quote is not None:
                self.pending[int(idx[j])] = (int(desired[j]), quote.price)
        changed = (desired != 0) & (desired != self.direction[idx])
        for j in np.flatnonzero(changed):
            i = int(idx[j])
            self.direction[i] = desired[j]
            result.signals.append(self._signal(i, float(batch.scores[j]), windows[j], int(desired[j])))
        return result

    def _signal(self, i: int, score: float, window: np.ndarray, direction: int) -> Signal:
        quote = self.book.last_quote[i]
        assert quote is not None  # a full window implies at least one quote
        returns = np.diff(np.log(window))
        rms = float(np.sqrt(np.mean(returns * returns)))
        key = quote.seq if quote.seq > 0 else repr(quote.ts)
        return Signal(symbol=quote.symbol, side=Side.BUY if direction > 0 else Side.SELL, qty=self.order_qty,
                      signal_id=f"model:{quote.symbol}:{key}", kind="model", score=score,
                      expected_return=score * rms, price=quote.price, ts=quote.ts, seq=quote.seq,
                      model=self.model_uri)
