"""Pure status transactions on a TradingSession's status, shared by the operator and the workers.

Each function changes a ``TradingSessionStatus`` in place and says what it
did; the caller writes the result (the operator in its reconcile, a worker
through ``trading_workers.session_status`` under a resourceVersion
precondition). Running the same functions on both sides is what keeps a
latch one side raised from being undone by the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from trading_operator.api.session import BreachStatus, HaltStatus, ReducingStatus, RiskReport, TradingSessionStatus
from trading_operator.api.status import (
    HaltAction,
    HaltSource,
    ReducingSource,
    RuleAction,
    new_halt_id,
    new_reducing_id,
)


def raise_halt(status: TradingSessionStatus, *, source: HaltSource, reason: str, now: dt.datetime,
               action: HaltAction = HaltAction.HALT, rule: str | None = None,
               halt_id: Callable[[], str] = new_halt_id) -> tuple[str, bool]:
    """Latch a halt unless one is in force; a Flatten escalates a Halt in force (same id).

    Returns (the id of the halt in force, whether status changed).
    """
    current = status.halt
    if current is not None and current.active and current.id:
        if action == HaltAction.FLATTEN and current.action != HaltAction.FLATTEN:
            status.halt = current.model_copy(update={"action": HaltAction.FLATTEN.value,
                                                     "reason": f"{current.reason}; escalated to Flatten: {reason}"[:1024]})
            return current.id, True
        return current.id, False
    new = HaltStatus(active=True, source=source, action=action, rule=rule, reason=reason[:1024], since=now,
                     id=halt_id())
    status.halt = new
    return str(new.id), True


def clear_halt(status: TradingSessionStatus, now: dt.datetime) -> HaltStatus | None:
    """Clear the halt in force: it moves to ``lastHalt``. Returns the cleared halt."""
    current = status.halt
    if current is None:
        return None
    status.last_halt = current.model_copy(update={"active": False, "cleared_at": now})
    status.halt = None
    return status.last_halt


def request_reducing(status: TradingSessionStatus, *, source: ReducingSource, reason: str, now: dt.datetime,
                     rule: str | None = None, reducing_id: Callable[[], str] = new_reducing_id) -> tuple[str, bool]:
    """Latch Reducing unless it is latched already. Returns (the latch's id, whether status changed)."""
    if status.reducing is not None:
        return status.reducing.id, False
    status.reducing = ReducingStatus(source=source, rule=rule, reason=reason[:1024], since=now, id=reducing_id())
    return status.reducing.id, True


def clear_reducing(status: TradingSessionStatus, now: dt.datetime) -> ReducingStatus | None:
    current = status.reducing
    if current is None:
        return None
    status.last_reducing = current.model_copy(update={"cleared_at": now})
    status.reducing = None
    return status.last_reducing


def report_risk(status: TradingSessionStatus, report: RiskReport) -> bool:
    """The risk worker's report replaces the previous one (breach ``since`` kept for rules still in breach)."""
    previous = {(b.rule, b.action): b.since for b in (status.risk.breaches if status.risk else [])}
    breaches = [b.model_copy(update={"since": previous.get((b.rule, b.action)) or b.since}) for b in report.breaches]
    new = report.model_copy(update={"breaches": breaches})
    changed = status.risk is None or status.risk.model_dump(exclude={"updated_at"}) != new.model_dump(
        exclude={"updated_at"})
    status.risk = new
    return changed


def blocking_breaches(status: TradingSessionStatus) -> list[BreachStatus]:
    """Breaches that block a resume (Reduce, Halt, Flatten); Alert-only rules never do."""
    return [b for b in (status.risk.breaches if status.risk else []) if RuleAction(b.action).blocks_resume]


def alert_breaches(status: TradingSessionStatus) -> list[BreachStatus]:
    return [b for b in (status.risk.breaches if status.risk else []) if not RuleAction(b.action).blocks_resume]


def describe(breaches: Iterable[BreachStatus]) -> str:
    return "; ".join(f"{b.rule} ({b.action}): {b.message}" for b in breaches)
