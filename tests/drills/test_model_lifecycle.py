"""Drills: the model lifecycle on the whole platform — staged rollout, rollback, promote/abort, quality floor,
retraining.

The sessions run the model strategy with one inference worker on the simulated exchange with return
autocorrelation 0.4, where the builtin model is right about three times in four and an inverted copy
of it (its output negated) about one time in four. What the inference worker served is read from
the signals it published on the bus (each names its model); what the executor did, from the journal
and the exchange's record. Windows and dwell times are short so each drill takes seconds.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.drills.harness import Drill
from trading_operator.api.session import Role
from trading_workers import bus as bus_mod
from trading_workers.inference import artifact
from trading_workers.inference import model as model_mod

pytestmark = [pytest.mark.drill, pytest.mark.e2e]

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "META", "GOOG", "TSLA", "AMD", "INTC", "ORCL"]
BUILTIN = "builtin://default"


def inverted(path: pathlib.Path) -> str:
    net = model_mod.load_uri(BUILTIN).model
    last = net.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    model_mod.save(net, path, {"report": {"directional_accuracy": 0.25}})
    return f"file://{path}"


def copy_of_builtin(path: pathlib.Path) -> str:
    shutil.copyfile(model_mod.builtin_path("default"), path)
    return f"file://{path}"


def model_session(uri: str, dwell: float = 3.0, **model: Any) -> dict[str, Any]:
    return {"broker": {"simulated": {"returnAutocorrelation": 0.4}},
            "strategy": {"name": "model", "model": {
                "uri": uri, "device": "cpu", "maxLatencyMs": 10_000, "qualityWindow": 200, "reportSeconds": 1,
                "rollout": {"steps": [10, 50, 100], "dwellSeconds": dwell, "minOutcomes": 60}, **model}},
            "workers": {"inference": {"replicas": 1}}}


def rollout(st: dict[str, Any]) -> dict[str, Any]:
    return st.get("modelRollout") or {}


def stable_quality(st: dict[str, Any]) -> dict[str, Any]:
    return next((m for m in (st.get("inference") or {}).get("models") or [] if m["role"] == "stable"), {})


def signals_since(d: Drill, since_id: str) -> tuple[list[tuple[str, str]], str]:
    """(symbol, model) of every signal published after ``since_id``, and the last id read."""
    entries = d.redis.xrange(f"{d.prefix}:stream:{bus_mod.SIGNALS}", min=f"({since_id}")
    out = [(bus_mod.decode_signal(fields).symbol, bus_mod.decode_signal(fields).model) for _, fields in entries]
    return out, entries[-1][0] if entries else since_id


def wait(d: Drill, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = 30.0) -> dict[str, Any]:
    """``Drill.wait_status``, failing with the model fields of the status and the inference worker's log tail."""
    try:
        return d.wait_status(predicate, what, timeout=timeout)
    except AssertionError as exc:
        st = d.status()
        model = {k: st.get(k) for k in ("modelRollout", "inference", "modelCandidate", "retrain", "reducing")}
        log = pathlib.Path(d.log_path(Role.INFERENCE))
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no inference log)"
        raise AssertionError(f"{exc}\nmodel status: {json.dumps(model, default=str)[:4000]}\n"
                             f"inference log tail:\n{tail}") from None


def inference_pid(d: Drill) -> int:
    replicas = d.replicas(Role.INFERENCE)
    assert replicas and replicas[0].proc is not None
    return int(replicas[0].proc.pid)


