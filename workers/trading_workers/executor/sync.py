"""Broker sync: bring the journal and the broker into agreement, and apply ``onHalt``.

(Called "reconcile" in logs and metrics, which predate the name; the operator's reconcile is another thing.)

A sync runs at start, after any outage and before the first order after a resume. It compares
every open journal order with the broker: orders the broker has are brought up to date, journaled
orders the broker never received are sent (or cancelled in the journal if the session is halted),
orders the journal thinks were sent but the broker does not know are cancelled in the journal. Open
broker orders missing from the journal are adopted when the broker is the session's own
(``capabilities.session_scoped``), and only reported when it is an account other sessions may share.

``apply_on_halt`` runs once per halt (by ``halt_key``): CancelOpenOrders cancels this session's
open orders and the journaled ones never sent; FlattenPositions (or a halt whose action is Flatten)
also closes this session's positions, as the journal knows them, with orders whose
``client_order_id`` derives from the halt so a retry never doubles them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from trading_operator.api import metric_names as mn
from trading_workers.brokers.base import Broker
from trading_workers.domain import Order, OrderStatus, Side, client_order_id
from trading_workers.executor.fills import Book, Fills
from trading_workers.executor.gate import Gate
from trading_workers.executor.liveness import Dependencies
from trading_workers.executor.orders import ORDERS_SENT, OrderPath
from trading_workers.journal import Journal
from trading_workers.runtime.logs import log_context

log = logging.getLogger("trading_workers.executor")

SYNCS = mn.collector(mn.EXECUTOR_RECONCILES)  # outcome: ok, or superseded (a resume or an outage arrived meanwhile)
HALTS_HANDLED = mn.collector(mn.EXECUTOR_HALTS_HANDLED)


class BrokerSync:
    """Journal and broker in agreement; ``onHalt`` applied once per halt."""

    def __init__(self, *, session_uid: str, on_halt: str, broker: Broker, book: Book, fills: Fills,
                 orders: OrderPath, deps: Dependencies, journal: Callable[[], Journal],
                 on_done: Callable[[], None]) -> None:
        self.session_uid, self.on_halt = session_uid, on_halt
        self.broker, self.book, self.fills, self.orders, self.deps = broker, book, fills, orders, deps
        self._journal, self._on_done = journal, on_done
        self.halt_applied: str | None = None   # the halt_key onHalt last ran for
        self.halt_handled: str | None = None   # the last halt id whose onHalt completed (reported)

    async def run(self) -> bool:
        """One sync; True if it is current (no outage or resume was seen while it ran: else run it again)."""
        epoch = self.deps.start_sync()
        journal = self._journal()
        await self.fills.reset_cursor()
        await self.fills.sync()
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
                    if await self.orders.send(order, syncing=True):
                        resent += 1
                else:
                    log.error("journal order unknown to the broker; marked canceled")
                    await journal.update_order(order.client_order_id, OrderStatus.CANCELED,
                                               reject_reason="unknown at broker during reconciliation")
        adopted = await self._adopt_unknown(journal)
        await self.fills.sync()
        await self.book.reload(journal)
        current = self.deps.finish_sync(epoch)
        SYNCS.labels("ok" if current else "superseded").inc()
        log.info("reconciled with the broker" if current else "reconciled, but superseded while running; again",
                 extra={"open_orders": len(self.book.open_orders), "resent": resent, "updated": repaired,
                        "adopted": adopted})
        self._on_done()
        return current

    async def _adopt_unknown(self, journal: Journal) -> int:
        known = {o.client_order_id for o in await journal.open_orders()}
        adopted = 0
        for at_broker in await self.broker.open_orders():
            if at_broker.client_order_id in known or await journal.get_order(at_broker.client_order_id) is not None:
                continue
            with log_context(client_order_id=at_broker.client_order_id):
                if not self.broker.capabilities.session_scoped:  # a shared account: not necessarily ours
                    log.warning("open broker order unknown to this session's journal; left alone")
                    continue
                log.error("broker order missing from the journal; adopted")
            await journal.record_new_order(at_broker, f"broker:{at_broker.client_order_id}")
            await journal.update_order(at_broker.client_order_id, at_broker.status,
                                       broker_order_id=at_broker.broker_order_id)
            adopted += 1
        return adopted

    def halt_pending(self, gate: Gate) -> bool:
        """Whether ``gate`` is a halt whose onHalt has not run yet (an open gate re-arms it)."""
        if not gate.halted:
            self.halt_applied = None
            return False
        return gate.halt_key is not None and gate.halt_key != self.halt_applied

    async def apply_on_halt(self, gate: Gate) -> None:
        journal = self._journal()
        action = "FlattenPositions" if gate.flatten else self.on_halt
        log.warning("applying onHalt", extra={"action": action, "halt_id": gate.halt_id, "reason": gate.reason})
        if action in ("CancelOpenOrders", "FlattenPositions"):
            await self._cancel_ours(journal)
        if action == "FlattenPositions":
            await self._flatten(journal, gate)
        await self.fills.sync()
        self.book.open_orders = {o.client_order_id: o for o in await journal.open_orders()}
        self.halt_applied = gate.halt_key
        if gate.halt_id:
            self.halt_handled = gate.halt_id
        HALTS_HANDLED.labels(action).inc()
        log.warning("onHalt done", extra={"action": action, "halt_id": gate.halt_id,
                                          "open_orders": len(self.book.open_orders)})
        self._on_done()

    async def _cancel_ours(self, journal: Journal) -> None:
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

    async def _flatten(self, journal: Journal, gate: Gate) -> None:
        await self.fills.sync()
        # This session's positions (the journal's), not the whole broker account's.
        for symbol, position in sorted((await journal.positions()).items()):
            if position.qty == 0:
                continue
            key = f"flatten:{gate.halt_key}:{symbol}"
            order = Order(client_order_id(self.session_uid, key), symbol, Side.SELL if position.qty > 0 else Side.BUY,
                          abs(position.qty))
            with log_context(client_order_id=order.client_order_id):
                journaled, _ = await journal.record_new_order(order, key)
                if journaled.status is OrderStatus.NEW:
                    placed = await self.broker.submit(journaled)  # the halt's own action: bypasses the gate
                    ORDERS_SENT.inc()
                    await journal.update_order(order.client_order_id, placed.status,
                                               broker_order_id=placed.broker_order_id)
