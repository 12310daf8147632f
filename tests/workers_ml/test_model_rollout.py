"""The inference worker's half of the staged rollout: serving split, shadow scoring, quality report.

Quotes come from the simulated exchange's price process with return autocorrelation 0.4 (what the
drills run on), so the builtin model has something to predict and an inverted copy of it is worse.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
from typing import Any

import pytest
import torch

from trading_operator.api.session import ModelSpec, TradingSession
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers.brokers.simulated import PriceProcess
from trading_workers.domain import Quote
from trading_workers.inference import engine, model, worker

SYMBOLS = [f"S{i}" for i in range(10)]
BUILTIN = "builtin://default"


def inverted(path: pathlib.Path) -> str:
    """The builtin model with its output negated: it predicts every move backwards."""
    net = model.load_uri("builtin://default").model
    last = net.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    model.save(net, path, {"report": {"directional_accuracy": 0.4}})
    return f"file://{path}"


def quotes(steps: int, phi: float = 0.4) -> list[Quote]:
    process = PriceProcess(3, 0.02, 5.0, autocorrelation=phi)
    return [Quote(symbol=s, price=process.price(s, t), ts=1_700_000_000.0 + t, seq=t + 1)
            for t in range(steps) for s in SYMBOLS]


class Session:
    """``read_session``/``report_inference`` over a scripted status."""

    def __init__(self) -> None:
        self.rollout: dict[str, Any] = {}
        self.reports: list[dict[str, Any]] = []

    async def read_session(self) -> dict[str, Any]:
        return {"status": {"modelRollout": self.rollout}}

    async def report_inference(self, report: dict[str, Any]) -> None:
        self.reports.append(report)


def feed(eng: engine.SignalEngine, qs: list[Quote]) -> list[Any]:
    signals = []
    for q in qs:
        if eng.observe(q):
            signals += eng.step().signals
    return signals


def test_canary_mask_grows_by_adding_symbols() -> None:
    masks = [engine.canary_mask(SYMBOLS, pct) for pct in (0, 10, 50, 100)]
    assert [int(m.sum()) for m in masks] == [0, 1, 5, 10]
    assert all((a <= b).all() for a, b in itertools.pairwise(masks))
    assert engine.canary_mask(["A", "B", "C"], 10).sum() == 1     # a step above 0 serves at least one symbol


def test_autocorrelated_returns_keep_the_random_walk_at_zero() -> None:
    plain, zero = PriceProcess(3, 0.02, 5.0), PriceProcess(3, 0.02, 5.0, autocorrelation=0.0)
    assert [plain.price("AAPL", t) for t in range(50)] == [zero.price("AAPL", t) for t in range(50)]
    with pytest.raises(ValueError):
        PriceProcess(3, 0.02, 5.0, autocorrelation=1.0)


async def test_the_worker_follows_the_rollout_and_reports_both_models(tmp_path: pathlib.Path) -> None:
    spec = ModelSpec(device="cpu", batch_size=64, max_latency_ms=10_000, quality_window=300)
    session = Session()
    rollout = worker.Rollout(session, spec)  # type: ignore[arg-type]
    assert rollout.enabled and await rollout.initial_stable_uri() == "builtin://default"
    slot = worker.load_slot(spec, "builtin://default")
    assert slot.training_accuracy_pct is not None and slot.training_accuracy_pct > 50
    eng = engine.SignalEngine(slot.predictor, SYMBOLS, {}, model_uri=slot.uri, window=300)
    eng.stable = slot
    rollout.engine = eng
    bad = inverted(tmp_path / "inverted.pt")
    qs = quotes(400)

    session.rollout = {"id": "m-1", "phase": "Progressing", "stableUri": "builtin://default",
                       "candidateUri": bad, "weightPct": 10}
    await rollout.follow()
    assert eng.candidate is not None and eng.candidate.uri == bad and int(eng.served.sum()) == 1
    signals = feed(eng, qs[:2000])
    served = {SYMBOLS[i] for i in range(len(SYMBOLS)) if eng.served[i]}
    assert {s.model for s in signals if s.symbol in served} == {bad}
    assert {s.model for s in signals if s.symbol not in served} == {"builtin://default"}
    await rollout.send_report()
    report = session.reports[-1]
    stable, cand = report["models"]
    assert (stable["role"], stable["servingPct"], cand["role"], cand["servingPct"]) == ("stable", 90, "candidate", 10)
    assert report["rolloutId"] == "m-1" and stable["outcomes"] > 100 and cand["outcomes"] > 100
    # Both scored every symbol (the candidate in the shadow where it does not serve): on the same quotes the
    # inverted model is as wrong as the builtin one is right.
    assert stable["accuracyPct"] > 55 > 45 > cand["accuracyPct"], report
    assert stable["predictionsPerSecond"] > 0 and cand["meanBatchMs"] > 0
    assert worker.ACCURACY.labels("candidate")._value.get() == pytest.approx(cand["accuracyPct"], abs=1e-3)

    # Rolled back: the candidate is dropped, the stable model serves every symbol.
    session.rollout = {**session.rollout, "phase": "RolledBack", "weightPct": 0}
    await rollout.follow()
    assert eng.candidate is None and not eng.served.any()
    assert {s.model for s in feed(eng, qs[2000:2500])} <= {"builtin://default"}

    # A new rollout promotes the candidate: it becomes the stable model, keeping its window.
    good = tmp_path / "copy.pt"
    model.save(model.load_uri("builtin://default").model, good)
    session.rollout = {"id": "m-2", "phase": "Progressing", "stableUri": "builtin://default",
                       "candidateUri": f"file://{good}", "weightPct": 50}
    await rollout.follow()
    assert eng.candidate is not None and int(eng.served.sum()) == 5 and len(eng.stable.window) == 0
    feed(eng, qs[2500:3000])
    session.rollout = {**session.rollout, "phase": "Promoted", "stableUri": f"file://{good}", "weightPct": 100}
    await rollout.follow()
    assert eng.stable.uri == f"file://{good}" and eng.candidate is None and len(eng.stable.window) > 0
    await rollout.send_report()
    assert [m["role"] for m in session.reports[-1]["models"]] == ["stable"]


async def test_a_candidate_that_cannot_load_is_reported_with_its_error(tmp_path: pathlib.Path) -> None:
    spec = ModelSpec(device="cpu", batch_size=64)
    session = Session()
    rollout = worker.Rollout(session, spec)  # type: ignore[arg-type]
    slot = worker.load_slot(spec, "builtin://default")
    eng = engine.SignalEngine(slot.predictor, SYMBOLS, {}, model_uri=slot.uri)
    eng.stable = slot
    rollout.engine = eng
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    session.rollout = {"id": "m-3", "phase": "Progressing", "stableUri": "builtin://default",
                       "candidateUri": f"file://{tmp_path}/junk.pt", "weightPct": 10}
    await rollout.follow()
    assert eng.candidate is not None and eng.candidate.error and not eng.served.any()
    assert {s.model for s in feed(eng, quotes(60))} <= {"builtin://default"}
    await rollout.send_report()
    cand = session.reports[-1]["models"][1]
    assert cand["role"] == "candidate" and "cannot load" in cand["error"] and cand["servingPct"] == 0


class SlowRuntime(Session):
    """A whole worker run: quotes paced in time, the session's rollout scripted, what the worker reported."""

    def __init__(self, config: Any, qs: list[Quote], pace: float) -> None:
        super().__init__()
        self.config, self._quotes, self.pace = config, iter(qs), pace
        self.signals: list[Any] = []
        self.models: list[Any] = []
        self.last_seq = 0

    async def quotes(self) -> Any:
        """One stream across calls, as the bus's consumer group: a new reader goes on where the last stopped."""
        for q in self._quotes:
            self.last_seq = q.seq
            yield q
            await asyncio.sleep(self.pace)

    async def publish_signal(self, signal: Any) -> None:
        self.signals.append(signal)

    async def request_reducing(self, reason: str) -> None:
        raise AssertionError(reason)

    async def report_model(self, status: Any) -> None:
        self.models.append(status)


