"""End-of-day reconciliation: the broker's positions and the day's fills against the journal.

The executor runs it because it is the one role that talks to the broker (for Alpaca, the one holder
of the account's request budget). It runs:

* **at the close** — once per session day, when the phase reaches ``MarketClose`` (or ``AfterHours``,
  if the executor missed that window); a restarted executor finds the day's close reconciliation in
  the journal and does not run it again;
* **on demand** — when the ``trading.dev/reconcile-request`` annotation changes (what
  ``kubectl trading reconcile NAME`` sets): an annotation, not a spec field, because asking changes no
  desired state (as for the daily report, decision 0011).

Each run syncs the fills, reads both sides and compares them (``trading_workers.reconciliation``);
if it finds differences it syncs and compares once more and keeps only what both saw. Unknown open
broker orders are adopted into the journal on a session-scoped broker and flagged otherwise. The
result goes to the journal (``reconciliations``), to ``status.executor.reconciliation`` (from which
the operator derives the ``Reconciled`` condition), to an Event (``ReconciliationMismatch``, Warning,
naming the differences; ``ReconciledClean`` otherwise), to the gauge
``trading_reconciliation_differences{kind}`` (the chart's ``TradingReconciliationMismatch`` alert) and
to the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable
from typing import Any

from trading_operator.api import metric_names as mn
from trading_operator.api.clock import wall_at
from trading_operator.api.session import ReconciliationStatus
from trading_operator.api.status import Difference, DifferenceAction, Reason, ReconciliationTrigger
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers import reconciliation
from trading_workers.brokers.base import Broker
from trading_workers.domain import Order
from trading_workers.errors import TransientError
from trading_workers.executor.fills import Book, Fills
from trading_workers.journal import Journal
from trading_workers.runtime.logs import log_context
from trading_workers.session_status import EventRecorder

log = logging.getLogger("trading_workers.executor")

#: Annotation a user sets (any new value, e.g. a timestamp) to have a reconciliation run now.
RECONCILE_REQUEST_ANNOTATION = "trading.dev/reconcile-request"
#: Phases in which the day's close reconciliation is due.
CLOSE_PHASES = frozenset({"MarketClose", "AfterHours"})
STATUS_DIFFERENCES = 50
DIFFERENCES = mn.collector(mn.RECONCILIATION_DIFFERENCES)


class EndOfDay:
    """The day's reconciliation: when it is due, running it, and where its result goes."""

    def __init__(self, *, config: WorkerConfig, broker: Broker, book: Book, fills: Fills,
                 journal: Callable[[], Journal], session_now: Callable[[], dt.datetime],
                 events: EventRecorder | None, on_done: Callable[[], None]) -> None:
        self.config, self.broker, self.book, self.fills = config, broker, book, fills
        self._journal, self._session_now, self.events, self._on_done = journal, session_now, events, on_done
        self.last: ReconciliationStatus | None = None
        self.closed_day: dt.date | None = None       # the day whose close reconciliation is done
        self.answered: str | None = None             # the request annotation last answered
        self._started = False

    def session_day(self) -> tuple[dt.date, dt.datetime]:
        """The session day (calendar time zone) and the wall time it began."""
        tz = zoneinfo.ZoneInfo(self.config.calendar.timezone)
        day = self._session_now().astimezone(tz).date()
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.UTC)
        return day, wall_at(self.config.clock, self.config.clock_anchor, midnight)

    async def maybe_run(self, obj: dict[str, Any] | None) -> ReconciliationStatus | None:
        """Run the reconciliation if the session (as last seen) asks for one now; the result, if it ran."""
        if obj is None:
            return None
        status = obj.get("status") or {}
        request = ((obj.get("metadata") or {}).get("annotations") or {}).get(RECONCILE_REQUEST_ANNOTATION)
        day, _ = self.session_day()
        if not self._started:  # after a restart: what was already answered is in status and the journal
            previous = (status.get("executor") or {}).get("reconciliation") or {}
            done = await self._journal().reconciliations(day)   # may raise: then this runs again next step
            self.answered = previous.get("request")
            if any(r["trigger"] == ReconciliationTrigger.CLOSE for r in done):
                self.closed_day = day
            self._started = True
        if request is not None and request != self.answered:
            return await self._guarded(ReconciliationTrigger.REQUEST, request, day)
        if status.get("phase") in CLOSE_PHASES and self.closed_day != day:
            return await self._guarded(ReconciliationTrigger.CLOSE, None, day)
        return None

    async def _guarded(self, trigger: ReconciliationTrigger, request: str | None,
                       day: dt.date) -> ReconciliationStatus | None:
        """``run``; an outage (TransientError) propagates and the next control step tries again, anything
        else is logged and reported as an Event once, and never takes the executor down with it."""
        try:
            return await self.run(trigger, request)
        except TransientError:
            raise
        except Exception as exc:
            log.exception("reconciliation failed", extra={"trigger": str(trigger), "error": str(exc)[:500]})
            if request is not None:
                self.answered = request
            if trigger is ReconciliationTrigger.CLOSE:
                self.closed_day = day
            if self.events is not None:
                await self.events.record("Warning", Reason.RECONCILIATION_FAILED,
                                         f"{str(trigger).lower()} reconciliation of {day.isoformat()} failed: "
                                         f"{type(exc).__name__}: {str(exc)[:300]}")
            return None

    async def run(self, trigger: ReconciliationTrigger, request: str | None) -> ReconciliationStatus:
        journal = self._journal()
        day, day_start = self.session_day()
        first, orders = await self._compare(journal, day_start)
        result = first
        if not first.clean:  # look again: a fill that landed between the two reads is late, not missing
            second, orders = await self._compare(journal, day_start)
            result = reconciliation.confirmed(first, second)
        adopted = 0
        for diff in result.differences:
            if diff.kind == Difference.UNKNOWN_BROKER_ORDER and diff.action == DifferenceAction.ADOPTED:
                await self._adopt(journal, orders[diff.order_id or ""])
                adopted += 1
        if adopted:
            await self.book.reload(journal)
        flagged = len(result.differences) - adopted
        rec = ReconciliationStatus(day=day, at=dt.datetime.now(dt.UTC).replace(microsecond=0), trigger=trigger,
                                   clean=result.clean, positions=result.positions, fills=result.fills,
                                   adopted=adopted, flagged=flagged,
                                   differences=result.differences[:STATUS_DIFFERENCES],
                                   request=request if request is not None else self.answered)
        await journal.record_reconciliation(
            day=day, trigger=str(trigger), broker=self.broker.name, clean=result.clean, positions=result.positions,
            fills=result.fills, adopted=adopted, flagged=flagged, request=request,
            differences=[d.wire() for d in result.differences])
        self.last = rec
        if request is not None:
            self.answered = request
        if trigger is ReconciliationTrigger.CLOSE:
            self.closed_day = day
        for kind in Difference:   # every kind, so a clean run sets each back to 0
            DIFFERENCES.labels(kind.value).set(sum(1 for d in result.differences if d.kind == kind))
        await self._announce(rec, result.differences)
        self._on_done()
        return rec

    async def _compare(self, journal: Journal, day_start: dt.datetime
                       ) -> tuple[reconciliation.Comparison, dict[str, Order]]:
        await self.fills.sync()   # what the broker reported so far is in the journal before comparing
        broker_positions = await self.broker.held_positions()
        broker_fills = await self.broker.fills_after(day_start.timestamp())
        broker_open = await self.broker.open_orders()
        journal_positions = await journal.positions()
        journal_fills = await journal.fills_at_or_after(day_start)
        comparison = reconciliation.compare(
            broker_positions={s: p.qty for s, p in broker_positions.items()},
            journal_positions={s: p.qty for s, p in journal_positions.items()},
            broker_fills=broker_fills, journal_fills=journal_fills, broker_open_orders=broker_open,
            journal_order_ids=await journal.order_ids(), session_scoped=self.broker.capabilities.session_scoped)
        return comparison, {o.client_order_id: o for o in broker_open}

    async def _adopt(self, journal: Journal, order: Order) -> None:
        with log_context(client_order_id=order.client_order_id):
            log.error("broker order missing from the journal; adopted at reconciliation")
            await journal.record_new_order(order, f"broker:{order.client_order_id}")
            await journal.update_order(order.client_order_id, order.status, broker_order_id=order.broker_order_id)

    async def _announce(self, rec: ReconciliationStatus, differences: list[Any]) -> None:
        when = f"{str(rec.trigger).lower()} reconciliation of {rec.day.isoformat()}"
        if rec.clean:
            message = f"{when}: broker and journal agree ({rec.positions} positions, {rec.fills} fills)"
            log.info("reconciled: clean", extra={"day": rec.day.isoformat(), "trigger": str(rec.trigger),
                                                 "positions": rec.positions, "fills": rec.fills})
            kind, reason = "Normal", Reason.RECONCILED_CLEAN
        else:
            named = "; ".join(d.describe() for d in differences[:20])
            more = len(differences) - 20
            message = (f"{when}: {len(differences)} difference(s), {rec.adopted} adopted, {rec.flagged} flagged: "
                       f"{named}" + (f"; and {more} more" if more > 0 else ""))
            log.error("reconciliation found differences", extra={
                "day": rec.day.isoformat(), "trigger": str(rec.trigger), "adopted": rec.adopted,
                "flagged": rec.flagged, "differences": [d.describe() for d in differences[:50]]})
            kind, reason = "Warning", Reason.RECONCILIATION_MISMATCH
        if self.events is not None:
            await self.events.record(kind, reason.value, message)
