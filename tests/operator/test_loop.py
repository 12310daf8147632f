"""The session loop (``trading_operator.loop``) on virtual time: no API server, no kopf, a scripted reconcile.

The reconcile is replaced by a script of outcomes (a delay and a written version, or an exception);
timers are replaced by ``Timers``, which records every delay asked for and fires them when told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.fixtures.builders import SessionBuilder
from trading_operator import errors
from trading_operator.api.session import Role
from trading_operator.loop import Inputs, NewestSeen, SessionGauges, SessionLoop
from trading_operator.settings import Settings

KEY = ("ns", "s")


def obj(rv: int, *, phase: str | None = "MarketOpen") -> dict[str, Any]:
    built = SessionBuilder().version(rv)
    return (built.phase(phase) if phase is not None else built).wire()


def edited(rv: int) -> dict[str, Any]:
    """Version ``rv`` of the session with its spec changed (a new generation): an event that wakes it."""
    body = obj(rv)
    return {**body, "metadata": {**body["metadata"], "generation": rv}}


def lookup(snapshot: Mapping[str, Any]) -> Inputs:
    return Inputs(policy=None, deployments={role: None for role in Role})


@dataclass
class Call:
    rv: str
    children: bool


@dataclass
class Script:
    """Outcomes the reconcile returns (or raises), one per call; the calls it got."""

    outcomes: list[Any]
    calls: list[Call] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def __call__(self, body: dict[str, Any], policy_body: Any, deployments: Any, settings: Any,
                       post_event: Any, config_map: Any, children: bool = True) -> tuple[float, Any]:
        self.calls.append(Call(str(body["metadata"]["resourceVersion"]), children))
        if self.hold is not None:
            await self.hold.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else (30.0, None)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]


@dataclass
class Timer:
    delay: float
    fn: Any
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """``later(delay, fn)`` without sleeping: records each timer; ``fire()`` runs the pending ones."""

    def __init__(self) -> None:
        self.made: list[Timer] = []

    def later(self, delay: float, fn: Any) -> Timer:
        self.made.append(Timer(delay, fn))
        return self.made[-1]

    def pending(self) -> list[Timer]:
        return [t for t in self.made if not t.cancelled]

    def fire(self) -> None:
        for timer in self.pending():
            timer.cancelled = True
            timer.fn()


def loop_with(script: Script, timers: Timers | None = None, *, reread: Any = None,
              new_sessions: int = 4) -> SessionLoop:
    timers = timers or Timers()

    async def no_reread(namespace: str, name: str) -> dict[str, Any] | None:
        raise AssertionError("no re-read expected")

    loop = SessionLoop(Settings(), reconcile=script, reread=reread or no_reread, new_sessions=new_sessions,
                       later=timers.later)
    loop.lookup = lookup
    return loop


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------- newest seen

def test_newest_seen_prefers_our_newer_copy_until_the_watch_catches_up() -> None:
    seen = NewestSeen()
    assert seen.view(KEY, obj(5))["metadata"]["resourceVersion"] == "5"
    seen.remember(KEY, obj(7))  # our status write's response
    assert seen.view(KEY, obj(5))["metadata"]["resourceVersion"] == "7"
    assert seen.view(KEY, obj(8))["metadata"]["resourceVersion"] == "8"  # the watch is ahead: ours dropped
    assert seen.view(KEY, obj(5))["metadata"]["resourceVersion"] == "5"


def test_the_echo_of_our_own_write_wakes_nobody_other_versions_do() -> None:
    seen = NewestSeen()
    seen.remember(KEY, obj(7))
    assert not seen.is_echo(KEY, obj(6))  # older than ours: someone else's write, still wakes
    assert seen.is_echo(KEY, obj(7))      # exactly ours: no wake-up
    assert not seen.is_echo(KEY, obj(7))  # and only once
    seen.remember(KEY, obj(9))
    assert not seen.is_echo(KEY, obj(10))  # newer than ours: the watch caught up and more happened
    assert seen.view(KEY, obj(3))["metadata"]["resourceVersion"] == "3"  # our copy was dropped


async def test_session_event_wakes_the_session_except_for_our_echo() -> None:
    script = Script([])
    sessions = loop_with(script)
    sessions.session_event("ns", "s", obj(6), print)  # first seen: reconciled
    await settle()
    sessions.newest.remember(KEY, obj(7))
    sessions.session_event("ns", "s", obj(7), print)  # the echo of our own write
    await settle()
    assert [c.rv for c in script.calls] == ["6"]
    sessions.session_event("ns", "s", edited(8), print)
    await settle()
    assert [c.rv for c in script.calls] == ["6", "8"]


# --------------------------------------------------------------------------- one reconcile

async def test_a_written_status_is_remembered_and_the_next_reconcile_starts_from_it() -> None:
    script = Script([(30.0, obj(11)), (30.0, None)])
    sessions = loop_with(script)
    assert await sessions.once(KEY, obj(10), lookup, print) == 30.0
    assert await sessions.once(KEY, obj(10), lookup, print) == 30.0  # the watch has not delivered 11 yet
    assert [c.rv for c in script.calls] == ["10", "11"]


async def test_a_conflict_rereads_and_reruns_status_only_once() -> None:
    before = sample("trading_operator_reconcile_failures_total", kind="TradingSession", reason="Conflict")
    script = Script([errors.ApiConflict("409"), (12.0, obj(21))])
    reads: list[tuple[str, str]] = []

    async def reread(namespace: str, name: str) -> dict[str, Any]:
        reads.append((namespace, name))
        return obj(20)

    sessions = loop_with(script, reread=reread)
    assert await sessions.once(KEY, obj(10), lookup, print) == 12.0
    assert [(c.rv, c.children) for c in script.calls] == [("10", True), ("20", False)]
    assert reads == [KEY]
    assert sessions.newest.view(KEY, obj(10))["metadata"]["resourceVersion"] == "21"
    assert sample("trading_operator_reconcile_failures_total", kind="TradingSession", reason="Conflict") == before + 1


async def test_two_conflicts_requeue_at_once_from_the_reread_view() -> None:
    script = Script([errors.ApiConflict("409"), errors.ApiConflict("409")])

    async def reread(namespace: str, name: str) -> dict[str, Any]:
        return obj(30)

    sessions = loop_with(script, reread=reread)
    assert await sessions.once(KEY, obj(10), lookup, print) == 0.0
    assert len(script.calls) == 2
    assert sessions.newest.view(KEY, obj(10))["metadata"]["resourceVersion"] == "30"


async def test_a_conflict_on_a_deleted_session_waits_the_periodic_interval() -> None:
    async def gone(namespace: str, name: str) -> None:
        return None

    sessions = loop_with(Script([errors.ApiConflict("409")]), reread=gone)
    assert await sessions.once(KEY, obj(10), lookup, print) == Settings().reconcile_interval


@pytest.mark.parametrize(("exc", "expected"), [
    (errors.ApiUnavailable("down"), errors.ApiUnavailable.retry_delay),
    (errors.InvalidSpec("bad"), Settings().reconcile_interval * 5),
    (RuntimeError("bug"), Settings().reconcile_interval),
])
async def test_failures_map_to_their_retry_delay_and_are_timed(exc: Exception, expected: float) -> None:
    reason = getattr(exc, "reason", type(exc).__name__)
    failures = sample("trading_operator_reconcile_failures_total", kind="TradingSession", reason=reason)
    timed = sample("trading_operator_reconcile_duration_seconds_count", kind="TradingSession")
    sessions = loop_with(Script([exc]))
    assert await sessions.once(KEY, obj(10), lookup, print) == expected
    assert sample("trading_operator_reconcile_failures_total", kind="TradingSession", reason=reason) == failures + 1
    assert sample("trading_operator_reconcile_duration_seconds_count", kind="TradingSession") == timed + 1


# --------------------------------------------------------------------------- admission

async def test_new_sessions_wait_for_admission_running_ones_never_do() -> None:
    hold = asyncio.Event()
    script = Script([], hold=hold)
    sessions = loop_with(script, new_sessions=1)
    first = asyncio.create_task(sessions.once(("ns", "a"), obj(1, phase=None), lookup, print))
    second = asyncio.create_task(sessions.once(("ns", "b"), obj(2, phase=None), lookup, print))
    running = asyncio.create_task(sessions.once(("ns", "c"), obj(3), lookup, print))
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(c.rv for c in script.calls) == ["1", "3"]  # the second new session waits for a slot
    hold.set()
    await asyncio.gather(first, second, running)
    assert sorted(c.rv for c in script.calls) == ["1", "2", "3"]


# --------------------------------------------------------------------------- gauges

def test_gauges_are_recounted_only_when_a_phase_or_halt_changes() -> None:
    gauges = SessionGauges()
    gauges.record(("ns", "a"), {"phase": "MarketOpen"})
    gauges.record(("ns", "b"), {"phase": "MarketOpen"})
    assert gauges.exports == 2
    assert sample("trading_operator_sessions", phase="MarketOpen") == 2
    gauges.record(("ns", "a"), {"phase": "MarketOpen"})
    assert gauges.exports == 2
    gauges.record(("ns", "a"), {"phase": "Halted", "halt": {"active": True}})
    assert gauges.exports == 3 and sample("trading_operator_active_halts") == 1
    assert sample("trading_operator_sessions", phase="Halted") == 1
    gauges.forget(("ns", "a"))
    gauges.forget(("ns", "b"))
    assert sample("trading_operator_active_halts") == 0 and sample("trading_operator_sessions", phase="MarketOpen") == 0


# --------------------------------------------------------------------------- the dispatcher

async def test_a_session_waits_its_requeue_delay_a_wakeup_cuts_it_short_and_deletion_cleans_up() -> None:
    timers = Timers()
    script = Script([(30.0, obj(2, phase="PreMarket")), (0.0, None), (45.0, None), (10.0, None)])
    sessions = loop_with(script, timers)
    sessions.session_event("ns", "s", obj(1, phase="PreMarket"), print)
    await settle()
    assert [t.delay for t in timers.pending()] == [30.0] and len(script.calls) == 1  # waits, no task held
    assert sessions.slots[KEY].task is None
    timers.fire()  # 30 s later
    await settle()
    # delay 0 means "again at once" (no timer); then 45 s is asked for
    assert len(script.calls) == 3 and [t.delay for t in timers.pending()] == [45.0]
    sessions.wake("ns", "s")  # an event arrives meanwhile: the 45 s timer is cancelled, reconciled now
    await settle()
    assert len(script.calls) == 4 and [t.delay for t in timers.pending()] == [10.0]
    sessions.session_event("ns", "s", {**obj(5), "metadata": {**obj(5)["metadata"], "deletionTimestamp": "x"}},
                           print)
    assert timers.pending() == [] and KEY not in sessions.slots and KEY not in sessions.gauges.phases
    sessions.wake("ns", "s")  # unknown now: nothing happens
    await settle()
    assert len(script.calls) == 4
    assert sessions.newest.view(KEY, obj(1))["metadata"]["resourceVersion"] == "1"


async def test_an_event_during_a_reconcile_runs_it_once_more_and_only_once() -> None:
    hold = asyncio.Event()
    script = Script([(30.0, None), (30.0, None), (30.0, None)], hold=hold)
    timers = Timers()
    sessions = loop_with(script, timers)
    sessions.session_event("ns", "s", obj(1), print)
    await settle()
    sessions.session_event("ns", "s", edited(2), print)
    sessions.session_event("ns", "s", edited(3), print)
    await settle()
    assert [c.rv for c in script.calls] == ["1"]  # one reconcile in flight per session
    hold.set()
    await settle()
    assert [c.rv for c in script.calls] == ["1", "3"]  # once more, from the newest body
    assert [t.delay for t in timers.pending()] == [30.0]


async def test_a_session_deleted_during_its_reconcile_is_not_rescheduled() -> None:
    hold = asyncio.Event()
    script = Script([(30.0, obj(2))], hold=hold)
    timers = Timers()
    sessions = loop_with(script, timers)
    sessions.session_event("ns", "s", obj(1), print)
    await settle()
    sessions.session_event("ns", "s", obj(2), print, gone=True)
    hold.set()
    await settle()
    assert timers.pending() == [] and KEY not in sessions.slots and KEY not in sessions.gauges.phases


async def test_close_cancels_reconciles_in_flight_and_timers() -> None:
    hold = asyncio.Event()
    script = Script([(30.0, None)], hold=hold)
    timers = Timers()
    sessions = loop_with(script, timers)
    sessions.session_event("ns", "a", obj(1), print)
    sessions.session_event("ns", "b", obj(1), print)
    await settle()
    task = sessions.slots[("ns", "a")].task
    await sessions.close()
    assert task is not None and task.cancelled() and sessions.slots == {}


async def test_the_loop_keeps_sessions_without_managed_fields() -> None:
    script = Script([(30.0, {**obj(2), "metadata": {**obj(2)["metadata"], "managedFields": [{"manager": "x"}]}})])
    sessions = loop_with(script)
    body = obj(1)
    sessions.session_event("ns", "s", {**body, "metadata": {**body["metadata"], "managedFields": [{"manager": "x"}]}},
                           print)
    await settle()
    assert "managedFields" not in sessions.slots[KEY].body["metadata"]
    assert "managedFields" not in sessions.newest.view(KEY, obj(1))["metadata"]  # our write's response, too
    assert sessions.slots[KEY].body["spec"] == body["spec"]


async def test_an_event_that_changed_nothing_a_reconcile_reads_wakes_nobody() -> None:
    script = Script([])
    sessions = loop_with(script)
    first = obj(1)
    sessions.session_event("ns", "s", first, print)
    await settle()
    finalized = {**obj(2), "metadata": {**obj(2)["metadata"], "finalizers": ["trading.dev/finalizer"]}}
    sessions.session_event("ns", "s", finalized, print)  # kopf's finalizer patch: nothing to reconcile
    await settle()
    assert [c.rv for c in script.calls] == ["1"]
    assert sessions.slots[KEY].body["metadata"]["resourceVersion"] == "2"  # but the newest body is kept
    halted = obj(3)
    halted["status"]["halt"] = {"active": True}
    sessions.session_event("ns", "s", halted, print)  # a status change (a worker's latch)
    await settle()
    labelled = {**obj(4), "metadata": {**obj(4)["metadata"], "labels": {"a": "b"}}}
    sessions.session_event("ns", "s", labelled, print)
    await settle()
    assert [c.rv for c in script.calls] == ["1", "3", "4"]


def test_the_essence_of_a_policy_leaves_its_status_out() -> None:
    from trading_operator.loop import essence

    policy = {"metadata": {"generation": 2, "resourceVersion": "9"}, "spec": {}, "status": {"sessionCount": 1}}
    recounted = {**policy, "metadata": {"generation": 2, "resourceVersion": "10"}, "status": {"sessionCount": 2}}
    assert essence(policy, status=False) == essence(recounted, status=False)
    assert essence(policy) != essence(recounted)
    edited = {**policy, "metadata": {"generation": 3, "resourceVersion": "11"}}
    assert essence(policy, status=False) != essence(edited, status=False)


async def test_a_heartbeat_or_a_summary_alone_wakes_nobody_a_report_that_changed_does() -> None:
    script = Script([])
    sessions = loop_with(script)
    first = obj(1)
    first["status"]["executor"] = {"heartbeat": "2026-11-23T15:00:00Z", "tradingState": "Active"}
    sessions.session_event("ns", "s", first, print)
    await settle()
    beat = obj(2)
    beat["status"]["executor"] = {"heartbeat": "2026-11-23T15:00:03Z", "tradingState": "Active"}
    beat["status"]["summary"] = {"equity": 1000001.0}
    sessions.session_event("ns", "s", beat, print)  # the executor's heartbeat, the risk worker's summary
    await settle()
    assert [c.rv for c in script.calls] == ["1"]
    halted = obj(3)
    halted["status"]["executor"] = {"heartbeat": "2026-11-23T15:00:04Z", "tradingState": "Halted"}
    sessions.session_event("ns", "s", halted, print)
    await settle()
    assert [c.rv for c in script.calls] == ["1", "3"]
