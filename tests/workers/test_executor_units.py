"""Pure parts of the executor: the fail-closed rules, the sync epoch, the session view's compare-and-set."""

from __future__ import annotations

import threading
from typing import Any

from tests.fixtures.builders import SessionBuilder
from trading_workers.brokers.base import BrokerError
from trading_workers.errors import DependencyUnavailable
from trading_workers.executor.gate import SessionView
from trading_workers.executor.liveness import Dependencies, Reachability, blockers
from trading_workers.pretrade import TradingState


def _ok(**over: Any) -> list[str]:
    args: dict[str, Any] = {"session": None, "redis": True, "journal": True, "broker": True, "policy_error": None,
                            "live_refusal": None, "synced": True}
    return blockers(**{**args, **over})


def test_blockers_name_every_failing_rule_and_nothing_else() -> None:
    assert _ok() == []
    assert _ok(session="session view stale") == ["session view stale"]
    assert _ok(redis=False, journal=False, broker=False) == ["redis unreachable", "journal unreachable",
                                                            "broker unreachable"]
    assert _ok(policy_error="not loaded yet") == ["risk policy: not loaded yet"]
    assert _ok(live_refusal="live endpoint refused: x") == ["live endpoint refused: x"]
    assert _ok(synced=False) == ["not reconciled with the broker"]


def test_a_sync_counts_only_if_nothing_required_a_new_one_while_it_ran() -> None:
    deps = Dependencies()
    assert not deps.synced  # never synced yet
    epoch = deps.start_sync()
    assert deps.finish_sync(epoch) and deps.synced
    epoch = deps.start_sync()
    deps.need_sync()  # a resume or an outage while the sync runs
    assert not deps.finish_sync(epoch) and not deps.synced
    assert deps.finish_sync(deps.start_sync()) and deps.synced


def test_an_outage_or_a_failed_call_requires_a_new_sync() -> None:
    deps = Dependencies()
    deps.finish_sync(deps.start_sync())
    assert deps.report(Reachability(True, True, True))
    assert deps.synced  # coming up is not an outage
    assert not deps.report(Reachability(True, True, True))  # unchanged
    assert deps.report(Reachability(True, False, True)) and not deps.synced
    deps.report(Reachability(True, True, True))
    deps.finish_sync(deps.start_sync())
    assert deps.failed(BrokerError("timeout")) == "broker" and not deps.up.broker and not deps.synced
    deps.up = Reachability(True, True, True)
    assert deps.failed(DependencyUnavailable("redis", "down")) == "redis" and not deps.up.redis
    assert deps.failed(DependencyUnavailable("apiserver", "down")) == "apiserver"


def _session(rv: int, *, halted: bool = False) -> dict[str, Any]:
    built = SessionBuilder().phase("MarketOpen").version(rv)
    return (built.user_halt() if halted else built).wire()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_session_view_keeps_the_newest_version_and_an_older_one_only_confirms() -> None:
    clock = _Clock()
    resumes: list[int] = []
    view = SessionView(stale_after=15, on_resume=lambda: resumes.append(1), on_change=lambda: None, clock=clock)
    assert view.gate.halted and view.problem() == "not observed yet"
    view.observe(_session(10, halted=True))
    assert view.gate.halted and view.gate.reason.startswith("user halt")
    view.observe(_session(12))
    assert not view.gate.halted and view.gate.state is TradingState.ACTIVE and resumes == [1]
    clock.now += 14
    view.observe(_session(11, halted=True))  # older than what we have: not a halt, but the session is there
    assert not view.gate.halted and view.problem() is None
    clock.now += 14
    assert view.problem() is None
    clock.now += 2
    assert view.problem() == "session view stale"
    view.lose("session watch lost (timeout)")
    assert view.problem() == "session watch lost (timeout)"
    view.observe(None)  # deleted: a halt with its own key
    assert view.gate.halted and view.gate.halt_key == "deleted"


def test_session_view_policy_mode_takes_part_in_the_gate() -> None:
    view = SessionView(stale_after=15, on_resume=lambda: None, on_change=lambda: None)
    view.observe(_session(5))
    view.set_policy_mode("Reducing")
    assert view.gate.state is TradingState.REDUCING
    view.set_policy_mode("Halted")
    assert view.gate.halted and view.gate.halt_key == "policy"


def test_session_view_from_many_threads_ends_on_the_newest_version() -> None:
    view = SessionView(stale_after=15, on_resume=lambda: None, on_change=lambda: None)
    versions = [_session(rv, halted=rv % 2 == 0) for rv in range(1, 2001)]

    def feed(chunk: list[dict[str, Any]]) -> None:
        for obj in chunk:
            view.observe(obj)

    threads = [threading.Thread(target=feed, args=(versions[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert view.gate.halted  # rv 2000 is a halted version; no older version may have replaced it
