"""Unit tests of the pure session reconcile (no client): halts, resume guards, phase steps, suspend."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.fixtures.builders import SessionBuilder, policy, ready_deployment
from trading_operator import liveness
from trading_operator.api.phases import Phase
from trading_operator.api.riskpolicy import RiskPolicy
from trading_operator.api.session import Role, TradingSession
from trading_operator.reconcile import session as rs
from trading_operator.settings import Settings

UTC = dt.UTC
# Monday 2026-11-23 10:00 New York: the market is open.
OPEN = dt.datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
SETTINGS = Settings()


def decide(ts: TradingSession, pol: RiskPolicy | None = None, deployments: dict[Role, Any] | None = None,
           now: dt.datetime = OPEN, executor_silence: float | None = None) -> rs.Decision:
    return rs.decide(rs.Observed(ts, pol if pol is not None else policy(), None, deployments or {}, now,
                                 executor_silence=executor_silence), SETTINGS, halt_id=lambda: "h-new")


def test_a_new_session_starts_initializing() -> None:
    d = decide(SessionBuilder().build())
    assert d.status.phase == Phase.INITIALIZING and d.transition == (None, Phase.INITIALIZING)
    assert d.requeue_after == 0.0  # walks on at once (the market is open: PreMarket is next)


def test_a_new_session_on_a_closed_day_waits_for_the_calendar_not_a_second_pass() -> None:
    saturday = dt.datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    d = decide(SessionBuilder().build(), now=saturday)
    assert d.status.phase == Phase.INITIALIZING and d.transition == (None, Phase.INITIALIZING)
    assert d.requeue_after == SETTINGS.resync_seconds  # the backstop: nothing is due before Monday
    again = decide(SessionBuilder().build().model_copy(update={"status": d.status}), now=saturday)
    assert again.transition is None and again.status == d.status  # what a second pass would have found


def test_mid_day_session_walks_forward_one_legal_step_at_a_time() -> None:
    d = decide(SessionBuilder().phase("Initializing").build())
    assert d.status.phase == Phase.PRE_MARKET
    d = decide(SessionBuilder().phase("PreMarket").build())
    assert d.status.phase == Phase.MARKET_OPEN


def test_premarket_checklist_blocks_market_open_until_the_executor_reports_the_broker() -> None:
    ts = SessionBuilder().phase("PreMarket").executor(brokerConnected=False).risk().build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()})
    assert d.status.phase == Phase.PRE_MARKET
    cond = next(c for c in d.status.conditions if c.type == "PreMarketChecks")
    assert cond.status == "False" and "broker reachable" in cond.message
    # While it fails, no order is sent: the trading state is Halted and Ready says why.
    assert d.status.trading_state == "Halted"
    ready = next(c for c in d.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "PreMarketChecksFailing")
    ts = SessionBuilder().phase("PreMarket").executor(brokerConnected=True).risk().build()
    assert decide(ts, deployments={Role.EXECUTOR: ready_deployment()}).status.phase == Phase.MARKET_OPEN


def test_premarket_checklist_needs_fresh_data_and_names_the_stale_symbols() -> None:
    ts = SessionBuilder().phase("PreMarket").executor(brokerConnected=True).risk(stale=["AAPL"]).build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()})
    assert d.status.phase == Phase.PRE_MARKET
    fresh = next(c for c in d.status.conditions if c.type == "DataFresh")
    assert (fresh.status, fresh.reason) == ("False", "QuotesStale") and "AAPL" in fresh.message
    cond = next(c for c in d.status.conditions if c.type == "PreMarketChecks")
    assert "market data fresh" in cond.message
    old = SessionBuilder().phase("PreMarket").executor(brokerConnected=True).risk(at="2026-11-23T14:00:00Z").build()
    fresh = next(c for c in decide(old, deployments={Role.EXECUTOR: ready_deployment()}).status.conditions
                 if c.type == "DataFresh")
    assert (fresh.status, fresh.reason) == ("Unknown", "RiskReportStale")


def test_premarket_checklist_is_not_claimed_before_pre_market() -> None:
    d = decide(SessionBuilder().build())
    cond = next(c for c in d.status.conditions if c.type == "PreMarketChecks")
    assert (cond.status, cond.reason) == ("Unknown", "NotEvaluated")


def test_a_session_blocked_in_pre_market_leaves_it_when_the_day_ends() -> None:
    ts = SessionBuilder().phase("PreMarket").executor(brokerConnected=False).risk().build()
    evening = dt.datetime(2026, 11, 23, 22, 0, tzinfo=UTC)  # 17:00 New York: after the close
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()}, now=evening)
    assert d.transition == (Phase.PRE_MARKET, Phase.INITIALIZING)


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
    assert d.status.halt is None and d.status.last_halt is not None and d.status.last_halt.id == "h-abc"
    assert d.status.phase == Phase.MARKET_OPEN and "Resumed" in [e.reason for e in d.events]


def test_resume_is_blocked_until_the_executor_handled_the_halt_and_risk_is_within_limits() -> None:
    builder = (SessionBuilder().halt("Risk", "h-abc").with_spec(resumeHaltId="h-abc").executor(haltHandled="h-zzz")
               .risk(("dailyLoss", "Halt")))
    d = decide(builder.build(), deployments={Role.EXECUTOR: ready_deployment()})
    cond = next(c for c in d.status.conditions if c.type == "Resumable")
    assert cond.reason == "ResumeBlocked"
    assert "risk limits still breached: dailyLoss (Halt)" in cond.message and "executor has not reconciled" in cond.message
    assert d.status.halt is not None and d.status.halt.active


def test_an_alert_never_blocks_a_resume() -> None:
    ts = SessionBuilder().halt("User").with_spec(halted=False).risk(("winRateFloor", "Alert")).build()
    d = decide(ts)
    assert d.status.halt is None, [c for c in d.status.conditions if c.type == "Resumable"]
    alert = next(c for c in d.status.conditions if c.type == "RiskAlert")
    breached = next(c for c in d.status.conditions if c.type == "RiskBreached")
    assert (alert.status, breached.status) == ("True", "False") and "winRateFloor" in alert.message


def test_reducing_latch_survives_reconciles_and_is_cleared_only_by_name_within_limits() -> None:
    ts = SessionBuilder().phase("MarketOpen").reducing(rid="r-abc").risk(("concentration", "Reduce")).build()
    for _ in range(3):
        d = decide(ts)
        assert d.status.trading_state == "Reducing" and d.status.reducing is not None
        ts.status = d.status
    ready = next(c for c in d.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "Reducing")
    # Named, but the rule is still beyond its limit: blocked, and the message names the rule.
    blocked = decide(SessionBuilder().phase("MarketOpen").reducing(rid="r-abc").risk(("concentration", "Reduce"))
                     .with_spec(clearReducingId="r-abc").build())
    cond = next(c for c in blocked.status.conditions if c.type == "Reducing")
    assert cond.reason == "ClearBlocked" and "concentration" in cond.message and blocked.status.reducing is not None
    # A wrong id is refused; the right one within limits clears it.
    wrong = decide(SessionBuilder().phase("MarketOpen").reducing(rid="r-abc").risk()
                   .with_spec(clearReducingId="r-zzz").build())
    assert wrong.status.reducing is not None and "ClearRefused" in [e.reason for e in wrong.events]
    cleared = decide(SessionBuilder().phase("MarketOpen").reducing(rid="r-abc").risk()
                     .with_spec(clearReducingId="r-abc").build())
    assert cleared.status.reducing is None and cleared.status.last_reducing is not None
    assert cleared.status.trading_state == "Active"


def test_leftover_resume_id_of_a_cleared_halt_is_not_a_refusal() -> None:
    builder = SessionBuilder().halt("Risk", "h-new2").with_spec(resumeHaltId="h-abc")
    builder.status["lastHalt"] = {"active": False, "source": "Risk", "reason": "old", "id": "h-abc"}
    d = decide(builder.build())
    cond = next(c for c in d.status.conditions if c.type == "Resumable")
    assert cond.reason == "AwaitingResume" and "ResumeRefused" not in [e.reason for e in d.events]


def test_a_later_user_halt_does_not_repeat_the_previous_reason_as_new() -> None:
    builder = SessionBuilder().phase("MarketOpen").with_spec(halted=True, haltReason="lunch")
    builder.status["lastHalt"] = {"active": False, "source": "User", "reason": "lunch", "id": "h-old"}
    d = decide(builder.build())
    assert d.status.halt is not None and "unchanged since halt h-old" in (d.status.halt.reason or "")


def test_suspend_says_so_in_ready_and_workers() -> None:
    d = decide(SessionBuilder().phase("MarketOpen").with_spec(suspend=True).build())
    ready = next(c for c in d.status.conditions if c.type == "Ready")
    workers = next(c for c in d.status.conditions if c.type == "WorkersAvailable")
    assert (ready.status, ready.reason) == ("False", "Suspended")
    assert (workers.status, workers.reason) == ("False", "Suspended")


def test_live_trading_needs_the_policy_and_the_namespace_label() -> None:
    ts = SessionBuilder().phase("MarketOpen").with_spec(broker={"kind": "alpaca", "paper": False,
                                                               "credentialsSecretRef": {"name": "k"}}).build()
    ts.spec.workers.executor.replicas = 1
    allow = RiskPolicy.model_validate({"metadata": {"name": "p", "generation": 2}, "spec": {"allowLive": True}})
    for pol, labels in ((policy(), {"trading.dev/live": "enabled"}), (allow, {}), (allow, None)):
        d = rs.decide(rs.Observed(ts, pol, None, {}, OPEN, labels), SETTINGS)
        cond = next(c for c in d.status.conditions if c.type == "LiveTradingAllowed")
        assert (cond.status, cond.reason) == ("False", "LiveTradingNotAllowed")
        assert not d.executor_allowed and d.status.workers["executor"].desired == 0
        assert d.status.trading_state == "Halted"
    d = rs.decide(rs.Observed(ts, allow, None, {}, OPEN, {"trading.dev/live": "enabled"}), SETTINGS)
    assert d.executor_allowed and d.status.workers["executor"].desired == 1


def test_a_policy_that_disappears_while_in_use_halts_the_session() -> None:
    builder = SessionBuilder().phase("MarketOpen")
    builder.status["riskPolicy"] = {"name": "p", "observedGeneration": 2}
    d = rs.decide(rs.Observed(builder.build(), None, None, {}, OPEN), SETTINGS, halt_id=lambda: "h-new")
    assert d.status.halt is not None and d.status.halt.source == "Operator"
    assert "disappeared" in (d.status.halt.reason or "") and d.status.phase == Phase.HALTED


def test_a_resume_id_is_consumed_once_it_has_cleared_its_halt() -> None:
    # Issue 20, defect 5: after an automatic halt was resumed by id, spec.resumeHaltId stays set; the
    # README's user resume ({"spec":{"halted":false}}) must keep working through any later halts.
    def step(ts: TradingSession, halt_id: str = "h-unused") -> TradingSession:
        d = rs.decide(rs.Observed(ts, policy(), None, {}, OPEN), SETTINGS, halt_id=lambda: halt_id)
        refused = [c for c in d.status.conditions if c.type == "Resumable" and c.reason == "StaleHaltId"]
        assert not refused, refused
        return TradingSession.model_validate({**ts.model_dump(by_alias=True, mode="json"),
                                              "status": d.status.wire()})

    ts = step(SessionBuilder().halt("Risk", "h-risk").with_spec(resumeHaltId="h-risk").build())
    assert ts.status.halt is None and ts.status.last_halt is not None and ts.status.last_halt.id == "h-risk"
    for n in range(3):  # user halts and resumes, each time with the old resumeHaltId still in spec
        ts.spec.halted, ts.spec.halt_reason = True, f"desk {n}"
        ts = step(ts, halt_id=f"h-user-{n}")
        assert ts.status.halt is not None and ts.status.halt.id == f"h-user-{n}"
        ts.spec.halted = False
        ts = step(ts)
        assert ts.status.halt is None, f"user resume {n} refused with resumeHaltId={ts.spec.resume_halt_id}"
    # A wrong id (one that never cleared a halt) is still refused.
    ts.spec.resume_halt_id = "h-never"
    ts.spec.halted = True
    ts = step(ts, halt_id="h-user-x")
    d = rs.decide(rs.Observed(ts, policy(), None, {}, OPEN), SETTINGS)
    assert [c.reason for c in d.status.conditions if c.type == "Resumable"] == ["StaleHaltId"]


def test_lost_executor_halts_in_a_trading_phase() -> None:
    stale = (OPEN - dt.timedelta(seconds=SETTINGS.executor_stale_seconds + 5)).isoformat()
    ts = SessionBuilder().phase("MarketOpen").executor(heartbeat=stale, brokerConnected=True).build()
    silent = SETTINGS.executor_stale_seconds + 5  # no new heartbeat for that long while the API server was up
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()}, executor_silence=silent)
    assert d.status.halt is not None and d.status.halt.source == "Operator"
    assert "executor lost" in (d.status.halt.reason or "")


def test_an_api_server_outage_is_not_a_lost_executor() -> None:
    # Issue 20, defect 4: the API server was down 42 s; when it came back the last heartbeat was 42 s
    # old by the operator's clock, and a healthy session was halted "executor lost".
    ticks = [1000.0]
    watch = liveness.HeartbeatWatch(clock=lambda: ticks[0])
    key, before = "ns/s", (OPEN - dt.timedelta(seconds=44)).isoformat()
    assert watch.silence(key, before) == 0.0
    ticks[0] += 2
    watch.api_unreachable()
    ticks[0] += 40
    assert watch.silence(key, before) is None  # while the server is away nothing is judged
    watch.api_reachable()
    ticks[0] += 1
    silence = watch.silence(key, before)  # the operator's first reconcile after the outage
    assert silence == 1.0
    ts = SessionBuilder().phase("MarketOpen").executor(heartbeat=before, brokerConnected=True).build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()}, now=OPEN, executor_silence=silence)
    assert d.status.halt is None, d.status.halt
    # The executor that stays silent after the server is back is lost once the stale time has passed.
    ticks[0] += SETTINGS.executor_stale_seconds
    silence = watch.silence(key, before)
    assert silence is not None and silence > SETTINGS.executor_stale_seconds
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()}, executor_silence=silence)
    assert d.status.halt is not None and "executor lost" in (d.status.halt.reason or "")
    # A new heartbeat value restarts the count, whatever its timestamp says (the executor's own clock).
    assert watch.silence(key, (OPEN - dt.timedelta(hours=3)).isoformat()) == 0.0
    # An operator that just started has seen nothing yet: it judges no executor on its first look.
    assert liveness.HeartbeatWatch(clock=lambda: ticks[0]).silence(key, before) == 0.0


def test_silence_counts_from_a_heartbeats_arrival_not_from_the_next_reconcile() -> None:
    # Heartbeats wake no reconcile (loop.essence); the watch event records their arrival (handlers).
    ticks = [1000.0]
    watch = liveness.HeartbeatWatch(clock=lambda: ticks[0])
    key = "ns/s"
    assert watch.silence(key, "h0") == 0.0  # a reconcile
    ticks[0] += 3
    watch.saw(key, "h1")  # the executor's next report arrives: recorded, no reconcile
    ticks[0] += 25  # the executor died right after h1; the scheduled reconcile comes later
    assert watch.silence(key, "h1") == 25.0  # counted from h1's arrival, not from this reconcile
    ticks[0] += SETTINGS.executor_stale_seconds - 25 + 0.1
    silence = watch.silence(key, "h1")
    assert silence is not None and silence > SETTINGS.executor_stale_seconds


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


def test_reconciled_follows_the_executors_last_reconciliation_and_blocks_nothing() -> None:
    assert not any(c.type == "Reconciled" for c in decide(SessionBuilder().phase("MarketOpen").build()).status.conditions)
    clean = {"day": "2026-11-23", "at": "2026-11-23T21:00:00Z", "trigger": "Close", "clean": True, "positions": 2,
             "fills": 7}
    ts = SessionBuilder().phase("MarketOpen").executor(brokerConnected=True, reconciliation=clean).risk().build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()})
    cond = next(c for c in d.status.conditions if c.type == "Reconciled")
    assert (cond.status, cond.reason) == ("True", "ReconciledClean") and "2 positions, 7 fills" in cond.message
    mismatch = {**clean, "clean": False, "flagged": 1, "differences": [
        {"kind": "PositionMismatch", "symbol": "AAPL", "brokerQty": 10, "journalQty": 12}]}
    ts = SessionBuilder().phase("MarketOpen").executor(brokerConnected=True, reconciliation=mismatch).risk().build()
    d = decide(ts, deployments={Role.EXECUTOR: ready_deployment()})
    cond = next(c for c in d.status.conditions if c.type == "Reconciled")
    assert (cond.status, cond.reason) == ("False", "ReconciliationMismatch")
    assert "PositionMismatch AAPL: broker 10, journal 12" in cond.message
    ready = next(c for c in d.status.conditions if c.type == "Ready")
    assert ready.status == "True"   # a mismatch is for a human to look at; it halts nothing


# ------------------------------------------------------------------ when to look again (decision 0015: no sweep)

SATURDAY = dt.datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def test_a_quiet_session_is_woken_by_the_calendar_not_a_sweep() -> None:
    # Saturday, nothing due until Monday's pre-market: the backstop, not a 10 s sweep of every session.
    d = decide(SessionBuilder().phase("Initializing").build(), now=SATURDAY)
    assert d.status.phase == Phase.INITIALIZING and d.requeue_after == SETTINGS.resync_seconds
    # The next transition is the wake-up: 2 s before the open, in 2 s, whatever the backstop.
    before_open = dt.datetime(2026, 11, 23, 14, 29, 58, tzinfo=UTC)
    settings = Settings(resync_seconds=3600)
    d = rs.decide(rs.Observed(SessionBuilder().phase("PreMarket").build(), policy(), None, {}, before_open), settings)
    assert d.status.phase == Phase.PRE_MARKET and d.requeue_after == 2.0
    d = rs.decide(rs.Observed(SessionBuilder().phase("PreMarket").build(), policy(), None, {},
                              before_open + dt.timedelta(seconds=2)), settings)
    assert d.transition == (Phase.PRE_MARKET, Phase.MARKET_OPEN)


def test_an_executor_going_silent_is_looked_at_when_its_silence_would_cross_the_limit() -> None:
    ts = SessionBuilder().phase("MarketOpen").executor(heartbeat="2026-11-23T14:59:59Z", brokerConnected=True).build()
    deployments = {Role.EXECUTOR: ready_deployment()}
    d = decide(ts, deployments=deployments, executor_silence=25.0)
    assert d.status.halt is None and abs(d.requeue_after - (SETTINGS.executor_stale_seconds - 25.0 + 0.1)) < 1e-9
    d = decide(ts, deployments=deployments, executor_silence=SETTINGS.executor_stale_seconds + 0.1)
    assert d.status.halt is not None and "executor lost" in d.status.halt.reason
    # Not judged (the API server away): look again soon.
    assert decide(ts, deployments=deployments, executor_silence=None).requeue_after == SETTINGS.reconcile_interval


def test_a_live_session_rereads_its_namespace_label_every_five_intervals() -> None:
    ts = SessionBuilder().phase("Initializing").with_spec(broker={"kind": "simulated", "paper": False}).build()
    d = rs.decide(rs.Observed(ts, policy(), None, {}, SATURDAY, namespace_labels={}), SETTINGS)
    assert d.requeue_after == SETTINGS.reconcile_interval * 5
