"""The executor: the only process that sends orders for a session.

Order path, for every intent read from the bus (at-least-once)::

    intent -> client_order_id (deterministic) -> already journaled? resume it
           -> pre-trade checks (pure) -> rejection journaled, or
           -> order journaled NEW -> halt check -> broker.submit -> journal status
    fills  -> journal (orders, positions, cursor; one transaction)

Safety rules, and where they live:

* **Halts stop sending at once.** The session watch runs in its own
  thread and recomputes the ``Gate`` (pure: ``derive_gate``) on every
  version of the TradingSession it sees; the submit path reads the gate
  synchronously right before calling the broker. A halt is a halt whether
  it comes from spec (the user), status.halt (risk, policy, operator),
  status.tradingState, a phase that does not allow orders, or the
  RiskPolicy's mode. After a halt (spec, status.halt, policy mode)
  ``onHalt`` is applied (CancelOpenOrders / FlattenPositions / None, or
  flattening when ``status.halt.action`` is Flatten) and the halt's id is
  reported as ``status.executor.haltHandled``; a gate that is not a halt
  (out of hours, failing pre-market checks, a missing policy) refuses new
  orders and leaves open ones alone. ``status.reducing`` (a latch) or the
  policy's mode Reducing allow only exposure-reducing orders; a tripped
  market circuit breaker (``status.risk.circuitBreaker``) scales the
  per-order limits by its ``limitScale``.
* **Live trading only when cleared.** A non-paper broker is not even
  connected unless the RiskPolicy allows live trading and the operator
  has set ``LiveTradingAllowed=True`` (which also needs the namespace
  label); otherwise ``/readyz`` says why and nothing is sent.
* **Fail-closed.** The executor only consumes intents while it can confirm
  the session (watch or status write within ``stale_after``), Redis, the
  journal and the broker are reachable, its RiskPolicy is loaded, and it
  has reconciled with the broker since the last outage. Otherwise intents
  stay pending on the bus (nothing is lost) and ``/readyz`` says why.
* **No duplicate, no lost order.** An order is journaled before it is
  sent and is only ever retried with the same ``client_order_id``; the
  broker is idempotent on it. Reconciliation (at start, after any outage,
  before a resume) compares every open journal order with the broker:
  orders the broker has are brought up to date, journaled orders the
  broker never received are sent (or cancelled in the journal if the
  session is halted); open broker orders missing from the journal are
  journaled when the broker is the session's own (simulated), and only
  reported when it is an account other sessions may share (Alpaca).
  ``onHalt`` and flattening likewise touch only this session's orders and
  positions, as the journal knows them.
* **Policy without restarts.** The RiskPolicy named in the config is read
  whenever ``status.riskPolicy.observedGeneration`` changes (and every
  30 s as a safety net); its generation is reported as
  ``status.executor.policyGeneration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from trading_operator.api import metric_names as mn
from trading_operator.api.phases import ORDER_PHASES
from trading_operator.api.riskpolicy import RiskPolicySpec
from trading_operator.api.status import ConditionType, HaltAction, Reason
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers import bus as bus_mod
from trading_workers import order_metrics
from trading_workers.brokers.base import Broker, BrokerError, OrderRejected
from trading_workers.domain import Fill, Order, OrderIntent, OrderStatus, OrderType, Position, Side, client_order_id
from trading_workers.errors import ConfigError, DependencyUnavailable, MalformedMessage, TradingError, TransientError
from trading_workers.journal import Journal
from trading_workers.pretrade import CheckLimits, PreTradeChecks, TradingState
from trading_workers.runtime import Kube, NotFound, Runtime, SessionWatch, log_context, resource_version

log = logging.getLogger("trading_workers.executor")

ORDERS_SENT = mn.collector(mn.EXECUTOR_ORDERS_SENT)
ORDERS_NOT_SENT = mn.collector(mn.EXECUTOR_ORDERS_NOT_SENT)
FILLS = mn.collector(mn.EXECUTOR_FILLS)
HALTS_HANDLED = mn.collector(mn.EXECUTOR_HALTS_HANDLED)
RECONCILES = mn.collector(mn.EXECUTOR_RECONCILES)
SUBMIT_SECONDS = mn.collector(mn.EXECUTOR_SUBMIT_SECONDS)
READY = mn.collector(mn.EXECUTOR_READY)
HALTED = mn.collector(mn.EXECUTOR_HALTED)
HALTED_CHANGED = mn.collector(mn.EXECUTOR_HALTED_CHANGED)



# --------------------------------------------------------------------------- the gate (pure)

@dataclass(frozen=True, slots=True)
class Gate:
    """What one version of the TradingSession allows the executor to do."""

    halted: bool                 # no new orders
    state: TradingState          # Active / Reducing / Halted
    reason: str
    halt_key: str | None         # identifies the halt onHalt was applied for (None: a gate, not a halt)
    halt_id: str | None          # status.halt.id, when the halt has one
    flatten: bool                # the halt's action is Flatten
    observed_policy_generation: int | None
    limit_scale: float = 1.0     # < 1 while the market circuit breaker is tripped
    live_cleared: bool = False   # the operator's LiveTradingAllowed condition is True for this generation


CLOSED = Gate(True, TradingState.HALTED, "session not observed yet", None, None, False, None)


def _live_cleared(status: dict[str, Any], generation: int) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == ConditionType.LIVE_TRADING_ALLOWED:
            return bool(cond.get("status") == "True" and cond.get("reason") == Reason.LIVE_ALLOWED
                        and cond.get("observedGeneration") == generation)
    return False


def derive_gate(obj: dict[str, Any] | None, policy_mode: str | None = None) -> Gate:
    """The gate for a TradingSession object (as the API server returns it) and the policy's mode."""
    if obj is None:
        return Gate(True, TradingState.HALTED, "session not found", "deleted", None, False, None)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    halt = status.get("halt") or {}
    policy_ref = status.get("riskPolicy") or {}
    observed = policy_ref.get("observedGeneration")
    phase = status.get("phase")
    generation = (obj.get("metadata") or {}).get("generation", 0)
    breaker = (status.get("risk") or {}).get("circuitBreaker") or {}
    scale = float(breaker.get("limitScale") or 1.0) if breaker.get("tripped") else 1.0
    live = _live_cleared(status, generation)
    if halt.get("active"):
        halt_id = halt.get("id")
        reason = f"{halt.get('source') or 'unknown'} halt: {halt.get('reason') or ''}".strip()
        return Gate(True, TradingState.HALTED, reason, halt_id or f"status:{halt.get('since')}", halt_id,
                    halt.get("action") == HaltAction.FLATTEN, observed, scale, live)
    if spec.get("halted"):
        return Gate(True, TradingState.HALTED, f"user halt: {spec.get('haltReason') or ''}".strip(),
                    f"spec:{generation}", None, False, observed, scale, live)
    if policy_mode == "Halted":
        return Gate(True, TradingState.HALTED, "RiskPolicy mode Halted", "policy", None, False, observed, scale, live)
    if status.get("tradingState") == TradingState.HALTED:
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), {})
        why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "trading state Halted"
        return Gate(True, TradingState.HALTED, why, None, None, False, observed, scale, live)
    if phase not in {p.value for p in ORDER_PHASES}:
        return Gate(True, TradingState.HALTED, f"phase {phase} does not allow orders", None, None, False, observed,
                    scale, live)
    reducing = (status.get("reducing") is not None or status.get("tradingState") == TradingState.REDUCING
                or policy_mode == "Reducing")
    return Gate(False, TradingState.REDUCING if reducing else TradingState.ACTIVE, "", None, None, False, observed,
                scale, live)


