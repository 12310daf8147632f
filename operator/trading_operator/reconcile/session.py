"""TradingSession reconcile: workers, halts, latches, the calendar-driven phase, status.

``decide`` is pure: given the session, its policy, its live Deployments,
the namespace's labels and the time, it returns the status to write and
the Events to post. It reads as named steps, each a small function over a
``_Draft`` (the status being built and the Events it earned):

1. policy      — is the referenced RiskPolicy there, valid, not being deleted? (PolicyApplied)
2. live gate   — a non-paper session needs the policy's allowLive and the namespace label (LiveTradingAllowed);
                 without both its executor is scaled to zero and nothing trades
3. workers     — ready/desired per role (WorkersAvailable); suspend is refused while orders are open
3b. rotation   — a Secret a role reads changed: every role but the executor rolls at once; a running
                 executor only once it has handled a halt (a Rotation halt is raised if none is in
                 force, and cleared once the new executor has handled it) (SecretsCurrent)
4. risk        — RiskBreached / RiskAlert / CircuitBreaker / DataFresh from the risk worker's report
5. halt        — raise (user switch, policy kill switch, lost executor, policy gone), keep (latched), or
                 clear (a resume that names the halt, once the guards pass)
6. reducing    — keep the latch a worker raised; clear it when a human names it and its rule is within limits
7. phase       — Halted while a halt is in force; otherwise the calendar's phase, one legal step at a
                 time; the pre-market checklist gates PreMarket -> MarketOpen and orders in PreMarket
8. trading state, Ready, next transition, observedGeneration

The operator never undoes what a worker raised: halts and Reducing latches
are cleared only by ``clear_halt``/``clear_reducing`` after a human named them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from trading_operator import calendar, drift, errors, kube, liveness, metrics, names, secretwatch
from trading_operator.api import clock as session_clock
from trading_operator.api import phases, transactions
from trading_operator.api import workerconfig as wc
from trading_operator.api.phases import ORDER_PHASES, Phase
from trading_operator.api.riskpolicy import RiskPolicy
from trading_operator.api.session import (
    HaltStatus,
    NextTransition,
    PolicyStatusRef,
    ReconciliationStatus,
    RetrainStatus,
    Role,
    TradingSession,
    TradingSessionStatus,
    Transition,
    WorkerCount,
)
from trading_operator.api.status import (
    ConditionType as C,
)
from trading_operator.api.status import (
    HaltSource,
    ReducingSource,
    RetrainTrigger,
    TradingState,
    get_condition,
    new_halt_id,
    set_condition,
)
from trading_operator.api.status import (
    Reason as R,
)
from trading_operator.build import rbac as build_rbac
from trading_operator.build import training as build_training
from trading_operator.build import workers as build_workers
from trading_operator.reconcile import rollout
from trading_operator.reconcile.conditions import Event
from trading_operator.settings import Settings

MAX_TRANSITIONS = 20
# The calendar's own cycle: how a session walks forward when the calendar is several steps ahead.
CYCLE = [Phase.INITIALIZING, Phase.PRE_MARKET, Phase.MARKET_OPEN, Phase.MARKET_CLOSE, Phase.AFTER_HOURS]
LIVE_LABEL = "trading.dev/live"
LIVE_LABEL_VALUE = "enabled"
# A risk report older than this (wall seconds) no longer vouches for the data's freshness.
RISK_REPORT_MAX_AGE = 30.0
# The status fields a reconcile writes: the operator's own and the latches (transactions module docstring).
OWNED = (*transactions.OPERATOR_FIELDS, *transactions.LATCH_FIELDS)

__all__ = ["Decision", "Observed", "decide", "new_halt_id", "reconcile"]


@dataclass
class Observed:
    session: TradingSession
    policy: RiskPolicy | None
    policy_error: str | None
    deployments: dict[Role, dict[str, Any] | None]
    wall: dt.datetime
    namespace_labels: Mapping[str, str] | None = None  # None: not read (only needed for a non-paper session)
    # Seconds the executor's heartbeat has not changed while the API server was reachable to the
    # operator (trading_operator.liveness); None: not judged (just started, or the server is away).
    executor_silence: float | None = None
    # The current version of every Secret the session's pods read (secretwatch); None: not known, and why.
    secret_versions: dict[str, str] | None = None
    secret_versions_unknown: str = "Secret versions are not tracked"
    # The Secrets each role's pods read (build_workers.role_secrets); None: the rotation step derives them.
    role_secrets: dict[Role, list[str]] | None = None
    # The running training Job (status.retrain), read only while one runs; None: absent or not read.
    retrain_job: dict[str, Any] | None = None


@dataclass
class Decision:
    status: TradingSessionStatus
    suspended: bool
    events: list[Event] = field(default_factory=list)
    transition: tuple[Phase | None, Phase] | None = None
    halt_raised: str | None = None
    requeue_after: float = 30.0
    executor_allowed: bool = True   # False: the live-trading gate holds the executor at zero replicas
    # The Secret versions each role's pod template carries (None: no annotation: versions not tracked).
    secret_versions: dict[Role, dict[str, str] | None] = field(default_factory=dict)
    training_job: dict[str, Any] | None = None   # a training Job to create once the status is written


@dataclass
class _Draft:
    """The status being decided and what the steps found along the way."""

    obs: Observed
    status: TradingSessionStatus
    now: dt.datetime
    generation: int
    events: list[Event] = field(default_factory=list)
    policy_ok: bool = False
    live_ok: bool = True
    live_blockers: list[str] = field(default_factory=list)
    suspended: bool = False
    workers_ok: bool = False
    missing: list[str] = field(default_factory=list)
    executor_desired: int = 0
    data_fresh: bool | None = None
    halt_raised: str | None = None
    secret_versions: dict[Role, dict[str, str] | None] = field(default_factory=dict)
    model_due: float | None = None   # seconds until the model rollout or a training Job needs a look

    def condition(self, type_: C, ok: bool | str, reason: R, message: str,
                  event: tuple[str, R] | None = None) -> None:
        changed = set_condition(self.status.conditions, type_, ok, reason, message, self.now, self.generation)
        if changed and event is not None:
            self.events.append(Event(event[0], str(event[1]), message))

    def event(self, type_: str, reason: R, message: str) -> None:
        self.events.append(Event(type_, str(reason), message))


def _ready(dep: dict[str, Any] | None) -> int:
    return int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)


def decide(obs: Observed, settings: Settings, halt_id: Callable[[], str] = new_halt_id) -> Decision:
    d = _Draft(obs, obs.session.status.model_copy(deep=True), obs.wall, obs.session.metadata.generation)
    _policy_step(d)
    _live_gate_step(d)
    _workers_step(d)
    _rotation_step(d, settings, halt_id)
    _risk_step(d)
    _halt_step(d, settings, halt_id)
    _reducing_step(d)
    training_job = _model_step(d, settings)
    transition, where, blocked, target = _phase_step(d)
    _trading_state_step(d, blocked, calendar_known=where is not None)
    status = d.status
    if where is not None:
        status.next_transition = NextTransition(phase=where.next_phase.value, at=where.next_at)
    status.observed_generation = d.generation
    status.config_hash = build_workers.config_hash(obs.session)

    requeue = _requeue(d, settings, transition, where, target, blocked)
    return Decision(status=status, suspended=d.suspended, events=d.events, transition=transition,
                    halt_raised=d.halt_raised, requeue_after=requeue, executor_allowed=d.live_ok,
                    secret_versions=d.secret_versions, training_job=training_job)


def _requeue(d: _Draft, settings: Settings, transition: tuple[Phase | None, Phase] | None, where: Any,
             target: Phase, blocked: list[str]) -> float:
    """When to reconcile again if nothing wakes the session first (decision 0015).

    Watch events wake it for everything they deliver: spec, policy, Deployments, ConfigMap, the
    workers' reports. What no event delivers is scheduled here: the calendar's next transition, an
    executor going silent (``executor_stale_seconds`` after its last heartbeat change), a risk report
    getting too old; a live session's namespace label (read, not watched) is re-read every
    ``5 x reconcile_interval``. Otherwise ``resync_seconds``, a backstop, not a sweep.
    """
    status, spec, obs = d.status, d.obs.session.spec, d.obs
    requeue = settings.resync_seconds
    # After a transition, look again at once: the next step, and what is evaluated from the new phase
    # on (the pre-market checklist). Not for a new session that starts Initializing on a closed day:
    # its next pass evaluates exactly what this one did (it cost each of 1,000 new sessions a second
    # reconcile, before its Deployments were even in the index).
    settled = transition == (None, Phase.INITIALIZING) and target is Phase.INITIALIZING
    if transition is not None and not settled:
        return 0.0
    if where is not None and target is not Phase.HALTED and status.phase == target:
        anchor = obs.session.metadata.creation_timestamp or obs.wall
        wall_next = session_clock.wall_at(spec.clock, anchor, where.next_at)
        requeue = max(0.0, min(requeue, (wall_next - obs.wall).total_seconds()))
    if blocked or (status.halt is not None and not d.missing):
        requeue = min(requeue, settings.reconcile_interval)
    if status.risk is not None:  # a risk report that stops coming must turn DataFresh Unknown
        requeue = min(requeue, RISK_REPORT_MAX_AGE / 2)
    if not spec.broker.paper:
        requeue = min(requeue, settings.reconcile_interval * 5)
    report = status.executor
    if d.executor_desired and status.phase in ORDER_PHASES and report is not None and report.heartbeat is not None:
        silence = obs.executor_silence
        if silence is None:  # not judged now (the API server away, or just started): look again soon
            requeue = min(requeue, settings.reconcile_interval)
        else:  # the moment this silence would make the executor lost (heartbeats wake no reconcile: loop.essence)
            requeue = min(requeue, max(0.0, settings.executor_stale_seconds - silence) + 0.1)
    if d.model_due is not None:  # a rollout step's dwell ends, or a training Job runs
        requeue = min(requeue, max(d.model_due, settings.reconcile_interval))
    return requeue


# ---------------------------------------------------------------------------- 1. policy

def _policy_step(d: _Draft) -> None:
    spec, policy = d.obs.session.spec, d.obs.policy
    if policy is None:
        reason = R.POLICY_INVALID if d.obs.policy_error else R.POLICY_NOT_FOUND
        message = d.obs.policy_error or f"RiskPolicy {spec.risk_policy_ref.name!r} not found; the session does not trade"
        d.condition(C.POLICY_APPLIED, False, reason, message, ("Warning", reason))
        # The generation last applied is kept while the name is unchanged: it is how the halt step
        # tells "the policy in use disappeared" from "the session never had one".
        previous = d.status.risk_policy
        kept = previous.observed_generation if previous and previous.name == spec.risk_policy_ref.name else 0
        d.status.risk_policy = PolicyStatusRef(name=spec.risk_policy_ref.name, observed_generation=kept)
        return
    if policy.metadata.deletion_timestamp is not None:
        d.condition(C.POLICY_APPLIED, False, R.POLICY_DELETING,
                    f"RiskPolicy {policy.metadata.name} is being deleted; the session does not trade",
                    ("Warning", R.POLICY_DELETING))
    else:
        d.condition(C.POLICY_APPLIED, True, R.POLICY_APPLIED,
                    f"RiskPolicy {policy.metadata.name} generation {policy.metadata.generation} ({policy.spec.mode})",
                    ("Normal", R.POLICY_APPLIED))
        d.policy_ok = True
    d.status.risk_policy = PolicyStatusRef(name=policy.metadata.name, observed_generation=policy.metadata.generation,
                                           mode=policy.spec.mode)


# ---------------------------------------------------------------------------- 2. live-trading gate

def _live_gate_step(d: _Draft) -> None:
    spec, policy = d.obs.session.spec, d.obs.policy
    if spec.broker.paper:
        d.condition(C.LIVE_TRADING_ALLOWED, True, R.PAPER, f"paper trading on the {spec.broker.kind} broker")
        return
    blockers = []
    if policy is None or not policy.spec.allow_live:
        blockers.append(f"RiskPolicy {spec.risk_policy_ref.name} does not set allowLive: true")
    labels = d.obs.namespace_labels or {}
    if labels.get(LIVE_LABEL) != LIVE_LABEL_VALUE:
        blockers.append(f"namespace {d.obs.session.metadata.namespace} lacks the label {LIVE_LABEL}={LIVE_LABEL_VALUE}")
    d.live_blockers = blockers
    if blockers:
        d.live_ok = False
        d.condition(C.LIVE_TRADING_ALLOWED, False, R.LIVE_TRADING_NOT_ALLOWED,
                    "live trading refused (executor held at 0 replicas): " + "; ".join(blockers),
                    ("Warning", R.LIVE_TRADING_REFUSED))
    else:
        d.condition(C.LIVE_TRADING_ALLOWED, True, R.LIVE_ALLOWED,
                    "live trading allowed by the RiskPolicy and the namespace label", ("Normal", R.LIVE_ALLOWED))


# ---------------------------------------------------------------------------- 3. workers

def _workers_step(d: _Draft) -> None:
    spec, status = d.obs.session.spec, d.status
    open_orders = status.executor.open_orders if status.executor else 0
    d.suspended = spec.suspend and open_orders == 0
    if spec.suspend and not d.suspended:
        d.condition(C.SUSPENDED, False, R.OPEN_ORDERS,
                    f"suspend refused: {open_orders} orders are open; halt and let the executor cancel them first",
                    ("Warning", R.SUSPEND_REFUSED))
    elif spec.suspend:
        d.condition(C.SUSPENDED, True, R.SUSPENDED, "maintenance mode: every worker scaled to zero",
                    ("Normal", R.SUSPENDED))
    elif get_condition(status.conditions, C.SUSPENDED) is not None:
        d.condition(C.SUSPENDED, False, R.RUNNING, "not suspended", ("Normal", R.UNSUSPENDED))
    status.workers = {}
    for role in Role:
        desired = 0 if d.suspended else spec.workers.for_role(role).replicas
        if role is Role.EXECUTOR and not d.live_ok:
            desired = 0
        status.workers[role.value] = WorkerCount(ready=min(_ready(d.obs.deployments.get(role)), desired),
                                                 desired=desired)
    d.missing = [f"{r} {c.ready}/{c.desired}" for r, c in status.workers.items() if c.ready < c.desired]
    d.workers_ok = not d.missing
    if d.suspended:
        d.condition(C.WORKERS_AVAILABLE, False, R.SUSPENDED, "suspended: every worker scaled to zero")
    else:
        d.condition(C.WORKERS_AVAILABLE, d.workers_ok, R.ALL_READY if d.workers_ok else R.WORKERS_NOT_READY,
                    "all workers ready" if d.workers_ok else "not ready: " + ", ".join(d.missing))
    d.executor_desired = status.workers[Role.EXECUTOR.value].desired
    report = status.executor
    if d.executor_desired and report is not None and report.broker_connected is not None:
        ok = report.broker_connected
        d.condition(C.BROKER_CONNECTED, ok, R.CONNECTED if ok else R.DISCONNECTED,
                    f"executor reports the {spec.broker.kind} broker " + ("reachable" if ok else "unreachable"))
    _reconciled(d, report.reconciliation if report is not None else None)


def _reconciled(d: _Draft, rec: ReconciliationStatus | None) -> None:
    """Reconciled: the executor's last end-of-day reconciliation (absent until one ran). Blocks nothing."""
    if rec is None:
        return
    when = f"{str(rec.trigger).lower()} reconciliation of {rec.day.isoformat()}"
    if rec.clean:
        d.condition(C.RECONCILED, True, R.RECONCILED_CLEAN,
                    f"{when}: broker and journal agree ({rec.positions} positions, {rec.fills} fills)")
        return
    named = "; ".join(x.describe() for x in rec.differences[:10])
    more = len(rec.differences) - 10
    d.condition(C.RECONCILED, False, R.RECONCILIATION_MISMATCH,
                f"{when}: {rec.flagged} flagged, {rec.adopted} adopted: {named}" + (f"; and {more} more" if more > 0
                                                                                     else ""))


