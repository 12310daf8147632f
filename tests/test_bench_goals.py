"""``make bench``'s goals (issue 19): each figure with a goal says meets or MISSES, and a miss says by how much
and why, as the README promises. Pure: the rows and the table from made-up reports, no servers."""

from __future__ import annotations

import pytest
from benchmarks import backup, common, halt, scale


def _halt(phase_ms: float, watch_ms: float, halt_conflicts: float) -> halt.Report:
    report = halt.Report(sessions=5, halts=50, all_workers=False, halt_conflicts=halt_conflicts, resume_conflicts=7)
    report.samples = [halt.HaltSample("s", 5.0, watch_ms, watch_ms, phase_ms) for _ in range(50)]
    return report


def test_halt_goals_are_ratios_to_the_watch_floor_and_zero_conflicts() -> None:
    rows = {r["figure"].split(" (")[0]: r for r in halt.rows(_halt(phase_ms=30, watch_ms=20, halt_conflicts=0))}
    phase = rows["halt -> status.phase Halted, p99"]
    assert phase["meets_goal"] is True and phase["ratio"] == 1.5 and "2x the watch floor" in phase["goal"]
    assert rows["status-write conflicts on the halt path"]["meets_goal"] is True
    assert rows["status-write conflicts on the resume path"]["value"] == 7

    missed = halt.rows(_halt(phase_ms=50, watch_ms=20, halt_conflicts=3))
    text = common.table(missed)
    assert "goals missed (by how much, and why):" in text
    assert "halt -> status.phase Halted, p99 (50 halts, 5 sessions): 25% over (10 ms);" in text
    assert "status-write conflicts on the halt path (50 halts): 3;" in text


def test_a_halt_run_that_measured_no_halt_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"no halt was measured \(5 sessions\)"):
        halt.summary(halt.Report(sessions=5, halts=50, all_workers=False))


def test_scale_goals_say_by_how_much_they_miss() -> None:
    report = scale.Report(sessions=1000, idle_s=30.0)
    report.real = scale.Side("operator", seconds=52.0, complete=True, peak_rss_mb=300.0, idle_cpu_s=0.3)
    report.noop = scale.Side("baseline", seconds=40.0, complete=True, peak_rss_mb=100.0, idle_cpu_s=0.0)
    rows = scale.rows(report)
    assert [r["meets_goal"] for r in rows] == [True, False, True]   # 1.3x, 300 > 250 MiB, 1 % <= 5 %
    assert rows[0]["ratio"] == 1.3 and rows[1]["by"] == "50 MiB over" and rows[1]["why"]
    report.real.seconds = 60.0
    assert scale.rows(report)[0]["by"].startswith("15% over (8.0 s)")


def test_the_backup_ratio_to_pg_dump_says_by_how_much_and_why_it_misses() -> None:
    result = {"backup_mb_s": 40.0, "pg_dump_mb_s": 50.0, "ratio": 0.8, "verify_seconds": 3.0,
              "backup_median_s": 2.0, "load_average": [7.5, 8.0, 8.0]}
    [throughput, _] = backup.rows(result, "cmd")
    assert throughput["meets_goal"] is True and "by" not in throughput
    [throughput, _] = backup.rows({**result, "ratio": 0.65}, "cmd")
    assert throughput["meets_goal"] is False and throughput["by"].startswith("0.15 under (ratio 0.65, load average 7.5")
    assert "goals missed (by how much, and why):" in common.table([throughput])
    assert "server CPU" in throughput["why"]


def test_the_scale_baseline_sets_up_as_many_sessions_at_once_as_the_operator() -> None:
    from benchmarks import scale

    from trading_operator import kube, loop

    assert scale.POOL == kube.POOL_SIZE and scale.IN_FLIGHT == loop.NEW_SESSIONS
