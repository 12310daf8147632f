"""The calendar's table (computed by ``calendar_table`` in a child process) against exchange_calendars itself.

The operator no longer imports exchange_calendars (nor pandas): these tests prove the trading days it
uses are the library's, day by day, and that the operator process stays free of those imports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from typing import Any

import exchange_calendars
import pandas as pd
import pytest

from trading_operator import calendar
from trading_operator.api.session import CalendarSpec

UTC = dt.UTC


def library_day(exchange: str, date: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
    cal = exchange_calendars.get_calendar(exchange)
    stamp = pd.Timestamp(date)
    if stamp < cal.first_session or stamp > cal.last_session or not cal.is_session(stamp):
        return None
    return (cal.session_open(stamp).to_pydatetime().astimezone(UTC),
            cal.session_close(stamp).to_pydatetime().astimezone(UTC))


@pytest.mark.parametrize(("exchange", "timezone"), [("XNYS", "America/New_York"), ("XLON", "Europe/London")])
def test_every_day_matches_the_library_holidays_and_early_closes_included(exchange: str, timezone: str) -> None:
    spec = CalendarSpec(exchange=exchange, timezone=timezone)
    cal = exchange_calendars.get_calendar(exchange)
    table = sorted(calendar._table(exchange).sessions)  # its trading days (computed by the child if not yet)
    # The library's default range runs from 20 years ago to a year ahead *of the day it is built*: the
    # table (built by a child) and this process's calendar may have been built on different days of one
    # run (a run across midnight UTC), so their ends may differ by a day or a weekend; within the range
    # both cover, every day must be the same.
    first, last = cal.first_session.date(), cal.last_session.date()
    assert abs((table[0] - first).days) <= 4 and abs((table[-1] - last).days) <= 4, (table[0], table[-1], first, last)
    start, end = max(first, table[0]), min(last, table[-1])
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    for date in days:
        ours = calendar.day(spec, date)
        theirs = library_day(exchange, date)
        assert (ours is None) == (theirs is None), date
        if ours is not None and theirs is not None:
            assert (ours.open, ours.close) == theirs, date
    assert sum(calendar.day(spec, d) is not None for d in days) == sum(library_day(exchange, d) is not None
                                                                         for d in days) > 4000
    # Outside its range the table has no sessions (a closed day, never a made-up one).
    assert calendar.day(spec, table[0] - dt.timedelta(days=1)) is None
    assert calendar.day(spec, table[-1] + dt.timedelta(days=1)) is None


def test_an_early_close_and_a_holiday_are_the_librarys() -> None:
    spec = CalendarSpec(exchange="XNYS", timezone="America/New_York")
    assert calendar.day(spec, dt.date(2026, 11, 26)) is None  # Thanksgiving
    friday = calendar.day(spec, dt.date(2026, 11, 27))  # the day after: closes at 13:00 New York
    assert friday is not None and friday.close == dt.datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


def test_an_unknown_exchange_is_refused_by_name_sync_and_prepared() -> None:
    spec = CalendarSpec(exchange="XNOPE", timezone="UTC")
    with pytest.raises(calendar.UnknownExchange, match="XNOPE"):
        calendar.day(spec, dt.date(2026, 11, 27))
    asyncio.run(calendar.prepare("XNOPE"))  # remembered: no second child, the same refusal
    with pytest.raises(calendar.UnknownExchange, match="XNOPE"):
        calendar.position(spec, dt.datetime(2026, 11, 27, 15, tzinfo=UTC))


def test_prepare_runs_one_child_for_many_sessions_and_remembers_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []

    async def compute(exchange: str) -> calendar.Table:
        runs.append(exchange)
        await asyncio.sleep(0.01)
        if exchange == "XBROKEN":
            raise calendar.CalendarUnavailable("the child failed")
        return calendar.Table({})

    monkeypatch.setattr(calendar, "_compute", compute)
    monkeypatch.setattr(calendar, "_TABLES", {})
    monkeypatch.setattr(calendar, "_FAILED", {})

    async def many() -> list[BaseException | None]:
        await asyncio.gather(*(calendar.prepare("XTEST") for _ in range(50)))
        return await asyncio.gather(*(calendar.prepare("XBROKEN") for _ in range(5)), return_exceptions=True)

    outcomes = asyncio.run(many())
    assert runs == ["XTEST", "XBROKEN"]  # one child each, the failure not retried at once
    assert all(isinstance(o, calendar.CalendarUnavailable) for o in outcomes)

    def age_failure(seconds: float) -> None:
        when, exc = calendar._FAILED["XBROKEN"]
        calendar._FAILED["XBROKEN"] = (when - seconds, exc)

    age_failure(calendar.RETRY_SECONDS - 1)
    with pytest.raises(calendar.CalendarUnavailable):
        asyncio.run(calendar.prepare("XBROKEN"))
    assert runs == ["XTEST", "XBROKEN"]  # still remembered just before RETRY_SECONDS
    age_failure(1)
    with pytest.raises(calendar.CalendarUnavailable):
        asyncio.run(calendar.prepare("XBROKEN"))
    assert runs == ["XTEST", "XBROKEN", "XBROKEN"]  # RETRY_SECONDS after the failure a child runs again


def test_the_operator_process_imports_neither_pandas_nor_exchange_calendars() -> None:
    code = ("import sys, trading_operator.__main__, trading_operator.handlers; "
            "print(sorted(m for m in ('pandas', 'numpy', 'exchange_calendars') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_operator_starts_computing_the_default_exchanges_table_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from trading_operator import handlers

    asked: list[str] = []

    async def prepare(exchange: str) -> None:
        asked.append(exchange)
        raise calendar.CalendarUnavailable("the child failed")  # logged; the first reconcile asks again

    monkeypatch.setattr(calendar, "prepare", prepare)

    async def start() -> None:
        memo: dict[str, Any] = {}
        await handlers.calendar_table(memo=memo)  # type: ignore[arg-type]
        await memo["calendar_preload"]

    asyncio.run(start())
    assert asked == ["XNYS"]
