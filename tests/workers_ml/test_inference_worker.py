"""The signal engine (quotes → windows → signals) and the inference worker loop over a stand-in runtime."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch

from trading_operator.api.session import TradingSession
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers.domain import Quote, Side, Signal
from trading_workers.inference import engine, model, predictor, synthetic, worker

SYMBOLS = ["AAPL", "MSFT", "TSLA"]


def quote_stream(n_steps: int, symbols: list[str] = SYMBOLS, seed: int = 5) -> list[Quote]:
    """Interleaved quotes, one per symbol per step, from the synthetic process (strongly trending or reverting)."""
    paths = synthetic.price_windows(len(symbols), n_steps - 1, seed=seed).prices
    return [Quote(symbol=s, price=float(paths[i, t]), ts=1_700_000_000.0 + t, seq=t + 1)
            for t in range(n_steps) for i, s in enumerate(symbols)]


def make_engine(params: Mapping[str, Any] | None = None, net: model.PriceMLP | None = None) -> engine.SignalEngine:
    net = net or model.load_uri("builtin://default").model
    return engine.SignalEngine(predictor.Predictor(net, batch_size=64), SYMBOLS, params)


def nan_model() -> model.PriceMLP:
    net = model.load_uri("builtin://default").model
    last = net.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.bias.fill_(float("nan"))
    return net


def check_signals(signals: list[Signal]) -> None:
    last_side: dict[str, Side] = {}
    for s in signals:
        assert s.kind == "model" and s.symbol in SYMBOLS and s.side in (Side.BUY, Side.SELL)
        assert s.signal_id == f"model:{s.symbol}:{s.seq}"
        assert np.isfinite(s.score) and np.isfinite(s.expected_return)
        assert abs(s.score) >= engine.DEFAULT_THRESHOLD
        assert (s.score > 0) == (s.side is Side.BUY)
        assert last_side.get(s.symbol) != s.side       # edge-triggered: only direction changes
        last_side[s.symbol] = s.side


# ---------------------------------------------------------------- engine

def test_no_score_until_a_window_is_full() -> None:
    eng = make_engine()
    quotes = quote_stream(eng.book.width)
    for q in quotes[:-len(SYMBOLS)]:
        assert not eng.observe(q)
    assert eng.step().scored == 0
    for q in quotes[-len(SYMBOLS):]:
        assert eng.observe(q)
    assert eng.step().scored == len(SYMBOLS)
    assert eng.step().scored == 0           # nothing changed since


def test_signals_are_edge_triggered_and_deterministic() -> None:
    def run_once() -> list[dict[str, Any]]:
        eng = make_engine()
        out: list[dict[str, Any]] = []
        for q in quote_stream(400):
            if eng.observe(q):
                out += eng.step().signals
        return out

    first = run_once()
    assert len(first) >= 3
    check_signals(first)
    assert first == run_once()


def test_redelivered_and_foreign_quotes_are_ignored() -> None:
    eng = make_engine()
    for q in quote_stream(eng.book.width):
        eng.observe(q)
    eng.step()
    before = eng.book.prices.copy()
    last = eng.book.last_quote[0]
    assert last is not None
    assert not eng.observe(last)                                   # at-least-once redelivery
    assert not eng.observe(Quote(symbol="NVDA", price=1.0, ts=0.0, seq=999))
    assert np.array_equal(eng.book.prices, before) and eng.book.ignored == 2


def test_threshold_and_quantity_come_from_strategy_params() -> None:
    eng = make_engine({"threshold": 1e6, "orderQty": 5})
    assert eng.order_qty == 5
    signals = []
    for q in quote_stream(200):
        if eng.observe(q):
            signals += eng.step().signals
    assert signals == []
    with pytest.raises(ValueError):
        make_engine({"threshold": -1})


def test_a_nan_batch_publishes_nothing() -> None:
    eng = make_engine(net=nan_model())
    for q in quote_stream(eng.book.width + 5):
        eng.observe(q)
    result = eng.step()
    assert result.verdict.reason == predictor.REASON_NAN and result.signals == []


# ---------------------------------------------------------------- worker loop

class StandInRuntime:
    """The minimal interface worker.run() documents, recording what the worker does."""

    def __init__(self, config: WorkerConfig, quotes: list[Quote], fail_after: int | None = None) -> None:
        self.config = config
        self._quotes = quotes
        self._fail_after = fail_after
        self.signals: list[Signal] = []
        self.reduce_requests: list[str] = []
        self.ready: bool | None = None

    async def quotes(self) -> AsyncIterator[Quote]:
        for n, q in enumerate(self._quotes):
            if self._fail_after is not None and n == self._fail_after:
                raise ConnectionError("bus went away")
            yield q
            if n % len(SYMBOLS) == len(SYMBOLS) - 1:
                await asyncio.sleep(0)          # a tick boundary: let the worker score what arrived

    async def publish_signal(self, signal: Signal) -> None:
        self.signals.append(signal)

    async def request_reducing(self, reason: str) -> None:
        self.reduce_requests.append(reason)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready


def session_config(model_spec: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> WorkerConfig:
    strategy: dict[str, Any] = {"name": "model", "params": params or {},
                                "model": {"uri": "builtin://default", "device": "cpu", "batchSize": 64,
                                          **(model_spec or {})}}
    ts = TradingSession.model_validate({
        "metadata": {"name": "ml", "namespace": "trading", "uid": "u-1"},
        "spec": {"symbols": SYMBOLS, "strategy": strategy, "riskPolicyRef": {"name": "default-limits"}},
    })
    return WorkerConfig.from_session(ts)


async def test_the_worker_turns_quotes_into_signals() -> None:
    # A generous latency bound: this test is about signals, and CI machines get preempted.
    runtime = StandInRuntime(session_config({"maxLatencyMs": 10_000}), quote_stream(400))
    await worker.run(runtime)
    assert runtime.ready is True
    assert runtime.reduce_requests == []
    assert len(runtime.signals) >= 3
    check_signals(runtime.signals)
    assert {s.model for s in runtime.signals} == {"builtin://default"}


async def test_nan_outputs_ask_for_reducing_once_and_publish_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "broken.pt"
    model.save(nan_model(), path)
    runtime = StandInRuntime(session_config({"uri": f"file://{path}"}), quote_stream(200))
    await worker.run(runtime)
    assert runtime.signals == []
    assert len(runtime.reduce_requests) == 1 and "non-finite" in runtime.reduce_requests[0]


async def test_slow_batches_ask_for_reducing_once() -> None:
    runtime = StandInRuntime(session_config({"maxLatencyMs": 1e-6}), quote_stream(400))   # nothing is that fast
    await worker.run(runtime)
    assert len(runtime.reduce_requests) == 1 and "ms > max" in runtime.reduce_requests[0]
    assert runtime.signals                                  # late but finite: the executor enforces Reducing


async def test_a_failing_quote_stream_fails_the_worker() -> None:
    runtime = StandInRuntime(session_config(), quote_stream(200), fail_after=150)
    with pytest.raises(ConnectionError):
        await worker.run(runtime)


async def test_reduce_requests_repeat_only_after_the_quiet_period() -> None:
    sent: list[str] = []
    now = [0.0]

    async def request(reason: str) -> None:
        sent.append(reason)

    reduce = worker.ReduceRequester(request, repeat_s=60.0, clock=lambda: now[0])
    assert await reduce("latency", "slow")
    assert not await reduce("latency", "slow")
    assert await reduce("nan_output", "nan")              # a different reason is news
    now[0] = 61.0
    assert await reduce("latency", "slow")
    assert sent == ["inference guard: slow", "inference guard: nan", "inference guard: slow"]


def test_torch_threads_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(worker.ENV_TORCH_THREADS, "2")
        assert worker.configure_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.delenv(worker.ENV_TORCH_THREADS)
        assert worker.configure_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_accuracy_is_measured_online_against_the_next_quote() -> None:
    """Each directional prediction is judged once, by the symbol's next quote at another price; on the
    synthetic process (trending or reverting) the default model beats a coin."""
    eng = make_engine()
    hits = misses = 0
    for q in quote_stream(400):
        if eng.observe(q):
            eng.step()
        h, m = eng.take_outcomes()
        hits, misses = hits + h, misses + m
    assert hits + misses > 50
    assert eng.take_outcomes() == (0, 0)           # drained
    assert hits / (hits + misses) > 0.5


def test_a_prediction_without_a_move_waits_and_a_miss_counts() -> None:
    eng = make_engine()
    eng.pending[0] = (1, 100.0)                    # long AAPL at 100
    eng.observe(Quote(symbol="AAPL", price=100.0, ts=1.0, seq=1))
    assert eng.take_outcomes() == (0, 0) and 0 in eng.pending   # no move yet
    eng.observe(Quote(symbol="AAPL", price=99.0, ts=2.0, seq=2))
    assert eng.take_outcomes() == (0, 1) and 0 not in eng.pending
    eng.pending[1] = (-1, 50.0)                    # short MSFT at 50
    eng.observe(Quote(symbol="MSFT", price=49.0, ts=3.0, seq=3))
    assert eng.take_outcomes() == (1, 0)
    eng.observe(Quote(symbol="MSFT", price=49.0, ts=4.0, seq=3))   # a redelivery is not a new quote
    assert eng.take_outcomes() == (0, 0)