def test_a_better_model_is_promoted_step_by_step_and_a_worse_one_rolled_back(
        make_drill: Callable[..., Drill], tmp_path: pathlib.Path) -> None:
    bad = inverted(tmp_path / "inverted.pt")
    d = make_drill(symbols=SYMBOLS, spec=model_session(bad))
    st = wait(d, lambda s: rollout(s).get("phase") == "Stable" and stable_quality(s).get("outcomes", 0) >= 60,
                       "the inverted model stable and measured", timeout=60)
    assert rollout(st)["stableUri"] == bad and stable_quality(st)["accuracyPct"] < 45, st.get("inference")
    pid = inference_pid(d)

    # A better model: 10 %, then 50 %, then promoted (100 %).
    _, mark = signals_since(d, "0-0")
    d.patch_spec({"strategy": {"model": {"uri": BUILTIN}}})
    st = wait(d, lambda s: rollout(s).get("phase") == "Progressing", "the rollout started")
    ro = rollout(st)
    assert (ro["candidateUri"], ro["candidateSource"], ro["weightPct"]) == (BUILTIN, "Spec", 10)
    d.wait_condition("ModelRollout", "True", reason="RolloutProgressing")
    st = wait(d, lambda s: rollout(s).get("weightPct", 0) >= 50, "the 50 % step", timeout=60)
    served_at_10, mark = signals_since(d, mark)
    by_candidate = {sym for sym, uri in served_at_10 if uri == BUILTIN}
    assert len(by_candidate) <= 1, served_at_10          # at 10 % of 10 symbols: one symbol, no more
    st = wait(d, lambda s: rollout(s).get("phase") == "Promoted", "promoted", timeout=60)
    ro = rollout(st)
    assert ro["stableUri"] == BUILTIN and ro["weightPct"] == 100
    assert [x["decision"] for x in ro["decisions"]] == ["RolloutProgressing", "RolloutStepAdvanced", "ModelPromoted"]
    assert [x["weightPct"] for x in ro["decisions"]] == [10, 50, 100]
    d.wait_event("ModelPromoted")
    d.wait_event("RolloutStepAdvanced")
    d.wait_condition("ModelRollout", "False", reason="ModelPromoted")
    # Every symbol is now served by the promoted model (once the worker has read the promotion: it follows the
    # rollout every reportSeconds).
    wait(d, lambda s: [(m["role"], m["uri"], m["servingPct"]) for m in (s.get("inference") or {}).get("models") or []]
         == [("stable", BUILTIN, 100)], "the worker serving the promoted model alone")
    _, mark = signals_since(d, "0-0")
    time.sleep(3)
    after, mark = signals_since(d, mark)
    assert after and {uri for _, uri in after} == {BUILTIN}, after

    # A worse model: rolled back by itself, long before its dwell could promote it.
    d.patch_spec({"strategy": {"model": {"uri": bad, "rollout": {"dwellSeconds": 600}}}})
    st = wait(d, lambda s: rollout(s).get("phase") == "RolledBack", "rolled back", timeout=60)
    ro = rollout(st)
    assert ro["stableUri"] == BUILTIN and ro["weightPct"] == 0 and ro["candidateUri"] == bad
    assert "accuracy" in ro["message"] and "below the stable model" in ro["message"], ro
    event = d.wait_event("ModelRolledBack")
    assert event["type"] == "Warning" and bad in event["message"] and "accuracy" in event["message"], event
    wait(d, lambda s: [m["role"] for m in (s.get("inference") or {}).get("models") or []] == ["stable"],
                  "the candidate withdrawn from the worker")
    _, mark = signals_since(d, "0-0")
    time.sleep(3)
    after, _ = signals_since(d, mark)
    assert after and {uri for _, uri in after} == {BUILTIN}, after
    # None of this restarted the inference worker: a new model.uri is not a config change.
    assert inference_pid(d) == pid


def test_promote_and_abort_with_one_patch(make_drill: Callable[..., Drill], tmp_path: pathlib.Path) -> None:
    d = make_drill(symbols=SYMBOLS[:4], spec=model_session(BUILTIN, dwell=3600))
    wait(d, lambda s: rollout(s).get("phase") == "Stable", "stable")
    first = copy_of_builtin(tmp_path / "a.pt")
    d.patch_spec({"strategy": {"model": {"uri": first}}})
    ro = rollout(wait(d, lambda s: rollout(s).get("phase") == "Progressing", "progressing"))
    d.patch_spec({"abortRolloutId": ro["id"]})
    st = wait(d, lambda s: rollout(s).get("phase") == "Aborted", "aborted")
    assert rollout(st)["stableUri"] == BUILTIN and rollout(st)["weightPct"] == 0
    d.wait_event("RolloutAborted")
    second = copy_of_builtin(tmp_path / "b.pt")
    d.patch_spec({"strategy": {"model": {"uri": second}}})
    ro = rollout(wait(d, lambda s: rollout(s).get("phase") == "Progressing", "progressing again"))
    assert ro["candidateUri"] == second and ro["weightPct"] == 10
    d.patch_spec({"promoteRolloutId": ro["id"]})
    st = wait(d, lambda s: rollout(s).get("phase") == "Promoted", "promoted by hand")
    assert rollout(st)["stableUri"] == second and "spec.promoteRolloutId" in rollout(st)["message"]
    wait(d, lambda s: stable_quality(s).get("uri") == second, "the worker serving the promoted model")


