"""The executor: the only process that sends orders for a session.

It is a few components, each owning its state, composed by ``Executor.run``:

* ``gate`` — ``derive_gate`` (pure: what one version of the TradingSession allows) and the
  ``SessionView``, the one writer of the gate. The session watch runs in its own thread and hands it
  every version it sees, so a halt reaches the submit path without waiting for the event loop.
* ``liveness`` — the fail-closed rules: the executor consumes intents only while it can confirm the
  session, Redis, the journal and the broker answer, its RiskPolicy is loaded, a live endpoint is
  cleared, and it has synced with the broker since the last outage or resume. Otherwise intents stay
  pending on the bus (nothing is lost) and ``/readyz`` says why.
* ``policy`` — the RiskPolicy without restarts (limits, mode, ``allowLive``).
* ``orders`` — the order path: intent -> checks -> journal -> halt check -> submit. An order is
  journaled before it is sent and only ever retried with the same ``client_order_id``.
* ``sync`` — the broker sync (journal and broker into agreement, adopt, resend, cancel) and
  ``onHalt`` (CancelOpenOrders / FlattenPositions / None, flattening when ``status.halt.action`` is
  Flatten), reported as ``status.executor.haltHandled``. A gate that is not a halt (out of hours,
  failing pre-market checks, a missing policy) refuses new orders and leaves open ones alone.
  ``status.reducing`` or the policy's mode Reducing allow only exposure-reducing orders; a tripped
  market circuit breaker scales the per-order limits.
* ``fills`` — fills into the journal behind one cursor; the book (positions, open orders, marks).
* ``eod`` — the end-of-day reconciliation (at the close and on demand): the broker's positions and the
  day's fills against the journal, each difference named, ``status.executor.reconciliation``.
* ``report`` — ``status.executor``.

**Live trading only when cleared.** A non-paper broker is not even connected unless the RiskPolicy
allows live trading and the operator has set ``LiveTradingAllowed=True`` (which also needs the
namespace label); otherwise ``/readyz`` says why and nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from trading_operator.api import metric_names as mn
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers import bus as bus_mod
from trading_workers import order_metrics
from trading_workers.brokers.base import Broker
from trading_workers.errors import ConfigError, DependencyUnavailable, TradingError, TransientError
from trading_workers.executor.eod import EndOfDay
from trading_workers.executor.fills import Book, Fills
from trading_workers.executor.gate import CLOSED, Gate, SessionView, derive_gate
from trading_workers.executor.liveness import Dependencies, Reachability, blockers
from trading_workers.executor.orders import OrderPath
from trading_workers.executor.policy import Policy
from trading_workers.executor.report import executor_report, own_secret_versions
from trading_workers.executor.sync import BrokerSync
from trading_workers.journal import Journal
from trading_workers.pretrade import CheckLimits, PreTradeChecks, TradingState
from trading_workers.runtime import Kube, NotFound, Runtime, SessionWatch
from trading_workers.runtime.tasks import cancel_and_wait
from trading_workers.session_status import EventRecorder

__all__ = ["CLOSED", "Executor", "Gate", "derive_gate", "make_broker", "run"]

log = logging.getLogger("trading_workers.executor")

READY = mn.collector(mn.EXECUTOR_READY)


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


class Executor:
    """One session's order flow: the components above, and the loops that drive them."""

    def __init__(self, rt: Runtime, *, bus: bus_mod.Bus, broker: Broker, report_interval: float = 3.0,
                 stale_after: float = 15.0, consumer: str = "executor") -> None:
        self.rt = rt
        self.config = rt.config
        self.bus = bus
        self.broker = broker
        self.kube: Kube = rt.require_kube()
        self.report_interval = report_interval
        self.consumer_name = consumer
        self.journal: Journal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._report_now = asyncio.Event()
        self.deps = Dependencies()
        self.view = SessionView(stale_after=stale_after, on_resume=self.deps.need_sync, on_change=self._wake)
        self.checks = PreTradeChecks(CheckLimits())
        self.policy = Policy(self.kube, rt.settings.namespace, self.config.risk_policy_name, self.checks)
        self.book = Book()
        self.fills = Fills(broker, self.book, self._require_journal)
        self.orders = OrderPath(session_uid=self.config.session.uid, view=self.view, policy=self.policy,
                                checks=self.checks, broker=broker, book=self.book, fills=self.fills,
                                journal=self._require_journal, blockers=self.blockers, may_send=self.may_send,
                                synced=lambda: self.deps.synced, on_failure=self.failed)
        self.sync = BrokerSync(session_uid=self.config.session.uid, on_halt=self.config.on_halt, broker=broker,
                               book=self.book, fills=self.fills, orders=self.orders, deps=self.deps,
                               journal=self._require_journal, on_done=self._report_now.set)
        self.eod = EndOfDay(config=self.config, broker=broker, book=self.book, fills=self.fills,
                            journal=self._require_journal, session_now=rt.session_now,
                            events=EventRecorder(self.kube, rt.settings.namespace, rt.settings.name, "executor"),
                            on_done=self._report_now.set)

    # ------------------------------------------------------------ what may happen now

    def blockers(self) -> list[str]:
        """Why the executor may not consume intents right now (empty: it may)."""
        up = self.deps.up
        return blockers(session=self.view.problem(), redis=up.redis, journal=up.journal, broker=up.broker,
                        policy_error=self.policy.error, live_refusal=self.live_refusal(), synced=self.deps.synced)

    def may_send(self) -> bool:
        """Sending allowed, the sync aside (the sync itself re-sends unsent orders)."""
        return (not self.view.gate.halted and self.view.confirmed() and self.deps.up.all()
                and self.policy.error is None and self.live_refusal() is None)

    def live_refusal(self) -> str | None:
        """Why a live (non-paper) broker endpoint may not be used (None: paper, or cleared)."""
        if self.config.broker.paper:
            return None
        if not self.policy.allow_live:
            return "live endpoint refused: the RiskPolicy does not allow live trading"
        if not self.view.gate.live_cleared:
            return "live endpoint refused: the operator has not cleared live trading (LiveTradingAllowed)"
        return None

    def ready(self) -> tuple[bool, str]:
        why = self.blockers()
        READY.set(0 if why else 1)
        return not why, "; ".join(why)

    def trading_state(self) -> TradingState:
        return self.orders.trading_state()

    def failed(self, exc: BaseException) -> None:
        """A call failed: nothing is sent until the liveness loop has seen it back and a sync ran."""
        if self.deps.failed(exc) == "apiserver":
            self.view.lose("api server unreachable")
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._changed.set)

    async def _wait_changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)
        self._changed.clear()

    def _require_journal(self) -> Journal:
        if self.journal is None:
            raise DependencyUnavailable("journal", "not connected")
        return self.journal

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.rt.health.add("executor", self.ready)
        watch = SessionWatch(self.kube, self.rt.settings.namespace, self.rt.settings.name, self.view.observe,
                             lambda why: self.view.lose(f"session watch lost ({why})"))
        watch.start()
        tasks = [asyncio.create_task(coro, name=name) for name, coro in (
            ("deps", self._liveness_loop()), ("control", self._control_loop()), ("intents", self._intents_loop()),
            ("market", self.fills.feed_quotes(self.bus, set(self.config.symbols), self.failed)),
            ("fills", self._fills_loop()), ("report", self._report_loop()))]
        try:
            stop = asyncio.create_task(self.rt.stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stuck = await cancel_and_wait(tasks)
            if stuck:
                log.error("tasks did not end at shutdown", extra={"tasks": sorted(t.get_name() for t in stuck)})
            watch.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.report(), timeout=3)
            with contextlib.suppress(Exception):
                await self.broker.close()
            if self.journal is not None:
                await self.journal.close()

    # ------------------------------------------------------------ dependency liveness

    async def _liveness_loop(self) -> None:
        connected = False
        checked = 0.0
        warned_live = False
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
            broker_ok = self.deps.up.broker
            now = time.monotonic()
            try:
                if not connected and (refusal := self.live_refusal()) is not None:
                    broker_ok = False  # never connect to a live endpoint this executor was not cleared for
                    if self.deps.up.broker or not warned_live:
                        log.error("live broker not connected", extra={"reason": refusal})
                        warned_live = True
                elif not connected:
                    await self.broker.connect()
                    connected = broker_ok = True
                    checked = now
                elif self.broker.capabilities.cheap_ping or now - checked > 15 or not broker_ok:
                    broker_ok, checked = bool(await self.broker.ping()), now
            except TradingError as exc:
                broker_ok = False
                log.warning("broker unreachable", extra={"error": str(exc)})
            if self.deps.report(Reachability(redis_ok, journal_ok, broker_ok)):
                log.info("dependencies", extra={"redis": redis_ok, "journal": journal_ok, "broker": broker_ok})
                self._report_now.set()
                self._wake()
            order_metrics.broker_connected(self.deps.up.broker)
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------ control: policy, broker sync, halts

    async def _control_loop(self) -> None:
        while True:
            await self._wait_changed(1.0)
            if not self.view.confirmed():
                continue
            try:
                await self.control_step()
            except TransientError as exc:
                log.warning("control step failed; will retry", extra={"error": str(exc)})
                self.failed(exc)
                await asyncio.sleep(0.5)

    async def control_step(self) -> None:
        """The policy (it decides, among other things, whether a live broker may be connected), then a
        broker sync if one is due, then onHalt if a new halt is in force, then the end-of-day
        reconciliation if the close or a request asks for one."""
        gate = self.view.gate
        if await self.policy.refresh(gate.observed_policy_generation, gate.limit_scale):
            self._report_now.set()
        if self.policy.error is None:
            self.view.set_policy_mode(self.policy.mode)  # the mode takes part in the gate (no-op if unchanged)
        if not self.deps.up.all():
            return
        if not self.deps.synced and not await self.sync.run():
            self._wake()  # superseded by a resume or an outage while it ran: run it again
        gate = self.view.gate
        if self.sync.halt_pending(gate):
            await self.sync.apply_on_halt(gate)
        if self.deps.synced:
            await self.eod.maybe_run(self.view.latest())

    # ------------------------------------------------------------ intents and fills

    async def _intents_loop(self) -> None:
        consumer = bus_mod.Consumer(self.bus, bus_mod.INTENTS, "executor", self.consumer_name,
                                    bus_mod.decode_intent, self.orders.on_intent, block_ms=500)

        async def live() -> bool:  # intents stay pending on the bus while anything fails closed
            if self.blockers():
                await self._wait_changed(0.5)
                return False
            return True

        def not_finished(exc: TransientError) -> None:
            log.warning("intent not finished; stays pending", extra={"error": str(exc)})
            self.failed(exc)

        await consumer.run(gate=live, on_error=not_finished, retry_after=0.2)

    async def _fills_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.fills.wake.wait(), timeout=0.5)
            self.fills.wake.clear()
            if not (self.deps.synced and self.deps.up.journal and self.deps.up.broker):
                continue
            try:
                await self.fills.sync()
            except TransientError as exc:
                self.failed(exc)

    # ------------------------------------------------------------ status report

    async def _report_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), timeout=self.report_interval)
            self._report_now.clear()
            try:
                await self.report()
            except TradingError as exc:
                log.warning("status report failed", extra={"error": str(exc)})
                if isinstance(exc, TransientError):
                    self.view.lose("cannot write status (api server unreachable)")

    async def report(self) -> None:
        body = executor_report(now=dt.datetime.now(dt.UTC), state=self.trading_state(),
                               open_orders=len(self.book.open_orders), broker=self.deps.up.broker,
                               journal=self.deps.up.journal, policy_generation=self.policy.generation,
                               halt_handled=self.sync.halt_handled, reconciliation=self.eod.last,
                               secret_versions=own_secret_versions())
        try:
            obj = await self.kube.patch_session_status(self.rt.settings.namespace, self.rt.settings.name, body)
        except NotFound:
            self.view.observe(None)
            return
        self.view.observe(obj)


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
