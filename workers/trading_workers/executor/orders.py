"""The order path: intent -> client_order_id -> checks -> journal -> submit.

For every intent read from the bus (at-least-once)::

    intent -> client_order_id (deterministic) -> already journaled? resume it with the same id
           -> refused before? the verdict stands
           -> pre-trade checks (pure) -> rejection journaled, or
           -> order journaled NEW -> halt check -> broker.submit -> journal status

An order is journaled before it is sent and is only ever retried with the same
``client_order_id`` (the broker is idempotent on it). ``_submit_unless_halted`` is the one place the
halt check and the broker call meet: nothing is awaited between them, so a halt the session view
has published by then stops the order. A journaled order that meets a halt is cancelled unsent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from trading_operator.api import metric_names as mn
from trading_workers import order_metrics
from trading_workers.brokers.base import Broker, BrokerError, OrderRejected
from trading_workers.domain import Order, OrderIntent, OrderStatus, OrderType, client_order_id
from trading_workers.errors import TransientError
from trading_workers.executor.fills import Book, Fills
from trading_workers.executor.gate import SessionView
from trading_workers.executor.policy import Policy
from trading_workers.journal import Journal
from trading_workers.pretrade import PreTradeChecks, TradingState
from trading_workers.runtime.logs import log_context

log = logging.getLogger("trading_workers.executor")


def message_age(msg_id: str, now: float) -> float | None:
    """Seconds since a bus message was written: a Redis stream id is ``<milliseconds>-<sequence>`` on the
    Redis server's clock (None: not a stream id). Clock skew between hosts counts in; the default limit
    (30 s) is far above it."""
    millis, sep, _ = msg_id.partition("-")
    if not sep or not millis.isdigit():
        return None
    return max(0.0, now - int(millis) / 1000.0)

ORDERS_SENT = mn.collector(mn.EXECUTOR_ORDERS_SENT)
ORDERS_NOT_SENT = mn.collector(mn.EXECUTOR_ORDERS_NOT_SENT)
SUBMIT_SECONDS = mn.collector(mn.EXECUTOR_SUBMIT_SECONDS)


class OrderPath:
    """Turns intents into journaled, sent orders (see module docstring)."""

    def __init__(self, *, session_uid: str, view: SessionView, policy: Policy, checks: PreTradeChecks,
                 broker: Broker, book: Book, fills: Fills, journal: Callable[[], Journal],
                 blockers: Callable[[], list[str]], may_send: Callable[[], bool], synced: Callable[[], bool],
                 on_failure: Callable[[BaseException], None]) -> None:
        self.session_uid = session_uid
        self.view, self.policy, self.checks = view, policy, checks
        self.broker, self.book, self.fills, self._journal = broker, book, fills, journal
        self._blockers, self._may_send, self._synced, self._on_failure = blockers, may_send, synced, on_failure

    def trading_state(self) -> TradingState:
        gate = self.view.gate
        return TradingState.HALTED if gate.halted else gate.state

    async def on_intent(self, msg_id: str, intent: OrderIntent) -> None:
        coid = client_order_id(self.session_uid, intent.signal_id)
        with log_context(client_order_id=coid, signal_id=intent.signal_id):
            if self._blockers():
                raise TransientError("executor not live")
            started = time.perf_counter()
            journal = self._journal()
            existing, rejected = await journal.lookup(coid)
            if existing is not None:  # a redelivered intent: retry with the same id, never a new one
                if existing.status is OrderStatus.NEW:
                    await self.send(existing)
                return
            if rejected:  # a redelivered intent that was already refused: the verdict stands
                return
            self.policy.scale_limits(self.view.gate.limit_scale)
            reason = self.checks.check(intent.symbol, intent.side.sign, intent.qty, intent.limit_price,
                                       self.book.marks.get(intent.symbol), self.book.exposure(intent.symbol),
                                       len(self.book.open_orders), self.trading_state(),
                                       extended_hours=self.view.gate.extended_hours,
                                       market=intent.order_type is OrderType.MARKET,
                                       age=message_age(msg_id, time.time()))
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
            await self.send(journaled)
            SUBMIT_SECONDS.observe(time.perf_counter() - started)

    async def send(self, order: Order, *, syncing: bool = False) -> bool:
        """Send a journaled NEW order, unless halted (then it is cancelled unsent). True if sent.

        ``syncing``: called by the broker sync, which re-sends unsent orders before it counts as done.
        """
        journal = self._journal()
        sent_at = time.perf_counter()
        try:
            placed = await self._submit_unless_halted(order, syncing=syncing)
        except OrderRejected as exc:
            order_metrics.submitted(order, "rejected", sent_at, None)
            await journal.update_order(order.client_order_id, OrderStatus.REJECTED, reject_reason=str(exc)[:500])
            log.warning("order rejected by the broker", extra={"error": str(exc)})
            return True
        except BrokerError as exc:
            order_metrics.submitted(order, "error", sent_at, None)
            self._on_failure(exc)
            raise
        if placed is None:
            reason = self.view.gate.reason
            await journal.update_order(order.client_order_id, OrderStatus.CANCELED,
                                       reject_reason=f"not sent: {reason}"[:500])
            ORDERS_NOT_SENT.inc()
            log.warning("order not sent: session halted", extra={"reason": reason})
            return False
        order_metrics.submitted(order, "ok", sent_at, self.book.marks.get(order.symbol))
        ORDERS_SENT.inc()
        await journal.update_order(order.client_order_id, placed.status, broker_order_id=placed.broker_order_id,
                                   reject_reason=placed.reject_reason)
        self.book.track(placed)
        log.info("order sent", extra={"symbol": order.symbol, "side": order.side.value, "qty": order.qty,
                                      "status": placed.status.value})
        if placed.filled_qty > 0:
            # Filled on arrival: book it now, so the next order's position checks see this one.
            await self.fills.sync()
        return True

    async def _submit_unless_halted(self, order: Order, *, syncing: bool) -> Order | None:
        """The halt check, then the broker; None if halted. Nothing is awaited in between."""
        gate = self.view.gate
        if gate.halted:
            return None
        if not self._may_send() or (not syncing and not self._synced()):
            raise TransientError("cannot confirm the session is live; order stays journaled as new")
        # A limit order sent in PreMarket/AfterHours is an extended-hours order at the broker (decided when it
        # is sent, also for a journaled order re-sent after a restart). A market order stays an ordinary DAY
        # order: Alpaca queues it for the open (policy extendedHours.limitOrdersOnly refuses it instead).
        extended = gate.extended_hours and order.order_type is OrderType.LIMIT
        return await self.broker.submit(dataclasses.replace(order, extended_hours=extended))
