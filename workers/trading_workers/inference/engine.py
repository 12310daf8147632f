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

Quality: each model (``ModelSlot``) keeps its open directional predictions and judges each
against the symbol's next quote at a different price, into a sliding window (``QualityWindow``).
During a staged rollout both models score every changed window and each symbol's signal comes
from the model that serves it (``canary_mask``), so the two windows are over the same quotes.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
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


class QualityWindow:
    """The last ``size`` judged directional predictions of one model: its live accuracy."""

    def __init__(self, size: int) -> None:
        self.outcomes: deque[bool] = deque(maxlen=max(1, int(size)))
        self.hits = 0

    def add(self, hit: bool) -> None:
        if len(self.outcomes) == self.outcomes.maxlen:
            self.hits -= self.outcomes[0]
        self.outcomes.append(hit)
        self.hits += hit

    def clear(self) -> None:
        self.outcomes.clear()
        self.hits = 0

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy_pct(self) -> float | None:
        return 100.0 * self.hits / len(self.outcomes) if self.outcomes else None


class ModelSlot:
    """One loaded model: its predictor, its open predictions, its quality window and batch timings."""

    def __init__(self, uri: str, predictor: Predictor, window: int = 500,
                 training_accuracy_pct: float | None = None) -> None:
        self.uri = uri
        self.predictor = predictor
        self.training_accuracy_pct = training_accuracy_pct
        # Each symbol's last directional prediction (direction, price it was made at), judged against the
        # symbol's next quote at a different price.
        self.pending: dict[int, tuple[int, float]] = {}
        self.window = QualityWindow(window)
        self.hits = 0      # since take_outcomes
        self.misses = 0
        self.error: str | None = None
        self.version = ""          # the artifact's version, sha256 and whether it was verified (model.load_uri)
        self.sha256 = ""
        self.verified = False
        self.scored = 0    # rows since take_timing
        self._ms_sum = 0.0
        self._ms_max = 0.0
        self._batches = 0

    def judge(self, i: int, price: float) -> None:
        prediction = self.pending.get(i)
        if prediction is None or price == prediction[1] or not math.isfinite(price):
            return  # no prediction, or no move yet: wait for one
        direction, at = prediction
        del self.pending[i]
        hit = (price > at) == (direction > 0)
        self.window.add(hit)
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def timed(self, batch: BatchResult, rows: int) -> None:
        self.scored += rows
        self._ms_sum += batch.latency_ms
        self._ms_max = max(self._ms_max, batch.latency_ms)
        self._batches += 1

    def take_timing(self) -> tuple[int, float | None, float | None]:
        """(rows scored, mean batch ms, slowest batch ms) since the last call."""
        out = (self.scored, self._ms_sum / self._batches if self._batches else None,
               self._ms_max if self._batches else None)
        self.scored, self._ms_sum, self._ms_max, self._batches = 0, 0.0, 0.0, 0
        return out

    def reset_quality(self) -> None:
        self.pending.clear()
        self.window.clear()


def canary_mask(symbols: Sequence[str], weight_pct: float) -> np.ndarray:
    """Which symbols a candidate serves at ``weight_pct``: the first ``ceil(n * pct / 100)`` in a fixed
    hash order, so a rising weight only adds symbols and every replica picks the same ones."""
    n = len(symbols)
    mask = np.zeros(n, dtype=bool)
    if weight_pct <= 0 or n == 0:
        return mask
    k = min(n, max(1, math.ceil(n * min(weight_pct, 100.0) / 100.0)))
    order = sorted(range(n), key=lambda i: hashlib.sha256(symbols[i].encode()).hexdigest())
    mask[order[:k]] = True
    return mask


