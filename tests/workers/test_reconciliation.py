"""The end-of-day comparison (``trading_workers.reconciliation``) on literal values: every difference named."""

from __future__ import annotations

from typing import Any

import pytest

from trading_operator.api.status import Difference, DifferenceAction
from trading_workers.domain import Fill, Order, OrderStatus, Side
from trading_workers.reconciliation import compare, confirmed


def fill(fill_id: str, coid: str = "tp-a", symbol: str = "AAPL", side: Side = Side.BUY, qty: float = 10) -> Fill:
    return Fill(client_order_id=coid, symbol=symbol, side=side, qty=qty, price=100.0, ts=1.0, fill_id=fill_id)


def test_a_day_that_agrees_is_clean() -> None:
    fills = [fill("f1"), fill("f2", side=Side.SELL, qty=4)]
    result = compare(broker_positions={"AAPL": 6.0, "MSFT": 0.0}, journal_positions={"AAPL": 6.0},
                     broker_fills=fills, journal_fills=list(fills), broker_open_orders=[],
                     journal_order_ids={"tp-a"}, session_scoped=True)
    assert result.clean and result.differences == []
    assert (result.positions, result.fills) == (1, 2)   # flat symbols are not compared


def test_every_difference_is_named_with_symbol_quantity_and_order() -> None:
    foreign = Order("manual-1", "TSLA", Side.SELL, 3, status=OrderStatus.ACCEPTED, filled_qty=1,
                    broker_order_id="b-9")
    result = compare(
        broker_positions={"AAPL": 10.0, "MSFT": -2.0}, journal_positions={"AAPL": 12.0, "NVDA": 5.0},
        broker_fills=[fill("f1"), fill("f2", coid="tp-b", symbol="MSFT", side=Side.SELL, qty=2)],
        journal_fills=[fill("f1"), fill("f3", coid="tp-c", symbol="NVDA", qty=5)],
        broker_open_orders=[foreign, Order("tp-a", "AAPL", Side.BUY, 1, status=OrderStatus.ACCEPTED)],
        journal_order_ids={"tp-a", "tp-b", "tp-c"}, session_scoped=False)
    assert not result.clean
    named = [(d.kind, d.symbol, d.broker_qty, d.journal_qty, d.order_id, d.fill_id, d.action)
             for d in result.differences]
    flag = DifferenceAction.FLAGGED
    assert named == [
        (Difference.POSITION_MISMATCH, "AAPL", 10.0, 12.0, None, None, flag),
        (Difference.POSITION_MISMATCH, "MSFT", -2.0, 0.0, None, None, flag),
        (Difference.POSITION_MISMATCH, "NVDA", 0.0, 5.0, None, None, flag),
        (Difference.FILL_MISSING_IN_JOURNAL, "MSFT", -2.0, None, "tp-b", "f2", flag),
        (Difference.FILL_MISSING_AT_BROKER, "NVDA", None, 5.0, "tp-c", "f3", flag),
        (Difference.UNKNOWN_BROKER_ORDER, "TSLA", -2.0, None, "manual-1", None, flag),   # a shared account
    ]
    assert result.differences[-1].broker_order_id == "b-9"
    assert result.differences[0].describe() == "PositionMismatch AAPL: broker 10, journal 12"
    assert result.differences[3].describe() == "FillMissingInJournal MSFT: broker -2, journal none, order tp-b, fill f2"


def test_unknown_orders_are_adopted_only_on_a_session_scoped_broker() -> None:
    order = Order("stray", "AAPL", Side.BUY, 5, status=OrderStatus.ACCEPTED, broker_order_id="sim-7")
    own = compare(broker_positions={}, journal_positions={}, broker_fills=[], journal_fills=[],
                  broker_open_orders=[order], journal_order_ids=set(), session_scoped=True)
    (diff,) = own.differences
    assert (diff.kind, diff.action) == (Difference.UNKNOWN_BROKER_ORDER, DifferenceAction.ADOPTED)
    assert diff.describe() == "UnknownBrokerOrder AAPL: broker 5, journal none, order stray (broker sim-7) [adopted]"


def test_a_difference_seen_once_only_is_a_late_fill_not_a_mismatch() -> None:
    late = fill("f9")
    first = compare(broker_positions={"AAPL": 20.0}, journal_positions={"AAPL": 10.0}, broker_fills=[fill("f1"), late],
                    journal_fills=[fill("f1")], broker_open_orders=[], journal_order_ids=set(), session_scoped=True)
    second = compare(broker_positions={"AAPL": 20.0}, journal_positions={"AAPL": 20.0},
                     broker_fills=[fill("f1"), late], journal_fills=[fill("f1"), late], broker_open_orders=[],
                     journal_order_ids=set(), session_scoped=True)
    assert len(first.differences) == 2 and confirmed(first, second).clean
    still = confirmed(first, first)
    assert [d.kind for d in still.differences] == [Difference.POSITION_MISMATCH, Difference.FILL_MISSING_IN_JOURNAL]


