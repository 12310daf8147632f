"""The model rollout state machine (``reconcile.rollout``) and the retraining triggers, pure.

A scripted inference report stands in for the worker; every test walks the same functions the
operator's ``decide`` runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from trading_operator.api import workerconfig as wc
from trading_operator.api.session import Role, TradingSession, TradingSessionSpec, TradingSessionStatus
from trading_operator.build import training as build_training
from trading_operator.build import workers as build_workers
from trading_operator.reconcile import rollout
from trading_operator.reconcile import session as reconcile_session
from trading_operator.settings import Settings

T0 = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)
STABLE, CAND = "builtin://default", "file:///models/new.pt"


def spec(uri: str = STABLE, **extra: Any) -> TradingSessionSpec:
    model = {"uri": uri, "device": "cpu", "rollout": {"steps": [10, 50, 100], "dwellSeconds": 60, "minOutcomes": 100},
             **extra.pop("model", {})}
    return TradingSessionSpec.model_validate({"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"},
                                              "strategy": {"name": "model", "model": model}, **extra})


def report(status: TradingSessionStatus, at: dt.datetime, stable: tuple[float, int] = (60.0, 300),
           cand: tuple[float, int] | None = (60.0, 300), cand_ms: float = 0.2, error: str | None = None,
           rows: int = 0, training: float | None = None) -> None:
    ro = status.model_rollout
    assert ro is not None
    models: list[dict[str, Any]] = [{"uri": ro.stable_uri, "role": "stable", "servingPct": 100 - ro.weight_pct,
                                     "accuracyPct": stable[0], "outcomes": stable[1], "meanBatchMs": 0.2,
                                     "trainingAccuracyPct": training}]
    if cand is not None and ro.candidate_uri:
        models.append({"uri": ro.candidate_uri, "role": "candidate", "servingPct": ro.weight_pct,
                       "accuracyPct": cand[0], "outcomes": cand[1], "meanBatchMs": cand_ms, "error": error})
    status.inference = TradingSessionStatus.model_validate({"inference": {
        "models": models, "rolloutId": ro.id, "rowsSinceStable": rows, "updatedAt": at.isoformat()}}).inference


def step(sp: TradingSessionSpec, st: TradingSessionStatus, at: dt.datetime) -> rollout.Outcome:
    return rollout.rollout_step(sp, st, at, 1)


def started() -> tuple[TradingSessionStatus, rollout.Outcome]:
    st = TradingSessionStatus()
    step(spec(), st, T0)
    out = step(spec(CAND), st, T0)
    return st, out


def test_first_model_is_stable_and_a_new_uri_starts_at_the_first_step() -> None:
    st = TradingSessionStatus()
    step(spec(), st, T0)
    ro = st.model_rollout
    assert ro is not None and (ro.phase, ro.stable_uri, ro.weight_pct) == ("Stable", STABLE, 0)
    st, out = started()
    ro = st.model_rollout
    assert ro is not None and ro.id and ro.id.startswith("m-")
    assert (ro.phase, ro.candidate_uri, ro.candidate_source, ro.weight_pct) == ("Progressing", CAND, "Spec", 10)
    assert [e.reason for e in out.events] == ["RolloutProgressing"]
    cond = next(c for c in st.conditions if c.type == "ModelRollout")
    assert (cond.status, cond.reason) == ("True", "RolloutProgressing")


def test_advances_after_the_dwell_and_promotes_on_reaching_100() -> None:
    st, _ = started()
    ro = st.model_rollout
    assert ro is not None
    # Quality holds but the dwell has not passed: stays at 10 %, due when the dwell ends.
    report(st, T0 + dt.timedelta(seconds=30))
    out = step(spec(CAND), st, T0 + dt.timedelta(seconds=30))
    assert ro.weight_pct == 10 and out.due_in == pytest.approx(30)
    # Too few outcomes: no decision even after the dwell.
    report(st, T0 + dt.timedelta(seconds=61), cand=(70.0, 50))
    step(spec(CAND), st, T0 + dt.timedelta(seconds=61))
    assert ro.weight_pct == 10
    report(st, T0 + dt.timedelta(seconds=62))
    out = step(spec(CAND), st, T0 + dt.timedelta(seconds=62))
    assert ro.weight_pct == 50 and [e.reason for e in out.events] == ["RolloutStepAdvanced"]
    # A report older than the step does not count for it.
    step(spec(CAND), st, T0 + dt.timedelta(seconds=200))
    assert ro.weight_pct == 50
    report(st, T0 + dt.timedelta(seconds=200), cand=(58.0, 400))   # within 5 points
    out = step(spec(CAND), st, T0 + dt.timedelta(seconds=200))
    assert (ro.phase, ro.stable_uri, ro.weight_pct) == ("Promoted", CAND, 100)
    assert [e.reason for e in out.events] == ["ModelPromoted"]
    assert [d.decision for d in ro.decisions] == ["RolloutProgressing", "RolloutStepAdvanced", "ModelPromoted"]
    # Once promoted, the same spec starts nothing new.
    assert step(spec(CAND), st, T0 + dt.timedelta(seconds=300)).events == []


def test_rolls_back_at_once_on_accuracy_latency_or_a_load_failure() -> None:
    for kwargs, words in (({"cand": (40.0, 300)}, "more than 5 points below"),
                          ({"cand_ms": 5.0}, "exceeds 2 x"),
                          ({"error": "sha256 mismatch"}, "sha256 mismatch")):
        st, _ = started()
        report(st, T0 + dt.timedelta(seconds=5), **kwargs)  # long before the dwell ends
        out = step(spec(CAND), st, T0 + dt.timedelta(seconds=5))
        ro = st.model_rollout
        assert ro is not None and (ro.phase, ro.stable_uri, ro.weight_pct) == ("RolledBack", STABLE, 0), kwargs
        assert [(e.type, e.reason) for e in out.events] == [("Warning", "ModelRolledBack")]
        assert words in out.events[0].message
        cond = next(c for c in st.conditions if c.type == "ModelRollout")
        assert (cond.status, cond.reason) == ("False", "ModelRolledBack")
        # The rolled-back candidate is not retried while the spec still names it.
        assert step(spec(CAND), st, T0 + dt.timedelta(seconds=100)).events == []


def test_a_small_accuracy_gap_or_sub_millisecond_latency_is_not_degradation() -> None:
    st, _ = started()
    report(st, T0 + dt.timedelta(seconds=5), cand=(56.0, 300), cand_ms=0.9)
    step(spec(CAND), st, T0 + dt.timedelta(seconds=5))
    assert st.model_rollout is not None and st.model_rollout.phase == "Progressing"


def test_promote_and_abort_by_id_and_a_stale_id_does_nothing() -> None:
    st, _ = started()
    ro = st.model_rollout
    assert ro is not None and ro.id
    out = step(spec(CAND, promoteRolloutId="m-0000000000", abortRolloutId="m-0000000001"), st, T0)
    assert ro.phase == "Progressing" and out.events == []
    out = step(spec(CAND, promoteRolloutId=ro.id), st, T0)
    assert (ro.phase, ro.stable_uri) == ("Promoted", CAND) and out.events[0].reason == "ModelPromoted"
    st, _ = started()
    ro = st.model_rollout
    assert ro is not None and ro.id
    out = step(spec(CAND, abortRolloutId=ro.id), st, T0)
    assert (ro.phase, ro.stable_uri, ro.weight_pct) == ("Aborted", STABLE, 0)
    assert out.events[0].reason == "RolloutAborted"


def test_a_retrained_candidate_rolls_out_and_a_newer_one_supersedes() -> None:
    st = TradingSessionStatus()
    step(spec(), st, T0)
    st.model_candidate = TradingSessionStatus.model_validate(
        {"modelCandidate": {"uri": "file:///m/a.pt", "job": "s-train-1"}}).model_candidate
    step(spec(), st, T0)
    ro = st.model_rollout
    assert ro is not None and (ro.phase, ro.candidate_uri, ro.candidate_source) == ("Progressing", "file:///m/a.pt",
                                                                                    "Retrain")
    first = ro.id
    out = step(spec(CAND), st, T0)   # the user names another model meanwhile: it supersedes
    assert [e.reason for e in out.events] == ["RolloutAborted", "RolloutProgressing"]
    assert (ro.candidate_uri, ro.candidate_source) == (CAND, "Spec") and ro.id != first
    # Putting the spec back on the stable model withdraws the candidate.
    out = step(spec(), st, T0)
    assert ro.phase == "Aborted" and out.events[0].reason == "RolloutAborted"


def test_retraining_triggers_accuracy_drop_new_rows_and_min_interval() -> None:
    retrain = {"retrain": {"output": "file:///m", "onAccuracyDropPct": 5, "onNewRows": 1000,
                           "minIntervalSeconds": 600}}
    sp = spec(model=retrain)
    st = TradingSessionStatus()
    step(sp, st, T0)
    report(st, T0, stable=(52.0, 300), cand=None, training=60.0)
    out = step(sp, st, T0)
    assert out.retrain == "AccuracyDrop" and "52.0%" in out.retrain_reason
    report(st, T0, stable=(58.0, 300), cand=None, training=60.0, rows=1500)
    assert step(sp, st, T0).retrain == "NewRows"
    report(st, T0, stable=(58.0, 300), cand=None, training=60.0, rows=10)
    assert step(sp, st, T0).retrain is None
    st.retrain = TradingSessionStatus.model_validate({"retrain": {
        "job": "j", "trigger": "NewRows", "phase": "Succeeded", "startedAt": T0.isoformat()}}).retrain
    report(st, T0, stable=(40.0, 300), cand=None, training=60.0)
    assert step(sp, st, T0 + dt.timedelta(seconds=60)).retrain is None        # within minIntervalSeconds
    assert step(sp, st, T0 + dt.timedelta(seconds=700)).retrain == "AccuracyDrop"


def test_decide_starts_one_training_job_per_request_and_records_its_end() -> None:
    body = {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "generation": 2,
                         "creationTimestamp": "2026-11-20T00:00:00Z"},
            "spec": {**spec(model={"retrain": {"output": "pvc://models/retrained"}}).wire(), "retrainRequest": "r1"}}
    ts = TradingSession.model_validate(body)
    settings = Settings()
    obs = reconcile_session.Observed(ts, None, "no policy", {}, T0)
    d = reconcile_session.decide(obs, settings)
    job = d.training_job
    assert job is not None and d.status.retrain is not None
    assert (d.status.retrain.trigger, d.status.retrain.request, d.status.retrain.phase) == ("Request", "r1", "Running")
    assert job["metadata"]["name"] == d.status.retrain.job
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--out") + 1] == "pvc://models/retrained" and "--job" in cmd
    assert {"name": "models", "mountPath": "/models/models"} in job["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"]
    assert "RetrainStarted" in [e.reason for e in d.events]
    # The same request, with the Job still running, starts nothing; its completion is recorded.
    ts2 = TradingSession.model_validate({**body, "status": d.status.wire()})
    again = reconcile_session.decide(reconcile_session.Observed(ts2, None, "no policy", {}, T0,
                                                                retrain_job={"status": {}}), settings)
    assert again.training_job is None and again.status.retrain is not None and again.status.retrain.phase == "Running"
    done = reconcile_session.decide(reconcile_session.Observed(
        ts2, None, "no policy", {}, T0, retrain_job={"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
        settings)
    assert done.training_job is None and done.status.retrain is not None and done.status.retrain.phase == "Succeeded"
    assert "RetrainSucceeded" in [e.reason for e in done.events]
    ts3 = TradingSession.model_validate({**body, "status": done.status.wire()})
    assert reconcile_session.decide(reconcile_session.Observed(ts3, None, "x", {}, T0), settings).training_job is None


def test_a_new_model_uri_does_not_change_the_workers_config_hash() -> None:
    def digest(uri: str, **model: Any) -> str:
        ts = TradingSession.model_validate({"metadata": {"name": "s", "namespace": "ns"},
                                            "spec": spec(uri, model=model).wire()})
        return wc.WorkerConfig.from_session(ts).digest()
    assert digest(STABLE) == digest(CAND) == digest(CAND, rollout={"steps": [25, 100]})
    assert digest(STABLE) != digest(STABLE, batchSize=64)


def test_steps_must_rise_to_100() -> None:
    for steps in ([10, 50], [50, 10, 100], [0, 100]):
        with pytest.raises(ValueError):
            spec(model={"rollout": {"steps": steps}})


def test_the_rollout_walks_on_a_status_read_back_from_the_api_server() -> None:
    """Each reconcile starts from the stored status (strings, not enums): the walk must not depend on identity."""
    st = TradingSessionStatus()
    step(spec(), st, T0)
    at = T0
    for uri, expect in ((CAND, "Progressing"), (CAND, "Progressing"), (CAND, "Promoted")):
        st = TradingSessionStatus.model_validate(st.wire())
        if st.model_rollout is not None and st.model_rollout.phase == "Progressing":
            report(st, at)
            st = TradingSessionStatus.model_validate(st.wire())
        step(spec(uri), st, at)
        assert st.model_rollout is not None and st.model_rollout.phase == expect, st.model_rollout
        at += dt.timedelta(seconds=61)


def test_a_candidate_replaces_a_refused_stable_model_at_once() -> None:
    st = TradingSessionStatus()
    step(spec(), st, T0)
    st.model = TradingSessionStatus.model_validate({"model": {"uri": STABLE, "state": "Refused",
                                                              "reason": "ModelCorrupt"}}).model
    out = step(spec(CAND), st, T0)
    ro = st.model_rollout
    assert ro is not None and (ro.phase, ro.stable_uri, ro.weight_pct) == ("Promoted", CAND, 100)
    assert [e.reason for e in out.events] == ["RolloutProgressing", "ModelPromoted"]
    assert "refused" in ro.message and "ModelCorrupt" in ro.message
    # A refusal of some other model (not the stable one) changes nothing.
    st = TradingSessionStatus()
    step(spec(), st, T0)
    st.model = TradingSessionStatus.model_validate({"model": {"uri": "file:///old.pt", "state": "Refused"}}).model
    step(spec(CAND), st, T0)
    assert st.model_rollout is not None and st.model_rollout.phase == "Progressing"


def test_a_training_job_into_s3_gets_the_models_bucket_access_by_reference() -> None:
    s3 = {"endpoint": "http://127.0.0.1:9000", "credentialsSecretRef": {"name": "store-keys"}}
    ts = TradingSession.model_validate({
        "metadata": {"name": "s", "namespace": "ns", "uid": "u"},
        "spec": spec(model={"s3": s3, "retrain": {"output": "s3://models/retrained"}}).wire()})
    model = ts.spec.strategy.model
    assert model is not None and model.retrain is not None
    job = build_training.job(ts, Settings(), model.retrain, "s-train-1")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "store-keys"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    # The inference pods get the same access whatever spec.uri says: a candidate may come from the bucket.
    dep = build_workers.deployment(ts, Role.INFERENCE, Settings())
    names_ = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names_
