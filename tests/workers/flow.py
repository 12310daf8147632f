"""Test-side access to one session's world: its bus, the exchange's record, the journal.

Everything goes through the real servers; assertions about what was sent
read the exchange's own record (``brokers.simulated.read_record``), never
the executor's counters.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from trading_workers import bus as bus_mod
from trading_workers.brokers.simulated import BrokerRecord, read_record
from trading_workers.domain import OrderIntent, OrderType, Quote, Side, client_order_id
from trading_workers.journal import Journal


class Flow:
    def __init__(self, redis_url: str, journal_dsn: str, session_key: str, prefix: str, uid: str) -> None:
        self.redis_url, self.journal_dsn = redis_url, journal_dsn
        self.session_key, self.prefix, self.uid = session_key, prefix, uid
        # The test's own client reconnects after a server restart (the outage tests restart Redis).
        self.client = aioredis.Redis.from_url(redis_url, decode_responses=True, retry=Retry(ExponentialBackoff(), 5),
                                              retry_on_error=[redis.exceptions.ConnectionError])
        self.bus = bus_mod.Bus(self.client, prefix)
        self._journal: Journal | None = None
        self._seq: dict[str, int] = {}

    async def close(self) -> None:
        if self._journal is not None:
            await self._journal.close()
        await self.client.aclose()

    async def journal(self) -> Journal:
        if self._journal is None:
            self._journal = await Journal.open(self.journal_dsn, self.session_key)
        return self._journal

    def coid(self, signal_id: str) -> str:
        return client_order_id(self.uid, signal_id)

    async def quote(self, symbol: str, price: float) -> None:
        seq = self._seq[symbol] = self._seq.get(symbol, 0) + 1
        await self.bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(Quote(symbol, price, 0.0, seq)))

    async def intent(self, signal_id: str, symbol: str, side: str, qty: float, *,
                     limit_price: float | None = None) -> str:
        order_type = OrderType.LIMIT if limit_price is not None else OrderType.MARKET
        await self.bus.publish(bus_mod.INTENTS, bus_mod.encode_intent(OrderIntent(
            symbol, Side(side), qty, order_type, limit_price, signal_id)))
        return self.coid(signal_id)

    async def raw(self, stream: str, fields: dict[str, str]) -> None:
        await self.bus.publish(stream, fields)

    async def garbage_intent(self, data: Any) -> None:
        await self.raw(bus_mod.INTENTS, {"id": "garbage", "data": data if isinstance(data, str) else json.dumps(data)})

    async def broker(self) -> BrokerRecord:
        return await read_record(self.client, self.prefix)

    async def sent(self) -> int:
        """Orders the exchange accepted for the first time (idempotent repeats excluded)."""
        return sum(1 for s in (await self.broker()).submits if not s.duplicate)

    async def pending(self, stream: str = bus_mod.INTENTS, group: str = "executor") -> int:
        return await self.bus.pending_count(stream, group)

    async def unread(self, stream: str = bus_mod.INTENTS, group: str = "executor") -> int:
        """Entries not yet delivered to the group plus entries delivered and not acknowledged."""
        groups: Any = await self.client.xinfo_groups(self.bus.key(stream))
        for g in groups:
            if g["name"] == group:
                return int(g.get("lag") or 0) + int(g["pending"])
        return -1
