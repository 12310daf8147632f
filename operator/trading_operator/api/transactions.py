"""Pure status transactions on a TradingSession's status, shared by the operator and the workers.

Each function changes a ``TradingSessionStatus`` in place and says what it
did; the caller writes the result (the operator in its reconcile, a worker
through ``trading_workers.session_status`` under a resourceVersion
precondition). Running the same functions on both sides is what keeps a
latch one side raised from being undone by the other.

Who writes which part of the status (decision 0015), and how a write stays on the newest state:

* ``WORKER_FIELDS`` — each one worker's report (executor: ``executor``; risk: ``risk``, ``summary``,
  ``report``; inference: ``model``, ``inference``; a training Job: ``modelCandidate``), written often,
  as a plain merge of that field alone: nobody else writes it, so there is nothing to conflict with
  and no precondition.
* ``LATCH_FIELDS`` — ``halt`` and ``reducing``: raised by workers or the operator, cleared by the
  operator only (the status admission policy holds both). Every write that decides on them carries
  ``latch_guard``: JSON Patch ``test`` operations on the latches as read, so the write fails (and is
  re-decided) exactly when a latch changed since the read, and a report merged in between does not
  make it fail.
* ``OPERATOR_FIELDS`` — everything else (phase, conditions, ...): the operator's alone, written
  with ``status_ops`` (only the fields that changed). A write that *clears* a latch (a resume, a
  Reducing clear) decides on every input — breaches, ``haltHandled`` — so it is guarded by the
  whole ``resourceVersion`` instead (``clears_latch``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trading_operator.api.session import BreachStatus, HaltStatus, ReducingStatus, TradingSessionStatus
from trading_operator.api.status import (
    HaltAction,
    HaltSource,
    ReducingSource,
    RuleAction,
    new_halt_id,
    new_reducing_id,
)

WORKER_FIELDS = frozenset({"risk", "summary", "executor", "report", "model", "inference", "modelCandidate"})
LATCH_FIELDS = ("halt", "reducing")
OPERATOR_FIELDS = tuple(
    (info.alias or name) for name, info in TradingSessionStatus.model_fields.items()
    if (info.alias or name) not in WORKER_FIELDS and (info.alias or name) not in LATCH_FIELDS)

JsonPatch = list[dict[str, Any]]
# What the API server answers (422) when a JSON Patch does not apply to the object as it is now, a failed
# ``test`` operation included: a lost race, like a 409. A schema or CEL refusal says "... is invalid" instead.
PATCH_NOT_APPLICABLE = "the server rejected our request due to an error in our request"


def latch_guard(status: Mapping[str, Any] | None) -> JsonPatch:
    """JSON Patch tests that hold while the latches are the ones in ``status`` (the raw status as read).

    No status yet: the test is that there is still none. A latch is named by its id, its action (a
    Halt escalated to Flatten keeps its id) and ``active``; an absent latch is tested as null.
    """
    if status is None:
        return [{"op": "test", "path": "/status", "value": None}]
    ops: JsonPatch = []
    for latch, keys in (("halt", ("id", "action", "active")), ("reducing", ("id",))):
        held = status.get(latch)
        if held is None:
            ops.append({"op": "test", "path": f"/status/{latch}", "value": None})
        else:
            ops += [{"op": "test", "path": f"/status/{latch}/{k}", "value": held.get(k)} for k in keys]
    return ops


def version_guard(resource_version: str) -> JsonPatch:
    """The whole object unchanged since the read (an optimistic lock on everything)."""
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}]


def status_ops(status: Mapping[str, Any] | None, new: Mapping[str, Any], fields: Iterable[str]) -> JsonPatch:
    """JSON Patch operations setting ``fields`` of the status to their value in ``new`` (absent: removed).

    ``status`` is the status as read (None: the object has none yet, so the whole ``/status`` is added).
    A removal is written as add-null then remove, which applies whether or not the field is there.
    """
    if status is None:
        return [{"op": "add", "path": "/status", "value": {k: new[k] for k in fields if k in new}}]
    ops: JsonPatch = []
    for k in fields:
        if k in new:
            ops.append({"op": "add", "path": f"/status/{k}", "value": new[k]})
        else:
            ops += [{"op": "add", "path": f"/status/{k}", "value": None}, {"op": "remove", "path": f"/status/{k}"}]
    return ops


def clears_latch(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether going from status ``old`` to ``new`` clears (or replaces) a latch that ``old`` held."""
    return any(old.get(latch) is not None and (new.get(latch) or {}).get("id") != (old.get(latch) or {}).get("id")
               for latch in LATCH_FIELDS)


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


def blocking_breaches(status: TradingSessionStatus) -> list[BreachStatus]:
    """Breaches that block a resume (Reduce, Halt, Flatten); Alert-only rules never do."""
    return [b for b in (status.risk.breaches if status.risk else []) if RuleAction(b.action).blocks_resume]


def alert_breaches(status: TradingSessionStatus) -> list[BreachStatus]:
    return [b for b in (status.risk.breaches if status.risk else []) if not RuleAction(b.action).blocks_resume]


def describe(breaches: Iterable[BreachStatus]) -> str:
    return "; ".join(f"{b.rule} ({b.action}): {b.message}" for b in breaches)
