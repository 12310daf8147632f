"""Journal, simulated exchange and bus against real PostgreSQL and Redis (no API server needed)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.fixtures.servers import PostgresServer, RedisServer
from trading_operator.api.session import SnapshotRetention
from trading_workers import bus as bus_mod
from trading_workers.brokers.base import BrokerError
from trading_workers.brokers.simulated import SimulatedExchange, initial_price, read_record
from trading_workers.domain import Fill, Order, OrderIntent, OrderStatus, OrderType, Quote, Side
from trading_workers.errors import DependencyUnavailable, TransientError
from trading_workers.journal import Journal, PnlSnapshot, archive, migrate, migrations
from trading_workers.risk.worker import retention_cutoffs

pytestmark = pytest.mark.services


# --------------------------------------------------------------------------- journal

async def test_migrations_are_versioned_recorded_and_idempotent(postgres_server: PostgresServer,
                                                                journal: Journal) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in rows] == [(m.version, m.checksum) for m in migrations()]
        assert await migrate(conn) == []  # already applied: nothing to do
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"orders", "fills", "positions", "pnl_snapshots", "risk_events", "session_transitions",
                "rejections", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_order_is_journaled_once_per_client_order_id(postgres_server: PostgresServer, journal: Journal) -> None:
    order = Order("tp-unique-1", "AAPL", Side.BUY, 10)
    first, created = await journal.record_new_order(order, "sig-1")
    assert created and first.status is OrderStatus.NEW
    again, created = await journal.record_new_order(Order("tp-unique-1", "AAPL", Side.BUY, 99), "sig-1")
    assert not created and again.qty == 10  # the existing row wins; no second order
    found, rejected = await journal.lookup("tp-unique-1")
    assert found is not None and found.qty == 10 and not rejected
    await journal.record_rejection(signal_id="sig-2", client_order_id="tp-refused", symbol="GME", side="buy",
                                   qty=1, limit_price=None, reason="RestrictedSymbol")
    assert await journal.lookup("tp-refused") == (None, True)
    assert await journal.lookup("tp-never") == (None, False)
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO orders (client_order_id, session, symbol, side, qty, order_type, status) "
                               "VALUES ('tp-unique-1', 'x/y', 'AAPL', 'buy', 1, 'market', 'new')")
    finally:
        await conn.close()


async def test_status_moves_forward_only_and_fills_are_idempotent(journal: Journal) -> None:
    await journal.record_new_order(Order("tp-f1", "MSFT", Side.BUY, 10), "s")
    assert await journal.update_order("tp-f1", OrderStatus.ACCEPTED, broker_order_id="b-1")
    fills = [Fill("tp-f1", "MSFT", Side.BUY, 4, 100.0, 1.0, "b-1-f1"), Fill("tp-f1", "MSFT", Side.BUY, 6, 110.0, 2.0,
                                                                           "b-1-f2")]
    assert len(await journal.record_fills(fills[:1], broker="sim", cursor=1)) == 1
    assert (await journal.get_order("tp-f1")).status is OrderStatus.PARTIALLY_FILLED  # type: ignore[union-attr]
    assert len(await journal.record_fills(fills, broker="sim", cursor=2)) == 1  # the first one is known
    order = await journal.get_order("tp-f1")
    assert order is not None and order.status is OrderStatus.FILLED and order.filled_qty == 10
    assert order.avg_fill_price == pytest.approx(106.0)
    assert not await journal.update_order("tp-f1", OrderStatus.ACCEPTED)  # never backwards
    assert not await journal.update_order("tp-f1", OrderStatus.CANCELED)  # terminal is final
    assert await journal.broker_cursor("sim") == 2
    await journal.record_fills([Fill("tp-f1", "MSFT", Side.SELL, 10, 120.0, 3.0, "b-2-f1")], broker="sim", cursor=1)
    assert await journal.broker_cursor("sim") == 2  # the cursor never moves back
    position = (await journal.positions())["MSFT"]
    assert position.qty == 0 and position.realized_pnl == pytest.approx(140.0)


async def test_rejections_risk_events_pnl_and_transitions(journal: Journal) -> None:
    assert await journal.record_rejection(signal_id="s", client_order_id="tp-r", symbol="GME", side="buy", qty=1,
                                          limit_price=None, reason="RestrictedSymbol")
    assert not await journal.record_rejection(signal_id="s", client_order_id="tp-r", symbol="GME", side="buy",
                                              qty=1, limit_price=None, reason="RestrictedSymbol")
    await journal.record_risk_event(rule="dailyLoss", action="Halt", value=3.4, threshold=3, message="m")
    await journal.record_pnl(PnlSnapshot(990_000, 0, -10_000, -1.0, 1.0, 500_000))
    await journal.record_transition(None, "Initializing", "created")
    counts = await journal.counts()
    assert counts.rejected == 1 and counts.orders == 0
    assert (await journal.risk_events())[0]["rule"] == "dailyLoss"
    assert (await journal.pnl_snapshots())[0].equity == 990_000
    assert await journal.last_transition_at() is not None


async def test_snapshot_retention_downsamples_then_deletes(journal: Journal) -> None:
    now = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)
    spec = SnapshotRetention(downsampleAfterDays=7, downsampleSeconds=300, deleteAfterDays=365)

    def at(days: float, minute: int = 0) -> dt.datetime:
        return now - dt.timedelta(days=days) + dt.timedelta(minutes=minute)

    for when in [at(400), at(400, 1)] + [at(10, m) for m in range(10)] + [at(1, m) for m in range(5)]:
        await journal.record_pnl(PnlSnapshot(1_000_000 + when.minute, 0, 0, 0.0, 0.0, 0, at=when))
    downsample_before, bucket, delete_before = retention_cutoffs(spec, now)
    assert (downsample_before, bucket, delete_before) == (at(7), 300, at(365))
    result = await journal.retain_snapshots(downsample_before=downsample_before, bucket_seconds=bucket,
                                            delete_before=delete_before)
    assert result == (8, 2)   # 400 days: both deleted; 10 days: 12:00-12:09 -> the last of each 5 minutes
    kept = [s.at for s in await journal.pnl_snapshots()]
    assert kept == [at(10, 4), at(10, 9)] + [at(1, m) for m in range(5)]
    # Nothing is lost: every removed row is in the archive, with why, until a backup holds it.
    archived = await journal.archived_snapshots()
    assert [(r["at"], r["removed"]) for r in archived] == (
        [(at(400), "deleted"), (at(400, 1), "deleted")]
        + [(at(10, m), "downsampled") for m in (0, 1, 2, 3, 5, 6, 7, 8)])
    assert float(archived[0]["equity"]) == 1_000_000 + at(400).minute
    assert await journal.retain_snapshots(downsample_before=downsample_before, bucket_seconds=bucket,
                                          delete_before=delete_before) == (0, 0)
    assert len(await journal.archived_snapshots()) == 10
    assert retention_cutoffs(SnapshotRetention(), now) == (None, 300, None)   # off by default
    with pytest.raises(ValueError, match="below deleteAfterDays"):
        SnapshotRetention(downsampleAfterDays=30, deleteAfterDays=30)


async def test_a_backup_releases_only_the_archived_rows_it_holds(journal: Journal,
                                                                 postgres_server: PostgresServer) -> None:
    """``journal.archive.release``: the session's rows archived before the run started (less the margin)."""
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    await journal.record_pnl(PnlSnapshot(1.0, 0, 0, 0.0, 0.0, 0, at=old))
    await journal.record_pnl(PnlSnapshot(2.0, 0, 0, 0.0, 0.0, 0, at=old + dt.timedelta(minutes=1)))
    assert await journal.retain_snapshots(downsample_before=None, bucket_seconds=300,
                                          delete_before=old + dt.timedelta(days=1)) == (0, 2)
    async with journal.pool.acquire() as conn:
        await conn.execute("UPDATE pnl_snapshots_archive SET archived_at = archived_at - interval '1 hour' "
                           "WHERE session = $1 AND equity = 1", journal.session)
        await conn.execute("INSERT INTO pnl_snapshots_archive (id, session, at, equity, realized_pnl, unrealized_pnl, "
                           "daily_pnl_pct, drawdown_pct, exposure, removed, archived_at) VALUES "
                           "(-1, 'other/session', now(), 3, 0, 0, 0, 0, 0, 'deleted', now() - interval '1 day')")
    dsn = postgres_server.dsn
    try:
        # A run that started now holds the row archived an hour ago, not the one archived within the margin.
        assert await archive.release(dsn, journal.session, dt.datetime.now(dt.UTC)) == 1
        assert [float(r["equity"]) for r in await journal.archived_snapshots()] == [2.0]
        assert await archive.release(dsn, journal.session, dt.datetime.now(dt.UTC) + archive.MARGIN) == 1
        assert await journal.archived_snapshots() == []
    finally:
        async with journal.pool.acquire() as conn:
            other = await conn.fetchval("DELETE FROM pnl_snapshots_archive WHERE session = 'other/session' "
                                        "RETURNING id")
    assert other == -1   # another session's archive is not this backup's to release


