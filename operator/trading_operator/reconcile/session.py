"""TradingSession reconcile: workers, halts, the calendar-driven phase, status.

``decide`` is pure: given the session, its policy, its live Deployments and
the time, it returns the status to write and the Events to post. The steps,
in order:

1. policy      — is the referenced RiskPolicy there and valid? (PolicyApplied)
2. workers     — ready/desired per role (WorkersAvailable); suspend is refused while orders are open
3. halt        — raise (user switch, policy kill switch, lost executor), keep (latched), or clear
                 (a resume that names the active halt, once the guards pass)
4. phase       — Halted while a halt is active; otherwise the calendar's phase, one legal step
                 at a time, with the pre-market checklist gating PreMarket -> MarketOpen
5. trading state, next transition, Ready, observedGeneration

Risk halts are not raised here: the risk worker writes them into status
itself (fast path); this reconcile only honours and latches them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from trading_operator import calendar, kube, metrics, names
from trading_operator.api import clock as session_clock
from trading_operator.api import phases
from trading_operator.api.phases import ORDER_PHASES, Phase
from trading_operator.api.riskpolicy import RiskPolicy
from trading_operator.api.session import (
    HaltStatus,
    NextTransition,
    PolicyStatusRef,
    Role,
    TradingSession,
    TradingSessionStatus,
    Transition,
    WorkerCount,
)
from trading_operator.build import workers as build_workers
from trading_operator.reconcile.conditions import Event, get_condition, is_true, set_condition
from trading_operator.settings import Settings

MAX_TRANSITIONS = 20
# The calendar's own cycle: how a session walks forward when the calendar is several steps ahead.
CYCLE = [Phase.INITIALIZING, Phase.PRE_MARKET, Phase.MARKET_OPEN, Phase.MARKET_CLOSE, Phase.AFTER_HOURS]



@dataclass
class Observed:
    session: TradingSession
    policy: RiskPolicy | None
    policy_error: str | None
    deployments: dict[Role, dict[str, Any] | None]
    wall: dt.datetime


@dataclass
class Decision:
    status: TradingSessionStatus
    suspended: bool
    events: list[Event] = field(default_factory=list)
    transition: tuple[Phase | None, Phase] | None = None
    halt_raised: str | None = None
    requeue_after: float = 30.0


def new_halt_id() -> str:
    return "h-" + secrets.token_hex(5)


def _ready(dep: dict[str, Any] | None) -> int:
    return int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)


def decide(obs: Observed, settings: Settings, halt_id: Callable[[], str] = new_halt_id) -> Decision:
    ts, now = obs.session, obs.wall
    spec, gen = ts.spec, ts.metadata.generation
    status = ts.status.model_copy(deep=True)
    conds = status.conditions
    events: list[Event] = []

    def condition(type_: str, ok: bool | str, reason: str, message: str, event: tuple[str, str] | None = None) -> None:
        changed = set_condition(conds, type_, ok, reason, message, now, gen)
        if changed and event is not None:
            events.append(Event(event[0], event[1], message))

    # 1. policy --------------------------------------------------------------------------
    policy = obs.policy
    if policy is None:
        reason = "PolicyInvalid" if obs.policy_error else "PolicyNotFound"
        message = obs.policy_error or f"RiskPolicy {spec.risk_policy_ref.name!r} not found; the session does not trade"
        condition("PolicyApplied", False, reason, message, ("Warning", reason))
        status.risk_policy = PolicyStatusRef(name=spec.risk_policy_ref.name, observed_generation=0)
    else:
        condition("PolicyApplied", True, "PolicyApplied",
                  f"RiskPolicy {policy.metadata.name} generation {policy.metadata.generation} ({policy.spec.mode})",
                  ("Normal", "PolicyApplied"))
        status.risk_policy = PolicyStatusRef(name=policy.metadata.name, observed_generation=policy.metadata.generation,
                                             mode=policy.spec.mode)

    # 2. workers -------------------------------------------------------------------------
    open_orders = status.executor.open_orders if status.executor else 0
    suspended = spec.suspend and open_orders == 0
    if spec.suspend and not suspended:
        condition("Suspended", False, "OpenOrders",
                  f"suspend refused: {open_orders} orders are open; halt and let the executor cancel them first",
                  ("Warning", "SuspendRefused"))
    elif spec.suspend:
        condition("Suspended", True, "Suspended", "maintenance mode: every worker scaled to zero",
                  ("Normal", "Suspended"))
    elif get_condition(conds, "Suspended") is not None:
        condition("Suspended", False, "Running", "not suspended", ("Normal", "Unsuspended"))
    status.workers = {}
    for role in Role:
        desired = 0 if suspended else spec.workers.for_role(role).replicas
        status.workers[role.value] = WorkerCount(ready=min(_ready(obs.deployments.get(role)), desired), desired=desired)
    missing = [f"{r} {c.ready}/{c.desired}" for r, c in status.workers.items() if c.ready < c.desired]
    workers_ok = not missing
    condition("WorkersAvailable", workers_ok, "AllReady" if workers_ok else "WorkersNotReady",
              "all workers ready" if workers_ok else "not ready: " + ", ".join(missing))
    executor_desired = status.workers[Role.EXECUTOR.value].desired
    report = status.executor
    if executor_desired and report is not None and report.broker_connected is not None:
        condition("BrokerConnected", report.broker_connected, "Connected" if report.broker_connected else "Disconnected",
                  f"executor reports the {spec.broker.kind} broker "
                  + ("reachable" if report.broker_connected else "unreachable"))

    # 3. halt ----------------------------------------------------------------------------
    halt = status.halt or HaltStatus()
    raised: str | None = None
    if not halt.active:
        source, reason = _halt_cause(obs, status, settings, executor_desired)
        if source is not None:
            halt = HaltStatus(active=True, source=source, reason=reason, since=now, id=halt_id())  # type: ignore[arg-type]
            raised = source
            events.append(Event("Warning", "Halted", f"halt {halt.id} raised by {source}: {reason}"))
    else:
        halt, resume_events = _maybe_resume(obs, status, halt, executor_desired, workers_ok, now, condition)
        events.extend(resume_events)
    status.halt = halt
    if halt.active:
        condition("Halted", True, f"HaltedBy{halt.source}", f"halt {halt.id}: {halt.reason}")
    else:
        condition("Halted", False, "NotHalted", "no halt in force")

    # 4. phase ---------------------------------------------------------------------------
    current = Phase(status.phase) if status.phase else None
    anchor = ts.metadata.creation_timestamp or now
    session_now = session_clock.session_now(spec.clock, anchor, now)
    try:
        where = calendar.position(spec.calendar, session_now)
    except calendar.UnknownExchange as exc:
        where = None
        target = Phase.ERROR
        condition("Ready", False, "UnknownExchange", str(exc), ("Warning", "UnknownExchange"))
    if where is not None:
        target = Phase.HALTED if halt.active else where.phase
    blocked: list[str] = []
    nxt = _step(current, target)
    if current is Phase.PRE_MARKET and nxt is Phase.MARKET_OPEN:
        blocked = _premarket_blockers(status, policy, executor_desired, workers_ok)
        if blocked:
            nxt = current
    if nxt is not None and nxt is not current:
        phases.check_transition(current, nxt)
        reason = (f"halt {halt.id}" if nxt is Phase.HALTED else
                  f"resumed from halt {halt.id}" if current is Phase.HALTED else
                  "exchange calendar" if where is not None else "error")
        status.transitions = [*status.transitions, Transition(from_=current.value if current else None, to=nxt.value,
                                                              at=now, reason=reason)][-MAX_TRANSITIONS:]
        events.append(Event("Normal", "PhaseChanged", f"{current.value if current else '-'} -> {nxt.value}: {reason}"))
        if nxt is Phase.HALTED and raised is None:
            # Raised elsewhere (the risk worker writes its halts into status itself): announce it here.
            events.append(Event("Warning", "Halted", f"halt {halt.id} raised by {halt.source}: {halt.reason}"))
        status.phase = nxt
        decision_transition: tuple[Phase | None, Phase] | None = (current, nxt)
    else:
        decision_transition = None
    if blocked:
        condition("PreMarketChecks", False, "ChecksFailing", "MarketOpen waits for: " + "; ".join(blocked),
                  ("Warning", "PreMarketChecksFailing"))
    elif status.phase is not None and status.phase != Phase.INITIALIZING:
        condition("PreMarketChecks", True, "ChecksPassed", "workers ready, broker reachable, policy applied")

    # 5. trading state, next transition, Ready --------------------------------------------
    reducing = (policy is not None and policy.spec.mode == "Reducing") or (
        (rb := get_condition(conds, "RiskBreached")) is not None and rb.status == "True" and rb.reason == "Reduce")
    if halt.active or policy is None or status.phase not in ORDER_PHASES:
        status.trading_state = "Halted"
    else:
        status.trading_state = "Reducing" if reducing else "Active"
    if where is not None:
        status.next_transition = NextTransition(phase=where.next_phase.value, at=where.next_at)
    status.clock = session_now
    trading = status.phase in ORDER_PHASES and not halt.active and policy is not None
    if where is not None:
        condition("Ready", trading and workers_ok,
                  "Trading" if trading and workers_ok else (str(status.phase) if status.phase else "Pending"),
                  "trading" if trading and workers_ok else
                  f"phase {status.phase or '-'}, trading state {status.trading_state}")
    status.observed_generation = gen
    status.config_hash = build_workers.config_hash(ts)

    requeue = settings.reconcile_interval * 5
    if decision_transition is not None:
        requeue = 0.0
    elif where is not None and target is not Phase.HALTED and status.phase == target:
        wall_next = session_clock.wall_at(spec.clock, anchor, where.next_at)
        requeue = max(0.0, min(requeue, (wall_next - now).total_seconds()))
    elif blocked or (halt.active and not missing):
        requeue = settings.reconcile_interval
    return Decision(status=status, suspended=suspended, events=events, transition=decision_transition,
                    halt_raised=raised, requeue_after=requeue)


def _halt_cause(obs: Observed, status: TradingSessionStatus, settings: Settings,
                executor_desired: int) -> tuple[str | None, str]:
    spec = obs.session.spec
    if spec.halted:
        return "User", spec.halt_reason or "halted by user"
    if obs.policy is not None and obs.policy.spec.mode == "Halted":
        return "Policy", f"RiskPolicy {obs.policy.metadata.name} mode is Halted"
    report = status.executor
    if (executor_desired and status.phase in ORDER_PHASES and report is not None and report.heartbeat is not None
            and (obs.wall - report.heartbeat).total_seconds() > settings.executor_stale_seconds):
        age = (obs.wall - report.heartbeat).total_seconds()
        return "Operator", f"executor lost: no heartbeat for {age:.0f}s"
    return None, ""


def _maybe_resume(obs: Observed, status: TradingSessionStatus, halt: HaltStatus, executor_desired: int,
                  workers_ok: bool, now: dt.datetime,
                  condition: Callable[..., None]) -> tuple[HaltStatus, list[Event]]:
    spec = obs.session.spec
    events: list[Event] = []
    named = spec.resume_halt_id
    if named and named != halt.id:
        condition("Resumable", False, "StaleHaltId",
                  f"resumeHaltId {named} does not name the active halt {halt.id}; refused",
                  ("Warning", "ResumeRefused"))
        return halt, events
    requested = named == halt.id or (halt.source == "User" and not spec.halted)
    if not requested:
        condition("Resumable", False, "AwaitingResume",
                  "resume with: kubectl patch tradingsession "
                  f"{obs.session.metadata.name} --type=merge -p "
                  + ("'{\"spec\":{\"halted\":false}}'" if halt.source == "User" else
                     f"'{{\"spec\":{{\"halted\":false,\"resumeHaltId\":\"{halt.id}\"}}}}'"))
        return halt, events
    blockers = []
    if spec.halted:
        blockers.append("spec.halted is still true")
    if not workers_ok:
        blockers.append("workers not ready")
    if obs.policy is None:
        blockers.append("RiskPolicy missing or invalid")
    elif obs.policy.spec.mode == "Halted":
        blockers.append("RiskPolicy mode is Halted")
    if is_true(status.conditions, "RiskBreached"):
        blockers.append("risk limits still breached")
    report = status.executor
    if executor_desired and (report is None or report.halt_handled != halt.id):
        blockers.append("executor has not reconciled open orders for this halt")
    if blockers:
        condition("Resumable", False, "ResumeBlocked", "resume blocked: " + "; ".join(blockers),
                  ("Warning", "ResumeBlocked"))
        return halt, events
    condition("Resumable", True, "Resumed", f"halt {halt.id} cleared")
    events.append(Event("Normal", "Resumed", f"halt {halt.id} ({halt.source}: {halt.reason}) cleared"))
    return halt.model_copy(update={"active": False}), events


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
        # The market is not open (a blocked checklist, or the day ended): PreMarket only opens.
        return None
    if current in CYCLE:
        return CYCLE[(CYCLE.index(current) + 1) % len(CYCLE)]
    return None


def _premarket_blockers(status: TradingSessionStatus, policy: RiskPolicy | None, executor_desired: int,
                        workers_ok: bool) -> list[str]:
    blockers = []
    if not workers_ok:
        blockers.append("workers ready")
    if policy is None:
        blockers.append("RiskPolicy applied")
    if executor_desired and not (status.executor and status.executor.broker_connected):
        blockers.append("broker reachable (executor report)")
    return blockers


# ---------------------------------------------------------------------------------- I/O

async def reconcile(body: dict[str, Any], policy_body: dict[str, Any] | None,
                    deployments: dict[Role, dict[str, Any] | None], settings: Settings,
                    post_event: Callable[[Event], None], applied_config: dict[str, str],
                    children: bool = True) -> tuple[float, dict[str, Any] | None]:
    """One reconcile of one session; returns seconds until the next periodic one, and the session as
    written (the status patch's response) if status was written. ``children=False`` skips the
    ConfigMap and Deployments (a retry of a status write that lost a race: they were just applied)."""
    started = time.monotonic()
    metrics.RECONCILES.labels("TradingSession").inc()
    ts = TradingSession.model_validate(body)
    policy, policy_error = _parse_policy(policy_body)
    decision = decide(Observed(ts, policy, policy_error, deployments, dt.datetime.now(dt.UTC)), settings)
    key = f"{ts.metadata.namespace}/{ts.metadata.name}"

    # Children: the ConfigMap when its content changed, Deployments when missing or drifted.
    cfg_hash = decision.status.config_hash or build_workers.config_hash(ts)
    if children and applied_config.get(key) != cfg_hash:
        await kube.apply(build_workers.config_map(ts), owner=body)
        applied_config[key] = cfg_hash
    # The ConfigMap first (pods mount it), then every missing or drifted Deployment at once: a new
    # session's five applies in series were five round trips before its first status write.
    drifted = []
    for role in Role if children else ():
        desired = build_workers.deployment(ts, role, settings, suspended=decision.suspended, config_digest=cfg_hash)
        live = deployments.get(role)
        if live is None or not kube.is_subset(_comparable(desired), live):
            drifted.append(desired)
    if drifted:
        await asyncio.gather(*(kube.apply(d, owner=body) for d in drifted))

    # Status: written only when it changed (our own write comes back as an event).
    old = TradingSessionStatus.model_validate(body.get("status") or {}).wire()
    new = decision.status.wire()
    old.pop("clock", None)
    written: dict[str, Any] | None = None
    if {k: v for k, v in new.items() if k != "clock"} != old:
        written = await kube.patch_status("tradingsessions", ts.metadata.namespace, ts.metadata.name, new,
                                          ts.metadata.resource_version)
        for event in decision.events:
            post_event(event)
        if decision.transition is not None:
            src, dst = decision.transition
            metrics.TRANSITIONS.labels(src.value if src else "", dst.value).inc()
        if decision.halt_raised:
            metrics.HALTS.labels(decision.halt_raised).inc()
    metrics.RECONCILE_SECONDS.labels("TradingSession").observe(time.monotonic() - started)
    return decision.requeue_after, written


def trim_deployment(live: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a live Deployment: its name, what ``_comparable`` compares, readyReplicas.

    The operator indexes every worker Deployment; a full body (managedFields, status conditions,
    every defaulted field) is ~20x larger, and at 1,000 sessions the index was most of the RSS.
    """
    meta, spec = live.get("metadata") or {}, live.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    kept_pod: dict[str, Any] = {"containers": [{k: c[k] for k in ("name", "image", "command", "env") if k in c}
                                               for c in pod.get("containers") or []]}
    if "nodeSelector" in pod:
        kept_pod["nodeSelector"] = pod["nodeSelector"]
    return {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "spec": {"replicas": spec.get("replicas"),
                     "template": {"metadata": template.get("metadata") or {}, "spec": kept_pod}},
            "status": {"readyReplicas": (live.get("status") or {}).get("readyReplicas") or 0}}


def _comparable(desired: dict[str, Any]) -> dict[str, Any]:
    """The parts of a desired Deployment worth comparing to the live object.

    An absent nodeSelector is left out: the API server drops an empty map, so comparing ``{}`` would
    find every CPU worker drifted and re-apply it on every reconcile (a moved-off-GPU inference
    worker still rolls: its config hash, in the template's annotations, changes).
    """
    pod = desired["spec"]["template"]["spec"]
    spec: dict[str, Any] = {"containers": [{k: c[k] for k in ("name", "image", "command", "env")}
                                           for c in pod["containers"]]}
    if pod.get("nodeSelector"):
        spec["nodeSelector"] = pod["nodeSelector"]
    return {"spec": {"replicas": desired["spec"]["replicas"],
                     "template": {"metadata": desired["spec"]["template"]["metadata"], "spec": spec}}}


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
        halt = HaltStatus(active=True, source="Operator", reason="session is being deleted", since=now, id=new_halt_id())
        await kube.patch_status("tradingsessions", ns, name, {"halt": halt.wire()}, None)
        post_event(Event("Normal", "Finalizing", f"halt {halt.id} raised; waiting for the executor to handle open orders"))
        return False
    executor = ts.status.executor
    running = (ts.status.workers.get(Role.EXECUTOR.value) or WorkerCount()).ready > 0
    handled = not running or (executor is not None and executor.halt_handled == halt.id)
    deleted_at = ts.metadata.deletion_timestamp or now
    timed_out = (now - deleted_at).total_seconds() > settings.delete_timeout_seconds
    if not handled and not timed_out:
        return False
    if not handled:
        post_event(Event("Warning", "FinalizeTimeout",
                         f"executor did not confirm open orders handled within {settings.delete_timeout_seconds:.0f}s"))
    for role in Role:
        await kube.delete("apps/v1", "deployments", ns, names.deployment(name, role))
    await kube.delete("v1", "configmaps", ns, names.configmap(name))
    return True
