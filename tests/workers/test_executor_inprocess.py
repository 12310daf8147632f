"""The executor's components in-process, with a scripted broker: sync (adopt, resend, cancel), the halt
check before submit, onHalt, a resume seen while a sync is in flight, and the whole ``Executor.run``.

Real API server, PostgreSQL journal and Redis bus; only the broker is scripted: the simulated exchange in
memory, whose calls the test can hold until it has changed the world around them. The outage tests run
the executor as a process (``test_executor.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.servers import PostgresServer, RedisServer
from tests.fixtures.waiting import eventually
from tests.workers.conftest import SessionHandle
from tests.workers.flow import Flow
from trading_workers import bus as bus_mod
from trading_workers.brokers.base import BrokerCapabilities
from trading_workers.brokers.simulated import SimulatedExchange
from trading_workers.domain import Order, OrderIntent, OrderStatus, OrderType, Side, client_order_id
from trading_workers.errors import TransientError
from trading_workers.executor import Executor
from trading_workers.executor.liveness import Reachability
from trading_workers.journal import Journal
from trading_workers.runtime import Kube, Runtime, Settings

pytestmark = [pytest.mark.cluster, pytest.mark.services]

MARK = 100.0


def bus_id() -> str:
    """A bus message id written now (Redis stream ids carry their time: the executor refuses stale intents)."""
    return f"{int(time.time() * 1000)}-0"


class ScriptedBroker(SimulatedExchange):
    """The simulated exchange in memory; ``hold(name)`` makes calls of that method wait for ``release``."""

    def __init__(self, capabilities: BrokerCapabilities | None = None) -> None:
        super().__init__(seed=3, volatility=0.0)
        if capabilities is not None:
            self.capabilities = capabilities
        self.marks["AAPL"] = MARK
        self._held: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}

    def hold(self, name: str) -> asyncio.Event:
        """Hold the next calls of ``name``; returns an event set once one is waiting."""
        entered, release = asyncio.Event(), asyncio.Event()
        self._held[name] = (entered, release)
        return entered

    def release(self, name: str) -> None:
        self._held.pop(name)[1].set()

    async def _step(self, name: str) -> None:
        if name in self._held:
            entered, release = self._held[name]
            entered.set()
            await release.wait()

    async def fills_since(self, cursor: int) -> tuple[list[Any], int]:
        await self._step("fills_since")
        return await super().fills_since(cursor)

    async def submit(self, order: Order) -> Order:
        await self._step("submit")
        return await super().submit(order)

    def first_submits(self) -> list[str]:
        return [s.client_order_id for s in self.submits if not s.duplicate]


@dataclass
class Rig:
    session: SessionHandle
    executor: Executor
    broker: ScriptedBroker
    journal: Journal

    def observe(self) -> None:
        """What the session watch does with every version: hand the newest one to the view."""
        self.executor.view.observe(self.session.get())

    def coid(self, key: str) -> str:
        return client_order_id(self.session.uid, key)

    async def journaled(self, key: str, *, status: OrderStatus | None = None, limit: float | None = None) -> Order:
        order = Order(self.coid(key), "AAPL", Side.BUY, 1, OrderType.LIMIT if limit else OrderType.MARKET, limit)
        journaled, _ = await self.journal.record_new_order(order, key)
        if status is not None:
            await self.journal.update_order(journaled.client_order_id, status, broker_order_id="sim-elsewhere")
        return journaled


@pytest.fixture
async def make_rig(make_session: Callable[..., SessionHandle], redis_server: RedisServer,
                   postgres_server: PostgresServer, control_plane: Any,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """An Executor built in-process on the real servers, its dependencies up and its policy loaded, not running."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    opened: list[Any] = []

    async def make(broker: ScriptedBroker | None = None, **session_kw: Any) -> Rig:
        session = make_session(symbols=["AAPL"], **session_kw)
        settings = Settings(namespace=session.namespace, name=session.name, role="executor",
                            redis_url=redis_server.url, journal_dsn=postgres_server.dsn, http_port=0, config_path=None)
        rt = Runtime(settings=settings, config=session.config, kube=Kube())
        client = bus_mod.connect(redis_server.url)
        opened.append(client)
        broker = broker or ScriptedBroker()
        await broker.connect()
        executor = Executor(rt, bus=bus_mod.Bus(client, session.prefix), broker=broker)
        executor.journal = await Journal.open(postgres_server.dsn, session.key)
        opened.append(executor.journal)
        executor.deps.report(Reachability(redis=True, journal=True, broker=True))
        executor.book.marks["AAPL"] = MARK
        rig = Rig(session, executor, broker, executor.journal)
        rig.observe()
        await executor.control_step()  # loads the policy, first sync
        assert executor.policy.error is None and executor.deps.synced
        return rig

    yield make
    for thing in opened:
        await thing.aclose() if hasattr(thing, "aclose") else await thing.close()