@runtime_checkable
class QuoteDriven(Protocol):
    """A broker that matches orders against the quotes it is fed (the simulated exchange)."""

    async def on_quote(self, symbol: str, price: float) -> list[Fill]: ...


def make_broker(config: WorkerConfig, redis_client: Any, key_prefix: str) -> Broker:
    """The broker named in the config (``simulated`` persists its world in the session's Redis keys)."""
    if config.broker.kind == "simulated":
        from trading_workers.brokers.simulated import SimulatedExchange

        sim = config.broker.simulated
        return SimulatedExchange(seed=sim.seed, volatility=sim.volatility, latency_ms=sim.latency_ms,
                                 initial_cash=sim.initial_cash, redis_client=redis_client, key_prefix=key_prefix)
    try:
        from trading_workers.brokers.alpaca import AlpacaBroker
    except ImportError as exc:
        raise ConfigError(f"broker kind alpaca needs trading_workers.brokers.alpaca (alpaca-py): {exc}") from exc
    broker: Broker = AlpacaBroker.from_spec(config.broker)  # keys from the environment (the session's Secret)
    return broker


# --------------------------------------------------------------------------- executor

class Executor:
    """One session's order flow (see module docstring)."""

    def __init__(self, rt: Runtime, *, bus: bus_mod.Bus, broker: Broker, report_interval: float = 3.0,
                 stale_after: float = 15.0, consumer: str = "executor") -> None:
        self.rt = rt
        self.config = rt.config
        self.bus = bus
        self.broker = broker
        self.kube: Kube = rt.require_kube()
        self.report_interval = report_interval
        self.stale_after = stale_after
        self.consumer_name = consumer
        self.journal: Journal | None = None
        self.checks = PreTradeChecks(CheckLimits())
        self.positions: dict[str, Position] = {}
        self.open_orders: dict[str, Order] = {}
        self.marks: dict[str, float] = {}
        self.cursor = 0
        # session view (written by the watch thread and by status-write responses)
        self._obj: dict[str, Any] | None = None
        self._obj_rv = 0
        self._confirmed_at = 0.0
        self._lost = "not observed yet"
        self.gate: Gate = CLOSED
        # policy
        self._policy_mode: str | None = None
        self._policy_generation: int | None = None
        self._policy_observed: int | None = None
        self._policy_read_at = 0.0
        self._policy_error: str | None = "not loaded yet"
        self._controls: Any = None          # the policy's OrderControls
        self._allow_live = False
        self._applied_scale = 1.0
        # dependencies
        self._redis_ok = False
        self._journal_ok = False
        self._broker_ok = False
        self._reconciled = False
        # halts
        self._halt_applied: str | None = None
        self.halt_handled: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._fills_wake = asyncio.Event()
        self._fills_lock = asyncio.Lock()
        self._report_now = asyncio.Event()
        self._watch: SessionWatch | None = None

    # ------------------------------------------------------------ session view

    def _observe(self, obj: dict[str, Any] | None) -> None:
        """A version of the session (from any thread). Stale versions only confirm liveness."""
        now = time.monotonic()
        if obj is not None and resource_version(obj) < self._obj_rv:
            self._confirmed_at, self._lost = now, ""
            return
        gate = derive_gate(obj, self._policy_mode)
        if gate.halted and not self.gate.halted:
            log.warning("halt observed: no new orders", extra={"reason": gate.reason, "halt_id": gate.halt_id})
        elif self.gate.halted and not gate.halted:
            self._reconciled = False  # resume: reconcile with the broker before the first new order
            log.warning("resume observed: reconciling before sending")
        flipped = gate.halted != self.gate.halted
        self.gate = gate
        if flipped:
            HALTED_CHANGED.set_to_current_time()  # from here on the submit path sees the new gate
        HALTED.set(1 if gate.halted else 0)
        self._obj, self._obj_rv = obj, resource_version(obj)
        self._confirmed_at, self._lost = now, ""
        self._wake()

    def _on_watch_lost(self, why: str) -> None:
        self._lost = f"session watch lost ({why})"
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._changed.set)

    def session_confirmed(self) -> bool:
        return not self._lost and time.monotonic() - self._confirmed_at < self.stale_after

    def blockers(self) -> list[str]:
        """Why the executor may not consume intents right now (empty: it may)."""
        out = []
        if self._lost:
            out.append(self._lost)
        elif not self.session_confirmed():
            out.append("session view stale")
        if not self._redis_ok:
            out.append("redis unreachable")
        if not self._journal_ok:
            out.append("journal unreachable")
        if not self._broker_ok:
            out.append("broker unreachable")
        if self._policy_error:
            out.append(f"risk policy: {self._policy_error}")
        if (live := self.live_refusal()) is not None:
            out.append(live)
        if not self._reconciled:
            out.append("not reconciled with the broker")
        return out

    def _may_send(self) -> bool:
        """Sending allowed, reconciliation aside (reconciliation itself re-sends unsent orders)."""
        return (not self.gate.halted and self.session_confirmed() and self._redis_ok and self._journal_ok
                and self._broker_ok and self._policy_error is None and self.live_refusal() is None)

    def live_refusal(self) -> str | None:
        """Why a live (non-paper) broker endpoint may not be used (None: paper, or cleared)."""
        if self.config.broker.paper:
            return None
        if not self._allow_live:
            return "live endpoint refused: the RiskPolicy does not allow live trading"
        if not self.gate.live_cleared:
            return "live endpoint refused: the operator has not cleared live trading (LiveTradingAllowed)"
        return None

    def ready(self) -> tuple[bool, str]:
        blockers = self.blockers()
        READY.set(0 if blockers else 1)
        return not blockers, "; ".join(blockers)

    def trading_state(self) -> TradingState:
        return TradingState.HALTED if self.gate.halted else self.gate.state

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.rt.health.add("executor", self.ready)
        self._watch = SessionWatch(self.kube, self.rt.settings.namespace, self.rt.settings.name, self._observe,
                                   self._on_watch_lost)
        self._watch.start()
        tasks = [asyncio.create_task(coro, name=name) for name, coro in (
            ("deps", self._deps_loop()), ("control", self._control_loop()), ("intents", self._intents_loop()),
            ("market", self._market_loop()), ("fills", self._fills_loop()), ("report", self._report_loop()))]
        try:
            stop = asyncio.create_task(self.rt.stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._watch.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._report(), timeout=3)
            with contextlib.suppress(Exception):
                await self.broker.close()
            if self.journal is not None:
                await self.journal.close()

    async def _wait_changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)
        self._changed.clear()

    # ------------------------------------------------------------ dependencies

    async def _deps_loop(self) -> None:
        broker_checked = 0.0
        broker_connected = False
        has_ping = callable(getattr(self.broker, "ping", None))
        has_warned_live = False
        while True:
            redis_ok = await self.bus.ping()
            if self.journal is None:
                try:
                    self.journal = await Journal.open(self.rt.settings.journal_dsn, self.rt.session_key)
                    journal_ok = True
                except DependencyUnavailable:
                    journal_ok = False
            else:
                journal_ok = await self.journal.ping()
            broker_ok = self._broker_ok
            now = time.monotonic()
            try:
                if not broker_connected and (refusal := self.live_refusal()) is not None:
                    broker_ok = False  # never connect to a live endpoint this executor was not cleared for
                    if self._broker_ok or not has_warned_live:
                        log.error("live broker not connected", extra={"reason": refusal})
                        has_warned_live = True
                elif not broker_connected:
                    await self.broker.connect()
                    broker_connected = broker_ok = True
                    broker_checked = now
                elif has_ping:
                    broker_ok = bool(await self.broker.ping())  # type: ignore[attr-defined]
                elif now - broker_checked > 15 or not broker_ok:
                    await self.broker.account()
                    broker_ok, broker_checked = True, now
            except TradingError as exc:
                broker_ok = False
                log.warning("broker unreachable", extra={"error": str(exc)})
            changed = (redis_ok, journal_ok, broker_ok) != (self._redis_ok, self._journal_ok, self._broker_ok)
            if changed:
                if not (redis_ok and journal_ok and broker_ok):
                    self._reconciled = False  # an outage may have cut an order in half: reconcile before sending
                log.info("dependencies", extra={"redis": redis_ok, "journal": journal_ok, "broker": broker_ok})
                self._redis_ok, self._journal_ok, self._broker_ok = redis_ok, journal_ok, broker_ok
                self._report_now.set()
                self._wake()
            order_metrics.broker_connected(self._broker_ok)
            await asyncio.sleep(0.5)

    def _dependency_failed(self, exc: BaseException) -> None:
        """Mark what failed so nothing is sent until the deps loop has seen it back and we reconciled."""
        dependency = getattr(exc, "dependency", "")
        if isinstance(exc, BrokerError):
            self._broker_ok = False
        elif dependency == "journal":
            self._journal_ok = False
        elif dependency == "redis":
            self._redis_ok = False
        elif dependency == "apiserver":
            self._lost = "api server unreachable"
        self._reconciled = False
        self._wake()

    # ------------------------------------------------------------ control: policy, reconcile, halts

    async def _control_loop(self) -> None:
        while True:
            await self._wait_changed(1.0)
            if not self.session_confirmed():
                continue
            try:
                # The policy first: it decides, among other things, whether a live broker may be connected.
                await self._maybe_load_policy()
                if not (self._redis_ok and self._journal_ok and self._broker_ok):
                    continue
                if not self._reconciled:
                    await self.reconcile()
                gate = self.gate
                if not gate.halted:
                    self._halt_applied = None
                elif gate.halt_key is not None and gate.halt_key != self._halt_applied:
                    await self._apply_on_halt(gate)
            except TransientError as exc:
                log.warning("control step failed; will retry", extra={"error": str(exc)})
                self._dependency_failed(exc)
                await asyncio.sleep(0.5)

    async def _maybe_load_policy(self) -> None:
        observed = self.gate.observed_policy_generation
        due = time.monotonic() - self._policy_read_at > 30
        if self._policy_error is None and observed == self._policy_observed and not due:
            return
        self._policy_read_at = time.monotonic()
        name = self.config.risk_policy_name
        try:
            obj = await self.kube.get_policy(self.rt.settings.namespace, name)
            spec = RiskPolicySpec.model_validate(obj.get("spec") or {})
        except NotFound:
            self._policy_error = f"RiskPolicy {name} not found"
            return
        except ValueError as exc:
            self._policy_error = f"RiskPolicy {name} invalid: {exc}"
            return
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        self._controls, self._allow_live = spec.order_controls, spec.allow_live
        self._applied_scale = self.gate.limit_scale
        self.checks.update_limits(CheckLimits.from_controls(spec.order_controls, self._applied_scale))
        if generation != self._policy_generation or spec.mode != self._policy_mode:
            log.info("risk policy applied", extra={"policy": name, "generation": generation, "mode": spec.mode})
            self._report_now.set()
        self._policy_mode, self._policy_generation, self._policy_observed = spec.mode, generation, observed
        self._policy_error = None
        self._observe(self._obj)  # the mode may change the gate

    async def reconcile(self) -> None:
        """Bring the journal and the broker into agreement (see module docstring)."""
        journal = self._require_journal()
        async with self._fills_lock:
            # A durable broker cursor (the simulated exchange's fill list lives in Redis) resumes where the
            # journal left off; an adapter whose cursor is per process starts over, and fill ids dedupe.
            durable = bool(getattr(self.broker, "durable_cursor", False))
            self.cursor = await journal.broker_cursor(self.broker.name) if durable else 0
        await self._sync_fills()
        resent = repaired = adopted = 0
        for order in await journal.open_orders():
            with log_context(client_order_id=order.client_order_id):
                at_broker = await self.broker.get_order(order.client_order_id)
                if at_broker is not None:
                    await journal.update_order(order.client_order_id, at_broker.status,
                                               broker_order_id=at_broker.broker_order_id,
                                               reject_reason=at_broker.reject_reason)
                    repaired += 1
                elif order.status is OrderStatus.NEW:
                    if await self._send_journaled(order, reconciling=True):
                        resent += 1
                else:
                    log.error("journal order unknown to the broker; marked canceled")
                    await journal.update_order(order.client_order_id, OrderStatus.CANCELED,
                                               reject_reason="unknown at broker during reconciliation")
        known = {o.client_order_id for o in await journal.open_orders()}
        session_scoped = bool(getattr(self.broker, "session_scoped", False))
        for at_broker in await self.broker.open_orders():
            if at_broker.client_order_id in known or await journal.get_order(at_broker.client_order_id) is not None:
                continue
            with log_context(client_order_id=at_broker.client_order_id):
                if not session_scoped:  # an account shared with other sessions: not necessarily ours
                    log.warning("open broker order unknown to this session's journal; left alone")
                    continue
                log.error("broker order missing from the journal; adopted")
            await journal.record_new_order(at_broker, f"broker:{at_broker.client_order_id}")
            await journal.update_order(at_broker.client_order_id, at_broker.status,
                                       broker_order_id=at_broker.broker_order_id)
            adopted += 1
        await self._sync_fills()
        self.open_orders = {o.client_order_id: o for o in await journal.open_orders()}
        self.positions = await journal.positions()
        self._reconciled = True
        RECONCILES.labels("ok").inc()
        log.info("reconciled with the broker", extra={"open_orders": len(self.open_orders), "resent": resent,
                                                      "updated": repaired, "adopted": adopted})
        self._report_now.set()

    async def _apply_on_halt(self, gate: Gate) -> None:
        journal = self._require_journal()
        action = "FlattenPositions" if gate.flatten else self.config.on_halt
        log.warning("applying onHalt", extra={"action": action, "halt_id": gate.halt_id, "reason": gate.reason})
        if action in ("CancelOpenOrders", "FlattenPositions"):
            ours = {o.client_order_id for o in await journal.open_orders()}
            for order in await self.broker.open_orders():
                if order.client_order_id not in ours:  # a shared broker account: other sessions' orders
                    continue
                with log_context(client_order_id=order.client_order_id):
                    await self.broker.cancel(order.client_order_id)
                    after = await self.broker.get_order(order.client_order_id)
                    await journal.update_order(order.client_order_id, after.status if after else OrderStatus.CANCELED)
            for order in await journal.open_orders():
                if order.status is OrderStatus.NEW:  # journaled, never sent: it never will be
                    await journal.update_order(order.client_order_id, OrderStatus.CANCELED,
                                               reject_reason="not sent: session halted")
        if action == "FlattenPositions":
            await self._sync_fills()
            # This session's positions (the journal's), not the whole broker account's.
            for symbol, position in sorted((await journal.positions()).items()):
                if position.qty == 0:
                    continue
                order = Order(client_order_id(self.config.session.uid, f"flatten:{gate.halt_key}:{symbol}"),
                              symbol, Side.SELL if position.qty > 0 else Side.BUY, abs(position.qty))
                with log_context(client_order_id=order.client_order_id):
                    journaled, _ = await journal.record_new_order(order, f"flatten:{gate.halt_key}:{symbol}")
                    if journaled.status is OrderStatus.NEW:
                        placed = await self.broker.submit(journaled)  # the halt's own action: bypasses the gate
                        ORDERS_SENT.inc()
                        await journal.update_order(order.client_order_id, placed.status,
                                                   broker_order_id=placed.broker_order_id)
        await self._sync_fills()
        self.open_orders = {o.client_order_id: o for o in await journal.open_orders()}
        self._halt_applied = gate.halt_key
        if gate.halt_id:
            self.halt_handled = gate.halt_id
        HALTS_HANDLED.labels(action).inc()
        log.warning("onHalt done", extra={"action": action, "halt_id": gate.halt_id,
                                          "open_orders": len(self.open_orders)})
        self._report_now.set()

    # ------------------------------------------------------------ intents

    async def _intents_loop(self) -> None:
        consumer = bus_mod.Consumer(self.bus, bus_mod.INTENTS, "executor", self.consumer_name,
                                    bus_mod.decode_intent, self._on_intent, block_ms=500)
        while True:
            if self.blockers():
                await self._wait_changed(0.5)
                continue
            try:
                await consumer.poll()
            except TransientError as exc:
                log.warning("intent not finished; stays pending", extra={"error": str(exc)})
                self._dependency_failed(exc)
                await asyncio.sleep(0.2)

    async def _on_intent(self, msg_id: str, intent: OrderIntent) -> None:
        coid = client_order_id(self.config.session.uid, intent.signal_id)
        with log_context(client_order_id=coid, signal_id=intent.signal_id):
            if self.blockers():
                raise TransientError("executor not live")
            started = time.perf_counter()
            journal = self._require_journal()
            existing, rejected = await journal.lookup(coid)
            if existing is not None:  # a redelivered intent: retry with the same id, never a new one
                if existing.status is OrderStatus.NEW:
                    await self._send_journaled(existing)
                return
            if rejected:  # a redelivered intent that was already refused: the verdict stands
                return
            if self.gate.limit_scale != self._applied_scale and self._controls is not None:
                # The market circuit breaker tripped or reset: per-order limits scale with it.
                self._applied_scale = self.gate.limit_scale
                self.checks.update_limits(CheckLimits.from_controls(self._controls, self._applied_scale))
                log.warning("per-order limits scaled", extra={"scale": self._applied_scale})
            reason = self.checks.check(intent.symbol, intent.side.sign, intent.qty, intent.limit_price,
                                       self.marks.get(intent.symbol), self._exposure(intent.symbol),
                                       len(self.open_orders), self.trading_state())
            if reason is not None:
                await journal.record_rejection(signal_id=intent.signal_id, client_order_id=coid,
                                               symbol=intent.symbol, side=intent.side.value, qty=intent.qty,
                                               limit_price=intent.limit_price, reason=reason.value)
                log.info("order rejected by pre-trade check", extra={"reason": reason.value,
                                                                    "symbol": intent.symbol})
                return
            order = Order(coid, intent.symbol, intent.side, intent.qty, intent.order_type,
                          intent.limit_price if intent.order_type is OrderType.LIMIT else None)
            journaled, _ = await journal.record_new_order(order, intent.signal_id)
            await self._send_journaled(journaled)
            SUBMIT_SECONDS.observe(time.perf_counter() - started)

    def _exposure(self, symbol: str) -> float:
        position = self.positions.get(symbol)
        qty = position.qty if position else 0.0
        for order in self.open_orders.values():
            if order.symbol == symbol:
                qty += order.side.sign * (order.qty - order.filled_qty)
        return qty

    async def _send_journaled(self, order: Order, *, reconciling: bool = False) -> bool:
        """Send a journaled NEW order, unless halted (then it is cancelled unsent). True if sent."""
        journal = self._require_journal()
        if self.gate.halted:
            await journal.update_order(order.client_order_id, OrderStatus.CANCELED,
                                       reject_reason=f"not sent: {self.gate.reason}"[:500])
            ORDERS_NOT_SENT.inc()
            log.warning("order not sent: session halted", extra={"reason": self.gate.reason})
            return False
        if not self._may_send() or (not reconciling and not self._reconciled):
            raise TransientError("cannot confirm the session is live; order stays journaled as new")
        sent_at = time.perf_counter()
        try:
            # Nothing is awaited between the halt check above and this call: a halt seen by then stops the order.
            placed = await self.broker.submit(order)
        except OrderRejected as exc:
            order_metrics.submitted(order, "rejected", sent_at, None)
            await journal.update_order(order.client_order_id, OrderStatus.REJECTED, reject_reason=str(exc)[:500])
            log.warning("order rejected by the broker", extra={"error": str(exc)})
            return True
        except BrokerError as exc:
            order_metrics.submitted(order, "error", sent_at, None)
            self._dependency_failed(exc)
            raise
        order_metrics.submitted(order, "ok", sent_at, self.marks.get(order.symbol))
        ORDERS_SENT.inc()
        await journal.update_order(order.client_order_id, placed.status, broker_order_id=placed.broker_order_id,
                                   reject_reason=placed.reject_reason)
        if placed.status.is_open:
            self.open_orders[order.client_order_id] = placed
        else:
            self.open_orders.pop(order.client_order_id, None)
        log.info("order sent", extra={"symbol": order.symbol, "side": order.side.value, "qty": order.qty,
                                      "status": placed.status.value})
        if placed.filled_qty > 0:
            # Filled on arrival: book it now, so the next order's position checks see this one.
            await self._sync_fills()
        return True

    # ------------------------------------------------------------ market data and fills

    async def _market_loop(self) -> None:
        last_id: str | None = None
        quote_driven = self.broker if isinstance(self.broker, QuoteDriven) else None
        symbols = set(self.config.symbols)
        while True:
            try:
                if last_id is None:
                    entries = await self.bus.latest(bus_mod.MARKET_DATA, max(64, 4 * len(symbols)))
                    last_id = entries[-1][0] if entries else "0-0"
                else:
                    entries = await self.bus.read_after(bus_mod.MARKET_DATA, last_id, block_ms=500)
                    if entries:
                        last_id = entries[-1][0]
                for msg_id, fields in entries:
                    try:
                        quote = bus_mod.decode_quote(fields)
                    except MalformedMessage as exc:
                        bus_mod.MALFORMED.labels(bus_mod.MARKET_DATA).inc()
                        log.warning("malformed message skipped", extra={"stream": bus_mod.MARKET_DATA,
                                                                        "message_id": msg_id, "error": str(exc)})
                        continue
                    self.marks[quote.symbol] = quote.price
                    # The exchange keeps the mark even before it is connected; fills need it connected.
                    driven = quote_driven is not None and quote.symbol in symbols
                    if driven and await quote_driven.on_quote(quote.symbol, quote.price):  # type: ignore[union-attr]
                        self._fills_wake.set()
            except TransientError as exc:
                self._dependency_failed(exc)
                await asyncio.sleep(0.5)

    async def _fills_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fills_wake.wait(), timeout=0.5)
            self._fills_wake.clear()
            if not (self._reconciled and self._journal_ok and self._broker_ok):
                continue
            try:
                await self._sync_fills()
            except TransientError as exc:
                self._dependency_failed(exc)

    async def _sync_fills(self) -> None:
        async with self._fills_lock:  # one reader of the cursor at a time
            journal = self._require_journal()
            fills, cursor = await self.broker.fills_since(self.cursor)
            if not fills and cursor == self.cursor:
                return
            applied = await journal.record_fills(fills, broker=self.broker.name, cursor=cursor)
            self.cursor = cursor
        if not applied:
            return
        FILLS.inc(len(applied))
        order_metrics.filled(applied)
        for coid in {f.client_order_id for f in applied}:
            order = await journal.get_order(coid)
            if order is not None and order.status.is_open:
                self.open_orders[coid] = order
            else:
                self.open_orders.pop(coid, None)
        self.positions = await journal.positions()

    # ------------------------------------------------------------ status report

    async def _report_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), timeout=self.report_interval)
            self._report_now.clear()
            try:
                await self._report()
            except TradingError as exc:
                log.warning("status report failed", extra={"error": str(exc)})
                if isinstance(exc, TransientError):
                    self._lost = "cannot write status (api server unreachable)"

    async def _report(self) -> None:
        report: dict[str, Any] = {
            "heartbeat": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "tradingState": self.trading_state().value,
            "openOrders": len(self.open_orders),
            "brokerConnected": self._broker_ok,
            "journalConnected": self._journal_ok,
        }
        if self._policy_generation is not None:
            report["policyGeneration"] = self._policy_generation
        if self.halt_handled:
            report["haltHandled"] = self.halt_handled
        try:
            obj = await self.kube.patch_session_status(self.rt.settings.namespace, self.rt.settings.name,
                                                       {"status": {"executor": report}})
        except NotFound:
            self._observe(None)
            return
        self._observe(obj)

    def _require_journal(self) -> Journal:
        if self.journal is None:
            raise DependencyUnavailable("journal", "not connected")
        return self.journal


async def run(rt: Runtime) -> None:
    """The executor role."""
    rt.require_journal_dsn()
    client = bus_mod.connect(rt.settings.redis_url)
    bus = bus_mod.Bus(client, rt.redis_prefix)
    broker = make_broker(rt.config, client, rt.redis_prefix)
    try:
        await Executor(rt, bus=bus, broker=broker).run()
    finally:
        await client.aclose()