class SignalEngine:
    """Holds the windows and the last emitted direction per symbol; ``step`` scores what changed.

    One model (``stable``) serves every symbol, unless a ``candidate`` is set (a staged rollout): then
    both score every changed window — the one not serving a symbol only in the shadow, so their
    accuracies are measured on the same quotes — and each symbol's signal comes from the model that
    serves it (``canary_mask``).
    """

    def __init__(self, predictor: Predictor, symbols: Sequence[str], params: Mapping[str, Any] | None = None,
                 model_uri: str = "builtin://default", window: int = 500) -> None:
        params = params or {}
        self.book = WindowBook(symbols, predictor.width)
        self.threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
        self.order_qty = float(params.get("orderQty", DEFAULT_ORDER_QTY))
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError("strategy.params.threshold must be a positive number")
        if not (math.isfinite(self.order_qty) and self.order_qty > 0):
            raise ValueError("strategy.params.orderQty must be a positive number")
        self.stable = ModelSlot(model_uri, predictor, window)
        self.candidate: ModelSlot | None = None
        self.weight_pct = 0
        self.served = np.zeros(len(self.book.symbols), dtype=bool)   # rows the candidate serves
        self.direction = np.zeros(len(self.book.symbols), dtype=np.int8)

    @property
    def predictor(self) -> Predictor:
        return self.stable.predictor

    @property
    def model_uri(self) -> str:
        return self.stable.uri

    @property
    def pending(self) -> dict[int, tuple[int, float]]:
        """The stable model's open predictions."""
        return self.stable.pending

    def set_candidate(self, slot: ModelSlot | None, weight_pct: int = 0) -> None:
        """Serve ``weight_pct`` of the symbols from ``slot`` (None: the stable model serves all)."""
        if slot is not None and slot.predictor.width != self.book.width:
            slot.error = f"window of {slot.predictor.width - 1} returns; the session's model uses {self.book.width - 1}"
        self.candidate = slot
        self.weight_pct = weight_pct if slot is not None and slot.error is None else 0
        self.served = canary_mask(self.book.symbols, self.weight_pct)

    def promote(self) -> None:
        """The candidate becomes the stable model (it keeps its quality window)."""
        if self.candidate is not None:
            self.stable, self.candidate = self.candidate, None
        self.weight_pct = 0
        self.served = canary_mask(self.book.symbols, 0)

    def observe(self, quote: Quote) -> bool:
        i = self.book.index.get(quote.symbol)
        before = self.book.count[i] if i is not None else 0
        dirty = self.book.observe(quote)
        if i is not None and self.book.count[i] != before:
            self.stable.judge(i, quote.price)
            if self.candidate is not None:
                self.candidate.judge(i, quote.price)
        return dirty

    def take_outcomes(self) -> tuple[int, int]:
        """The stable model's (hits, misses) judged since the last call."""
        out = (self.stable.hits, self.stable.misses)
        self.stable.hits = self.stable.misses = 0
        return out

    def _directions(self, slot: ModelSlot, idx: np.ndarray, batch: BatchResult) -> np.ndarray:
        desired = np.where(batch.scores >= self.threshold, 1, np.where(batch.scores <= -self.threshold, -1, 0))
        desired = np.where(batch.valid, desired, 0).astype(np.int8)
        for j in np.flatnonzero(desired):
            quote = self.book.last_quote[int(idx[j])]
            if quote is not None:
                slot.pending[int(idx[j])] = (int(desired[j]), quote.price)
        return desired

    def step(self) -> StepResult:
        """Score every symbol whose window changed; return the signals to publish and the guard's verdict."""
        idx, windows = self.book.take_dirty()
        if idx.size == 0:
            return StepResult()
        batch = self.stable.predictor.predict(windows)
        self.stable.timed(batch, int(idx.size))
        result = StepResult(scored=int(idx.size), batch=batch)
        if batch.verdict.reason == REASON_NAN:
            return result   # a model emitting NaN is not trusted for any row of this batch
        desired = self._directions(self.stable, idx, batch)
        scores = batch.scores
        served = np.zeros(idx.size, dtype=bool)
        cand = self.candidate
        if cand is not None and cand.error is None:
            cand_batch = cand.predictor.predict(windows)
            cand.timed(cand_batch, int(idx.size))
            if cand_batch.verdict.reason == REASON_NAN:
                cand.error = cand_batch.verdict.detail   # the operator rolls it back; the stable model serves
                self.set_candidate(cand, 0)
            else:
                cand_desired = self._directions(cand, idx, cand_batch)
                served = self.served[idx]
                desired = np.where(served, cand_desired, desired).astype(np.int8)
                scores = np.where(served, cand_batch.scores, scores)
        changed = (desired != 0) & (desired != self.direction[idx])
        for j in np.flatnonzero(changed):
            i = int(idx[j])
            self.direction[i] = desired[j]
            uri = cand.uri if cand is not None and served[j] else self.stable.uri
            result.signals.append(self._signal(i, float(scores[j]), windows[j], int(desired[j]), uri))
        return result

    def _signal(self, i: int, score: float, window: np.ndarray, direction: int, uri: str) -> Signal:
        quote = self.book.last_quote[i]
        assert quote is not None  # a full window implies at least one quote
        returns = np.diff(np.log(window))
        rms = float(np.sqrt(np.mean(returns * returns)))
        key = quote.seq if quote.seq > 0 else repr(quote.ts)
        return Signal(symbol=quote.symbol, side=Side.BUY if direction > 0 else Side.SELL, qty=self.order_qty,
                      signal_id=f"model:{quote.symbol}:{key}", kind="model", score=score,
                      expected_return=score * rms, price=quote.price, ts=quote.ts, seq=quote.seq, model=uri)
