"""Drill: intents that waited on the bus while no executor could take them are not traded late.

The strategy keeps publishing while the executor is away (a crash, a rollout, scaled to zero); the
bus keeps every intent (at-least-once). When an executor comes back, an intent older than the
RiskPolicy's ``orderControls.maxIntentAgeSeconds`` is refused as ``StaleIntent``: journaled, never
sent. Asserted from the journal and the simulated exchange's own record.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import wait_for
from tests.drills.harness import Drill
from trading_operator.api.session import Role

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def test_an_intent_queued_while_no_executor_ran_is_refused_as_stale(make_drill: Callable[..., Drill]) -> None:
    d = make_drill(policy={"orderControls": {"maxIntentAgeSeconds": 3}})
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent

    d.patch_spec({"workers": {"executor": {"replicas": 0}}})
    wait_for(lambda: not d.replicas(Role.EXECUTOR), timeout=60, what="the executor stopped")
    queued = d.send_intent("MSFT", "buy", 5)
    time.sleep(4)  # older than maxIntentAgeSeconds when an executor reads it
    submits = len(d.exchange().submits)
    d.patch_spec({"workers": {"executor": {"replicas": 1}}})

    outcome = d.order_outcome(queued, timeout=90)
    assert outcome.refused and outcome.reason == "StaleIntent" and not outcome.reached_exchange, outcome
    assert [r for r in d.journal_rejections() if r["reason"] == "StaleIntent"]
    d.wait_status(lambda s: (s.get("executor") or {}).get("tradingState") == "Active", "the executor Active")
    fresh = d.order_outcome(d.send_intent("AAPL", "sell", 5))
    assert fresh.sent and len(d.exchange().submits) == submits + 1, (fresh, d.exchange().submits[submits:])
