"""The model lifecycle steps of a TradingSession's reconcile: staged rollout and retraining triggers. Pure.

Why in the operator (docs/decisions/0017-model-rollout-in-the-operator.md): the rollout is a
decision over facts several parties report — the user's spec (a new ``model.uri``, promote and
abort), a training Job's offer (``status.modelCandidate``) and the inference worker's measurements
(``status.inference``) — and decisions, conditions and Events are the operator's job everywhere
else. The inference worker only measures and serves the split it reads in ``status.modelRollout``.

The rollout, like an Argo Rollouts canary:

* a candidate appears (``spec.strategy.model.uri`` changed, or a training Job offered one): the
  rollout starts at the first step (``weightPct`` = ``steps[0]``) with a new id ``m-…``;
* each time the worker reports (both models scored on the same quotes), the candidate is judged
  against the stable model: more than ``maxAccuracyDropPct`` points less accurate, or a mean batch
  time beyond ``maxLatencyRatio`` times the stable one, or a load failure — rolled back at once;
* after ``dwellSeconds`` at a step with ``minOutcomes`` judged predictions for each model and the
  quality holding, the next step; the step that reaches 100 promotes the candidate (it becomes
  the stable model);
* ``spec.promoteRolloutId`` / ``spec.abortRolloutId`` naming the rollout in progress promote or
  abort it at once; an id naming anything else does nothing;
* a stable model the inference workers refused (``status.model``: corrupt or unloadable) serves
  nothing, so a candidate replaces it at once — there is nothing to compare it with.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trading_operator.api.session import (
    ModelQuality,
    ModelRolloutStatus,
    ModelSpec,
    RetrainStatus,
    RolloutDecision,
    RolloutSpec,
    TradingSessionSpec,
    TradingSessionStatus,
)
from trading_operator.api.status import CandidateSource, ModelState, RetrainTrigger, RolloutPhase, set_condition
from trading_operator.api.status import ConditionType as C
from trading_operator.api.status import Reason as R
from trading_operator.reconcile.conditions import Event

MAX_DECISIONS = 20
LATENCY_NOISE_MS = 1.0   # batch-time differences below this are noise, not degradation


def new_rollout_id() -> str:
    """``m-`` and ten lowercase hex characters (spec.promoteRolloutId's pattern)."""
    return f"m-{secrets.token_hex(5)}"


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)
    due_in: float | None = None        # seconds until a decision may be due without a new report
    retrain: RetrainTrigger | None = None
    retrain_reason: str = ""


def model_of(spec: TradingSessionSpec) -> ModelSpec | None:
    """The session's model when its strategy is the model strategy."""
    return spec.strategy.model if spec.strategy.name == "model" else None