# ---------------------------------------------------------------------------- 3b. rotation

def _template_versions(dep: dict[str, Any] | None) -> dict[str, str] | None:
    """The Secret versions a live Deployment's pod template carries (None: no annotation)."""
    annotations = ((((dep or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations")
    text = (annotations or {}).get(names.ANNOTATION_SECRET_VERSIONS)
    return None if text is None else wc.parse_versions(text)


def _rolled_out(dep: dict[str, Any] | None) -> bool:
    """Whether every pod of a live Deployment runs its current template (the rollout completed)."""
    if dep is None:
        return False
    meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas") or 0)
    observed = status.get("observedGeneration")
    current = meta.get("generation") is None or (observed is not None and observed >= meta["generation"])
    return current and status.get("updatedReplicas", 0) == want and status.get("replicas", 0) == want \
        and status.get("readyReplicas", 0) == want


def _describe_versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{name}@{version}" for name, version in sorted(versions.items())) or "no Secrets"


def _rotation_step(d: _Draft, settings: Settings, halt_id: Callable[[], str]) -> None:
    obs, status = d.obs, d.status
    current = obs.secret_versions
    if current is None:
        # Not tracked: pod templates keep whatever annotation they have (no roll), status says unknown.
        for role in Role:
            d.secret_versions[role] = _template_versions(obs.deployments.get(role))
        d.condition(C.SECRETS_CURRENT, "Unknown", R.SECRET_VERSIONS_UNKNOWN, obs.secret_versions_unknown)
        return
    uses = obs.role_secrets if obs.role_secrets is not None else build_workers.role_secrets(obs.session, settings)
    previous = get_condition(status.conditions, C.SECRETS_CURRENT)
    rotating = previous is not None and previous.status == "False"  # a rotation is under way: follow rollouts
    pending: list[str] = []
    executor_held = False   # the running executor keeps its template until it has handled a halt
    for role in Role:
        want = {name: current.get(name, "absent") for name in uses[role]}
        live_dep = obs.deployments.get(role)
        live = _template_versions(live_dep)
        rolled = _rolled_out(live_dep)
        status.workers[role.value].secret_versions = live if live is not None and rolled else None
        d.secret_versions[role] = want
        if role is Role.EXECUTOR:
            running = live_dep is not None and (int((live_dep.get("spec") or {}).get("replicas") or 0) > 0
                                                or _ready(live_dep) > 0)
            if live != want and running and d.executor_desired:
                if _executor_may_roll(d, want, live, halt_id):
                    pending.append(f"executor rolling to {_describe_versions(want)}")
                else:
                    d.secret_versions[role] = live  # held: the running executor keeps its template
                    executor_held = True
                    pending.append(f"executor waits for halt {status.halt.id if status.halt else '?'} to be "
                                   f"handled before it rolls to {_describe_versions(want)}")
                continue
            _finish_rotation(d, want)
        if live != want and live_dep is not None:
            pending.append(f"{role.value} rolling to {_describe_versions(want)}")
        elif rotating and live_dep is not None and not rolled and status.workers[role.value].desired:
            pending.append(f"{role.value} rollout to {_describe_versions(want)} in progress")
    if pending:
        d.condition(C.SECRETS_CURRENT, False, R.ROTATION_WAITING if executor_held else R.ROLLING, "; ".join(pending),
                    ("Normal", R.SECRET_CHANGED))
    else:
        used = {name: current.get(name, "absent") for role in Role for name in uses[role]}
        d.condition(C.SECRETS_CURRENT, True, R.CURRENT,
                    f"every role runs the current version of each Secret it reads: {_describe_versions(used)}",
                    ("Normal", R.ROTATED) if rotating else None)


def _executor_may_roll(d: _Draft, want: dict[str, str], live: dict[str, str] | None,
                       halt_id: Callable[[], str]) -> bool:
    """A running executor is replaced only once it has stopped sending and reconciled: after it has handled
    a halt. With none in force, a Rotation halt is raised (and the executor held until it is handled)."""
    status = d.status
    if status.halt is None:
        changed = sorted(n for n in want if (live or {}).get(n) != want[n]) or sorted(want)
        reason = (f"Secret {', '.join(changed)} changed: the executor is replaced once it has handled this halt, "
                  "then the operator clears it")
        hid, _ = transactions.raise_halt(status, source=HaltSource.ROTATION, reason=reason, now=d.now,
                                         halt_id=halt_id)
        d.halt_raised = HaltSource.ROTATION
        d.event("Warning", R.HALTED, f"halt {hid} raised by {HaltSource.ROTATION}: {reason}")
        return False
    report = status.executor
    return report is not None and report.halt_handled == status.halt.id


def _finish_rotation(d: _Draft, want: dict[str, str]) -> None:
    """Clear a Rotation halt once the executor that runs the new versions has handled it."""
    status = d.status
    halt, report = status.halt, status.executor
    if halt is None or halt.source != HaltSource.ROTATION:
        return
    live_dep = d.obs.deployments.get(Role.EXECUTOR)
    runs_new = report is not None and all((report.secret_versions or {}).get(k) == v for k, v in want.items())
    if d.executor_desired and not (runs_new and report is not None and report.halt_handled == halt.id
                                   and _rolled_out(live_dep) and _ready(live_dep) >= d.executor_desired):
        return
    cleared = transactions.clear_halt(status, d.now)
    assert cleared is not None
    d.condition(C.RESUMABLE, True, R.RESUMED, f"halt {cleared.id} cleared: the executor runs {_describe_versions(want)}")
    d.event("Normal", R.ROTATED, f"halt {cleared.id} ({cleared.source}) cleared: the executor runs "
                                 f"{_describe_versions(want)} and has handled the halt")


# ---------------------------------------------------------------------------- 4. risk report

def _risk_step(d: _Draft) -> None:
    status = d.status
    risk = status.risk
    blocking = transactions.blocking_breaches(status)
    alerts = transactions.alert_breaches(status)
    if blocking:
        d.condition(C.RISK_BREACHED, True, R.LIMITS_BREACHED, transactions.describe(blocking))
    else:
        d.condition(C.RISK_BREACHED, False, R.WITHIN_LIMITS,
                    "no Reduce, Halt or Flatten rule is beyond its limit" if risk else "no risk report yet")
    if alerts:
        d.condition(C.RISK_ALERT, True, R.ALERTING, transactions.describe(alerts))
    else:
        d.condition(C.RISK_ALERT, False, R.NO_ALERT, "no Alert rule is beyond its limit")
    breaker = risk.circuit_breaker if risk else None
    if breaker is not None and breaker.tripped:
        limits = breaker.scaled_limits
        scaled = (f"; per-order limits scaled by {breaker.limit_scale:g}: order notional {limits.max_order_notional:,.0f}, "
                  f"position {limits.max_position_notional:,.0f}, rate {limits.max_orders_per_second:g}/s"
                  if limits is not None and breaker.limit_scale is not None else "")
        d.condition(C.CIRCUIT_BREAKER, True, R.TRIPPED, f"{breaker.reason}{scaled}")
    else:
        d.condition(C.CIRCUIT_BREAKER, False, R.NOT_TRIPPED, "market circuit breaker not tripped")
    # DataFresh: from the risk worker's per-symbol quote ages, as long as the report itself is recent.
    risk_desired = status.workers.get(Role.RISK.value, WorkerCount()).desired
    if risk is None or risk.data is None:
        d.data_fresh = None
        d.condition(C.DATA_FRESH, "Unknown", R.NO_RISK_REPORT,
                    "no quote-age report from the risk worker" + ("" if risk_desired else " (risk has 0 replicas)"))
    elif risk.updated_at is None or (d.now - risk.updated_at).total_seconds() > RISK_REPORT_MAX_AGE:
        d.data_fresh = None
        d.condition(C.DATA_FRESH, "Unknown", R.RISK_REPORT_STALE,
                    f"the risk worker's last report is older than {RISK_REPORT_MAX_AGE:.0f}s")
    elif risk.data.stale_symbols:
        d.data_fresh = False
        age = risk.data.max_age_seconds
        d.condition(C.DATA_FRESH, False, R.QUOTES_STALE,
                    f"no quote within {risk.data.limit_seconds:g}s for: {', '.join(risk.data.stale_symbols[:20])}"
                    + (f" (stalest {age:.0f}s)" if age is not None else ""),
                    ("Warning", R.QUOTES_STALE))
    else:
        d.data_fresh = True
        d.condition(C.DATA_FRESH, True, R.QUOTES_FRESH,
                    f"every symbol quoted within {risk.data.limit_seconds:g}s", ("Normal", R.QUOTES_FRESH))


# ---------------------------------------------------------------------------- 5. halt

def _halt_step(d: _Draft, settings: Settings, halt_id: Callable[[], str]) -> None:
    status = d.status
    if status.halt is not None and not status.halt.active:
        transactions.clear_halt(status, d.now)  # a pre-vocabulary status: an inactive halt is history
    if status.halt is None:
        source, reason = _halt_cause(d, settings)
        if source is not None:
            reason = _fresh_user_reason(status, source, reason)
            hid, _ = transactions.raise_halt(status, source=source, reason=reason, now=d.now, halt_id=halt_id)
            assert status.halt is not None
            status.halt.requested_by = _requested_by(d, source)
            d.halt_raised = source
            d.event("Warning", R.HALTED, f"halt {hid} raised by {source}{_who(status.halt.requested_by)}: {reason}")
    else:
        _maybe_resume(d)
    halt = status.halt
    if halt is not None:
        d.condition(C.HALTED, True, R(f"HaltedBy{halt.source}"),
                    f"halt {halt.id} ({halt.action}): {halt.reason}")
    else:
        d.condition(C.HALTED, False, R.NOT_HALTED, "no halt in force")


def _fresh_user_reason(status: TradingSessionStatus, source: HaltSource, reason: str) -> str:
    """A user halt whose spec.haltReason was not changed since the last one must not repeat an old reason."""
    last = status.last_halt
    if source == HaltSource.USER and last is not None and last.source == HaltSource.USER and last.reason == reason:
        return f"halted by user (spec.haltReason is unchanged since halt {last.id}: {reason})"
    return reason


def _halt_cause(d: _Draft, settings: Settings) -> tuple[HaltSource | None, str]:
    obs, status = d.obs, d.status
    spec = obs.session.spec
    if spec.halted:
        return HaltSource.USER, spec.halt_reason or "halted by user"
    if obs.policy is not None and obs.policy.spec.mode == "Halted":
        return HaltSource.POLICY, f"RiskPolicy {obs.policy.metadata.name} mode is Halted"
    applied_before = status.risk_policy is not None and status.risk_policy.observed_generation > 0
    if applied_before and obs.policy is None and not obs.policy_error:
        return HaltSource.OPERATOR, f"RiskPolicy {spec.risk_policy_ref.name} disappeared while in use"
    # Never the operator's clock minus the executor's: an outage would look like a dead executor.
    report, silence = status.executor, obs.executor_silence
    if (d.executor_desired and status.phase in ORDER_PHASES and report is not None and report.heartbeat is not None
            and silence is not None and silence > settings.executor_stale_seconds):
        return HaltSource.OPERATOR, (f"executor lost: no new heartbeat for {silence:.0f}s while the API server "
                                     "was reachable")
    return None, ""


def _maybe_resume(d: _Draft) -> None:
    obs, status = d.obs, d.status
    spec, halt = obs.session.spec, status.halt
    assert halt is not None
    named = spec.resume_halt_id
    last = status.last_halt
    consumed = named is not None and named in (status.consumed_resume_halt_id, last.id if last else None)
    if named and named != halt.id and not consumed:
        d.condition(C.RESUMABLE, False, R.STALE_HALT_ID,
                    f"resumeHaltId {named} does not name the active halt {halt.id}; refused",
                    ("Warning", R.RESUME_REFUSED))
        return
    if halt.source == HaltSource.ROTATION:
        d.condition(C.RESUMABLE, False, R.ROTATION_WAITING,
                    f"halt {halt.id} is cleared by the operator once the new executor runs and has handled it")
        return
    requested = named == halt.id or (halt.source == HaltSource.USER and not spec.halted)
    if not requested:
        d.condition(C.RESUMABLE, False, R.AWAITING_RESUME,
                    "resume with: kubectl patch tradingsession "
                    f"{obs.session.metadata.name} --type=merge -p "
                    + ("'{\"spec\":{\"halted\":false}}'" if halt.source == HaltSource.USER else
                       f"'{{\"spec\":{{\"halted\":false,\"resumeHaltId\":\"{halt.id}\"}}}}'"))
        return
    blockers = []
    if spec.halted:
        blockers.append("spec.halted is still true")
    if not d.workers_ok:
        blockers.append("workers not ready: " + ", ".join(d.missing))
    if obs.policy is None:
        blockers.append("RiskPolicy missing or invalid")
    elif obs.policy.spec.mode == "Halted":
        blockers.append("RiskPolicy mode is Halted")
    blocking = transactions.blocking_breaches(status)
    if blocking:
        blockers.append("risk limits still breached: " + transactions.describe(blocking))
    report = status.executor
    if d.executor_desired and (report is None or report.halt_handled != halt.id):
        blockers.append("executor has not reconciled open orders for this halt")
    if blockers:
        d.condition(C.RESUMABLE, False, R.RESUME_BLOCKED, "resume blocked: " + "; ".join(blockers),
                    ("Warning", R.RESUME_BLOCKED))
        return
    cleared = transactions.clear_halt(status, d.now)
    assert cleared is not None and status.last_halt is not None
    status.last_halt.resume_requested_by = obs.session.metadata.annotations.get(names.ANNOTATION_RESUME_BY) or None
    if named == cleared.id:
        status.consumed_resume_halt_id = named
    d.condition(C.RESUMABLE, True, R.RESUMED, f"halt {cleared.id} cleared")
    d.event("Normal", R.RESUMED, f"halt {cleared.id} ({cleared.source}: {cleared.reason}) cleared"
                                 + _who(status.last_halt.resume_requested_by, "resume requested by"))


def _requested_by(d: _Draft, source: HaltSource) -> str | None:
    """Who asked for a halt the operator raises, as the API server stamped it (names.ANNOTATION_*); None: unknown."""
    if source == HaltSource.USER:
        return d.obs.session.metadata.annotations.get(names.ANNOTATION_HALT_BY) or None
    if source == HaltSource.POLICY and d.obs.policy is not None:
        return d.obs.policy.metadata.annotations.get(names.ANNOTATION_MODE_BY) or None
    return None


def _who(identity: str | None, verb: str = "requested by") -> str:
    return f" ({verb} {identity})" if identity else ""


# ---------------------------------------------------------------------------- 6. reducing

def _reducing_step(d: _Draft) -> None:
    obs, status = d.obs, d.status
    spec, latch = obs.session.spec, status.reducing
    named = spec.clear_reducing_id
    if latch is not None and named:
        last = status.last_reducing
        if named != latch.id:
            if not (last is not None and named == last.id):
                d.condition(C.REDUCING, True, R.CLEAR_REFUSED,
                            f"clearReducingId {named} does not name the Reducing latch {latch.id}; refused",
                            ("Warning", R.CLEAR_REFUSED))
                return
        else:
            blockers = _reducing_blockers(status, latch.source, latch.rule)
            if blockers:
                d.condition(C.REDUCING, True, R.CLEAR_BLOCKED,
                            f"Reducing {latch.id} stays: " + "; ".join(blockers), ("Warning", R.CLEAR_BLOCKED))
                return
            cleared = transactions.clear_reducing(status, d.now)
            assert cleared is not None and status.last_reducing is not None
            who = obs.session.metadata.annotations.get(names.ANNOTATION_CLEAR_REDUCING_BY) or None
            status.last_reducing.clear_requested_by = who
            d.event("Normal", R.REDUCING_CLEARED, f"Reducing {cleared.id} ({cleared.source} {cleared.rule or ''}: "
                                                  f"{cleared.reason}) cleared" + _who(who, "clear requested by"))
            latch = None
    if latch is not None:
        d.condition(C.REDUCING, True, R.REDUCING_LATCHED,
                    f"Reducing {latch.id} raised by {latch.source}"
                    + (f" rule {latch.rule}" if latch.rule else "") + f": {latch.reason}. Clear with: kubectl patch "
                    f"tradingsession {obs.session.metadata.name} --type=merge -p "
                    f"'{{\"spec\":{{\"clearReducingId\":\"{latch.id}\"}}}}'",
                    ("Warning", R.REDUCING))
    elif obs.policy is not None and obs.policy.spec.mode == "Reducing":
        d.condition(C.REDUCING, True, R.POLICY_MODE_REDUCING, f"RiskPolicy {obs.policy.metadata.name} mode is Reducing")
    else:
        d.condition(C.REDUCING, False, R.NOT_REDUCING, "no Reducing latch in force")


def _reducing_blockers(status: TradingSessionStatus, source: str, rule: str | None) -> list[str]:
    risk = status.risk
    if source == ReducingSource.CIRCUIT_BREAKER:
        if risk is not None and risk.circuit_breaker is not None and risk.circuit_breaker.tripped:
            return ["the market circuit breaker is still tripped"]
        return []
    if source == ReducingSource.RISK:
        still = [b for b in transactions.blocking_breaches(status) if b.rule == rule]
        return [f"rule {b.rule} is still beyond its limit: {b.message}" for b in still]
    return []


# ---------------------------------------------------------------------------- 6b. model lifecycle

TRAINING_POLL_SECONDS = 5.0


def _model_step(d: _Draft, settings: Settings) -> dict[str, Any] | None:
    """The model rollout (``reconcile.rollout``) and retraining; returns a training Job to create (if any) and
    sets ``d.model_due``, the seconds until a rollout or a running Job needs a look without an event."""
    spec, status, session = d.obs.session.spec, d.status, d.obs.session
    model = rollout.model_of(spec)
    if model is None:  # not a model session: no model conditions at all
        status.model_rollout = None
        status.conditions = [c for c in status.conditions if c.type not in (C.MODEL_ROLLOUT, C.RETRAINING)]
        return None
    out = rollout.rollout_step(spec, status, d.now, d.generation)
    d.events.extend(out.events)
    due = out.due_in
    if status.retrain is not None:
        ended = rollout.job_finished(status.retrain, d.obs.retrain_job, d.now)
        if ended is not None:
            d.event("Normal" if ended[0] is R.RETRAIN_SUCCEEDED else "Warning", ended[0], ended[1])
    job: dict[str, Any] | None = None
    if model.retrain is not None:
        request = rollout.retrain_request(spec, status)
        trigger = RetrainTrigger.REQUEST if request else out.retrain
        if trigger is not None:
            token = request or f"{trigger.value}-{d.now.isoformat()}"
            name = build_training.job_name(session.metadata.name, f"{session.metadata.uid}/{token}")
            message = f"spec.retrainRequest {request}" if request else out.retrain_reason
            previous = status.retrain.request if status.retrain is not None else None
            status.retrain = RetrainStatus(job=name, trigger=trigger, request=request or previous, phase="Running",
                                           started_at=d.now, message=message[:1024])
            job = build_training.job(session, settings, model.retrain, name)
            d.event("Normal", R.RETRAIN_STARTED, f"training Job {name} ({trigger.value}): {message}")
    last = status.retrain
    if last is not None and last.phase == "Running":
        due = TRAINING_POLL_SECONDS if due is None else min(due, TRAINING_POLL_SECONDS)
        d.condition(C.RETRAINING, True, R.RETRAIN_STARTED, f"training Job {last.job} ({last.trigger}): {last.message}")
    elif last is not None:
        d.condition(C.RETRAINING, False, R.RETRAIN_SUCCEEDED if last.phase == "Succeeded" else R.RETRAIN_FAILED,
                    last.message)
    else:
        d.condition(C.RETRAINING, False, R.NOT_RETRAINING, "no training Job has run")
    d.model_due = due
    return job


# ---------------------------------------------------------------------------- 7. phase

def _premarket_blockers(d: _Draft) -> list[str]:
    spec, status = d.obs.session.spec, d.status
    blockers = []
    if not d.workers_ok:
        blockers.append("workers ready (" + ", ".join(d.missing) + ")")
    if not d.policy_ok:
        blockers.append("RiskPolicy applied")
    if not d.live_ok:
        blockers.append("live trading allowed (" + "; ".join(d.live_blockers) + ")")
    if d.executor_desired:
        if not (status.executor and status.executor.broker_connected):
            blockers.append(f"{spec.broker.kind} broker reachable (executor report)")
        if d.data_fresh is not True:
            cond = get_condition(status.conditions, C.DATA_FRESH)
            blockers.append("market data fresh" + (f" ({cond.message})" if cond is not None else ""))
    return blockers


def _phase_step(d: _Draft) -> tuple[tuple[Phase | None, Phase] | None, Any, list[str], Phase]:
    obs, status = d.obs, d.status
    spec, halt = obs.session.spec, status.halt
    current = Phase(status.phase) if status.phase else None
    anchor = obs.session.metadata.creation_timestamp or obs.wall
    session_now = session_clock.session_now(spec.clock, anchor, obs.wall)
    status.clock = session_now
    try:
        where = calendar.position(spec.calendar, session_now)
    except calendar.UnknownExchange as exc:
        where = None
        target = Phase.ERROR
        d.condition(C.READY, False, R.UNKNOWN_EXCHANGE, str(exc), ("Warning", R.UNKNOWN_EXCHANGE))
    if where is not None:
        target = Phase.HALTED if halt is not None else where.phase
    nxt = _step(current, target)
    # The checklist is evaluated from PreMarket on, from the real state.
    checks = _premarket_blockers(d) if current is not None and current is not Phase.INITIALIZING else None
    blocked: list[str] = []
    if current is Phase.PRE_MARKET and checks:
        blocked = checks
        if nxt is Phase.MARKET_OPEN:
            nxt = current
    if checks is None:
        d.condition(C.PRE_MARKET_CHECKS, "Unknown", R.NOT_EVALUATED, "evaluated from PreMarket on")
    elif checks:
        d.condition(C.PRE_MARKET_CHECKS, False, R.CHECKS_FAILING,
                    ("no orders and no MarketOpen until: " if current is Phase.PRE_MARKET else "failing: ")
                    + "; ".join(checks), ("Warning", R.PRE_MARKET_CHECKS_FAILING))
    else:
        d.condition(C.PRE_MARKET_CHECKS, True, R.CHECKS_PASSED,
                    "workers ready, policy applied" + (", broker reachable, market data fresh"
                                                       if d.executor_desired else ""))
    transition: tuple[Phase | None, Phase] | None = None
    if nxt is not None and nxt is not current:
        phases.check_transition(current, nxt)
        reason = (f"halt {halt.id}" if nxt is Phase.HALTED and halt is not None else
                  f"resumed from halt {status.last_halt.id}" if current is Phase.HALTED and status.last_halt else
                  "the day ended before the pre-market checks passed" if current is Phase.PRE_MARKET
                  and nxt is Phase.INITIALIZING else
                  "exchange calendar" if where is not None else "error")
        status.transitions = [*status.transitions, Transition(from_=current.value if current else None, to=nxt.value,
                                                              at=obs.wall, reason=reason)][-MAX_TRANSITIONS:]
        d.event("Normal", R.PHASE_CHANGED, f"{current.value} -> {nxt.value}: {reason}" if current is not None
                else f"started in {nxt.value}")
        if nxt is Phase.HALTED and d.halt_raised is None and halt is not None:
            # Raised elsewhere (the risk worker writes its halts into status itself): announce it here.
            d.event("Warning", R.HALTED, f"halt {halt.id} raised by {halt.source}{_who(halt.raised_by, 'written by')}: "
                                         f"{halt.reason}")
        status.phase = nxt
        transition = (current, nxt)
    return transition, where, blocked, target


# ---------------------------------------------------------------------------- 8. trading state, Ready

def _trading_state_step(d: _Draft, blocked: list[str], calendar_known: bool) -> None:
    """What executors may do, and Ready: True only while they may trade normally (Active)."""
    obs, status = d.obs, d.status
    policy = obs.policy
    reason: R
    if status.halt is not None:
        state, reason, message = TradingState.HALTED, R.HALTED, f"halt {status.halt.id}: {status.halt.reason}"
    elif d.suspended:
        state, reason, message = TradingState.HALTED, R.SUSPENDED, "suspended for maintenance"
    elif not d.policy_ok:
        cond = get_condition(status.conditions, C.POLICY_APPLIED)
        state, reason = TradingState.HALTED, R(cond.reason) if cond else R.POLICY_NOT_FOUND
        message = cond.message if cond else "no RiskPolicy"
    elif not d.live_ok:
        state, reason, message = TradingState.HALTED, R.LIVE_TRADING_NOT_ALLOWED, "; ".join(d.live_blockers)
    elif status.phase not in ORDER_PHASES:
        state, reason = TradingState.HALTED, R.OUT_OF_HOURS
        message = f"phase {status.phase or '-'} allows no orders"
    elif blocked:
        state, reason = TradingState.HALTED, R.PRE_MARKET_CHECKS_FAILING
        message = "pre-market checks failing: " + "; ".join(blocked)
    elif status.reducing is not None or (policy is not None and policy.spec.mode == "Reducing"):
        state, reason = TradingState.REDUCING, R.REDUCING
        message = (f"Reducing {status.reducing.id}: {status.reducing.reason}" if status.reducing is not None
                   else "RiskPolicy mode is Reducing") + "; only exposure-reducing orders"
    elif not d.workers_ok:
        state, reason, message = TradingState.ACTIVE, R.WORKERS_NOT_READY, "not ready: " + ", ".join(d.missing)
    else:
        state, reason, message = TradingState.ACTIVE, R.TRADING, f"trading in {status.phase}"
    status.trading_state = state
    if calendar_known:  # else the phase step said why (UnknownExchange)
        d.condition(C.READY, reason is R.TRADING, reason, message)


def _step(current: Phase | None, target: Phase) -> Phase | None:
    """The next legal phase on the way from ``current`` to ``target`` (None: stay)."""
    if current is None:
        return Phase.INITIALIZING
    if current is target:
        return None
    if phases.can_transition(current, target):
        return target
    if current is Phase.ERROR:
        return Phase.INITIALIZING
    if current is Phase.INITIALIZING:
        # Enter the day only while it is still ahead of us; otherwise wait for the next one.
        return Phase.PRE_MARKET if target in (Phase.PRE_MARKET, Phase.MARKET_OPEN) else None
    if current is Phase.PRE_MARKET:
        # Blocked by the checklist while the market is open; once the regular session is over, the
        # day is lost: back to Initializing to wait for the next one (never into MarketClose unopened).
        return Phase.INITIALIZING if target in (Phase.MARKET_CLOSE, Phase.AFTER_HOURS, Phase.INITIALIZING) else None
    if current in CYCLE:
        return CYCLE[(CYCLE.index(current) + 1) % len(CYCLE)]
    return None


# ---------------------------------------------------------------------------------- I/O

_APPLIED_IDENTITY: dict[str, str] = {}  # "ns/name#rbac" -> build_rbac.digest of what this process applied

async def reconcile(body: dict[str, Any], policy_body: dict[str, Any] | None,
                    deployments: dict[Role, dict[str, Any] | None], settings: Settings,
                    post_event: Callable[[Event], None], config_map: dict[str, Any] | None,
                    children: bool = True) -> tuple[float, dict[str, Any] | None]:
    """One reconcile of one session; returns seconds until the next periodic one, and the session as
    written (the status patch's response) if status was written. ``deployments`` and ``config_map``
    are the live children, trimmed (``drift.trim``). ``children=False`` skips the ConfigMap and
    Deployments (a retry of a status write that lost a race: they were just applied).
    Counted and timed, failures included, by the caller (``trading_operator.loop``)."""
    ts = TradingSession.model_validate(body)
    policy, policy_error = _parse_policy(policy_body)
    # The namespace's labels matter only to the live-trading gate: read them for non-paper sessions only.
    labels = await kube.namespace_labels(ts.metadata.namespace) if not ts.spec.broker.paper else None
    key = f"{ts.metadata.namespace}/{ts.metadata.name}"
    liveness.PROBE.ensure_started()
    silence = liveness.WATCH.silence(key, heartbeat(body))
    if silence is not None and silence > settings.executor_stale_seconds:
        # About to call the executor lost: confirm with the server, not the watch, which may still be
        # reconnecting after an outage (a frozen watch looked like a silent executor in make chaos).
        fresh = await kube.get("tradingsessions", ts.metadata.namespace, ts.metadata.name)
        if fresh is not None:
            silence = liveness.WATCH.silence(key, heartbeat(fresh))
    # The Secrets the session's pods read, and their current versions (a metadata-only watch; no data).
    uses = build_workers.role_secrets(ts, settings)   # built once: decide reads it from Observed
    used = sorted({name for names_ in uses.values() for name in names_})
    secretwatch.VERSIONS.used_by(ts.metadata.namespace, ts.metadata.name, used)
    versions = secretwatch.VERSIONS.versions(ts.metadata.namespace, used)
    running = ts.status.retrain if ts.status.retrain is not None and ts.status.retrain.phase == "Running" else None
    training = await kube.get_object("batch/v1", "jobs", ts.metadata.namespace, running.job) if running else None
    await calendar.prepare(ts.spec.calendar.exchange)  # once per exchange and process: a child computes it
    decision = decide(Observed(ts, policy, policy_error, deployments, dt.datetime.now(dt.UTC), labels, silence,
                               secret_versions=versions, role_secrets=uses,
                               secret_versions_unknown=secretwatch.VERSIONS.disabled or "Secret versions not known yet",
                               retrain_job=training),
                      settings)

    # Each session's own worker identity (ServiceAccount, Role, RoleBinding) first: the Deployments name
    # the ServiceAccount. Applied when it changed (a new riskPolicyRef) or the session is new to this
    # operator process (the digest includes the uid); the operator does not watch them, so one deleted
    # by hand is put back by the next operator start, not at once.
    rbac_key, rbac_hash = f"{key}#rbac", build_rbac.digest(ts)
    if children and _APPLIED_IDENTITY.get(rbac_key) != rbac_hash:
        for obj in build_rbac.all_objects(ts):  # in order: the binding names the Role and the ServiceAccount
            await kube.apply(obj, owner=body)
        _APPLIED_IDENTITY[rbac_key] = rbac_hash
    # Children: each applied when missing, when the desired object changed, or when someone else
    # wrote it (drift.drift_reason). The ConfigMap first (pods mount it), then every drifted
    # Deployment at once: a new session's five applies in series were five round trips before its
    # first status write.
    cfg_hash = decision.status.config_hash or build_workers.config_hash(ts)
    if children:
        desired_cm, cm_hash = drift.stamp(build_workers.config_map(ts))
        why = drift.drift_reason(cm_hash, config_map)
        if why is not None:
            await kube.apply(desired_cm, owner=body)
            metrics.DRIFT_REPAIRS.labels("ConfigMap", why).inc()
    if children:
        await _apply_retrain_schedule(ts, settings, body)
    drifted = []
    for role in Role if children else ():
        held = decision.suspended or (role is Role.EXECUTOR and not decision.executor_allowed)
        desired, desired_hash = drift.stamp(build_workers.deployment(
            ts, role, settings, suspended=held, config_digest=cfg_hash,
            secret_versions=decision.secret_versions.get(role)))
        why = drift.drift_reason(desired_hash, deployments.get(role))
        if why is not None:
            drifted.append(desired)
            metrics.DRIFT_REPAIRS.labels("Deployment", why).inc()
    if drifted:
        await asyncio.gather(*(kube.apply(d, owner=body) for d in drifted))

    # Status: the operator's own fields and the latches, written only when they changed (our own write
    # comes back as an event), never the workers' reports (transactions.WORKER_FIELDS: a report merged
    # since our read is not overwritten and does not fail the write). The guard is the latches as read,
    # or the whole resourceVersion when the decision clears one (decision 0015).
    raw = body.get("status")
    old = TradingSessionStatus.model_validate(raw or {}).wire()
    new = decision.status.wire()
    changed = [k for k in OWNED if k != "clock" and old.get(k) != new.get(k)]
    written: dict[str, Any] | None = None
    if changed:
        guard = (transactions.version_guard(ts.metadata.resource_version or "")
                 if transactions.clears_latch(old, new) else transactions.latch_guard(raw))
        ops = guard + transactions.status_ops(raw, new, [*changed, "clock"])
        written = await kube.json_patch_status("tradingsessions", ts.metadata.namespace, ts.metadata.name, ops)
        for event in decision.events:
            post_event(event)
        if decision.transition is not None:
            src, dst = decision.transition
            metrics.TRANSITIONS.labels(src.value if src else "", dst.value).inc()
        if decision.halt_raised:
            metrics.HALTS.labels(decision.halt_raised).inc()
        if decision.training_job is not None:  # named in the status just written: created once
            await kube.apply(decision.training_job, owner=body)
    report = decision.status.executor
    heartbeat_age = ((dt.datetime.now(dt.UTC) - report.heartbeat).total_seconds()
                     if report is not None and report.heartbeat is not None and decision.status.phase in ORDER_PHASES
                     else None)
    metrics.session_state(ts.metadata.namespace, ts.metadata.name, new, heartbeat_age)
    return decision.requeue_after, written


_APPLIED_SCHEDULE: dict[str, str] = {}  # "ns/name" -> digest of the retraining CronJob this process applied


async def _apply_retrain_schedule(ts: TradingSession, settings: Settings, body: dict[str, Any]) -> None:
    """The retraining CronJob: applied when ``retrain.schedule`` is set or changed, deleted when it is removed
    (a CronJob left from before an operator restart goes with the session: it is owned by it)."""
    key = f"{ts.metadata.namespace}/{ts.metadata.name}"
    model = rollout.model_of(ts.spec)
    retrain = model.retrain if model is not None else None
    if retrain is not None and retrain.schedule:
        desired, digest = drift.stamp(build_training.cronjob(ts, settings, retrain))
        if _APPLIED_SCHEDULE.get(key) != digest:
            await kube.apply(desired, owner=body)
            _APPLIED_SCHEDULE[key] = digest
    elif _APPLIED_SCHEDULE.pop(key, None) is not None:
        await kube.delete("batch/v1", "cronjobs", ts.metadata.namespace, build_training.cronjob_name(ts.metadata.name))


def heartbeat(body: Mapping[str, Any]) -> str | None:
    return (((body.get("status") or {}).get("executor") or {}).get("heartbeat")) or None


def trim_deployment(live: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a live Deployment (``drift.trim``): the index keeps only this."""
    return drift.trim(live)


def trim_config_map(live: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of the live session ConfigMap (``drift.trim``)."""
    return drift.trim(live)


def _parse_policy(body: dict[str, Any] | None) -> tuple[RiskPolicy | None, str | None]:
    if body is None:
        return None, None
    try:
        return RiskPolicy.model_validate(body), None
    except pydantic.ValidationError as exc:
        return None, f"RiskPolicy {body.get('metadata', {}).get('name')} is invalid: {exc.errors()[0]['msg']}"


async def finalize(body: dict[str, Any], settings: Settings, post_event: Callable[[Event], None]) -> bool:
    """Deletion: halt, wait (bounded) for the executor to handle open orders, delete the workers.

    Returns True when the finalizer may be released, False to be called again.
    """
    ts = TradingSession.model_validate(body)
    ns, name = ts.metadata.namespace, ts.metadata.name
    now = dt.datetime.now(dt.UTC)
    halt = ts.status.halt
    if halt is None or not halt.active:
        halt = HaltStatus(active=True, source=HaltSource.OPERATOR, reason="session is being deleted", since=now,
                          id=new_halt_id())
        # Guarded by the latches like any status write; kopf's body may be older than the status, so a lost
        # race re-reads: a halt in force by then is the one to wait on.
        raw = body.get("status")
        for _ in range(3):
            try:
                await kube.json_patch_status("tradingsessions", ns, name, transactions.latch_guard(raw)
                                             + transactions.status_ops(raw, {"halt": halt.wire()}, ["halt"]))
                break
            except errors.ApiConflict:
                fresh = await kube.get("tradingsessions", ns, name)
                raw = (fresh or {}).get("status")
                if fresh is None or ((raw or {}).get("halt") or {}).get("active"):
                    return False
        else:
            return False
        post_event(Event("Normal", R.FINALIZING, f"halt {halt.id} raised; waiting for the executor to handle open orders"))
        return False
    executor = ts.status.executor
    running = (ts.status.workers.get(Role.EXECUTOR.value) or WorkerCount()).ready > 0
    handled = not running or (executor is not None and executor.halt_handled == halt.id)
    deleted_at = ts.metadata.deletion_timestamp or now
    timed_out = (now - deleted_at).total_seconds() > settings.delete_timeout_seconds
    if not handled and not timed_out:
        return False
    if not handled:
        post_event(Event("Warning", R.FINALIZE_TIMEOUT,
                         f"executor did not confirm open orders handled within {settings.delete_timeout_seconds:.0f}s"))
    for role in Role:
        await kube.delete("apps/v1", "deployments", ns, names.deployment(name, role))
    await kube.delete("v1", "configmaps", ns, names.configmap(name))
    identity = names.worker_service_account(name)
    secretwatch.VERSIONS.forget(ns, name)
    _APPLIED_IDENTITY.pop(f"{ns}/{name}#rbac", None)
    for api_version, plural in ((build_rbac.RBAC_API, "rolebindings"), (build_rbac.RBAC_API, "roles"),
                                ("v1", "serviceaccounts")):
        await kube.delete(api_version, plural, ns, identity)
    return True
