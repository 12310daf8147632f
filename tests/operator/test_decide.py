"""Unit tests of the pure session reconcile (no client): halts, resume guards, phase steps, suspend."""

from __future__ import annotations

import datetime as dt
from typing import Any

from trading_operator.api.phases import Phase
from trading_operator.api.riskpolicy import RiskPolicy
from trading_operator.api.session import Role, TradingSession
from trading_operator.reconcile import session as rs
from trading_operator.settings import Settings

UTC = dt.UTC
# Monday 2026-11-23 10:00 New York: the market is open.
OPEN = dt.datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
SETTINGS = Settings()


class SessionBuilder:
    """Chained test fixture: ``SessionBuilder().phase("MarketOpen").halted().build()``."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] = {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"},
                                     "workers": {r.value: {"replicas": 0} for r in Role}}
        self.status: dict[str, Any] = {}

    def phase(self, phase: str) -> SessionBuilder:
        self.status["phase"] = phase
        return self

    def with_spec(self, **fields: Any) -> SessionBuilder:
        self.spec.update(fields)
        return self

    def halt(self, source: str = "Risk", halt_id: str = "h-abc") -> SessionBuilder:
        self.status["phase"] = "Halted"
        self.status["halt"] = {"active": True, "source": source, "reason": "test", "id": halt_id,
                               "since": "2026-11-23T14:00:00Z"}
        return self

    def executor(self, **report: Any) -> SessionBuilder:
        self.spec["workers"]["executor"] = {"replicas": 1}
        self.status["executor"] = report
        return self

    def build(self) -> TradingSession:
        return TradingSession.model_validate({
            "metadata": {"name": "s", "namespace": "ns", "generation": 3,
                         "creationTimestamp": "2026-11-20T00:00:00Z"},
            "spec": self.spec, "status": self.status})


def policy(mode: str = "Active") -> RiskPolicy:
    return RiskPolicy.model_validate({"metadata": {"name": "p", "generation": 2}, "spec": {"mode": mode}})


def ready_deployment(n: int = 1) -> dict[str, Any]:
    return {"status": {"readyReplicas": n}}


def decide(ts: TradingSession, pol: RiskPolicy | None = None, deployments: dict[Role, Any] | None = None,
           now: dt.datetime = OPEN) -> rs.Decision:
    return rs.decide(rs.Observed(ts, pol if pol is not None else policy(), None, deployments or {}, now), SETTINGS,
                     halt_id=lambda: "h-new")


def test_a_new_session_starts_initializing() -> None:
    d = decide(SessionBuilder().build())
    assert d.status.phase == Phase.INITIALIZING and d.transition == (None, Phase.INITIALIZING)
    assert d.requeue_after == 0.0  # walks on at once


def test_mid_day_session_walks_forward_one_legal_step_at_a_time() -> None:
    d = decide(SessionBuilder().phase("Initializing").build())
    assert d.status.phase == Phase.PRE_MARKET
    d = decide(SessionBuilder().phase("PreMarket").build())
    assert d.status.phase == Phase.MARKET_OPEN


def test_premarket_checklist_blocks_market_open_until_the_executor_reports_the_broker() -> None:
    ts = SessionBuilder().phase("PreMarket").executor(brokerConnected=False).build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()})
    assert d.status.phase == Phase.PRE_MARKET
    cond = next(c for c in d.status.conditions if c.type == "PreMarketChecks")
    assert cond.status == "False" and "broker reachable" in cond.message
    ts = SessionBuilder().phase("PreMarket").executor(brokerConnected=True).build()
    assert decide(ts, deployments={Role.EXECUTOR: ready_deployment()}).status.phase == Phase.MARKET_OPEN


def test_user_halt_is_raised_with_an_id_and_an_event() -> None:
    d = decide(SessionBuilder().phase("MarketOpen").with_spec(halted=True, haltReason="drill").build())
    assert d.status.halt is not None and d.status.halt.active
    assert (d.status.halt.source, d.status.halt.id, d.status.halt.reason) == ("User", "h-new", "drill")
    assert d.status.phase == Phase.HALTED and d.status.trading_state == "Halted"
    assert [e.reason for e in d.events].count("Halted") == 1 and d.halt_raised == "User"


def test_risk_halt_written_by_the_worker_is_announced_once_by_the_operator() -> None:
    ts = SessionBuilder().halt("Risk").build()
    ts.status.phase = "MarketOpen"  # type: ignore[assignment]
    d = decide(ts)
    assert d.status.phase == Phase.HALTED and d.halt_raised is None
    assert [e.reason for e in d.events].count("Halted") == 1


def test_policy_kill_switch_halts() -> None:
    d = decide(SessionBuilder().phase("MarketOpen").build(), pol=policy("Halted"))
    assert d.status.halt is not None and d.status.halt.source == "Policy"


def test_policy_reducing_sets_the_trading_state() -> None:
    d = decide(SessionBuilder().phase("MarketOpen").build(), pol=policy("Reducing"))
    assert d.status.trading_state == "Reducing"


def test_stale_resume_id_is_refused_and_the_halt_stays() -> None:
    d = decide(SessionBuilder().halt("Risk", "h-abc").with_spec(resumeHaltId="h-old").build())
    assert d.status.halt is not None and d.status.halt.active
    cond = next(c for c in d.status.conditions if c.type == "Resumable")
    assert cond.reason == "StaleHaltId" and "ResumeRefused" in [e.reason for e in d.events]


def test_resume_naming_the_halt_clears_it_into_the_calendar_phase() -> None:
    d = decide(SessionBuilder().halt("Risk", "h-abc").with_spec(resumeHaltId="h-abc").build())
    assert d.status.halt is not None and not d.status.halt.active
    assert d.status.phase == Phase.MARKET_OPEN and "Resumed" in [e.reason for e in d.events]


def test_resume_is_blocked_until_the_executor_handled_the_halt_and_risk_is_within_limits() -> None:
    builder = SessionBuilder().halt("Risk", "h-abc").with_spec(resumeHaltId="h-abc").executor(haltHandled="h-zzz")
    builder.status["conditions"] = [{"type": "RiskBreached", "status": "True", "reason": "DailyLossHalt",
                                     "message": "", "lastTransitionTime": "2026-11-23T14:00:00Z"}]
    d = decide(builder.build(), deployments={Role.EXECUTOR: ready_deployment()})
    cond = next(c for c in d.status.conditions if c.type == "Resumable")
    assert cond.reason == "ResumeBlocked"
    assert "risk limits still breached" in cond.message and "executor has not reconciled" in cond.message
    assert d.status.halt is not None and d.status.halt.active


def test_lost_executor_halts_in_a_trading_phase() -> None:
    stale = (OPEN - dt.timedelta(seconds=SETTINGS.executor_stale_seconds + 5)).isoformat()
    ts = SessionBuilder().phase("MarketOpen").executor(heartbeat=stale, brokerConnected=True).build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()})
    assert d.status.halt is not None and d.status.halt.source == "Operator"
    assert "executor lost" in (d.status.halt.reason or "")


def test_suspend_is_refused_while_orders_are_open() -> None:
    ts = SessionBuilder().phase("MarketOpen").with_spec(suspend=True).executor(openOrders=3).build()
    d = decide(ts)
    assert not d.suspended
    cond = next(c for c in d.status.conditions if c.type == "Suspended")
    assert (cond.status, cond.reason) == ("False", "OpenOrders")
    assert decide(SessionBuilder().phase("MarketOpen").with_spec(suspend=True).executor(openOrders=0).build()).suspended


def test_missing_policy_means_no_trading() -> None:
    d = rs.decide(rs.Observed(SessionBuilder().phase("MarketOpen").build(), None, None, {}, OPEN), SETTINGS)
    cond = next(c for c in d.status.conditions if c.type == "PolicyApplied")
    assert (cond.status, cond.reason) == ("False", "PolicyNotFound") and d.status.trading_state == "Halted"


def test_holiday_stays_initializing_and_names_the_next_pre_market() -> None:
    thanksgiving = dt.datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    d = decide(SessionBuilder().phase("Initializing").build(), now=thanksgiving)
    assert d.status.phase == Phase.INITIALIZING and d.transition is None
    assert d.status.next_transition is not None and d.status.next_transition.phase == "PreMarket"
    assert d.status.next_transition.at == dt.datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_condition_time_moves_only_when_status_changes() -> None:
    first = decide(SessionBuilder().phase("MarketOpen").build())
    ts = SessionBuilder().phase("MarketOpen").build()
    ts.status.conditions = first.status.conditions
    later = decide(ts, now=OPEN + dt.timedelta(minutes=5))
    before = {c.type: c.last_transition_time for c in first.status.conditions}
    after = {c.type: c.last_transition_time for c in later.status.conditions}
    assert before == {k: after[k] for k in before}


def test_a_new_refusal_reason_is_announced_even_if_the_condition_stays_false() -> None:
    awaiting = decide(SessionBuilder().halt("Risk", "h-abc").build())
    assert next(c for c in awaiting.status.conditions if c.type == "Resumable").reason == "AwaitingResume"
    ts = SessionBuilder().halt("Risk", "h-abc").with_spec(resumeHaltId="h-old").build()
    ts.status.conditions = awaiting.status.conditions
    refused = decide(ts)
    assert "ResumeRefused" in [e.reason for e in refused.events]