async def test_a_final_daily_report_is_not_replaced_by_an_intraday_one(journal: Journal) -> None:
    day = dt.date(2026, 11, 24)
    assert await journal.daily_report(day) is None
    await journal.record_daily_report(day, {"n": 1}, final=False)
    await journal.record_daily_report(day, {"n": 2}, final=True)
    await journal.record_daily_report(day, {"n": 3}, final=False)
    assert await journal.daily_report(day) == ({"n": 2}, True)
    await journal.record_daily_report(day, {"n": 4}, final=True)   # an on-demand refresh after the close
    assert await journal.daily_report(day) == ({"n": 4}, True)


async def test_journal_unreachable_is_a_dependency_error() -> None:
    with pytest.raises(DependencyUnavailable) as err:
        await Journal.open("postgresql://postgres@127.0.0.1:1/postgres", "x/y", timeout=1)
    assert err.value.dependency == "journal" and isinstance(err.value, TransientError)


# --------------------------------------------------------------------------- simulated exchange

def exchange(client: aioredis.Redis, prefix: str, **kw: object) -> SimulatedExchange:
    return SimulatedExchange(redis_client=client, key_prefix=prefix, **kw)  # type: ignore[arg-type]


async def test_market_limit_partial_fills_and_account(redis_client: aioredis.Redis, session_name: str) -> None:
    prefix = f"tp:{{test/{session_name}}}"
    ex = exchange(redis_client, prefix, liquidity=100, initial_cash=100_000)
    await ex.connect()
    await ex.on_quote("AAPL", 50.0)
    market = await ex.submit(Order("m1", "AAPL", Side.BUY, 250))
    assert market.status is OrderStatus.PARTIALLY_FILLED and market.filled_qty == 100
    await ex.on_quote("AAPL", 51.0)
    await ex.on_quote("AAPL", 52.0)
    assert (await ex.get_order("m1")).status is OrderStatus.FILLED  # type: ignore[union-attr]
    fills, cursor = await ex.fills_since(0)
    assert [f.qty for f in fills] == [100, 100, 50] and [f.price for f in fills] == [50, 51, 52] and cursor == 3
    assert (await ex.fills_since(3)) == ([], 3)

    limit = await ex.submit(Order("l1", "AAPL", Side.SELL, 50, OrderType.LIMIT, 55.0))
    assert limit.status is OrderStatus.ACCEPTED and [o.client_order_id for o in await ex.open_orders()] == ["l1"]
    await ex.on_quote("AAPL", 54.0)
    assert (await ex.get_order("l1")).status is OrderStatus.ACCEPTED  # type: ignore[union-attr]
    await ex.on_quote("AAPL", 56.0)
    assert (await ex.get_order("l1")).status is OrderStatus.FILLED  # type: ignore[union-attr]

    account = await ex.account()
    assert account.positions["AAPL"].qty == 200
    assert account.cash == pytest.approx(100_000 - (100 * 50 + 100 * 51 + 50 * 52) + 50 * 56)
    assert account.equity == pytest.approx(account.cash + 200 * 56)

    resting = await ex.submit(Order("l2", "AAPL", Side.BUY, 5, OrderType.LIMIT, 40.0))
    assert resting.status is OrderStatus.ACCEPTED
    await ex.cancel("l2")
    await ex.cancel("l2")  # idempotent
    await ex.cancel("unknown")
    assert (await ex.get_order("l2")).status is OrderStatus.CANCELED  # type: ignore[union-attr]
    too_big = await ex.submit(Order("big", "AAPL", Side.BUY, 1_000_000))
    assert too_big.status is OrderStatus.REJECTED and "buying power" in (too_big.reject_reason or "")