async def test_sync_resends_a_journaled_order_the_broker_never_received(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    order = await rig.journaled("unsent")
    rig.executor.deps.need_sync()  # as after an outage
    await rig.executor.control_step()
    assert rig.broker.first_submits() == [order.client_order_id]
    at_broker = await rig.broker.get_order(order.client_order_id)
    journaled = await rig.journal.get_order(order.client_order_id)
    assert at_broker is not None and journaled is not None
    assert journaled.status is at_broker.status and journaled.status is not OrderStatus.NEW
    assert rig.executor.deps.synced


async def test_sync_cancels_in_the_journal_an_order_the_broker_does_not_know(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    order = await rig.journaled("lost", status=OrderStatus.ACCEPTED)
    rig.executor.deps.need_sync()
    await rig.executor.control_step()
    journaled = await rig.journal.get_order(order.client_order_id)
    assert journaled is not None and journaled.status is OrderStatus.CANCELED
    assert journaled.reject_reason == "unknown at broker during reconciliation"
    assert rig.broker.first_submits() == []


async def test_sync_while_halted_cancels_unsent_orders_instead_of_sending(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    rig.session.patch_spec({"halted": True, "haltReason": "drill"})
    rig.observe()
    order = await rig.journaled("unsent-halted")
    rig.executor.deps.need_sync()
    await rig.executor.control_step()
    journaled = await rig.journal.get_order(order.client_order_id)
    assert journaled is not None and journaled.status is OrderStatus.CANCELED
    assert (journaled.reject_reason or "").startswith("not sent: user halt: drill")
    assert rig.broker.first_submits() == []


@pytest.mark.parametrize("session_scoped", [True, False])
async def test_sync_adopts_unknown_broker_orders_only_from_a_session_scoped_broker(
        make_rig: Callable[..., Any], session_scoped: bool) -> None:
    broker = ScriptedBroker(dataclasses.replace(SimulatedExchange.capabilities, session_scoped=session_scoped))
    rig: Rig = await make_rig(broker)
    stray = await broker.submit(Order("stray-1", "AAPL", Side.BUY, 1, OrderType.LIMIT, MARK * 0.5))
    assert stray.status.is_open
    rig.executor.deps.need_sync()
    await rig.executor.control_step()
    adopted = await rig.journal.get_order("stray-1")
    if session_scoped:
        assert adopted is not None and adopted.status is OrderStatus.ACCEPTED
        assert "stray-1" in rig.executor.book.open_orders
    else:  # an account other sessions may share: reported, left alone, never journaled as ours
        assert adopted is None
        assert (await broker.get_order("stray-1")).status.is_open  # type: ignore[union-attr]


async def test_on_halt_cancels_this_sessions_open_orders_once(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    intent = OrderIntent("AAPL", Side.BUY, 1, OrderType.LIMIT, MARK * 0.97, "rest")
    await rig.executor.orders.on_intent(bus_id(), intent)
    coid = rig.coid("rest")
    assert (await rig.broker.get_order(coid)).status.is_open  # type: ignore[union-attr]
    rig.session.patch_spec({"halted": True})
    rig.observe()
    await rig.executor.control_step()
    assert (await rig.broker.get_order(coid)).status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert (await rig.journal.get_order(coid)).status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert rig.executor.book.open_orders == {}
    applied = rig.executor.sync.halt_applied
    await rig.executor.control_step()  # the same halt: onHalt is not applied twice
    assert rig.executor.sync.halt_applied == applied and applied is not None


async def test_a_halt_seen_before_submit_stops_the_order_journaled_and_never_sent(
        make_rig: Callable[..., Any]) -> None:
    """The halt arrives while the order path is writing the journal: the submit does not happen."""
    rig: Rig = await make_rig()
    rig.session.patch_spec({"halted": True, "haltReason": "mid-flight"})
    halted_version = rig.session.get()
    journal = rig.journal
    record = journal.record_new_order

    async def record_then_halt(order: Order, signal_id: str) -> tuple[Order, bool]:
        out = await record(order, signal_id)
        await asyncio.to_thread(rig.executor.view.observe, halted_version)  # the watch thread, meanwhile
        return out

    journal.record_new_order = record_then_halt  # type: ignore[method-assign]
    await rig.executor.orders.on_intent(bus_id(), OrderIntent("AAPL", Side.BUY, 1, OrderType.MARKET, None, "late"))
    journaled = await journal.get_order(rig.coid("late"))
    assert journaled is not None and journaled.status is OrderStatus.CANCELED
    assert (journaled.reject_reason or "").startswith("not sent: user halt: mid-flight")
    assert rig.broker.first_submits() == []


async def test_a_resume_seen_while_a_sync_is_in_flight_needs_another_sync_before_any_order(
        make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    ex = rig.executor
    rig.session.patch_spec({"halted": True})
    rig.observe()
    ex.deps.need_sync()  # e.g. a journal blip while halted
    entered = rig.broker.hold("fills_since")
    step = asyncio.create_task(ex.control_step())
    await asyncio.wait_for(entered.wait(), 10)  # the sync is in flight, on the halted gate
    rig.session.patch_spec({"halted": False})
    await asyncio.to_thread(rig.observe)  # the resume, from another thread, as the watch delivers it
    assert not ex.view.gate.halted
    rig.broker.release("fills_since")
    await asyncio.wait_for(step, 10)
    # The sync that started before the resume does not count for it.
    assert not ex.deps.synced
    assert "not reconciled with the broker" in ex.blockers()
    with pytest.raises(TransientError):
        await ex.orders.on_intent(bus_id(), OrderIntent("AAPL", Side.BUY, 1, OrderType.MARKET, None, "early"))
    assert await rig.journal.get_order(rig.coid("early")) is None and rig.broker.first_submits() == []
    await ex.control_step()
    assert ex.deps.synced and ex.blockers() == []
    await ex.orders.on_intent(bus_id(), OrderIntent("AAPL", Side.BUY, 1, OrderType.MARKET, None, "after"))
    assert rig.broker.first_submits() == [rig.coid("after")]


async def test_executor_run_in_process_trades_and_reports(make_rig: Callable[..., Any], redis_server: RedisServer,
                                                          postgres_server: PostgresServer) -> None:
    rig: Rig = await make_rig()
    session = rig.session
    flow = Flow(redis_server.url, postgres_server.dsn, session.key, session.prefix, session.uid)
    runner = asyncio.create_task(rig.executor.run())
    try:
        await eventually(lambda: rig.executor.ready()[0], timeout=20, what="executor ready")
        await flow.quote("AAPL", MARK)
        coid = await flow.intent("in-process", "AAPL", "buy", 2)
        await eventually(lambda: coid in rig.broker.first_submits(), timeout=20, what="order submitted")

        async def filled() -> bool:
            order = await rig.journal.get_order(coid)
            return order is not None and order.status is OrderStatus.FILLED

        await eventually(filled, timeout=20, what="fill journaled")
        await eventually(lambda: (session.status().get("executor") or {}).get("tradingState") == "Active",
                         timeout=20, what="status.executor reported")
    finally:
        rig.executor.rt.stop.set()
        await asyncio.wait_for(runner, 15)
        await flow.close()
