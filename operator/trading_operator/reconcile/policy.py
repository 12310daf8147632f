"""RiskPolicy reconcile: validate, list the sessions that use it, say so in status.

A policy change reaches sessions without restarts: the handler wakes every
referencing session, whose reconcile records the new generation in
``status.riskPolicy``; executors watch their session and re-read the policy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic

from trading_operator import kube, metrics
from trading_operator.api.riskpolicy import RiskPolicySpec, RiskPolicyStatus
from trading_operator.api.status import set_condition


def decide(body: dict[str, Any], sessions: list[str], now: dt.datetime) -> RiskPolicyStatus:
    status = RiskPolicyStatus.model_validate(body.get("status") or {})
    generation = int(body.get("metadata", {}).get("generation") or 0)
    try:
        spec = RiskPolicySpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        set_condition(status.conditions, "Valid", False, "Invalid", str(exc.errors()[0]["msg"]), now, generation)
    else:
        set_condition(status.conditions, "Valid", True, "Valid",
                      f"mode {spec.mode}; daily loss reduce {spec.limits.daily_loss.reduce_pct}% / "
                      f"halt {spec.limits.daily_loss.halt_pct}%", now, generation)
    status.sessions = sorted(sessions)
    status.session_count = len(sessions)
    status.observed_generation = generation
    return status


async def reconcile(body: dict[str, Any], sessions: list[str]) -> None:
    metrics.RECONCILES.labels("RiskPolicy").inc()
    meta = body["metadata"]
    new = decide(body, sessions, dt.datetime.now(dt.UTC)).wire()
    if new != RiskPolicyStatus.model_validate(body.get("status") or {}).wire():
        await kube.patch_status("riskpolicies", meta["namespace"], meta["name"], new, meta.get("resourceVersion"))