def rollout_step(spec: TradingSessionSpec, status: TradingSessionStatus, now: dt.datetime, generation: int,
                 new_id: Callable[[], str] = new_rollout_id) -> Outcome:
    """Advance ``status.modelRollout`` one decision; set the ModelRollout condition."""
    out = Outcome()
    model = model_of(spec)

    def condition(ok: bool, reason: R, message: str) -> None:
        set_condition(status.conditions, C.MODEL_ROLLOUT, ok, reason, message, now, generation)

    if model is None:
        status.model_rollout = None
        condition(False, R.NO_MODEL, "the strategy uses no model")
        return out
    ro = status.model_rollout
    if ro is None:
        ro = status.model_rollout = ModelRolloutStatus(stable_uri=model.uri, spec_uri=model.uri,
                                                       message=f"{model.uri} serves every symbol")
    cfg = model.rollout

    def decide(reason: R, message: str, warning: bool = False) -> None:
        ro.message = message[:1024]
        ro.decisions = [*ro.decisions, RolloutDecision(at=now, decision=reason.value, weight_pct=ro.weight_pct,
                                                       message=message[:1024])][-MAX_DECISIONS:]
        out.events.append(Event("Warning" if warning else "Normal", reason.value, f"rollout {ro.id}: {message}"))

    def finish(phase: RolloutPhase, reason: R, message: str, warning: bool = False) -> None:
        if phase == RolloutPhase.PROMOTED:
            assert ro.candidate_uri is not None
            ro.stable_uri = ro.candidate_uri
            ro.weight_pct = 100
        else:
            ro.weight_pct = 0
        ro.phase, ro.finished_at = phase, now
        decide(reason, message, warning)

    # 1. a new candidate: the spec's uri changed, or a training Job offered a model not yet tried
    candidate: tuple[str, CandidateSource] | None = None
    if model.uri != ro.spec_uri:
        ro.spec_uri = model.uri
        if model.uri != ro.stable_uri:
            candidate = (model.uri, CandidateSource.SPEC)
        elif ro.phase == RolloutPhase.PROGRESSING:
            finish(RolloutPhase.ABORTED, R.ROLLOUT_ABORTED,
                   f"spec.strategy.model.uri is the stable model {ro.stable_uri} again; {ro.candidate_uri} withdrawn")
    offered = status.model_candidate
    if offered is not None and offered.uri != ro.offer_uri:
        ro.offer_uri = offered.uri
        if candidate is None and offered.uri not in (ro.stable_uri, ro.candidate_uri):
            candidate = (offered.uri, CandidateSource.RETRAIN)
    if candidate is not None:
        if ro.phase == RolloutPhase.PROGRESSING:
            finish(RolloutPhase.ABORTED, R.ROLLOUT_ABORTED, f"{ro.candidate_uri} superseded by {candidate[0]}")
        ro.id, ro.phase, ro.candidate_uri, ro.candidate_source = new_id(), RolloutPhase.PROGRESSING, *candidate
        ro.step, ro.weight_pct, ro.step_since, ro.finished_at = 0, cfg.steps[0], now, None
        ro.decisions = []
        decide(R.ROLLOUT_PROGRESSING, f"candidate {ro.candidate_uri} ({ro.candidate_source}) serves "
                                      f"{ro.weight_pct}% of the symbols against {ro.stable_uri}")

    served = status.model
    if (ro.phase == RolloutPhase.PROGRESSING and served is not None and served.state == ModelState.REFUSED
            and served.uri == ro.stable_uri):
        finish(RolloutPhase.PROMOTED, R.MODEL_PROMOTED,
               f"the stable model {ro.stable_uri} was refused by the inference workers ({served.reason}): nothing "
               f"serves to compare against, so {ro.candidate_uri} serves every symbol at once")

    if ro.phase != RolloutPhase.PROGRESSING:
        reason = {RolloutPhase.PROMOTED: R.MODEL_PROMOTED, RolloutPhase.ROLLED_BACK: R.MODEL_ROLLED_BACK,
                  RolloutPhase.ABORTED: R.ROLLOUT_ABORTED}.get(ro.phase, R.MODEL_STABLE)
        condition(False, reason, ro.message or f"{ro.stable_uri} serves every symbol")
        _retrain_trigger(model, status, now, out)
        return out

    # 2. the user's verbs, naming this rollout
    if spec.abort_rollout_id == ro.id:
        finish(RolloutPhase.ABORTED, R.ROLLOUT_ABORTED,
               f"aborted by spec.abortRolloutId: {ro.stable_uri} serves every symbol again")
    elif spec.promote_rollout_id == ro.id:
        finish(RolloutPhase.PROMOTED, R.MODEL_PROMOTED,
               f"promoted by spec.promoteRolloutId from {ro.weight_pct}%: {ro.candidate_uri} is the stable model")
    else:
        _judge(ro, cfg.steps, cfg, status, now, out, finish, decide)
    if ro.phase == RolloutPhase.PROGRESSING:
        condition(True, R.ROLLOUT_PROGRESSING, ro.message)
    else:
        reason = R.MODEL_PROMOTED if ro.phase == RolloutPhase.PROMOTED else (
            R.MODEL_ROLLED_BACK if ro.phase == RolloutPhase.ROLLED_BACK else R.ROLLOUT_ABORTED)
        condition(False, reason, ro.message)
    return out


def _judge(ro: ModelRolloutStatus, steps: list[int], cfg: RolloutSpec, status: TradingSessionStatus,
           now: dt.datetime, out: Outcome, finish: Callable[..., None], decide: Callable[..., None]) -> None:
    report = status.inference
    stable = cand = None
    if report is not None and report.rollout_id == ro.id:
        stable = next((m for m in report.models if m.role == "stable" and m.uri == ro.stable_uri), None)
        cand = next((m for m in report.models if m.role == "candidate" and m.uri == ro.candidate_uri), None)
    if cand is not None and cand.error:
        finish(RolloutPhase.ROLLED_BACK, R.MODEL_ROLLED_BACK, f"candidate {ro.candidate_uri} failed: {cand.error}",
               warning=True)
        return
    dwell_left = cfg.dwell_seconds - (now - (ro.step_since or now)).total_seconds()
    out.due_in = max(0.0, dwell_left)
    if stable is None or cand is None or report is None or report.updated_at is None:
        return
    if min(stable.outcomes, cand.outcomes) < cfg.min_outcomes:
        return
    degraded = _degraded(stable, cand, cfg.max_accuracy_drop_pct, cfg.max_latency_ratio)
    if degraded is not None:
        finish(RolloutPhase.ROLLED_BACK, R.MODEL_ROLLED_BACK, f"{ro.candidate_uri} rolled back at {ro.weight_pct}%: {degraded}",
               warning=True)
        return
    if dwell_left > 0 or ro.step_since is None or report.updated_at <= ro.step_since:
        return   # quality holds; the step has not dwelt long enough (or the report predates it)
    figures = _figures(stable, cand)
    if ro.step + 1 >= len(steps) or steps[ro.step + 1] >= 100:
        ro.step = len(steps) - 1
        finish(RolloutPhase.PROMOTED, R.MODEL_PROMOTED,
               f"promoted after {ro.weight_pct}%: {ro.candidate_uri} is the stable model ({figures})")
        return
    ro.step += 1
    ro.weight_pct, ro.step_since = steps[ro.step], now
    out.due_in = cfg.dwell_seconds
    decide(R.ROLLOUT_STEP_ADVANCED, f"candidate {ro.candidate_uri} serves {ro.weight_pct}% ({figures})")


