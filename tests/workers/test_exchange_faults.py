"""The embedded exchange under storage faults: a lost reply never places or fills an order twice.

Real Redis behind a loopback proxy that forwards a write to Redis and drops Redis' reply to it:
the write lands, the caller sees a broken connection. That is what a Redis stopped mid-submit
looked like to the executor (issue 20, defect 1). A real exchange refuses a second order with a
known ``client_order_id``; so must the embedded one, whatever its caller believes.
"""

from __future__ import annotations

import asyncio
import collections

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.fixtures.servers import RedisServer, free_port
from trading_workers import bus as bus_mod
from trading_workers.brokers.base import BrokerError
from trading_workers.brokers.simulated import SimulatedExchange, read_record
from trading_workers.domain import Order, OrderStatus, Side

pytestmark = pytest.mark.services

#: Commands whose reply the proxy drops when armed: every way the exchange writes.
WRITES = (b"EXEC", b"EVALSHA", b"EVAL")


class ReplyDroppingProxy:
    """Forwards every byte to Redis; when armed, loses Redis' reply to the next write and cuts the link."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.armed = False
        self.dropped = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> ReplyDroppingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        lose_reply = asyncio.Event()

        async def requests() -> None:
            while data := await reader.read(65536):
                if self.armed and any(w in data.upper() for w in WRITES):
                    self.armed = False
                    lose_reply.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def replies() -> None:
            while data := await up_reader.read(65536):
                if lose_reply.is_set():
                    self.dropped += 1
                    writer.transport.abort()  # the write landed; its caller sees a dead connection
                    await asyncio.sleep(0.2)  # let Redis finish reading before the upstream closes
                    up_writer.close()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        tasks = [asyncio.ensure_future(requests()), asyncio.ensure_future(replies())]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.difference_update(tasks)
            writer.transport.abort()
            up_writer.transport.abort()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> ReplyDroppingProxy:
    p = await ReplyDroppingProxy(redis_server.port).start()
    yield p  # type: ignore[misc]
    await p.stop()


def _no_retry_client(port: int) -> aioredis.Redis:
    return aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1.0, socket_timeout=5.0,
                                   decode_responses=True, retry=Retry(NoBackoff(), 0))


async def _submit_like_the_executor(ex: SimulatedExchange, order: Order) -> Order:
    """The executor's path after a failed submit: ask the broker, send again only if it does not know."""
    try:
        return await ex.submit(order)
    except BrokerError:
        known = await ex.get_order(order.client_order_id)
        if known is not None:
            return known
        return await ex.submit(order)


@pytest.mark.parametrize("client_kind", ["executor-client", "no-retry-client"])
async def test_lost_reply_places_and_fills_an_order_once(proxy: ReplyDroppingProxy, redis_server: RedisServer,
                                                         session_name: str, client_kind: str) -> None:
    # The executor's own client retries a command whose connection broke; the other never does:
    # neither may place or fill the order twice.
    client = bus_mod.connect(f"redis://127.0.0.1:{proxy.port}/0") if client_kind == "executor-client" \
        else _no_retry_client(proxy.port)
    observer = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    prefix = f"tp:{{test/{session_name}-{client_kind}}}"
    try:
        ex = SimulatedExchange(redis_client=client, key_prefix=prefix)
        await ex.connect()
        await ex.on_quote("AAPL", 100.0)
        proxy.armed = True
        placed = await _submit_like_the_executor(ex, Order("tp-lost-1", "AAPL", Side.BUY, 10))
        assert proxy.dropped == 1, "the fault was not injected"
        assert placed.status is OrderStatus.FILLED and placed.broker_order_id == "sim-1"

        record = await read_record(observer, prefix)
        assert set(record.orders) == {"tp-lost-1"}
        assert [(f.client_order_id, f.qty) for f in record.fills] == [("tp-lost-1", 10)]
        assert record.positions["AAPL"].qty == 10 and record.cash == pytest.approx(1_000_000 - 1_000)
        # Whatever the caller saw, its exchange now serves the stored world: a known id returns the first order.
        again = await ex.submit(Order("tp-lost-1", "AAPL", Side.BUY, 10))
        assert again.broker_order_id == "sim-1" and again.filled_qty == 10
        fills, cursor = await ex.fills_since(0)
        assert len(fills) == 1 and cursor == 1
        assert (await ex.account()).positions["AAPL"].qty == 10
        nxt = await ex.submit(Order("tp-lost-2", "AAPL", Side.SELL, 4))
        assert nxt.broker_order_id == "sim-2"
        record = await read_record(observer, prefix)
        assert collections.Counter(f.fill_id for f in record.fills) == {"sim-1-f1": 1, "sim-2-f2": 1}
    finally:
        await client.aclose()
        await observer.aclose()


async def test_state_is_read_from_the_store_not_a_private_copy(redis_client: aioredis.Redis,
                                                               session_name: str) -> None:
    # Two exchanges on one store (an executor and its replacement during a restart): each sees what
    # the other stored, and a known client_order_id returns the first order, never a second one.
    prefix = f"tp:{{test/{session_name}}}"
    first = SimulatedExchange(redis_client=redis_client, key_prefix=prefix)
    second = SimulatedExchange(redis_client=redis_client, key_prefix=prefix)
    await first.connect()
    await second.connect()
    placed = await first.submit(Order("tp-shared", "MSFT", Side.BUY, 5))
    seen = await second.get_order("tp-shared")
    assert seen is not None and seen.broker_order_id == placed.broker_order_id
    again = await second.submit(Order("tp-shared", "MSFT", Side.BUY, 5))
    assert again.broker_order_id == placed.broker_order_id
    other = await second.submit(Order("tp-other", "MSFT", Side.BUY, 1))
    assert other.broker_order_id == "sim-2"  # not a second "sim-2" from a stale counter
    assert (await first.account()).positions["MSFT"].qty == 6
    record = await read_record(redis_client, prefix)
    assert set(record.orders) == {"tp-shared", "tp-other"} and len(record.fills) == 2
    assert [s.duplicate for s in record.submits] == [False, True, False]