async def test_a_refused_stable_model_serves_nothing_until_the_rollout_names_another(tmp_path: pathlib.Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    ts = TradingSession.model_validate({
        "metadata": {"name": "ml", "namespace": "trading"},
        "spec": {"symbols": SYMBOLS, "riskPolicyRef": {"name": "p"},
                 "strategy": {"name": "model", "model": {"uri": f"file://{junk}", "device": "cpu", "batchSize": 64,
                                                         "maxLatencyMs": 10_000, "reportSeconds": 0.5}}}})
    runtime = SlowRuntime(WorkerConfig.from_session(ts), quotes(300), pace=0.01)
    runtime.rollout = {"phase": "Stable", "stableUri": f"file://{junk}"}

    async def operator_promotes() -> int:
        await asyncio.sleep(1.2)   # the operator's answer to a new model.uri over a refused stable model
        runtime.rollout = {"id": "m-1", "phase": "Promoted", "stableUri": BUILTIN, "weightPct": 100}
        return runtime.last_seq

    promote = asyncio.create_task(operator_promotes())
    await worker.run(runtime)  # type: ignore[arg-type]
    refused_until = await promote
    states = [(m.uri, m.state, m.reason) for m in runtime.models]
    assert states[0] == (f"file://{junk}", "Refused", "ModelLoadFailed")
    assert states[-1] == (BUILTIN, "Serving", "ModelVerified"), states
    assert runtime.signals and {s.model for s in runtime.signals} == {BUILTIN}
    assert refused_until > 5 and min(s.seq for s in runtime.signals) > refused_until   # nothing served while refused