async def test_an_extended_hours_order_must_be_a_limit_order(redis_client: aioredis.Redis, session_name: str) -> None:
    ex = exchange(redis_client, f"tp:{{test/{session_name}}}")
    await ex.connect()
    await ex.on_quote("AAPL", 50.0)
    market = await ex.submit(Order("xm", "AAPL", Side.BUY, 1, extended_hours=True))
    assert market.status is OrderStatus.REJECTED and "limit orders" in (market.reject_reason or "")
    limit = await ex.submit(Order("xl", "AAPL", Side.BUY, 1, OrderType.LIMIT, 50.0, extended_hours=True))
    assert limit.status is OrderStatus.FILLED and limit.extended_hours
    assert (await ex.get_order("xl")).extended_hours  # type: ignore[union-attr]  # kept by the exchange's store
    assert (await ex.submit(Order("rm", "AAPL", Side.BUY, 1))).status is OrderStatus.FILLED


async def test_submit_is_idempotent_recorded_and_persisted(redis_client: aioredis.Redis, session_name: str) -> None:
    prefix = f"tp:{{test/{session_name}}}"
    ex = exchange(redis_client, prefix, latency_ms=20)
    await ex.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await ex.submit(Order("dup", "MSFT", Side.BUY, 3))
    assert loop.time() - started >= 0.019  # the latency knob
    again = await ex.submit(Order("dup", "MSFT", Side.BUY, 3))
    assert again.broker_order_id == first.broker_order_id and len(ex.orders) == 1
    assert [(s.client_order_id, s.duplicate) for s in ex.submits] == [("dup", False), ("dup", True)]
    assert first.avg_fill_price == initial_price(42, "MSFT")  # no quote yet: the process's opening price

    # A restarted executor's exchange reloads the same world from Redis.
    reborn = exchange(redis_client, prefix)
    await reborn.connect()
    assert reborn.orders == ex.orders and reborn.fills == ex.fills and reborn.cash == ex.cash
    nxt = await reborn.submit(Order("next", "MSFT", Side.SELL, 1))
    assert nxt.broker_order_id == "sim-2"
    record = await read_record(redis_client, prefix)
    assert [s.client_order_id for s in record.submits] == ["dup", "dup", "next"]
    assert set(record.orders) == {"dup", "next"}


