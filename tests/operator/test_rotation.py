"""The rotation step of the pure session reconcile: a rotated Secret rolls the roles that read it, the
executor only after it has handled a halt (a Rotation halt the operator raises and clears itself).
The whole path on the local platform: tests/drills/test_rotation.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.fixtures.builders import SessionBuilder, policy
from trading_operator import names
from trading_operator.api.session import ExecutorReport, Role, TradingSession
from trading_operator.api.workerconfig import format_versions
from trading_operator.build import workers as build_workers
from trading_operator.reconcile import session as rs
from trading_operator.settings import Settings

OPEN = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)  # a Monday, the market open
# Every role reads the journal DSN Secret; the executor (and, on Alpaca, market data) the broker keys.
SETTINGS = Settings(journal_dsn_secret_name="journal", journal_dsn_secret_key="dsn")
OLD = {"alpaca-keys": "10", "journal": "20"}
NEW_KEYS = {"alpaca-keys": "11", "journal": "20"}


def session(builder: SessionBuilder | None = None) -> SessionBuilder:
    b = builder or SessionBuilder()
    b.spec["broker"] = {"kind": "alpaca", "paper": True, "credentialsSecretRef": {"name": "alpaca-keys"}}
    b.spec["workers"] = {r.value: {"replicas": 1} for r in Role}
    return b.phase(b.status.get("phase", "MarketOpen"))


def deployment(versions: dict[str, str] | None, *, rolled: bool = True, replicas: int = 1) -> dict[str, Any]:
    annotations = {} if versions is None else {names.ANNOTATION_SECRET_VERSIONS: format_versions(versions)}
    return {"metadata": {"generation": 4}, "spec": {"replicas": replicas,
                                                    "template": {"metadata": {"annotations": annotations}}},
            "status": {"readyReplicas": replicas, "replicas": replicas,
                       "updatedReplicas": replicas if rolled else 0, "observedGeneration": 4 if rolled else 3}}


def role_versions(ts: TradingSession, versions: dict[str, str]) -> dict[Role, dict[str, str]]:
    uses = build_workers.role_secrets(ts, SETTINGS)
    return {role: {n: versions[n] for n in uses[role]} for role in Role}


def decide(ts: TradingSession, live: dict[Role, dict[str, Any]], current: dict[str, str] | None) -> rs.Decision:
    return rs.decide(rs.Observed(ts, policy(), None, live, OPEN, secret_versions=current,
                                 secret_versions_unknown="the operator may not list Secrets (403 Forbidden)"),
                     SETTINGS, halt_id=lambda: "h-rot")


def live_at(ts: TradingSession, versions: dict[str, str], **overrides: dict[str, Any]) -> dict[Role, dict[str, Any]]:
    per_role = role_versions(ts, versions)
    return {role: overrides.get(role.value, deployment(per_role[role])) for role in Role}


def cond(d: rs.Decision, type_: str) -> tuple[str, str, str]:
    c = next(c for c in d.status.conditions if c.type == type_)
    return c.status, c.reason, c.message


def test_the_builder_names_the_secrets_each_role_reads() -> None:
    uses = build_workers.role_secrets(session().build(), SETTINGS)
    assert uses[Role.EXECUTOR] == uses[Role.MARKET_DATA] == ["alpaca-keys", "journal"]
    assert all(uses[r] == ["journal"] for r in (Role.STRATEGY, Role.INFERENCE, Role.RISK))
    dep = build_workers.deployment(session().build(), Role.EXECUTOR, SETTINGS, secret_versions=OLD)
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"][names.ANNOTATION_SECRET_VERSIONS] == "alpaca-keys=10,journal=20"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["TRADING_SECRET_VERSIONS"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        f"metadata.annotations['{names.ANNOTATION_SECRET_VERSIONS}']"


def test_unknown_versions_roll_nothing_and_status_says_why() -> None:
    ts = session().build()
    live = live_at(ts, OLD)
    d = decide(ts, live, None)
    assert cond(d, "SecretsCurrent")[:2] == ("Unknown", "SecretVersionsUnknown")
    assert "403" in cond(d, "SecretsCurrent")[2]
    assert d.secret_versions == role_versions(ts, OLD) and d.status.halt is None  # templates kept as they are


def test_current_versions_say_so_and_status_shows_what_each_role_runs() -> None:
    ts = session().build()
    d = decide(ts, live_at(ts, OLD), OLD)
    assert cond(d, "SecretsCurrent")[:2] == ("True", "Current")
    assert d.status.workers["executor"].secret_versions == OLD
    assert d.status.workers["strategy"].secret_versions == {"journal": "20"}
    assert d.status.halt is None and not [e for e in d.events if e.reason in ("SecretChanged", "Rotated", "Halted")]


def test_a_rotated_broker_secret_halts_and_holds_the_running_executor() -> None:
    ts = session().build()
    d = decide(ts, live_at(ts, OLD), NEW_KEYS)
    assert d.status.halt is not None and d.status.halt.source == "Rotation" and d.status.halt.id == "h-rot"
    assert "alpaca-keys changed" in (d.status.halt.reason or "")
    assert d.secret_versions[Role.EXECUTOR] == OLD  # not rolled before it handled the halt
    assert d.secret_versions[Role.MARKET_DATA] == NEW_KEYS  # market data sends nothing: it rolls at once
    assert d.secret_versions[Role.STRATEGY] == {"journal": "20"}
    assert cond(d, "SecretsCurrent")[:2] == ("False", "RotationWaiting")
    assert d.status.phase == "Halted" and d.halt_raised == "Rotation"
    assert any(e.reason == "Halted" and "Rotation" in e.message for e in d.events)
    # Nobody resumes a Rotation halt by hand: the operator clears it.
    assert cond(d, "Resumable")[:2] == ("False", "RotationWaiting")


def test_the_executor_rolls_once_it_has_handled_the_halt_then_the_new_one_clears_it() -> None:
    ts = session(SessionBuilder().halt("Rotation", "h-rot")).build()
    ts.status.executor = ExecutorReport.model_validate({"haltHandled": "h-old", "secretVersions": OLD})
    d = decide(ts, live_at(ts, OLD), NEW_KEYS)
    assert d.secret_versions[Role.EXECUTOR] == OLD and d.status.halt is not None  # not handled yet: held

    ts.status.executor = ExecutorReport.model_validate({"haltHandled": "h-rot", "secretVersions": OLD})
    d = decide(ts, live_at(ts, OLD), NEW_KEYS)
    assert d.secret_versions[Role.EXECUTOR] == NEW_KEYS  # handled: the template takes the new versions
    assert d.status.halt is not None and cond(d, "SecretsCurrent")[:2] == ("False", "Rolling")

    # The Deployment rolled; the report still comes from the old process (it handled the halt too).
    rolled = live_at(ts, NEW_KEYS)
    d = decide(ts, rolled, NEW_KEYS)
    assert d.status.halt is not None, "a report of the old executor must not clear the halt"

    # The new executor reports the new versions and has handled the halt: the operator clears it.
    ts.status.executor = ExecutorReport.model_validate({"haltHandled": "h-rot", "secretVersions": NEW_KEYS})
    d = decide(ts, rolled, NEW_KEYS)
    assert d.status.halt is None and d.status.last_halt is not None and d.status.last_halt.source == "Rotation"
    assert d.status.phase == "MarketOpen"
    assert cond(d, "SecretsCurrent")[:2] == ("True", "Current")
    assert [e.reason for e in d.events if e.reason == "Rotated"]
    assert d.status.workers["executor"].secret_versions == NEW_KEYS


def test_a_rollout_still_running_keeps_the_halt() -> None:
    ts = session(SessionBuilder().halt("Rotation", "h-rot")).build()
    ts.status.executor = ExecutorReport.model_validate({"haltHandled": "h-rot", "secretVersions": NEW_KEYS})
    live = live_at(ts, NEW_KEYS, executor=deployment(NEW_KEYS, rolled=False))
    d = decide(ts, live, NEW_KEYS)
    assert d.status.halt is not None and d.status.workers["executor"].secret_versions is None


def test_under_a_user_halt_the_executor_rolls_when_handled_and_the_user_halt_stays() -> None:
    ts = session(SessionBuilder().halt("User", "h-user").user_halt("desk")).build()
    ts.status.executor = ExecutorReport.model_validate({"haltHandled": "h-user", "secretVersions": OLD})
    d = decide(ts, live_at(ts, OLD), NEW_KEYS)
    assert d.secret_versions[Role.EXECUTOR] == NEW_KEYS and d.status.halt is not None
    assert d.status.halt.id == "h-user" and d.halt_raised is None
    ts.status.executor = ExecutorReport.model_validate({"haltHandled": "h-user", "secretVersions": NEW_KEYS})
    d = decide(ts, live_at(ts, NEW_KEYS), NEW_KEYS)
    assert d.status.halt is not None and d.status.halt.id == "h-user"  # only the user resumes their halt


def test_a_stopped_executor_rolls_without_a_halt() -> None:
    ts = session().build()
    ts.spec.workers.executor.replicas = 0
    live = live_at(ts, OLD, executor=deployment(role_versions(ts, OLD)[Role.EXECUTOR], replicas=0))
    d = decide(ts, live, NEW_KEYS)
    assert d.status.halt is None and d.secret_versions[Role.EXECUTOR] == NEW_KEYS


def test_a_rotated_journal_secret_rolls_every_role() -> None:
    ts = session().build()
    rotated = {"alpaca-keys": "10", "journal": "21"}
    d = decide(ts, live_at(ts, OLD), rotated)
    assert all(d.secret_versions[r] == {"journal": "21"} for r in (Role.STRATEGY, Role.INFERENCE, Role.RISK))
    assert d.secret_versions[Role.MARKET_DATA] == rotated
    assert d.secret_versions[Role.EXECUTOR] == OLD and d.status.halt is not None  # the executor: safely
    assert "journal changed" in (d.status.halt.reason or "")


def test_the_secrets_each_role_reads_come_from_observed_when_the_reconcile_has_them() -> None:
    # The reconcile builds role_secrets once (to track the versions) and hands it to decide in Observed.
    ts = session().build()
    uses = build_workers.role_secrets(ts, SETTINGS)

    def given(role_secrets: dict[Role, list[str]]) -> rs.Decision:
        return rs.decide(rs.Observed(ts, policy(), None, live_at(ts, OLD), OPEN, secret_versions=NEW_KEYS,
                                     role_secrets=role_secrets), SETTINGS, halt_id=lambda: "h-rot")

    derived, handed = decide(ts, live_at(ts, OLD), NEW_KEYS), given(uses)
    assert handed.status == derived.status and handed.secret_versions == derived.secret_versions
    assert handed.events == derived.events
    assert given({**uses, Role.STRATEGY: []}).secret_versions[Role.STRATEGY] == {}  # read, not rebuilt
