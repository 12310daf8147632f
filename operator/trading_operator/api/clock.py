"""The session clock: wall time, or a simulated clock for drills and demos.

Pure, so the operator and every worker compute the same session time from
the same inputs: the ClockSpec and the *anchor*, the wall time at which the
simulated clock reads ``start`` (the session's creation time). Nothing is
stored per process, so a restarted operator or worker picks up the same
clock.
"""

from __future__ import annotations

import datetime as dt

from trading_operator.api.session import ClockSpec

UTC = dt.UTC


def session_now(clock: ClockSpec, anchor: dt.datetime, wall: dt.datetime | None = None) -> dt.datetime:
    """Session time now (UTC)."""
    wall = wall or dt.datetime.now(UTC)
    if clock.mode == "wall":
        return wall
    start = clock.start or anchor
    return start.astimezone(UTC) + (wall - anchor) * clock.speed


def wall_at(clock: ClockSpec, anchor: dt.datetime, session_time: dt.datetime) -> dt.datetime:
    """The wall time at which the session clock reads ``session_time`` (inverse of ``session_now``)."""
    if clock.mode == "wall":
        return session_time
    start = clock.start or anchor
    return anchor + (session_time - start.astimezone(UTC)) / clock.speed