async def test_exchange_is_down_when_its_storage_is(own_redis: RedisServer, session_name: str) -> None:
    client = aioredis.Redis.from_url(own_redis.url, socket_connect_timeout=1, socket_timeout=2)
    try:
        ex = exchange(client, f"tp:{{test/{session_name}}}")
        await ex.connect()
        assert await ex.ping()
        own_redis.stop()
        assert not await ex.ping()
        with pytest.raises(BrokerError):
            await ex.submit(Order("x", "AAPL", Side.BUY, 1))
        assert ex.orders == {} and ex.submits == []  # memory never runs ahead of storage
        own_redis.start()
        await ex.submit(Order("x", "AAPL", Side.BUY, 1))
        assert set((await read_record(client, f"tp:{{test/{session_name}}}")).orders) == {"x"}
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- bus

async def test_consumer_is_at_least_once_and_skips_garbage(redis_server: RedisServer, session_name: str) -> None:
    client = bus_mod.connect(redis_server.url)
    bus = bus_mod.Bus(client, f"tp:{{test/{session_name}}}")
    try:
        await bus.publish(bus_mod.INTENTS, bus_mod.encode_intent(OrderIntent("AAPL", Side.BUY, 1, signal_id="a")))
        await bus.publish(bus_mod.INTENTS, {"data": "garbage"})
        await bus.publish(bus_mod.INTENTS, bus_mod.encode_intent(OrderIntent("MSFT", Side.SELL, 2, signal_id="b")))
        seen: list[str] = []
        fail_once = {"b"}

        async def handle(_: str, intent: OrderIntent) -> None:
            if intent.signal_id in fail_once:
                fail_once.discard(intent.signal_id)
                raise DependencyUnavailable("journal", "down for the test")
            seen.append(intent.signal_id)

        before = bus_mod.MALFORMED.labels(bus_mod.INTENTS)._value.get()
        consumer = bus_mod.Consumer(bus, bus_mod.INTENTS, "executor", "c1", bus_mod.decode_intent, handle,
                                    block_ms=50)
        with pytest.raises(TransientError):
            await consumer.poll()  # a, garbage (acked), then b fails and stays pending
        assert seen == ["a"] and await bus.pending_count(bus_mod.INTENTS, "executor") == 1
        assert bus_mod.MALFORMED.labels(bus_mod.INTENTS)._value.get() == before + 1

        # A new consumer instance with the same name (a restarted worker) gets its pending entry again.
        restarted = bus_mod.Consumer(bus, bus_mod.INTENTS, "executor", "c1", bus_mod.decode_intent, handle,
                                     block_ms=50)
        assert await restarted.poll() == 1
        assert seen == ["a", "b"] and await bus.pending_count(bus_mod.INTENTS, "executor") == 0
        assert await restarted.poll() == 0
    finally:
        await client.aclose()


