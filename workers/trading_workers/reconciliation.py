"""End-of-day reconciliation, the pure part: the broker's positions and the day's fills against the journal.

The executor (``executor.eod``) gathers both sides and calls ``compare``; this module decides what is a
difference and names it (symbol, quantities, order id, fill id), so the rule can be tested on literal
values and the result read the same in the journal, ``status.executor.reconciliation``, the
``Reconciled`` condition and the Event.

What is compared:

* **positions** — every symbol either side holds (quantity not 0): the broker's signed quantity against
  the journal's. A quantity that differs by more than ``QTY_TOLERANCE`` is a ``PositionMismatch``.
* **the day's fills** — by the broker's fill id, between the fills the broker reports for the session
  day and the journal's fills of that day: a fill only the broker reports is ``FillMissingInJournal``, one
  only the journal has is ``FillMissingAtBroker`` (both name the order and the fill).
* **unknown broker orders** — an open broker order whose ``client_order_id`` the journal does not know.
  The rule (the same as the executor's broker sync): on a broker that is the session's own
  (``BrokerCapabilities.session_scoped``: the simulated exchange) it is **adopted** into the journal; on
  an account other sessions or people may share (Alpaca) it is **flagged** for a human, never touched.

A difference is only reported when two comparisons in a row see it (``confirmed``): a fill that lands
between reading the broker and reading the journal is then not a mismatch, only a late fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trading_operator.api.session import ReconciliationDifference
from trading_operator.api.status import Difference, DifferenceAction
from trading_workers.domain import Fill, Order

QTY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` found: the differences, and how much was compared."""

    differences: list[ReconciliationDifference] = field(default_factory=list)
    positions: int = 0
    fills: int = 0

    @property
    def clean(self) -> bool:
        return not self.differences


def _key(d: ReconciliationDifference) -> tuple[str, str, str, str]:
    return str(d.kind), d.symbol, d.order_id or "", d.fill_id or ""


def compare(*, broker_positions: Mapping[str, float], journal_positions: Mapping[str, float],
            broker_fills: Iterable[Fill], journal_fills: Iterable[Fill], broker_open_orders: Iterable[Order],
            journal_order_ids: set[str], session_scoped: bool) -> Comparison:
    """The differences between the broker and the journal (see the module docstring)."""
    differences: list[ReconciliationDifference] = []
    symbols = sorted({s for s, q in broker_positions.items() if abs(q) > QTY_TOLERANCE}
                     | {s for s, q in journal_positions.items() if abs(q) > QTY_TOLERANCE})
    for symbol in symbols:
        at_broker, in_journal = broker_positions.get(symbol, 0.0), journal_positions.get(symbol, 0.0)
        if abs(at_broker - in_journal) > QTY_TOLERANCE:
            differences.append(ReconciliationDifference(
                kind=Difference.POSITION_MISMATCH, symbol=symbol, broker_qty=at_broker, journal_qty=in_journal))
    broker = {f.fill_id: f for f in broker_fills}
    journal = {f.fill_id: f for f in journal_fills}
    for fill_id in sorted(broker.keys() - journal.keys()):
        fill = broker[fill_id]
        differences.append(ReconciliationDifference(
            kind=Difference.FILL_MISSING_IN_JOURNAL, symbol=fill.symbol, broker_qty=fill.qty * fill.side.sign,
            order_id=fill.client_order_id or None, fill_id=fill_id))
    for fill_id in sorted(journal.keys() - broker.keys()):
        fill = journal[fill_id]
        differences.append(ReconciliationDifference(
            kind=Difference.FILL_MISSING_AT_BROKER, symbol=fill.symbol, journal_qty=fill.qty * fill.side.sign,
            order_id=fill.client_order_id or None, fill_id=fill_id))
    for order in sorted(broker_open_orders, key=lambda o: o.client_order_id):
        if order.client_order_id in journal_order_ids:
            continue
        differences.append(ReconciliationDifference(
            kind=Difference.UNKNOWN_BROKER_ORDER, symbol=order.symbol,
            broker_qty=(order.qty - order.filled_qty) * order.side.sign, order_id=order.client_order_id,
            broker_order_id=order.broker_order_id,
            action=DifferenceAction.ADOPTED if session_scoped else DifferenceAction.FLAGGED))
    return Comparison(differences, positions=len(symbols), fills=len(broker.keys() | journal.keys()))


def confirmed(first: Comparison, second: Comparison) -> Comparison:
    """The second comparison, keeping only the differences the first one saw too (a late fill is not one)."""
    seen = {_key(d) for d in first.differences}
    return Comparison([d for d in second.differences if _key(d) in seen], second.positions, second.fills)