# ---------------------------------------------------------------- when it runs (real Redis and PostgreSQL)

async def test_it_runs_once_per_close_and_once_per_request_also_across_a_restart(
        journal: Any, redis_client: Any, session_name: str) -> None:
    """``EndOfDay.maybe_run`` on the simulated exchange and a real journal, with literal session versions."""
    import datetime as dt

    from trading_operator.api.session import TradingSession
    from trading_operator.api.workerconfig import WorkerConfig
    from trading_workers.brokers.simulated import SimulatedExchange
    from trading_workers.executor.eod import RECONCILE_REQUEST_ANNOTATION, EndOfDay
    from trading_workers.executor.fills import Book, Fills

    exchange = SimulatedExchange(redis_client=redis_client, key_prefix=f"t:{session_name}")
    await exchange.connect()
    config = WorkerConfig.from_session(TradingSession.model_validate({
        "metadata": {"name": session_name, "namespace": "test", "uid": "u"},
        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}}))
    now = dt.datetime(2026, 11, 24, 21, 5, tzinfo=dt.UTC)   # 16:05 in New York

    def executor() -> EndOfDay:
        book = Book()
        return EndOfDay(config=config, broker=exchange, book=book, fills=Fills(exchange, book, lambda: journal),
                        journal=lambda: journal, session_now=lambda: now, events=None, on_done=lambda: None)

    def session(phase: str, request: str | None = None, answered: str | None = None) -> dict[str, Any]:
        annotations = {RECONCILE_REQUEST_ANNOTATION: request} if request else {}
        executor_status = {"reconciliation": {"request": answered}} if answered else {}
        return {"metadata": {"annotations": annotations}, "status": {"phase": phase, "executor": executor_status}}

    eod = executor()
    assert await eod.maybe_run(session("MarketOpen")) is None
    first = await eod.maybe_run(session("AfterHours"))   # the MarketClose window was missed: AfterHours will do
    assert first is not None and first.trigger == "Close" and first.clean and str(first.day) == "2026-11-24"
    assert await eod.maybe_run(session("AfterHours")) is None   # once per session day
    asked = await eod.maybe_run(session("AfterHours", request="r1"))
    assert asked is not None and (asked.trigger, asked.request) == ("Request", "r1")
    assert await eod.maybe_run(session("AfterHours", request="r1")) is None   # answered
    # A new executor process: the answered request is in status, the close reconciliation in the journal.
    again = executor()
    assert await again.maybe_run(session("AfterHours", request="r1", answered="r1")) is None
    assert [r["trigger"] for r in await journal.reconciliations()] == ["Close", "Request"]


async def test_a_failing_reconciliation_is_reported_once_and_never_stops_the_executor(
        journal: Any, redis_client: Any, session_name: str) -> None:
    import datetime as dt

    from trading_operator.api.session import TradingSession
    from trading_operator.api.workerconfig import WorkerConfig
    from trading_workers.brokers.base import BrokerError
    from trading_workers.brokers.simulated import SimulatedExchange
    from trading_workers.executor.eod import EndOfDay
    from trading_workers.executor.fills import Book, Fills

    class Broken(SimulatedExchange):
        failure: Exception = ValueError("a position the adapter cannot read")

        async def held_positions(self) -> Any:
            raise self.failure

    class Events:
        def __init__(self) -> None:
            self.recorded: list[tuple[str, str, str]] = []

        async def record(self, type_: str, reason: str, message: str) -> None:
            self.recorded.append((type_, reason, message))

    exchange = Broken(redis_client=redis_client, key_prefix=f"t:{session_name}")
    await exchange.connect()
    config = WorkerConfig.from_session(TradingSession.model_validate({
        "metadata": {"name": session_name, "namespace": "test", "uid": "u"},
        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}}))
    events = Events()
    book = Book()
    eod = EndOfDay(config=config, broker=exchange, book=book, fills=Fills(exchange, book, lambda: journal),
                   journal=lambda: journal, session_now=lambda: dt.datetime(2026, 11, 24, 21, 5, tzinfo=dt.UTC),
                   events=events, on_done=lambda: None)  # type: ignore[arg-type]
    closing = {"metadata": {}, "status": {"phase": "MarketClose"}}
    exchange.failure = BrokerError("broker unreachable")   # an outage: raised, the next control step retries
    with pytest.raises(BrokerError):
        await eod.maybe_run(closing)
    exchange.failure = ValueError("a position the adapter cannot read")   # a defect: reported once, not raised
    assert await eod.maybe_run(closing) is None
    assert await eod.maybe_run(closing) is None
    assert [(t, r) for t, r, _ in events.recorded] == [("Warning", "ReconciliationFailed")]
    assert "ValueError: a position the adapter cannot read" in events.recorded[0][2]
    assert await journal.reconciliations() == []
