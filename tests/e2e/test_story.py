"""The whole story, through the same code as ``make demo``, asserted from the API and the journal."""

from __future__ import annotations

import contextlib
import io
import itertools
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from trading_dev import story
from trading_dev.monitoring import Monitoring
from trading_dev.platform import LocalPlatform
from trading_operator.api import phases

pytestmark = pytest.mark.e2e
NARRATION: list[str] = []  # what the story printed, as make demo prints it


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> story.StoryResult:
    printed = io.StringIO()
    with LocalPlatform(tmp_path_factory.mktemp("platform")) as platform, \
            Monitoring(platform, tmp_path_factory.mktemp("monitoring")) as monitoring, \
            contextlib.redirect_stdout(printed):
        done = story.run_story(platform, speed=1200, timeout=600, monitoring=monitoring)
    NARRATION[:] = printed.getvalue().splitlines()
    return done


def test_the_story_is_told_in_session_time_in_the_order_it_happened(result: story.StoryResult) -> None:
    """Every time stamp the demo prints is the session's (simulated) clock, never decreasing; the backup,
    which runs from the start, is told when it finished, between its neighbours in session time."""
    text = "\n".join(NARRATION)
    stamps = re.findall(r"\[(\d\d-\d\d \d\d:\d\d) UTC", text)
    assert len(stamps) > 5 and stamps == sorted(stamps), text[-3000:]
    # The session's simulated day (it starts Monday 2026-11-23 08:59 UTC), not the wall clock's.
    assert all("11-23 08:59" <= stamp <= "11-24 06:00" for stamp in stamps), stamps
    told = [i for i, line in enumerate(NARRATION) if "the one-shot backup ran" in line]
    assert len(told) == 1 and result.backup_clock and result.backup_clock in NARRATION[told[0]], text[-3000:]


def test_the_summary_reconciles(result: story.StoryResult) -> None:
    table = story.summary_table(result)
    s = result.summary
    assert f"{s['realizedPnl'] + s['unrealizedPnl']:+.2f} USD = realized + unrealized" in table
    assert sum(result.rejections.values()) == result.counts["rejections"]
    assert re.search(rf"rejected pre-trade\s+{result.counts['rejections']} \(order intents", table), table


def test_phases_advance_in_order_and_legally(result: story.StoryResult) -> None:
    for src, dst in itertools.pairwise([None, *result.phases]):
        assert phases.can_transition(src, dst), (src, dst)
    calendar = [p for p in result.phases if p != "Halted"]
    for expected in ("Initializing", "PreMarket", "MarketOpen", "MarketClose"):
        assert expected in calendar
    assert calendar.index("PreMarket") < calendar.index("MarketOpen") < calendar.index("MarketClose")


def test_orders_and_fills_are_in_the_journal(result: story.StoryResult) -> None:
    assert result.counts["orders"] > 0
    assert result.counts["fills"] > 0
    assert result.counts["fills"] <= result.counts["orders"] * 10  # partial fills allowed, not unbounded


def test_risk_breach_halts_and_the_named_resume_clears_it(result: story.StoryResult) -> None:
    assert result.halts and result.halts[0]["source"] == "Risk"
    assert result.orders_after_halt == result.orders_at_halt, "orders were journaled while halted"
    assert result.resumed
    assert "Halted" in result.phases
    for reason in ("PhaseChanged", "Halted", "Resumed"):
        assert reason in result.events, result.events


def test_the_day_ends_with_its_daily_report(result: story.StoryResult) -> None:
    report = result.report
    assert report.get("final") is True, report
    total = report["total"]
    # The report covers the session day up to the close; the journal also holds AfterHours orders.
    assert 0 < total["orders"] <= result.counts["orders"] and total["fills"] <= result.counts["fills"]
    assert sum(report.get("rejectionsByReason", {}).values()) == total["rejected"]
    assert {s["name"] for s in report["symbols"]} >= {"AAPL"}
    table = story.summary_table(result)
    assert "daily report" in table and f"{total['trades']} trades" in table


def test_the_day_ends_with_a_clean_reconciliation(result: story.StoryResult) -> None:
    """At the close the executor reconciled the exchange's positions and the day's fills with the journal."""
    rec = result.reconciliation
    assert rec.get("trigger") == "Close" and rec.get("clean") is True, rec
    assert rec["fills"] > 0 and rec["day"] == result.report.get("day")
    assert "ReconciledClean" in result.events, result.events
    assert f"{rec['day']} close: clean" in story.summary_table(result)


def test_backup_completes_and_verifies(result: story.StoryResult) -> None:
    assert result.backup.get("phase") == "Completed", result.backup
    assert result.backup.get("verified") is True
    assert int(result.backup.get("sizeBytes") or 0) > 0


def test_the_breach_fires_an_alert_and_the_backup_shows_in_prometheus(result: story.StoryResult) -> None:
    """With Prometheus beside the platform (the chart's rules): the risk halt is a firing alert naming the
    session, and the completed Backup's age is a series (every dashboard query on backups returns data)."""
    assert [a["labels"]["alertname"] for a in result.alerts] == ["TradingSessionHalted"]
    labels = result.alerts[0]["labels"]
    assert (labels["namespace"], labels["session"], labels["source"]) == (story.NS, story.SESSION, "Risk")
    assert [s["metric"].get("backup") for s in result.backup_series] == [story.BACKUP]
    assert not result.empty_backup_panels, result.empty_backup_panels


def test_demo_command_runs_in_short_mode(tmp_path: pathlib.Path) -> None:
    """The README's demo command itself (short mode, with Prometheus) finishes with exit 0, prints the summary,
    where the alerts are, and the breach as a firing alert."""
    proc = subprocess.run([sys.executable, "-m", "trading_dev.demo", "--short", "--prometheus", "--timeout", "600"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "realized P&L" in proc.stdout and "demo finished" in proc.stdout
    assert "Prometheus (the chart's alert rules): http://127.0.0.1:" in proc.stdout
    assert "alert TradingSessionHalted firing for default/demo" in proc.stdout
