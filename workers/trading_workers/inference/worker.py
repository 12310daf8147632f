"""The inference worker role: quotes in, model signals out, Reducing when the model misbehaves.

Entry point: ``await run(runtime)``. The runtime (``trading_workers.runtime``)
is written separately; this module depends only on the small interface
below, so either side can change without breaking the other.

What ``run`` assumes of ``runtime`` (see :class:`InferenceRuntime`):

- ``runtime.config`` — the session's :class:`~trading_operator.api.workerconfig.WorkerConfig`.
  Uses ``symbols``, ``strategy.model`` (a ``ModelSpec``; the default one when absent)
  and ``strategy.params`` (``threshold``: score to act on, in units of recent volatility,
  default 0.3; ``orderQty``: default 1).
- ``runtime.quotes()`` — an async iterator of :class:`~trading_workers.domain.Quote` for the
  session's symbols, as read from the bus (at-least-once: a repeated ``seq`` is ignored).
- ``await runtime.publish_signal(signal)`` — publish one :class:`~trading_workers.domain.Signal`
  (symbol, side, qty, score, expected return, the quote it was scored on, the model's URI and a
  deterministic ``signal_id``: the idempotency key of the order it becomes, ``signal.intent()``).
- ``await runtime.request_reducing(reason)`` — ask that the session's trading state become
  Reducing (the guard tripped: NaN outputs, or a batch slower than ``ModelSpec.max_latency_ms``).
  Called once per reason per :data:`REDUCE_REPEAT_S`, not on every batch.
- optional ``runtime.set_ready(bool)`` — called with True once the model is loaded and placed.
- optional ``await runtime.report_model(status)`` — a :class:`~trading_operator.api.session.ModelStatus`:
  the model's URI, version and sha256 once it serves (``Serving``), or why it was refused
  (``Refused``, reason ``ModelCorrupt`` or ``ModelLoadFailed``). A refused model is never served:
  the worker stays up, not ready, scoring nothing, until it is stopped (a new ``model.uri`` rolls it).

``run`` returns when the quote iterator ends; on SIGTERM the runtime cancels it.
Model loading runs in a thread so the runtime's health endpoints stay responsive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import torch

from trading_operator.api import metric_names as mn
from trading_operator.api.session import ModelSpec, ModelStatus
from trading_operator.api.status import ModelState, Reason
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers.domain import Quote, Signal
from trading_workers.inference import model as model_mod
from trading_workers.inference.engine import SignalEngine, StepResult
from trading_workers.inference.predictor import Predictor, select_device

log = logging.getLogger(__name__)

ENV_TORCH_THREADS = "TRADING_TORCH_THREADS"
REDUCE_REPEAT_S = 60.0

BATCH_SECONDS = mn.collector(mn.INFERENCE_BATCH_SECONDS)
PREDICTIONS = mn.collector(mn.INFERENCE_PREDICTIONS)
SIGNALS = mn.collector(mn.INFERENCE_SIGNALS)
GUARD_TRIPS = mn.collector(mn.INFERENCE_GUARD_TRIPS)
INVALID_INPUTS = mn.collector(mn.INFERENCE_INVALID_INPUTS)
OUTCOMES = mn.collector(mn.INFERENCE_OUTCOMES)
MODEL_INFO = mn.collector(mn.INFERENCE_MODEL_INFO)
MODEL_REFUSED = mn.collector(mn.INFERENCE_MODEL_REFUSED)


class InferenceRuntime(Protocol):
    """The part of the worker runtime the inference role uses (nothing more)."""

    @property
    def config(self) -> WorkerConfig: ...

    def quotes(self) -> AsyncIterator[Quote]: ...

    async def publish_signal(self, signal: Signal) -> None: ...

    async def request_reducing(self, reason: str) -> None: ...


def configure_threads() -> int:
    """Intra-op threads: ``$TRADING_TORCH_THREADS``, else 1.

    One thread is the measured best for this model on CPU (``benchmarks/inference.py``):
    batches up to 4096 rows take about a millisecond, too short to pay for waking a
    second thread, and on a shared or CPU-limited node a second OpenMP thread that gets
    descheduled stalls the whole batch — on the 2-core benchmark machine under load,
    2 threads put batch p99 near 50 ms where 1 thread stayed under 3 ms.
    """
    env = os.environ.get(ENV_TORCH_THREADS, "")
    threads = int(env) if env.isdigit() and int(env) > 0 else 1
    torch.set_num_threads(threads)
    return threads


class ReduceRequester:
    """Asks for Reducing at most once per reason per ``repeat_s`` seconds (the session latches it anyway)."""

    def __init__(self, request: Callable[[str], Awaitable[None]], repeat_s: float = REDUCE_REPEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._request = request
        self._repeat_s = repeat_s
        self._clock = clock
        self._last: dict[str, float] = {}

    async def __call__(self, reason: str, detail: str) -> bool:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._repeat_s:
            return False
        self._last[reason] = now
        await self._request(f"inference guard: {detail}")
        return True


async def run(runtime: InferenceRuntime) -> None:
    """Serve the session's model until the quote stream ends (or the task is cancelled)."""
    cfg = runtime.config
    spec = cfg.strategy.model or ModelSpec()
    threads = configure_threads()
    report = getattr(runtime, "report_model", None)
    try:
        artifact = await asyncio.to_thread(model_mod.load_uri, spec.uri)
    except model_mod.ModelLoadError as exc:
        await _refuse(runtime, spec.uri, exc, report)
        return
    predictor = await asyncio.to_thread(Predictor, artifact.model, device=select_device(spec.device),
                                        batch_size=spec.batch_size, max_latency_ms=spec.max_latency_ms)
    engine = SignalEngine(predictor, cfg.symbols, cfg.strategy.params, model_uri=spec.uri)
    MODEL_INFO.labels(uri=spec.uri, version=artifact.version, verified=str(artifact.verified).lower()).set(1)
    log.info("inference model loaded", extra={"model": spec.uri, "version": artifact.version,
                                              "verified": artifact.verified, "device": str(predictor.device),
                                              "batch_size": predictor.batch_size, "threads": threads})
    if callable(report):
        await report(ModelStatus(uri=spec.uri, state=ModelState.SERVING, version=artifact.version,
                                 sha256=artifact.sha256, verified=artifact.verified,
                                 reason=Reason.MODEL_VERIFIED if artifact.verified else Reason.MODEL_UNVERIFIED,
                                 message=f"serving {artifact.version}" + ("" if artifact.verified else
                                                                          " (a bare file: no manifest to verify)")))
    set_ready = getattr(runtime, "set_ready", None)
    if callable(set_ready):
        set_ready(True)
    reduce = ReduceRequester(runtime.request_reducing)
    changed = asyncio.Event()
    consumer = asyncio.create_task(_consume(runtime.quotes(), engine, changed), name="inference-quotes")
    try:
        while True:
            await changed.wait()
            changed.clear()
            await _publish(runtime, reduce, _timed_step(engine))
            if consumer.done():
                await _publish(runtime, reduce, _timed_step(engine))   # whatever arrived last
                consumer.result()                                       # re-raise a failed stream
                return
    finally:
        if not consumer.done():
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)   # let the quote iterator close cleanly