async def test_entries_left_pending_by_a_failed_ack_are_read_first_in_order(own_redis: RedisServer,
                                                                            session_name: str) -> None:
    """Redis goes away after a handler finished but before its XACK: once Redis is back, the consumer
    re-reads its own unacknowledged entries first and in order, not after newer ones (nor only once
    the idle claim would take them, ``claim_idle_ms`` later)."""
    client = bus_mod.connect(own_redis.url)
    bus = bus_mod.Bus(client, f"tp:{{test/{session_name}}}")
    try:
        for k in range(6):
            await bus.publish(bus_mod.INTENTS, bus_mod.encode_intent(OrderIntent("AAPL", Side.BUY, 1, signal_id=f"i{k}")))
        seen: list[str] = []

        async def handle(_: str, intent: OrderIntent) -> None:
            seen.append(intent.signal_id)
            if seen == ["i0", "i1"]:
                own_redis.stop()  # the handler's work is done; its XACK will fail

        consumer = bus_mod.Consumer(bus, bus_mod.INTENTS, "executor", "c1", bus_mod.decode_intent, handle,
                                    count=3, block_ms=50, claim_idle_ms=3_600_000)
        with pytest.raises(DependencyUnavailable):
            await consumer.poll()  # reads i0..i2; i0 acknowledged, i1 handled, its XACK fails
        own_redis.start()
        for _ in range(10):  # the first call after the restart may still meet the closed connection
            with contextlib.suppress(DependencyUnavailable):
                await consumer.poll()
        assert seen == ["i0", "i1", "i1", "i2", "i3", "i4", "i5"]  # i1 again (handlers are idempotent), then in order
        assert await bus.pending_count(bus_mod.INTENTS, "executor") == 0
    finally:
        await client.aclose()


async def test_dead_consumer_entries_are_claimed_and_poison_is_dead_lettered(redis_server: RedisServer,
                                                                            session_name: str) -> None:
    client = bus_mod.connect(redis_server.url)
    bus = bus_mod.Bus(client, f"tp:{{test/{session_name}}}")
    try:
        await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(Quote("AAPL", 10.0, 0.0, 1)))
        await bus.ensure_group(bus_mod.MARKET_DATA, "g")
        assert await bus.read_group(bus_mod.MARKET_DATA, "g", "dead", pending=False, block_ms=10)  # never acked
        await asyncio.sleep(0.05)
        calls: list[int] = []

        async def poison(_: str, quote: Quote) -> None:
            calls.append(quote.seq)
            raise ValueError("bug")

        heir = bus_mod.Consumer(bus, bus_mod.MARKET_DATA, "g", "heir", bus_mod.decode_quote, poison,
                                claim_idle_ms=10, max_deliveries=3, block_ms=10)
        for _ in range(2):
            with pytest.raises(TransientError):
                await heir.poll()
        assert await heir.poll() == 1  # third failure: dead-lettered and acknowledged
        assert calls == [1, 1, 1]
        assert await bus.pending_count(bus_mod.MARKET_DATA, "g") == 0
        dead = await bus.latest(bus_mod.DEAD, 1)
        assert json.loads(dead[0][1]["data"])["symbol"] == "AAPL"
    finally:
        await client.aclose()


