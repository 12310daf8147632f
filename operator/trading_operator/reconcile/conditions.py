"""What a reconcile says: metav1.Condition bookkeeping, and the Events it posts.

A condition's lastTransitionTime moves only when its status does (the
metav1 contract); ``set_condition`` reports a change of status *or reason*,
because a new reason (AwaitingResume -> StaleHaltId) is news worth an Event.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from trading_operator.api.common import Condition


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event a reconcile decided to post (after its status write succeeded)."""

    type: str  # Normal | Warning
    reason: str
    message: str


def set_condition(conditions: list[Condition], type_: str, status: bool | str, reason: str, message: str,
                  now: dt.datetime, generation: int | None = None) -> bool:
    """Set one condition in place; return True when its status or reason changed (worth an Event)."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    for i, cond in enumerate(conditions):
        if cond.type == type_:
            flipped = cond.status != value
            conditions[i] = Condition(type=type_, status=value, reason=reason, message=message[:4000],  # type: ignore[arg-type]
                                      last_transition_time=now if flipped else cond.last_transition_time,
                                      observed_generation=generation)
            return flipped or cond.reason != reason
    conditions.append(Condition(type=type_, status=value, reason=reason, message=message[:4000],  # type: ignore[arg-type]
                                last_transition_time=now, observed_generation=generation))
    return True


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == "True"
