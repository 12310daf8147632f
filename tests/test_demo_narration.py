"""The demo's narration and summary (trading_dev.story), on figures given here: session time, and a
summary that reconciles (realized + unrealized = total; rejections explained, by reason)."""

from __future__ import annotations

import re

from trading_dev import story


def test_progress_shows_the_session_clock_not_wall_time() -> None:
    assert story.session_clock({"clock": "2026-11-23T14:05:31Z", "summary": {"updatedAt": "2026-12-01T15:00:00Z"}}) \
        == "11-23 14:05 UTC"
    assert story.session_clock({}) == "--"


def test_summary_reconciles_pnl_and_explains_rejections() -> None:
    result = story.StoryResult(
        counts={"orders": 40, "fills": 38, "rejections": 6, "risk_events": 2},
        rejections={"PriceCollar": 4, "MaxOrderRate": 2},
        summary={"realizedPnl": 120.5, "unrealizedPnl": -20.25, "dailyPnlPct": 0.01},
        backup={"phase": "Completed", "verified": True, "sizeBytes": 10}, backup_clock="11-23 09:04 UTC")
    table = story.summary_table(result)
    realized = float(re.search(r"realized P&L\s+([+-][\d.]+) USD", table).group(1))  # type: ignore[union-attr]
    unrealized = float(re.search(r"unrealized P&L\s+([+-][\d.]+) USD", table).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"total P&L\s+([+-][\d.]+) USD = realized \+ unrealized", table).group(1))  # type: ignore[union-attr]
    assert (realized, unrealized, total) == (120.5, -20.25, 100.25)
    assert "+0.0100 % of start-of-day equity" in table
    assert re.search(r"rejected pre-trade\s+6 \(order intents the executor's pre-trade checks refused", table)
    assert "by reason: PriceCollar 4, MaxOrderRate 2" in table
    assert "(done by 11-23 09:04 UTC session time)" in table