async def test_a_quote_whose_handling_failed_is_retried_and_the_rest_of_its_batch_handled(
        redis_server: RedisServer, session_name: str) -> None:
    """The executor's market-data tail advances past a quote only once it is handled: a transient failure
    of the quote-driven exchange (its storage gone) retries that quote, and the quotes after it in the
    same read are not skipped (they were, when the position moved to the batch's end before handling)."""
    from trading_workers.brokers.base import BrokerCapabilities
    from trading_workers.executor.fills import Book, Fills

    class Done(Exception):
        """Ends the tail (it runs until cancelled otherwise)."""

    class Exchange:  # the part of a quote-driven broker feed_quotes uses; fails once, on the third quote
        capabilities = BrokerCapabilities(quote_driven=True)

        def __init__(self) -> None:
            self.seen: list[float] = []
            self.failed = False

        async def on_quote(self, symbol: str, price: float) -> list[Fill]:
            if price == 3.0 and not self.failed:
                self.failed = True
                raise DependencyUnavailable("postgres", "the exchange's storage went away")
            if price == 99.0:
                raise Done
            self.seen.append(price)
            return []

    client = bus_mod.connect(redis_server.url)
    bus = bus_mod.Bus(client, f"tp:{{test/{session_name}}}")
    exchange = Exchange()
    errors: list[TransientError] = []
    try:
        for price in (1.0, 2.0, 3.0, 4.0, 5.0):  # read together, as one batch
            await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(Quote("AAPL", price, 0.0, int(price))))
        fills = Fills(exchange, Book(), journal=lambda: None)  # type: ignore[arg-type,return-value]
        task = asyncio.create_task(fills.feed_quotes(bus, {"AAPL"}, errors.append))
        for _ in range(100):
            if len(exchange.seen) >= 5:
                break
            await asyncio.sleep(0.05)
        for price in (6.0, 99.0):  # read after the first batch
            await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(Quote("AAPL", price, 0.0, int(price))))
        with pytest.raises(Done):
            await asyncio.wait_for(task, 10)
        assert len(errors) == 1 and exchange.failed
        assert exchange.seen == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # 3.0 retried, 4.0 and 5.0 not skipped, once each
        assert fills.book.marks["AAPL"] == 99.0
    finally:
        await client.aclose()


async def test_a_tail_cancelled_between_two_reads_ends_when_cancelled_until_it_ends(
        redis_server: RedisServer, session_name: str) -> None:
    """A stream tail cancelled just after a read returned, as its next read goes out: redis-py can swallow
    that cancellation (the task went on, blocked in the new read; seen here with a single ``cancel()``),
    so a worker's shutdown cancels its tasks until they end (``runtime.tasks.cancel_and_wait``)."""
    from trading_workers.runtime.tasks import cancel_and_wait

    client = bus_mod.connect(redis_server.url)
    bus = bus_mod.Bus(client, f"tp:{{test/{session_name}}}")
    seen: list[str] = []

    async def tail() -> None:
        last = "0-0"
        while True:
            entries = await bus.read_after(bus_mod.MARKET_DATA, last, block_ms=500)
            if entries:
                last = entries[-1][0]
                seen.extend(mid for mid, _ in entries)

    try:
        for trial in range(5):
            seen.clear()
            task = asyncio.create_task(tail())
            await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(Quote("AAPL", 1.0, 0.0, trial)))
            while not seen:
                await asyncio.sleep(0.0005)
            seen.clear()
            await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(Quote("AAPL", 2.0, 0.0, trial)))
            while not seen:
                await asyncio.sleep(0.0005)
            started = asyncio.get_running_loop().time()
            assert await cancel_and_wait([task], timeout=5) == set(), f"trial {trial}: the tail still runs"
            assert task.cancelled()
            assert asyncio.get_running_loop().time() - started < 2
    finally:
        await client.aclose()