def _figures(stable: ModelQuality, cand: ModelQuality) -> str:
    return (f"accuracy {_pct(cand.accuracy_pct)} vs stable {_pct(stable.accuracy_pct)} over "
            f"{cand.outcomes}/{stable.outcomes} outcomes; batch {_ms(cand.mean_batch_ms)} vs {_ms(stable.mean_batch_ms)}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def _degraded(stable: ModelQuality, cand: ModelQuality, max_drop: float, max_ratio: float) -> str | None:
    """Why the candidate is worse than the stable model beyond the tolerances (None: it holds)."""
    if stable.accuracy_pct is not None and cand.accuracy_pct is not None \
            and cand.accuracy_pct < stable.accuracy_pct - max_drop:
        return (f"accuracy {cand.accuracy_pct:.1f}% is more than {max_drop:g} points below the stable model's "
                f"{stable.accuracy_pct:.1f}% ({cand.outcomes}/{stable.outcomes} outcomes)")
    if stable.mean_batch_ms is not None and cand.mean_batch_ms is not None \
            and cand.mean_batch_ms > max_ratio * max(stable.mean_batch_ms, LATENCY_NOISE_MS):
        return (f"mean batch {cand.mean_batch_ms:.2f} ms exceeds {max_ratio:g} x the stable model's "
                f"{stable.mean_batch_ms:.2f} ms")
    return None


# ---------------------------------------------------------------------------- retraining

def _retrain_trigger(model: ModelSpec, status: TradingSessionStatus, now: dt.datetime, out: Outcome) -> None:
    """Automatic triggers (no rollout in progress, no Job running, not within minIntervalSeconds)."""
    cfg = model.retrain
    if cfg is None:
        return
    last = status.retrain
    if last is not None and (last.phase == "Running" or (
            last.started_at is not None and (now - last.started_at).total_seconds() < cfg.min_interval_seconds)):
        return
    report, ro = status.inference, status.model_rollout
    if report is None or ro is None:
        return
    stable = next((m for m in report.models if m.role == "stable" and m.uri == ro.stable_uri), None)
    if stable is None:
        return
    if (cfg.on_accuracy_drop_pct is not None and stable.accuracy_pct is not None
            and stable.training_accuracy_pct is not None and stable.outcomes >= model.rollout.min_outcomes
            and stable.accuracy_pct < stable.training_accuracy_pct - cfg.on_accuracy_drop_pct):
        out.retrain = RetrainTrigger.ACCURACY_DROP
        out.retrain_reason = (f"{stable.uri}: live accuracy {stable.accuracy_pct:.1f}% is more than "
                              f"{cfg.on_accuracy_drop_pct:g} points below its training accuracy "
                              f"{stable.training_accuracy_pct:.1f}%")
    elif cfg.on_new_rows is not None and report.rows_since_stable >= cfg.on_new_rows:
        out.retrain = RetrainTrigger.NEW_ROWS
        out.retrain_reason = f"{report.rows_since_stable} quotes scored since {stable.uri} became stable"


def retrain_request(spec: TradingSessionSpec, status: TradingSessionStatus) -> str | None:
    """A ``spec.retrainRequest`` not answered yet (needs ``strategy.model.retrain``), else None."""
    model = model_of(spec)
    if model is None or model.retrain is None or not spec.retrain_request:
        return None
    last = status.retrain
    if last is not None and (last.request == spec.retrain_request or last.phase == "Running"):
        return None
    return spec.retrain_request


def job_finished(retrain: RetrainStatus, job: dict[str, Any] | None, now: dt.datetime) -> tuple[R, str] | None:
    """Record the end of the running training Job from its conditions (None: still running)."""
    if retrain.phase != "Running":
        return None
    if job is None:
        retrain.phase, retrain.finished_at, retrain.message = "Failed", now, f"Job {retrain.job} disappeared"
        return R.RETRAIN_FAILED, retrain.message
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            retrain.phase, retrain.finished_at = "Succeeded", now
            retrain.message = f"Job {retrain.job} completed; its artifact is offered to the rollout"
            return R.RETRAIN_SUCCEEDED, retrain.message
        if cond.get("type") == "Failed":
            retrain.phase, retrain.finished_at = "Failed", now
            retrain.message = f"Job {retrain.job} failed: {cond.get('message') or cond.get('reason') or ''}"
            return R.RETRAIN_FAILED, retrain.message
    return None
