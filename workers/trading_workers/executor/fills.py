"""Fills and market data: the executor's book of positions, open orders and marks.

``Fills.sync`` reads the broker's fills after the cursor and records them with the new cursor in
one journal transaction (orders, positions, cursor); one reader of the cursor at a time. The
``Book`` is what the pre-trade checks see: positions and open orders as the journal knows them, and
the last mark of every symbol from the bus. ``feed_quotes`` tails the market-data stream for the
marks and, when the broker matches against quotes (``capabilities.quote_driven``), feeds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from trading_operator.api import metric_names as mn
from trading_workers import bus as bus_mod
from trading_workers import order_metrics
from trading_workers.brokers.base import Broker
from trading_workers.domain import Order, Position
from trading_workers.errors import MalformedMessage, TransientError
from trading_workers.journal import Journal

log = logging.getLogger("trading_workers.executor")

FILLS = mn.collector(mn.EXECUTOR_FILLS)


@dataclass
class Book:
    """Positions and open orders (as journaled) and marks (from the bus)."""

    positions: dict[str, Position] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)

    def exposure(self, symbol: str) -> float:
        """Signed quantity: the position plus what open orders would add."""
        position = self.positions.get(symbol)
        qty = position.qty if position else 0.0
        for order in self.open_orders.values():
            if order.symbol == symbol:
                qty += order.side.sign * (order.qty - order.filled_qty)
        return qty

    def track(self, order: Order) -> None:
        if order.status.is_open:
            self.open_orders[order.client_order_id] = order
        else:
            self.open_orders.pop(order.client_order_id, None)

    async def reload(self, journal: Journal) -> None:
        self.open_orders = {o.client_order_id: o for o in await journal.open_orders()}
        self.positions = await journal.positions()


class Fills:
    """The broker's fills into the journal, behind one cursor."""

    def __init__(self, broker: Broker, book: Book, journal: Callable[[], Journal]) -> None:
        self.broker, self.book, self._journal = broker, book, journal
        self.cursor = 0
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()

    async def reset_cursor(self) -> None:
        """Where to resume: a durable broker cursor from the journal, else from the start (fill ids dedupe)."""
        async with self.lock:
            durable = self.broker.capabilities.durable_cursor
            self.cursor = await self._journal().broker_cursor(self.broker.name) if durable else 0

    async def sync(self) -> None:
        async with self.lock:  # one reader of the cursor at a time
            journal = self._journal()
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
                self.book.open_orders[coid] = order
            else:
                self.book.open_orders.pop(coid, None)
        self.book.positions = await journal.positions()

    async def feed_quotes(self, bus: bus_mod.Bus, symbols: set[str], on_error: Callable[[TransientError], None]) -> None:
        """Tail market data from the newest quotes on: marks for the checks, quotes for a quote-driven broker.

        The position advances past a quote only once it is handled: a transient failure (the exchange's
        storage gone) retries that quote and goes on with the rest of its batch, none skipped."""
        last_id: str | None = None
        quote_driven = self.broker.capabilities.quote_driven
        while True:
            try:
                if last_id is None:
                    entries = await bus.latest(bus_mod.MARKET_DATA, max(64, 4 * len(symbols)))
                    if not entries:
                        last_id = "0-0"
                else:
                    entries = await bus.read_after(bus_mod.MARKET_DATA, last_id, block_ms=500)
                for msg_id, fields in entries:
                    await self._quote(msg_id, fields, symbols, quote_driven)
                    last_id = msg_id
            except TransientError as exc:
                on_error(exc)
                await asyncio.sleep(0.5)

    async def _quote(self, msg_id: str, fields: bus_mod.Fields, symbols: set[str], quote_driven: bool) -> None:
        try:
            quote = bus_mod.decode_quote(fields)
        except MalformedMessage as exc:
            bus_mod.MALFORMED.labels(bus_mod.MARKET_DATA).inc()
            log.warning("malformed message skipped", extra={"stream": bus_mod.MARKET_DATA,
                                                            "message_id": msg_id, "error": str(exc)})
            return
        self.book.marks[quote.symbol] = quote.price
        # The exchange keeps the mark even before it is connected; fills need it connected.
        if quote_driven and quote.symbol in symbols and await self.broker.on_quote(quote.symbol, quote.price):
            self.wake.set()
