"""``python -m trading_operator.calendar_table EXCHANGE``: one exchange's trading days as JSON, for ``calendar``.

The operator needs, per exchange, only which dates are sessions and when each opens and closes.
``exchange_calendars`` knows that (holidays, early closes), but importing it brings pandas and numpy:
half of the operator's memory at rest. So the operator runs this module once per exchange in a
short-lived child process and keeps the table (a few hundred kilobytes); the library's memory ends
with the child. Output (stdout)::

    {"exchange": "XNYS", "first": "2006-12-01", "last": "2027-12-01",
     "sessions": [["2006-12-01", 1164983400, 1165006800], ...]}   # date, open and close (UTC epoch s)

An unknown exchange exits with status 2 and the library's message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

UNKNOWN_EXCHANGE = 2


def table(exchange: str) -> dict[str, object]:
    import exchange_calendars

    cal = exchange_calendars.get_calendar(exchange)
    schedule = cal.schedule
    opens = schedule["open"].astype("int64") // 1_000_000_000
    closes = schedule["close"].astype("int64") // 1_000_000_000
    sessions = [[day.date().isoformat(), int(o), int(c)] for day, o, c in zip(schedule.index, opens, closes, strict=True)]
    return {"exchange": exchange, "first": cal.first_session.date().isoformat(),
            "last": cal.last_session.date().isoformat(), "sessions": sessions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trading_operator.calendar_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exchange", help="exchange calendar code, e.g. XNYS")
    args = parser.parse_args(argv)
    try:
        out = table(args.exchange)
    except Exception as exc:  # exchange_calendars raises its own InvalidCalendarName
        print(f"unknown exchange calendar {args.exchange!r}: {exc}", file=sys.stderr)
        return UNKNOWN_EXCHANGE
    json.dump(out, sys.stdout, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