def test_quality_below_the_floor_alerts_then_reduces(make_drill: Callable[..., Drill], tmp_path: pathlib.Path) -> None:
    bad = inverted(tmp_path / "inverted.pt")
    floor = {"limits": {"modelAccuracy": {"enabled": True, "alertBelowPct": 40, "criticalBelowPct": 10,
                                          "minOutcomes": 60}}}
    d = make_drill(symbols=SYMBOLS[:6], spec=model_session(bad), policy=floor)
    st = wait(d, lambda s: any(b["rule"] == "modelAccuracy" for b in (s.get("risk") or {}).get("breaches") or []),
                       "modelAccuracy in breach", timeout=60)
    breach = next(b for b in st["risk"]["breaches"] if b["rule"] == "modelAccuracy")
    assert breach["action"] == "Alert" and breach["threshold"] == 40 and breach["value"] < 40, breach
    d.wait_condition("RiskAlert", "True", reason="Alerting")
    assert "modelAccuracy (Alert)" in d.wait_event("RiskBreached")["message"]
    assert "reducing" not in d.status()
    assert d.order_outcome(d.send_intent("AAPL", "buy", 5)).sent          # an Alert blocks nothing

    # The critical floor above the model's accuracy: the configured action (Reduce) latches.
    d.patch_policy({"limits": {"modelAccuracy": {"criticalBelowPct": 39}}})
    st = wait(d, lambda s: s.get("reducing"), "the Reducing latch", timeout=45)
    assert (st["reducing"]["source"], st["reducing"]["rule"]) == ("Risk", "modelAccuracy"), st["reducing"]
    wait(d, lambda s: (s.get("executor") or {}).get("tradingState") == "Reducing", "the executor Reducing")
    grow = d.order_outcome(d.send_intent("AAPL", "buy", 5))
    assert grow.refused and grow.reason == "ReduceOnly" and not grow.reached_exchange, grow
    assert d.order_outcome(d.send_intent("AAPL", "sell", 5)).sent


def test_a_retraining_job_publishes_a_version_that_the_rollout_picks_up(
        make_drill: Callable[..., Drill], monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_drill(symbols=SYMBOLS[:4], wait=None)
    store = d.platform.s3                       # the platform's object store, as make up starts it
    assert store is not None
    d.platform.kubectl("create", "secret", "generic", "drill-s3", f"--from-env-file={d.platform.s3_env_file}",
                       "-n", d.namespace)
    s3 = {"endpoint": store.endpoint, "credentialsSecretRef": {"name": "drill-s3"}}
    out = f"s3://trading-models/{d.namespace}"
    d.patch_spec(model_session(BUILTIN, s3=s3, retrain={"output": out, "samples": 40_000, "epochs": 3, "seed": 2,
                                                        "onNewRows": None, "onAccuracyDropPct": None}))
    d.wait_trading(90)
    wait(d, lambda s: rollout(s).get("phase") == "Stable", "stable")
    d.wait_condition("Retraining", "False", reason="NotRetraining")
    d.patch_spec({"retrainRequest": "drill-1"})
    st = wait(d, lambda s: (s.get("retrain") or {}).get("request") == "drill-1", "a training Job")
    job = st["retrain"]["job"]
    assert st["retrain"]["trigger"] == "Request"
    d.wait_event("RetrainStarted")
    st = wait(d, lambda s: (s.get("retrain") or {}).get("phase") == "Succeeded", "the Job succeeded", timeout=120)
    d.wait_event("RetrainSucceeded")
    candidate = st["modelCandidate"]
    assert candidate["job"] == job and candidate["uri"].startswith(f"{out}/{d.name}/"), candidate
    # A published version in the object store: model file and manifest (sha256, training data, metrics).
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    manifest = artifact.read_manifest(candidate["uri"])
    assert manifest.metrics["job"] == job and manifest.metrics["val_mse"] < manifest.metrics["baseline_mse"]
    assert manifest.training_data["seed"] == 2 and manifest.training_data["samples"] == 40_000
    loaded = model_mod.load_uri(candidate["uri"])
    assert loaded.verified and loaded.sha256 == manifest.sha256
    # The rollout picks it up from the first step (never straight to 100 %), and the worker scores it.
    st = wait(d, lambda s: rollout(s).get("candidateUri") == candidate["uri"], "the rollout of the new model")
    first = rollout(st)["decisions"][0]
    assert (first["decision"], first["weightPct"]) == ("RolloutProgressing", 10)
    assert rollout(st)["candidateSource"] == "Retrain"
    wait(d, lambda s: any(m["role"] == "candidate" and m["uri"] == candidate["uri"] and m["predictionsPerSecond"] > 0
                          and m["servingPct"] == 10 and not m.get("error")
                          for m in (s.get("inference") or {}).get("models") or []),
         "the worker scoring the candidate (fetched from the store, its sha256 checked)")
    # The same request again starts nothing.
    time.sleep(2)
    assert d.status()["retrain"]["job"] == job
