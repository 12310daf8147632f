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
  the stable model's URI, version and sha256 once it serves (``Serving``), or why it was refused
  (``Refused``, reason ``ModelCorrupt`` or ``ModelLoadFailed``). A refused model is never served:
  the worker stays up, not ready, scoring nothing, until the rollout names another stable model
  (a new ``model.uri`` replaces a refused stable model at once: there is nothing to compare it with).
- optional ``await runtime.read_session()`` and ``await runtime.report_inference(report)`` — the
  staged rollout: every ``ModelSpec.report_seconds`` the worker reads ``status.modelRollout`` (which
  model is stable, which is the candidate and what share of the symbols it serves; written by the
  operator, ``trading_operator.reconcile.rollout``), loads what it names, and reports each model's
  live quality (``status.inference``). Without them the worker serves the config's model alone.

``run`` returns when the quote iterator ends; on SIGTERM the runtime cancels it.
Model loading runs in a thread so the runtime's health endpoints stay responsive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import torch

from trading_operator.api import metric_names as mn
from trading_operator.api.session import ModelSpec, ModelStatus
from trading_operator.api.status import ModelState, Reason
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers.domain import Quote, Signal
from trading_workers.inference import model as model_mod
from trading_workers.inference.engine import ModelSlot, SignalEngine, StepResult
from trading_workers.inference.predictor import Predictor, select_device
from trading_workers.runtime.tasks import cancel_and_wait

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
ACCURACY = mn.collector(mn.INFERENCE_ACCURACY)
PREDICTION_RATE = mn.collector(mn.INFERENCE_PREDICTION_RATE)
SERVING = mn.collector(mn.INFERENCE_SERVING)


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


def load_slot(spec: ModelSpec, uri: str) -> ModelSlot:
    """Load ``uri`` with the session's device, batch size and latency bound (blocking: run it in a thread)."""
    artifact = model_mod.load_uri(uri)
    predictor = Predictor(artifact.model, device=select_device(spec.device), batch_size=spec.batch_size,
                          max_latency_ms=spec.max_latency_ms)
    report = artifact.meta.get("report") if isinstance(artifact.meta, dict) else None
    trained = report.get("directional_accuracy") if isinstance(report, dict) else None
    slot = ModelSlot(uri, predictor, spec.quality_window,
                     training_accuracy_pct=100.0 * float(trained) if isinstance(trained, int | float) else None)
    slot.version, slot.sha256, slot.verified = artifact.version, artifact.sha256, artifact.verified
    return slot


async def run(runtime: InferenceRuntime) -> None:
    """Serve the session's model until the quote stream ends (or the task is cancelled)."""
    cfg = runtime.config
    spec = cfg.strategy.model or ModelSpec()
    threads = configure_threads()
    report = getattr(runtime, "report_model", None)
    rollout = Rollout(runtime, spec)
    stable_uri: str | None = await rollout.initial_stable_uri()
    while True:
        assert stable_uri is not None
        try:
            slot = await asyncio.to_thread(load_slot, spec, stable_uri)
            break
        except model_mod.ModelLoadError as exc:
            stable_uri = await _refuse(runtime, rollout, stable_uri, exc, report)
            if stable_uri is None:
                return
    engine = SignalEngine(slot.predictor, cfg.symbols, cfg.strategy.params, model_uri=stable_uri,
                          window=spec.quality_window)
    engine.stable = slot
    rollout.engine = engine
    rollout.announce = report
    log.info("inference model loaded", extra={"model": stable_uri, "version": slot.version,
                                              "verified": slot.verified, "device": str(slot.predictor.device),
                                              "batch_size": slot.predictor.batch_size, "threads": threads})
    await announce(slot, report)
    set_ready = getattr(runtime, "set_ready", None)
    if callable(set_ready):
        set_ready(True)
    reduce = ReduceRequester(runtime.request_reducing)
    changed = asyncio.Event()
    consumer = asyncio.create_task(_consume(runtime.quotes(), engine, changed), name="inference-quotes")
    control = asyncio.create_task(rollout.run(), name="inference-rollout") if rollout.enabled else None
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
        # The quote iterator closes cleanly on cancellation; cancelled until it ends (runtime.tasks).
        await cancel_and_wait([t for t in (control, consumer) if t is not None])


