"""Where a session is in its trading day, from the exchange calendar.

Holidays and early closes come from ``exchange_calendars`` (a maintained
calendar library), never a hand-written table. The pre-market start and
after-hours end are the session's own (CalendarSpec), in its time zone.

The library is not imported here: it brings pandas and numpy, which were half
of the operator's memory. ``calendar_table`` runs in a child process once per
exchange and hands back that exchange's sessions (date, open, close); this
module keeps the table. ``prepare`` loads it without blocking the event loop
(the reconcile awaits it before ``decide``); a table asked for before that is
loaded synchronously (tests, tools).

A trading day, in session-clock time::

    pre-market start .. open         PreMarket
    open .. close                    MarketOpen
    close .. close + CLOSE_WINDOW    MarketClose   (closing routine)
    .. after-hours end               AfterHours
    otherwise (nights, holidays)     Initializing  (getting ready for the next day)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import subprocess
import sys
import time
import zoneinfo
from dataclasses import dataclass

from trading_operator import errors
from trading_operator.api.phases import Phase
from trading_operator.api.session import CalendarSpec

CLOSE_WINDOW = dt.timedelta(minutes=15)
UTC = dt.UTC
TABLE_TIMEOUT = 120.0  # seconds for the child to import the library and compute one exchange's table
UNKNOWN_EXCHANGE = 2   # calendar_table's exit status for a code the library does not know
RETRY_SECONDS = 30.0   # a failed table is not recomputed before this (every session waits on the same one)


class UnknownExchange(ValueError):
    """The exchange code is not a calendar exchange_calendars knows."""


class CalendarUnavailable(errors.TransientError):
    """The calendar table could not be computed (the child process failed for another reason)."""

    reason = "CalendarUnavailable"
    retry_delay = RETRY_SECONDS


@dataclass(frozen=True)
class Table:
    """One exchange's sessions: date -> (open, close) in UTC (a date outside the library's range is absent)."""

    sessions: dict[dt.date, tuple[dt.datetime, dt.datetime]]


_TABLES: dict[str, Table | UnknownExchange] = {}
_LOCKS: dict[str, asyncio.Lock] = {}
_FAILED: dict[str, tuple[float, CalendarUnavailable]] = {}


def _argv(exchange: str) -> list[str]:
    return [sys.executable, "-m", "trading_operator.calendar_table", exchange]


def _parse(exchange: str, returncode: int, stdout: bytes, stderr: bytes) -> Table | UnknownExchange:
    if returncode == UNKNOWN_EXCHANGE:
        return UnknownExchange(f"unknown exchange calendar {exchange!r}")
    if returncode != 0:
        raise CalendarUnavailable(f"calendar table for {exchange!r} failed (exit {returncode}): "
                                  f"{stderr.decode(errors='replace')[-500:]}")
    raw = json.loads(stdout)
    sessions = {dt.date.fromisoformat(day): (dt.datetime.fromtimestamp(o, UTC), dt.datetime.fromtimestamp(c, UTC))
                for day, o, c in raw["sessions"]}
    return Table(sessions)


async def prepare(exchange: str) -> None:
    """Load ``exchange``'s table in a child process unless it is loaded (awaited by the reconcile).

    Sessions reconciled together wait for one child; a failure is remembered for ``RETRY_SECONDS``."""
    if exchange in _TABLES:
        return
    async with _LOCKS.setdefault(exchange, asyncio.Lock()):
        if exchange in _TABLES:
            return
        failed = _FAILED.get(exchange)
        if failed is not None and time.monotonic() - failed[0] < RETRY_SECONDS:
            raise failed[1]
        try:
            _TABLES[exchange] = await _compute(exchange)
        except CalendarUnavailable as exc:
            _FAILED[exchange] = (time.monotonic(), exc)
            raise


async def _compute(exchange: str) -> Table | UnknownExchange:
    proc = await asyncio.create_subprocess_exec(*_argv(exchange), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), TABLE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CalendarUnavailable(f"calendar table for {exchange!r} took over {TABLE_TIMEOUT:g}s") from None
    return _parse(exchange, proc.returncode or 0, stdout, stderr)


def _table(exchange: str) -> Table:
    found = _TABLES.get(exchange)
    if found is None:  # not prepared: load it here, blocking (tests and tools call decide directly)
        done = subprocess.run(_argv(exchange), capture_output=True, timeout=TABLE_TIMEOUT, check=False)
        found = _TABLES.setdefault(exchange, _parse(exchange, done.returncode, done.stdout, done.stderr))
    if isinstance(found, UnknownExchange):
        raise found
    return found


@dataclass(frozen=True)
class Day:
    """One trading day's boundaries (UTC)."""

    pre_market: dt.datetime
    open: dt.datetime
    close: dt.datetime
    close_end: dt.datetime
    after_hours_end: dt.datetime

    def phase_at(self, t: dt.datetime) -> Phase | None:
        if self.pre_market <= t < self.open:
            return Phase.PRE_MARKET
        if self.open <= t < self.close:
            return Phase.MARKET_OPEN
        if self.close <= t < self.close_end:
            return Phase.MARKET_CLOSE
        if self.close_end <= t < self.after_hours_end:
            return Phase.AFTER_HOURS
        return None


@dataclass(frozen=True)
class Position:
    phase: Phase
    next_phase: Phase
    next_at: dt.datetime


def _local(date: dt.date, hhmm: str, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return dt.datetime.combine(date, dt.time(hour, minute), tzinfo=tz).astimezone(UTC)


def day(spec: CalendarSpec, date: dt.date) -> Day | None:
    """The trading day on ``date`` (exchange-local date), or None when the exchange is closed."""
    return _day(spec.exchange, spec.timezone, spec.pre_market_start, spec.after_hours_end, date)


@functools.lru_cache(maxsize=4096)
def _day(exchange: str, timezone: str, pre_market_start: str, after_hours_end: str, date: dt.date) -> Day | None:
    # Cached (Day is immutable): every reconcile of every session asks for the same few days.
    hours = _table(exchange).sessions.get(date)
    if hours is None:  # not a session, or outside the range the library covers
        return None
    tz = zoneinfo.ZoneInfo(timezone)
    open_, close = hours
    pre = min(_local(date, pre_market_start, tz), open_)
    close_end = close + CLOSE_WINDOW
    after = max(_local(date, after_hours_end, tz), close_end)
    return Day(pre, open_, close, close_end, after)


def position(spec: CalendarSpec, t: dt.datetime, horizon_days: int = 14) -> Position:
    """The calendar phase at session time ``t``, and the next phase change."""
    tz = zoneinfo.ZoneInfo(spec.timezone)
    local_date = t.astimezone(tz).date()
    today = day(spec, local_date)
    phase = (today.phase_at(t) if today else None) or Phase.INITIALIZING
    if today is not None and phase is not Phase.INITIALIZING:
        boundaries = [(today.open, Phase.MARKET_OPEN), (today.close, Phase.MARKET_CLOSE),
                      (today.close_end, Phase.AFTER_HOURS), (today.after_hours_end, Phase.INITIALIZING)]
        for at, nxt in boundaries:
            if at > t:
                return Position(phase, nxt, at)
    for offset in range(0 if today is None or t < today.pre_market else 1, horizon_days + 1):
        candidate = day(spec, local_date + dt.timedelta(days=offset))
        if candidate is not None and candidate.pre_market > t:
            return Position(phase, Phase.PRE_MARKET, candidate.pre_market)
    return Position(phase, Phase.PRE_MARKET, t + dt.timedelta(days=horizon_days))