async def _refuse(runtime: InferenceRuntime, uri: str, exc: Exception,
                  report: Callable[[ModelStatus], Awaitable[None]] | None) -> None:
    """Serve nothing: report why, stay not ready, and drain the quote stream until it ends or the worker stops."""
    reason = Reason.MODEL_CORRUPT if isinstance(exc, model_mod.ModelCorrupt) else Reason.MODEL_LOAD_FAILED
    MODEL_REFUSED.labels(reason=reason.value).inc()
    log.error("inference model refused", extra={"model": uri, "reason": reason.value, "error": str(exc)})
    if callable(report):
        await report(ModelStatus(uri=uri, state=ModelState.REFUSED, reason=reason, message=str(exc)[:2048]))
    async for _ in runtime.quotes():
        pass


async def _consume(quotes: AsyncIterator[Quote], engine: SignalEngine, changed: asyncio.Event) -> None:
    # Quotes that arrive while a step runs accumulate as dirty windows: the next step batches them all.
    try:
        async for quote in quotes:
            if engine.observe(quote):
                changed.set()
    finally:
        changed.set()


def _timed_step(engine: SignalEngine) -> StepResult:
    start = time.perf_counter()
    result = engine.step()
    if result.scored:
        BATCH_SECONDS.observe(time.perf_counter() - start)
        PREDICTIONS.inc(result.scored)
        if result.batch is not None and result.batch.invalid_inputs:
            INVALID_INPUTS.inc(result.batch.invalid_inputs)
    hits, misses = engine.take_outcomes()
    OUTCOMES.labels("hit").inc(hits)
    OUTCOMES.labels("miss").inc(misses)
    return result


async def _publish(runtime: InferenceRuntime, reduce: ReduceRequester, result: StepResult) -> None:
    verdict = result.verdict
    if verdict.reduce:
        GUARD_TRIPS.labels(reason=verdict.reason).inc()
        log.warning("inference guard tripped", extra={"reason": verdict.reason, "detail": verdict.detail})
        await reduce(verdict.reason, verdict.detail)
    for signal in result.signals:
        await runtime.publish_signal(signal)
        SIGNALS.labels(side=signal.side.value).inc()
