"""Writes the risk worker's (and the inference guard's) decisions into the TradingSession's status.

Automatic halts go to ``status.halt`` and never to spec, so a GitOps
controller that owns the spec never reverts them. They latch: an active
halt is never overwritten (its id is what a human names to resume), only
a new halt gets a new id. Conditions are a list, and a JSON merge patch
replaces lists whole, so every write that touches conditions is a
read-modify-write guarded by ``metadata.resourceVersion`` (the API server
refuses it with 409 if someone wrote in between; we re-read and retry).
Summary figures are a plain object: a merge patch, throttled by the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

from trading_workers.runtime import Kube, with_retries

log = logging.getLogger("trading_workers.risk.status")

CONDITION = "RiskBreached"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_halt_id() -> str:
    """``h-`` and ten lowercase hex characters (matches spec.resumeHaltId's pattern)."""
    return f"h-{secrets.token_hex(5)}"


def upsert_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                     generation: int | None) -> list[dict[str, Any]]:
    """Conditions with ``ctype`` set; lastTransitionTime only moves when the status changes."""
    out = [dict(c) for c in conditions if c.get("type") != ctype]
    previous = next((c for c in conditions if c.get("type") == ctype), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status else now_iso()
    entry: dict[str, Any] = {"type": ctype, "status": status, "reason": reason, "message": message[:32768],
                             "lastTransitionTime": since}
    if generation is not None:
        entry["observedGeneration"] = generation
    out.append(entry)
    return out


class SessionStatus:
    """Status writes for one TradingSession."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    async def _rmw(self, build: Any) -> dict[str, Any]:
        """Read, build a status patch from the object (or None to skip), write with the resourceVersion."""
        async def attempt() -> dict[str, Any]:
            obj = await self.kube.get_session(self.namespace, self.name)
            status_patch = build(obj)
            if status_patch is None:
                return obj
            body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": status_patch}
            return await self.kube.patch_session_status(self.namespace, self.name, body)

        return await with_retries(attempt, max_delay=20)  # Conflict is transient: re-read and retry

    async def raise_halt(self, *, source: str, reason: str, condition_reason: str) -> str:
        """Latch a halt in status (unless one is active) and set RiskBreached; returns the active halt's id."""
        result: dict[str, str] = {}

        def build(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.get("status") or {}
            generation = (obj.get("metadata") or {}).get("generation")
            patch: dict[str, Any] = {"conditions": upsert_condition(
                status.get("conditions") or [], CONDITION, "True", condition_reason, reason, generation)}
            halt = status.get("halt") or {}
            if halt.get("active") and halt.get("id"):
                result["id"] = halt["id"]
            else:
                result["id"] = new_halt_id()
                patch["halt"] = {"active": True, "source": source, "reason": reason[:1024], "since": now_iso(),
                                 "id": result["id"]}
            return patch

        await self._rmw(build)
        log.warning("halt raised in session status", extra={"halt_id": result["id"], "reason": reason})
        return result["id"]

    async def request_reducing(self, *, reason: str, condition_reason: str = "Reduce") -> None:
        """Move an Active session to Reducing (only exposure-reducing orders); never touches a Halted one."""
        def build(obj: dict[str, Any]) -> dict[str, Any] | None:
            status = obj.get("status") or {}
            generation = (obj.get("metadata") or {}).get("generation")
            patch: dict[str, Any] = {"conditions": upsert_condition(
                status.get("conditions") or [], CONDITION, "True", condition_reason, reason, generation)}
            if status.get("tradingState") in (None, "Active"):
                patch["tradingState"] = "Reducing"
            return patch

        await self._rmw(build)
        log.warning("reducing requested in session status", extra={"reason": reason})

    async def clear_breach(self, message: str = "all portfolio limits within bounds") -> None:
        """RiskBreached False (halts and Reducing stay latched until a human resumes)."""
        def build(obj: dict[str, Any]) -> dict[str, Any] | None:
            status = obj.get("status") or {}
            current = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
            if current is None or current.get("status") == "False":
                return None
            generation = (obj.get("metadata") or {}).get("generation")
            return {"conditions": upsert_condition(status.get("conditions") or [], CONDITION, "False",
                                                   "WithinLimits", message, generation)}

        await self._rmw(build)

    async def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        return await self.kube.patch_session_status(self.namespace, self.name, {"status": {"summary": summary}})