async def announce(slot: ModelSlot, report: Callable[[ModelStatus], Awaitable[None]] | None) -> None:
    """The stable model's identity: the info metric and ``status.model`` (Serving, with its version)."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(uri=slot.uri, version=slot.version, verified=str(slot.verified).lower()).set(1)
    if callable(report):
        await report(ModelStatus(uri=slot.uri, state=ModelState.SERVING, version=slot.version or None,
                                 sha256=slot.sha256 or None, verified=slot.verified,
                                 reason=Reason.MODEL_VERIFIED if slot.verified else Reason.MODEL_UNVERIFIED,
                                 message=f"serving {slot.version}" + ("" if slot.verified else
                                                                      " (a bare file: no manifest to verify)")))


def refusal_reason(exc: Exception) -> Reason:
    return Reason.MODEL_CORRUPT if isinstance(exc, model_mod.ModelCorrupt) else Reason.MODEL_LOAD_FAILED


async def _refuse(runtime: InferenceRuntime, rollout: Rollout, uri: str, exc: Exception,
                  report: Callable[[ModelStatus], Awaitable[None]] | None) -> str | None:
    """Serve nothing: report why, stay not ready, and drain the quote stream until it ends (None) or the
    rollout names another stable model (returned: the worker loads that one)."""
    reason = refusal_reason(exc)
    MODEL_REFUSED.labels(reason=reason.value).inc()
    log.error("inference model refused", extra={"model": uri, "reason": reason.value, "error": str(exc)})
    if callable(report):
        await report(ModelStatus(uri=uri, state=ModelState.REFUSED, reason=reason, message=str(exc)[:2048]))

    async def drain() -> None:
        async for _ in runtime.quotes():
            pass

    drained = asyncio.create_task(drain(), name="inference-drain")
    try:
        while True:
            done, _ = await asyncio.wait({drained}, timeout=rollout.spec.report_seconds)
            if done:
                drained.result()
                return None
            if rollout.enabled:
                try:
                    stable = await rollout.stable_named()
                except Exception as read_exc:   # retried at the next period
                    log.warning("cannot read the model rollout", extra={"error": str(read_exc)})
                    continue
                if stable and stable != uri:
                    return stable
    finally:
        if not drained.done():
            drained.cancel()
            await asyncio.gather(drained, return_exceptions=True)


class Rollout:
    """The worker's half of the staged rollout: serve what ``status.modelRollout`` says, report quality.

    The operator decides (``trading_operator.reconcile.rollout``); this loop only follows: it loads the
    candidate the rollout names (in a thread), sets the share of symbols it serves, swaps it in as the
    stable model on promotion, drops it on rollback or abort, and reports both models' windows. A new
    rollout id clears both windows, so the two accuracies compared are over the same quotes.
    """

    def __init__(self, runtime: InferenceRuntime, spec: ModelSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime, self.spec, self.clock = runtime, spec, clock
        self.read = getattr(runtime, "read_session", None)
        self.report = getattr(runtime, "report_inference", None)
        self.enabled = callable(self.read) and callable(self.report)
        self.engine: SignalEngine | None = None
        self.announce: Callable[[ModelStatus], Awaitable[None]] | None = None   # runtime.report_model
        self.rollout_id: str | None = None
        self.rows_since_stable = 0
        self.reported_at = clock()

    async def initial_stable_uri(self) -> str:
        """The stable model of a rollout in progress (a restarted worker must not serve the candidate everywhere)."""
        if self.enabled:
            try:
                stable = await self.stable_named()
                if stable:
                    return stable
            except Exception as exc:  # the rollout state is advisory at start; the config's model is safe
                log.warning("cannot read the model rollout; serving the configured model", extra={"error": str(exc)})
        return self.spec.uri

    async def stable_named(self) -> str | None:
        """``status.modelRollout.stableUri`` as the session says now (None before the operator wrote it)."""
        assert self.read is not None
        obj = await self.read()
        stable = (((obj or {}).get("status") or {}).get("modelRollout") or {}).get("stableUri")
        return str(stable) if stable else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.spec.report_seconds)
            try:
                await self.follow()
                await self.send_report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # a failed read or write is retried at the next period
                log.warning("model rollout step failed; will retry", extra={"error": str(exc)})

    async def follow(self) -> None:
        engine = self.engine
        assert engine is not None and self.read is not None
        obj = await self.read()
        ro = ((obj or {}).get("status") or {}).get("modelRollout") or {}
        stable, candidate = ro.get("stableUri"), ro.get("candidateUri")
        progressing = ro.get("phase") == "Progressing"
        if ro.get("id") != self.rollout_id:
            self.rollout_id = ro.get("id")
            engine.stable.reset_quality()
            if engine.candidate is not None:
                engine.candidate.reset_quality()
        if stable and stable != engine.stable.uri:
            if engine.candidate is not None and engine.candidate.uri == stable:
                engine.promote()
                log.info("candidate promoted to stable", extra={"model": stable})
            else:   # the operator names another stable model (e.g. a rollout aborted by a newer one): load it
                slot = await asyncio.to_thread(load_slot, self.spec, str(stable))
                engine.stable = slot
                engine.set_candidate(None)
            self.rows_since_stable = 0
            await announce(engine.stable, self.announce)
        if progressing and candidate and candidate != engine.stable.uri:
            weight = int(ro.get("weightPct") or 0)
            if engine.candidate is None or engine.candidate.uri != candidate:
                engine.set_candidate(await self._load_candidate(str(candidate)), weight)
            elif engine.weight_pct != weight and engine.candidate.error is None:
                engine.set_candidate(engine.candidate, weight)
        elif engine.candidate is not None:
            log.info("candidate withdrawn", extra={"model": engine.candidate.uri, "phase": ro.get("phase")})
            engine.set_candidate(None)

    async def _load_candidate(self, uri: str) -> ModelSlot:
        try:
            slot = await asyncio.to_thread(load_slot, self.spec, uri)
            log.info("candidate model loaded", extra={"model": uri})
            return slot
        except Exception as exc:   # reported as the candidate's error: the operator rolls it back
            MODEL_REFUSED.labels(reason=refusal_reason(exc).value).inc()
            log.warning("candidate model not loaded", extra={"model": uri, "error": str(exc)})
            slot = ModelSlot(uri, self.engine.stable.predictor, self.spec.quality_window)  # type: ignore[union-attr]
            slot.error = f"cannot load: {exc}"[:1024]
            return slot

    def quality(self) -> dict[str, Any]:
        engine = self.engine
        assert engine is not None
        now = self.clock()
        elapsed = max(now - self.reported_at, 1e-9)
        self.reported_at = now
        models = []
        for role, slot in (("stable", engine.stable), ("candidate", engine.candidate)):
            if slot is None:
                continue
            rows, mean_ms, max_ms = slot.take_timing()
            if role == "stable":
                self.rows_since_stable += rows
            serving = engine.weight_pct if role == "candidate" else 100 - engine.weight_pct
            accuracy = slot.window.accuracy_pct
            rate = rows / elapsed
            ACCURACY.labels(role).set(math.nan if accuracy is None else accuracy)
            PREDICTION_RATE.labels(role).set(rate)
            SERVING.labels(role).set(serving)
            entry: dict[str, Any] = {
                "uri": slot.uri, "role": role, "servingPct": serving, "outcomes": len(slot.window),
                "predictionsPerSecond": round(rate, 3)}
            for key, value in (("accuracyPct", accuracy), ("meanBatchMs", mean_ms), ("maxBatchMs", max_ms),
                               ("trainingAccuracyPct", slot.training_accuracy_pct)):
                if value is not None:
                    entry[key] = round(value, 4)
            if slot.error:
                entry["error"] = slot.error
            models.append(entry)
        if engine.candidate is None:
            for gauge in (ACCURACY, PREDICTION_RATE, SERVING):
                gauge.labels("candidate").set(math.nan if gauge is ACCURACY else 0.0)
        return {"models": models, "window": self.spec.quality_window, "rowsSinceStable": self.rows_since_stable,
                "rolloutId": self.rollout_id}

    async def send_report(self) -> None:
        assert self.report is not None
        report = self.quality()
        report["updatedAt"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        await self.report(report)


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
