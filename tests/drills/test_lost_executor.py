"""Drill: a lost executor halts the session (the runbook's "lost executor" emergency halt).

The executor process is frozen (SIGSTOP: alive, its port open, but it writes no heartbeat, as a hung
pod would). The operator counts the silence from the last heartbeat's arrival (heartbeats wake no
reconcile; the watch event records them) and raises an Operator halt once ``executorStaleSeconds``
(30 s) have passed; nothing is sent meanwhile (the frozen executor sends nothing, and intents wait on
the bus). Thawed, the executor sees the halt and refuses what waited, and status says so.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.drills.harness import Drill
from trading_operator.settings import Settings

pytestmark = [pytest.mark.drill, pytest.mark.e2e]

STALE = Settings().executor_stale_seconds


def test_a_frozen_executor_is_lost_after_the_stale_time_and_the_session_halts(
        make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    executor = d.replicas("executor")[0].proc
    assert executor is not None
    submits = len(d.exchange().submits)
    os.kill(executor.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        st = d.wait_status(lambda s: (s.get("halt") or {}).get("source") == "Operator", "an executor-lost halt",
                           timeout=STALE + 30)
        waited = time.monotonic() - frozen_at
        assert "executor lost" in st["halt"]["reason"], st["halt"]
        # Silence counts from the last heartbeat's arrival (at most one report interval, 3 s, before
        # the freeze): not sooner than the stale time after it, and not a whole stale time late.
        assert STALE - 3.5 <= waited <= STALE + 15, waited
        assert d.wait_phase("Halted")["tradingState"] == "Halted"
        coid = d.send_intent("AAPL", "buy", 1)  # waits on the bus while the executor is frozen
    finally:
        os.kill(executor.pid, signal.SIGCONT)
    refused = d.order_outcome(coid, timeout=30)
    assert refused.refused and refused.reason == "TradingHalted" and not refused.reached_exchange, refused
    assert len(d.exchange().submits) == submits
    assert "Halted" in d.event_reasons()
