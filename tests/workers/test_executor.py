"""The executor against the real world: API server, Redis, PostgreSQL, worker processes.

No operator runs in these tests; the test walks the session's phase and
writes what the operator would (``status.halt``, ``status.riskPolicy``)
itself. What reached the broker is read from the exchange's own record.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.builders import DEFAULT_POLICY
from tests.fixtures.faults import FaultProxy
from tests.fixtures.servers import PostgresServer, RedisServer
from tests.fixtures.waiting import eventually
from tests.workers.conftest import SessionHandle, WorkerProc, Workers
from tests.workers.flow import Flow
from trading_workers.domain import OrderStatus

pytestmark = [pytest.mark.cluster, pytest.mark.services]

TERMINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED}


def open_flow(flows: list[Flow], session: SessionHandle, redis_url: str, dsn: str) -> Flow:
    flow = Flow(redis_url, dsn, session.key, session.prefix, session.uid)
    flows.append(flow)
    return flow


async def start_executor(workers: Workers, session: SessionHandle, redis_url: str, dsn: str,
                         **kw: Any) -> WorkerProc:
    proc = workers.start("executor", session, redis_url=redis_url, journal_dsn=dsn, **kw)
    try:
        await eventually(proc.ready, timeout=45, what="executor ready")
    except AssertionError:
        raise AssertionError(f"executor not ready; log:\n{proc.logs()[-4000:]}") from None
    return proc


async def assert_journal_matches_broker(flow: Flow, published: list[str]) -> None:
    """Every intent became exactly one order, in the order the intents were published, known identically
    to the journal and the broker."""
    journal = await flow.journal()
    record = await flow.broker()
    in_journal = await journal.orders()  # oldest first
    expected_coids = set(published)
    orders = {o.client_order_id: o for o in in_journal}
    assert set(orders) == expected_coids, "journal orders differ from the intents"
    assert [o.client_order_id for o in in_journal] == published, "intents were not handled in the order published"
    assert set(record.orders) == expected_coids, "broker orders differ from the intents"
    first_submits = [s.client_order_id for s in record.submits if not s.duplicate]
    assert sorted(first_submits) == sorted(expected_coids), "an order was placed twice or never"
    for coid, order in orders.items():
        assert order.status == record.orders[coid].status, coid
        assert order.filled_qty == pytest.approx(record.orders[coid].filled_qty), coid
    journal_fills = {f.fill_id: f for f in await journal.fills()}
    assert set(journal_fills) == {f.fill_id for f in record.fills}
    positions = await journal.positions()
    for symbol, position in record.positions.items():
        assert positions[symbol].qty == pytest.approx(position.qty), symbol


async def publish_intents(flow: Flow, n: int, symbols: list[str], tag: str) -> list[str]:
    """``n`` intents on the bus; their client order ids in the order published."""
    return [await flow.intent(f"{tag}-{k}", symbols[k % len(symbols)], "buy" if k % 2 == 0 else "sell", 1 + k % 7)
            for k in range(n)]


# The crash and outage tests publish every intent before the executor starts and count on each becoming
# an order: on a loaded machine some would outlive the default maxIntentAgeSeconds (30 s) and be refused
# StaleIntent, which is that control working, not what these tests are about (tests/drills/test_stale_intents.py is).
NO_AGE_LIMIT: dict[str, Any] = {**DEFAULT_POLICY,
                                "orderControls": {**DEFAULT_POLICY["orderControls"], "maxIntentAgeSeconds": 0}}


async def all_done(flow: Flow, n: int) -> bool:
    journal = await flow.journal()
    orders = await journal.orders()
    return len(orders) == n and all(o.status in TERMINAL for o in orders) and await flow.unread() == 0


# --------------------------------------------------------------------------- the whole order flow

async def test_order_flow_end_to_end(make_session: Callable[..., SessionHandle], workers: Workers,
                                     redis_server: RedisServer, postgres_server: PostgresServer,
                                     flows: list[Flow], custom_api: Any) -> None:
    """market data -> signal -> checks -> journal -> fill -> position -> P&L, as four processes."""
    session = make_session(symbols=["AAPL", "MSFT"], spec={
        "broker": {"kind": "simulated", "simulated": {"seed": 7, "volatility": 0.8}},
        "strategy": {"name": "momentum", "params": {"lookback": 5, "threshold": 0.0005, "orderQty": 10}}})
    from kubernetes import client

    # This session's workers read their config from the ConfigMap, as in a cluster without a mounted file.
    client.CoreV1Api(custom_api.api_client).create_namespaced_config_map(session.namespace, {
        "metadata": {"name": f"{session.name}-config"}, "data": {"config.json": session.config.to_json()}})
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    env = {"TRADING_MD_INTERVAL": "0.1"}
    common = {"redis_url": redis_server.url, "journal_dsn": postgres_server.dsn, "config_file": False, "env": env}
    executor = workers.start("executor", session, **common)
    workers.start("risk", session, **common)
    workers.start("strategy", session, **common)
    market = workers.start("marketData", session, **common)
    await eventually(executor.ready, timeout=45, what="executor ready")
    await eventually(market.ready, timeout=30, what="market data ready")

    journal = await flow.journal()

    async def traded() -> bool:
        fills = await journal.fills()
        return len({f.symbol for f in fills}) == 2 and len(fills) >= 6

    await eventually(traded, timeout=90, interval=0.5, what="fills in both symbols")
    assert await flow.bus.length("md") > 0 and await flow.bus.length("intents") > 0

    # Every journaled order came from a strategy intent and went through the checks into the exchange.
    orders = await journal.orders()
    assert orders and all(o.client_order_id.startswith("tp-") for o in orders)
    record = await flow.broker()
    assert {o.client_order_id for o in orders if o.status is not OrderStatus.NEW} <= set(record.orders)

    # Positions are the fills replayed; P&L is reported as snapshots in the journal and a summary in status.
    from trading_workers.domain import Position

    async def consistent() -> bool:
        # Trading goes on while the test reads: a fill recorded between the two reads is not a mismatch,
        # so compare again until one pair of reads agrees (a position that never matches its fills fails).
        replay: dict[str, Position] = {}
        for fill in await journal.fills():
            replay.setdefault(fill.symbol, Position(fill.symbol)).apply(fill)
        positions = await journal.positions()
        return bool(replay) and all(
            symbol in positions and positions[symbol].qty == pytest.approx(position.qty)
            and positions[symbol].realized_pnl == pytest.approx(position.realized_pnl, abs=1e-4)
            for symbol, position in replay.items())

    await eventually(consistent, timeout=15, interval=0.2, what="journal positions equal to the fills replayed")
    snapshots = await eventually(journal.pnl_snapshots, timeout=15, what="P&L snapshots")
    assert snapshots[-1].equity > 0
    summary = await eventually(lambda: (session.status().get("summary") or {}).get("fills"), timeout=15,
                               what="status.summary")
    assert summary > 0
    report = session.status()["executor"]
    assert report["tradingState"] == "Active" and report["journalConnected"] and report["brokerConnected"]
    assert report["policyGeneration"] == 1


# --------------------------------------------------------------------------- pre-trade checks

async def test_each_pretrade_check_rejects_with_its_reason_and_valid_orders_pass(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    policy = {"mode": "Active", "orderControls": {
        "maxOrderNotional": 100_000, "maxPositionNotional": 250_000, "maxOrdersPerSecond": 1000,
        "priceCollarPct": 5, "duplicateWindowSeconds": 5, "maxOpenOrders": 3, "restrictedSymbols": ["GME"]}}
    session = make_session(symbols=["AAPL", "MSFT", "NVDA", "GME"], policy=policy)
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    for symbol, price in (("AAPL", 100.0), ("MSFT", 200.0), ("NVDA", 50.0), ("GME", 20.0)):
        await flow.quote(symbol, price)
    executor = await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    journal = await flow.journal()

    expected: dict[str, str] = {}
    passed: list[str] = []

    async def send(signal: str, symbol: str, side: str, qty: float, limit: float | None = None,
                   reason: str | None = None) -> None:
        await flow.intent(signal, symbol, side, qty, limit_price=limit)
        if reason:
            expected[flow.coid(signal)] = reason
        else:
            passed.append(flow.coid(signal))
        await eventually(lambda: _is_zero(flow.unread()), timeout=15, what=f"{signal} consumed")

    await send("ok-1", "AAPL", "buy", 10)
    await send("restricted", "GME", "buy", 1, reason="RestrictedSymbol")
    await send("zero-qty", "AAPL", "buy", 0, reason="InvalidOrder")
    await send("no-price", "ZZZ", "buy", 1, reason="NoReferencePrice")
    await send("collar", "AAPL", "buy", 10, limit=110.0, reason="PriceCollar")
    await send("notional", "AAPL", "buy", 2000, reason="MaxOrderNotional")
    await send("pos-1", "MSFT", "buy", 450)
    await send("pos-2", "MSFT", "buy", 451)
    await send("pos-3", "MSFT", "buy", 452, reason="MaxPosition")
    await send("dup-1", "NVDA", "buy", 7)
    await send("dup-2", "NVDA", "buy", 7, reason="DuplicateOrder")
    for k in (1, 2, 3):  # resting limit orders below the market
        await send(f"rest-{k}", "NVDA", "buy", k, limit=49.0)
    await send("open-4", "NVDA", "buy", 4, limit=49.0, reason="MaxOpenOrders")
    await flow.quote("NVDA", 48.5)  # the market comes down to the resting orders: they fill, nothing stays open
    await eventually(lambda: _no_open_orders(journal), timeout=15, what="resting orders filled")
    session.patch_status({"tradingState": "Reducing"})
    await eventually(lambda: session.status()["executor"]["tradingState"] == "Reducing", timeout=10,
                     what="executor reports Reducing")
    await send("grow", "AAPL", "buy", 5, reason="ReduceOnly")
    await send("shrink", "AAPL", "sell", 5)
    session.patch_status({"tradingState": "Active"})
    # The order-rate limit arrives with a new policy generation, without a restart.
    generation = session.patch_policy({"orderControls": {"maxOrdersPerSecond": 1}})
    session.patch_status({"riskPolicy": {"name": "limits", "observedGeneration": generation}})
    await eventually(lambda: session.status()["executor"].get("policyGeneration") == generation
                     and session.status()["executor"]["tradingState"] == "Active", timeout=15,
                     what="new policy generation enforced")
    await flow.intent("rate-1", "AAPL", "buy", 1)
    await flow.intent("rate-2", "AAPL", "buy", 2)
    passed.append(flow.coid("rate-1"))
    expected[flow.coid("rate-2")] = "OrderRate"
    await eventually(lambda: _is_zero(flow.unread()), timeout=15, what="rate intents consumed")

    rejections = {r["client_order_id"]: r["reason"] for r in await journal.rejections()}
    assert rejections == expected
    orders = {o.client_order_id for o in await journal.orders()}
    assert set(passed) == orders, "every valid order was journaled (and only those)"
    record = await flow.broker()
    assert set(record.orders) == orders, "rejected orders never reach the broker"
    for reason in set(expected.values()):
        assert executor.metric("trading_pretrade_rejections_total", reason=reason) >= 1, reason


async def _no_open_orders(journal: Any) -> bool:
    return not await journal.open_orders()


async def _is_zero(value: Any) -> bool:
    return (await value) == 0


# --------------------------------------------------------------------------- halts

async def test_daily_loss_breach_halts_session_through_status_and_halted_executor_sends_nothing(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    session = make_session(symbols=["AAPL"], policy={**DEFAULT_POLICY, "limits": {
        **DEFAULT_POLICY["limits"], "dailyLoss": {"reducePct": 2, "haltPct": 3}}})
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    await flow.quote("AAPL", 100.0)
    await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    big = await flow.intent("big", "AAPL", "buy", 9000)
    resting = await flow.intent("resting", "AAPL", "buy", 10, limit_price=95.5)
    journal = await flow.journal()

    async def built() -> bool:  # 1000 shares fill per price update (the exchange's liquidity): keep quoting
        await flow.quote("AAPL", 100.0)
        return await _filled(journal, big)

    await eventually(built, timeout=20, interval=0.2, what="position built (partial fills)")
    assert len([f for f in await journal.fills() if f.client_order_id == big]) == 9
    risk = workers.start("risk", session, redis_url=redis_server.url, journal_dsn=postgres_server.dsn)
    await eventually(risk.ready, timeout=30, what="risk worker ready")
    assert not (session.status().get("halt") or {}).get("active")

    await flow.quote("AAPL", 97.6)  # 9000 x -2.4 = -21.6k on 1M: a 2.16 % loss, past reducePct
    reducing = await eventually(lambda: session.status().get("reducing"), timeout=20,
                                what="risk latches Reducing")
    assert reducing["source"] == "Risk" and reducing["rule"] == "dailyLoss"
    await eventually(lambda: session.status()["executor"]["tradingState"] == "Reducing", timeout=20,
                     what="executor enforces Reducing")
    grow = await flow.intent("grow-while-reducing", "AAPL", "buy", 1)
    await eventually(lambda: _is_zero(flow.unread()), timeout=10, what="intent consumed")
    assert {r["client_order_id"]: r["reason"] for r in await journal.rejections()} == {grow: "ReduceOnly"}

    await flow.quote("AAPL", 96.0)  # 9000 x -4 = -36k on 1M: a 3.6 % daily loss
    halt = await eventually(lambda: (session.status().get("halt") or {}).get("active") and session.status()["halt"],
                            timeout=20, what="risk halt in status")
    assert halt["source"] == "Risk" and "daily loss" in halt["reason"]
    assert re.fullmatch(r"h-[a-z0-9]+", halt["id"])
    obj = session.get()
    assert obj["spec"].get("halted") is False, "an automatic halt is never written to spec"
    breaches = {(b["rule"], b["action"]) for b in obj["status"]["risk"]["breaches"]}
    assert ("dailyLoss", "Halt") in breaches and halt["rule"] == "dailyLoss" and halt["action"] == "Halt"
    assert any(e["rule"] == "dailyLoss" and e["action"] == "Halt" for e in await journal.risk_events())

    # The executor stops, cancels the resting order (onHalt default), and says which halt it handled.
    await eventually(lambda: session.status()["executor"].get("haltHandled") == halt["id"], timeout=20,
                     what="haltHandled")
    record = await flow.broker()
    assert record.orders[resting].status is OrderStatus.CANCELED
    assert session.status()["executor"]["tradingState"] == "Halted"

    sent_before = await flow.sent()
    for k in range(20):
        await flow.intent(f"after-halt-{k}", "AAPL", "buy" if k % 2 else "sell", 1 + k)
    await eventually(lambda: _is_zero(flow.unread()), timeout=20, what="intents consumed while halted")
    assert await flow.sent() == sent_before, "a halted executor sent an order"
    rejected = [r for r in await journal.rejections() if r["signal_id"].startswith("after-halt-")]
    assert len(rejected) == 20 and {r["reason"] for r in rejected} == {"TradingHalted"}
    assert session.status()["halt"]["id"] == halt["id"], "the halt latched; a re-evaluation never replaces it"


async def _filled(journal: Any, coid: str) -> bool:
    order = await journal.get_order(coid)
    return order is not None and order.status is OrderStatus.FILLED


async def test_user_halt_stops_the_next_order(make_session: Callable[..., SessionHandle], workers: Workers,
                                              redis_server: RedisServer, postgres_server: PostgresServer,
                                              flows: list[Flow]) -> None:
    """Intents keep coming every 20 ms; after the halt patch nothing more reaches the broker."""
    session = make_session(symbols=["AAPL"])
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    await flow.quote("AAPL", 100.0)
    await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    stop = asyncio.Event()

    async def stream() -> int:
        k = 0
        while not stop.is_set():
            await flow.intent(f"tick-{k}", "AAPL", "buy" if k % 2 else "sell", 1 + k % 5)
            k += 1
            await asyncio.sleep(0.02)
        return k

    producer = asyncio.create_task(stream())
    await eventually(lambda: _at_least(flow.sent(), 20), timeout=20, what="orders flowing")
    patched_at = time.time()
    session.patch_spec({"halted": True, "haltReason": "latency drill"})
    await asyncio.sleep(1.5)
    stop.set()
    await producer
    await eventually(lambda: _is_zero(flow.unread()), timeout=20, what="intents consumed")
    journal = await flow.journal()
    refused = sorted(r["at"].timestamp() for r in await journal.rejections() if r["reason"] == "TradingHalted")
    assert refused, "nothing was refused after the halt"
    record = await flow.broker()
    last_sent = max(s.at for s in record.submits)
    latency_ms = (refused[0] - patched_at) * 1000
    print(f"\nhalt patch -> first refused order: {latency_ms:.1f} ms; "
          f"last order reached the broker {1000 * (last_sent - patched_at):.1f} ms after the patch call")
    assert last_sent < refused[0], "an order reached the broker after the executor started refusing"
    assert latency_ms < 1000

    # Resume (the user's halt: spec.halted false): the executor reconciles, then sends again.
    session.patch_spec({"halted": False, "haltReason": None})
    await eventually(lambda: session.status()["executor"]["tradingState"] == "Active", timeout=15,
                     what="executor active again")
    sent = await flow.sent()
    await flow.intent("after-resume", "AAPL", "buy", 1)
    await eventually(lambda: _at_least(flow.sent(), sent + 1), timeout=15, what="an order after the resume")


async def _at_least(value: Any, n: int) -> bool:
    return (await value) >= n


async def test_on_halt_flatten_positions_and_report_halt_id(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    session = make_session(symbols=["AAPL", "MSFT"], spec={"onHalt": "FlattenPositions"})
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    await flow.quote("AAPL", 100.0)
    await flow.quote("MSFT", 200.0)
    await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    await flow.intent("long", "AAPL", "buy", 10)
    await flow.intent("short", "MSFT", "sell", 5)
    async def built() -> bool:
        return await _positions(flow) == {"AAPL": 10, "MSFT": -5}

    await eventually(built, timeout=15, what="positions")
    session.patch_spec({"halted": True, "haltReason": "end of drill"})
    session.patch_status({"halt": {"active": True, "source": "User", "reason": "end of drill",  # as the operator
                                   "since": "2026-01-01T00:00:00Z", "id": "h-drill1"}})
    await eventually(lambda: session.status()["executor"].get("haltHandled") == "h-drill1", timeout=20,
                     what="haltHandled")
    assert await _positions(flow) == {}
    journal = await flow.journal()
    assert all(p.qty == 0 for p in (await journal.positions()).values())


async def _positions(flow: Flow) -> dict[str, float]:
    record = await flow.broker()
    return {s: p.qty for s, p in record.positions.items() if p.qty}


# --------------------------------------------------------------------------- crash and outages

async def test_sigkill_executor_mid_flow_then_restart_no_duplicate_no_lost_order(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    n = 240
    session = make_session(policy=NO_AGE_LIMIT,
                           spec={"broker": {"kind": "simulated", "simulated": {"latencyMs": 5}}})
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    for symbol, price in (("AAPL", 100.0), ("MSFT", 200.0), ("NVDA", 50.0)):
        await flow.quote(symbol, price)
    coids = await publish_intents(flow, n, ["AAPL", "MSFT", "NVDA"], "kill")
    executor = await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    await eventually(lambda: _at_least(flow.sent(), 60), timeout=60, what="orders flowing")
    executor.kill()
    at_kill = await flow.sent()
    assert at_kill < n, "the kill must land mid-flow"
    await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    await eventually(lambda: all_done(flow, n), timeout=90, interval=0.5, what="every intent handled")
    await assert_journal_matches_broker(flow, coids)
    print(f"\nkilled after {at_kill}/{n} orders; after restart: {n} orders, each placed exactly once")


async def test_redis_outage_stops_sending_reports_not_ready_and_recovers(
        make_session: Callable[..., SessionHandle], workers: Workers, own_redis: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    n = 150
    session = make_session(policy=NO_AGE_LIMIT,
                           spec={"broker": {"kind": "simulated", "simulated": {"latencyMs": 5}}})
    flow = open_flow(flows, session, own_redis.url, postgres_server.dsn)
    for symbol, price in (("AAPL", 100.0), ("MSFT", 200.0), ("NVDA", 50.0)):
        await flow.quote(symbol, price)
    coids = await publish_intents(flow, n, ["AAPL", "MSFT", "NVDA"], "redis")
    executor = await start_executor(workers, session, own_redis.url, postgres_server.dsn)
    await eventually(lambda: _at_least(flow.sent(), 30), timeout=60, what="orders flowing")
    own_redis.stop()
    await eventually(executor.not_ready, timeout=15, what="executor not ready")
    assert "redis" in executor.get("/readyz")[1]
    await eventually(lambda: session.status()["executor"].get("brokerConnected") is False, timeout=15,
                     what="executor reports the broker down")
    await asyncio.sleep(1)
    own_redis.start()
    await eventually(executor.ready, timeout=30, what="executor ready again")
    await eventually(lambda: all_done(flow, n), timeout=90, interval=0.5, what="every intent handled")
    await assert_journal_matches_broker(flow, coids)
    assert executor.alive()


async def test_postgres_outage_stops_sending_reports_not_ready_and_recovers(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        own_postgres: PostgresServer, flows: list[Flow]) -> None:
    n = 150
    session = make_session(policy=NO_AGE_LIMIT,
                           spec={"broker": {"kind": "simulated", "simulated": {"latencyMs": 5}}})
    flow = open_flow(flows, session, redis_server.url, own_postgres.dsn)
    for symbol, price in (("AAPL", 100.0), ("MSFT", 200.0), ("NVDA", 50.0)):
        await flow.quote(symbol, price)
    coids = await publish_intents(flow, n, ["AAPL", "MSFT", "NVDA"], "pg")
    executor = await start_executor(workers, session, redis_server.url, own_postgres.dsn)
    await eventually(lambda: _at_least(flow.sent(), 30), timeout=60, what="orders flowing")
    own_postgres.stop()
    await eventually(executor.not_ready, timeout=15, what="executor not ready")
    assert "journal" in executor.get("/readyz")[1]
    sent = await flow.sent()
    await asyncio.sleep(2)
    assert await flow.sent() == sent, "the executor kept sending without its journal"
    assert sent < n
    await eventually(lambda: session.status()["executor"].get("journalConnected") is False, timeout=15,
                     what="executor reports the journal down")
    own_postgres.start()
    await eventually(executor.ready, timeout=30, what="executor ready again")
    await eventually(lambda: all_done(flow, n), timeout=90, interval=0.5, what="every intent handled")
    await assert_journal_matches_broker(flow, coids)
    assert executor.alive()


async def test_lost_api_server_stops_sending_until_the_session_is_confirmed_again(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow], apiserver_proxy: tuple[FaultProxy, Any]) -> None:
    """Fail-closed: an executor that cannot see its session (watch lost) sends nothing, and says so."""
    proxy, kubeconfig = apiserver_proxy
    session = make_session(symbols=["AAPL"])
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    await flow.quote("AAPL", 100.0)
    executor = await start_executor(workers, session, redis_server.url, postgres_server.dsn,
                                    env={"KUBECONFIG": str(kubeconfig)})
    await flow.intent("before", "AAPL", "buy", 1)
    await eventually(lambda: _at_least(flow.sent(), 1), timeout=15, what="first order")
    proxy.refuse()
    await eventually(executor.not_ready, timeout=20, what="executor not ready without the API server")
    assert "session" in executor.get("/readyz")[1] or "api server" in executor.get("/readyz")[1]
    for k in range(5):
        await flow.intent(f"blind-{k}", "AAPL", "buy", 2 + k)
    await asyncio.sleep(2)
    assert await flow.sent() == 1, "an executor that cannot confirm its session sent an order"
    assert await flow.unread() == 5, "the intents wait on the bus, nothing is lost"
    proxy.heal()
    await eventually(executor.ready, timeout=30, what="executor ready again")
    await eventually(lambda: _at_least(flow.sent(), 6), timeout=20, what="the waiting intents sent")
    await eventually(lambda: _is_zero(flow.unread()), timeout=10, what="intents acknowledged")


# --------------------------------------------------------------------------- garbage

async def test_garbage_on_the_bus_is_logged_counted_and_skipped(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    session = make_session(symbols=["AAPL"])
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    await flow.quote("AAPL", 100.0)
    executor = await start_executor(workers, session, redis_server.url, postgres_server.dsn)
    await flow.raw("intents", {"foo": "bar"})                       # no data field
    await flow.garbage_intent("{not json")                          # not JSON
    await flow.garbage_intent([1, 2, 3])                            # not an object
    await flow.garbage_intent({"symbol": "aapl", "side": "buy", "qty": 1, "signalId": "g1"})   # bad symbol
    await flow.garbage_intent({"symbol": "AAPL", "side": "hold", "qty": 1, "signalId": "g2"})  # bad side
    await flow.garbage_intent({"symbol": "AAPL", "side": "buy", "qty": "ten", "signalId": "g3"})  # bad qty
    await flow.garbage_intent({"symbol": "AAPL", "side": "buy", "qty": 1})                    # no idempotency key
    await flow.raw("md", {"data": json.dumps({"symbol": "AAPL", "price": -5})})              # bad quote
    good = await flow.intent("after-garbage", "AAPL", "buy", 3)
    journal = await flow.journal()
    await eventually(lambda: _filled(journal, good), timeout=15, what="the valid intent after the garbage")
    await eventually(lambda: _is_zero(flow.unread()), timeout=10, what="garbage acknowledged, not left pending")
    assert executor.metric("trading_bus_malformed_total", stream="intents") == 7
    assert executor.metric("trading_bus_malformed_total", stream="md") >= 1
    logged = [json.loads(line) for line in executor.logs().splitlines()
              if line.startswith("{") and "malformed message skipped" in line]
    assert len([e for e in logged if e["stream"] == "intents"]) == 7
    assert all(e["session"] == session.key and e.get("message_id") for e in logged)
    assert executor.alive() and executor.ready()
    assert len((await flow.broker()).orders) == 1


async def test_model_strategy_flow_through_inference_and_strategy_workers(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    """quotes -> inference (torch, cpu) -> signals -> strategy -> intents -> executor -> fills."""
    session = make_session(symbols=["AAPL", "MSFT"], spec={
        "broker": {"kind": "simulated", "simulated": {"seed": 3, "volatility": 0.8}},
        "strategy": {"name": "model", "params": {"threshold": 0.05, "orderQty": 3},
                     "model": {"uri": "builtin://default", "device": "cpu", "batchSize": 64}}})
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    common: dict[str, Any] = {"redis_url": redis_server.url, "journal_dsn": postgres_server.dsn,
                              "env": {"TRADING_MD_INTERVAL": "0.05", "TRADING_TORCH_THREADS": "1"}}
    executor = workers.start("executor", session, **common)
    inference = workers.start("inference", session, **common)
    workers.start("strategy", session, **common)
    workers.start("marketData", session, **common)
    await eventually(executor.ready, timeout=45, what="executor ready")
    await eventually(inference.ready, timeout=60, what="model loaded")
    journal = await flow.journal()

    async def model_orders() -> list[Any]:
        return [o for o in await journal.orders() if o.status is OrderStatus.FILLED]

    orders = await eventually(model_orders, timeout=90, interval=0.5, what="filled orders from model signals")
    signals = await flow.bus.latest("signals", 100)
    assert signals and all(json.loads(f["data"])["kind"] == "model" for _, f in signals)
    expected = {flow.coid(json.loads(f["data"])["signalId"]) for _, f in signals}
    assert {o.client_order_id for o in orders} <= expected, "every order traces back to a model signal"


async def test_sigterm_ends_the_executor_promptly_while_quotes_stream(
        make_session: Callable[..., SessionHandle], workers: Workers, redis_server: RedisServer,
        postgres_server: PostgresServer, flows: list[Flow]) -> None:
    """SIGTERM ends the executor within seconds, with its final report, even while market data streams:
    its tasks are cancelled until they end (redis-py can swallow a cancellation that lands as it sends
    a command; the executor then waited on that task for ever and was SIGKILLed by the kubelet)."""
    session = make_session(symbols=["AAPL"])
    flow = open_flow(flows, session, redis_server.url, postgres_server.dsn)
    streaming = True

    async def stream() -> None:
        price = 100.0
        while streaming:
            price += 0.01
            await flow.quote("AAPL", price)

    feeder = asyncio.create_task(stream())
    try:
        for attempt in range(5):
            executor = await start_executor(workers, session, redis_server.url, postgres_server.dsn)
            await asyncio.sleep(0.3)  # the market tail reading quote after quote
            started = time.monotonic()
            executor.proc.send_signal(15)
            try:
                code = await asyncio.to_thread(executor.proc.wait, 10)
            except Exception:
                raise AssertionError(f"attempt {attempt}: the executor did not end within 10 s of SIGTERM; log:\n"
                                     f"{executor.logs()[-3000:]}") from None
            assert code == 0, executor.logs()[-3000:]
            assert time.monotonic() - started < 10
    finally:
        streaming = False
        await feeder
