"""Where a session is in its trading day, from the exchange calendar.

Holidays and early closes come from ``exchange_calendars`` (a maintained
calendar library), never a hand-written table. The pre-market start and
after-hours end are the session's own (CalendarSpec), in its time zone.

A trading day, in session-clock time::

    pre-market start .. open         PreMarket
    open .. close                    MarketOpen
    close .. close + CLOSE_WINDOW    MarketClose   (closing routine)
    .. after-hours end               AfterHours
    otherwise (nights, holidays)     Initializing  (getting ready for the next day)
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from dataclasses import dataclass

import exchange_calendars
import pandas as pd

from trading_operator.api.phases import Phase
from trading_operator.api.session import CalendarSpec

CLOSE_WINDOW = dt.timedelta(minutes=15)
UTC = dt.UTC


@functools.lru_cache(maxsize=16)
def _calendar(exchange: str) -> exchange_calendars.ExchangeCalendar:
    return exchange_calendars.get_calendar(exchange)


class UnknownExchange(ValueError):
    """The exchange code is not a calendar exchange_calendars knows."""


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
    # Cached (Day is immutable): every reconcile of every session asks for the same few days, and the
    # pandas lookups behind them were a tenth of an idle operator's CPU at 1,000 sessions.
    try:
        cal = _calendar(exchange)
    except Exception as exc:  # exchange_calendars raises its own InvalidCalendarName
        raise UnknownExchange(f"unknown exchange calendar {exchange!r}") from exc
    stamp = pd.Timestamp(date)
    if stamp < cal.first_session or stamp > cal.last_session or not cal.is_session(stamp):
        return None
    tz = zoneinfo.ZoneInfo(timezone)
    open_ = cal.session_open(stamp).to_pydatetime().astimezone(UTC)
    close = cal.session_close(stamp).to_pydatetime().astimezone(UTC)
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
