"""How workers write a TradingSession's status: one optimistic-lock helper, and deduplicated Events.

Workers change the status only through the pure transactions of
``trading_operator.api.transactions`` (the same code the operator runs).
``SessionStatus.transact`` reads the session, parses its status into the
typed model, runs the transaction, and writes back only the top-level
fields it changed, as a JSON Patch guarded by the latches as read
(``transactions.latch_guard``: the transactions workers run raise latches,
and decide on the latches alone). A failed guard means a latch changed in
between, so it reads again and re-runs the transaction on the newer state
(a latch raised meanwhile is never overwritten); a report another worker
merged in between (``status.executor``, ``status.risk``) does not fail it.
Lost races are counted in ``trading_worker_status_conflicts_total``.

``EventRecorder`` posts Kubernetes Events the way client-go's recorder
does: the first occurrence creates an Event, repeats of the same
(reason, message) within ``window`` only bump its ``count`` and
``lastTimestamp``, so a breach re-evaluated every second is one Event
with a count, not a storm.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from trading_operator.api import metric_names as mn
from trading_operator.api import transactions
from trading_operator.api.session import TradingSessionStatus
from trading_workers.runtime.kube import Conflict, Kube
from trading_workers.runtime.retry import with_retries

log = logging.getLogger("trading_workers.session_status")

EVENTS = mn.collector(mn.WORKER_EVENTS)
CONFLICTS = mn.collector(mn.WORKER_STATUS_CONFLICTS)

Transaction = Callable[[TradingSessionStatus, dt.datetime], Any]


def _wire_fields(status: TradingSessionStatus) -> dict[str, Any]:
    return status.wire()


class SessionStatus:
    """Status writes for one TradingSession, under a resourceVersion precondition."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    async def transact(self, fn: Transaction) -> tuple[Any, dict[str, Any]]:
        """Run ``fn(status, now)`` on the newest status and write what it changed.

        Returns ``(fn's result, the session as written or read)``. Nothing is written when the
        transaction changed nothing.
        """
        result: dict[str, Any] = {}

        async def attempt() -> dict[str, Any]:
            obj = await self.kube.get_session(self.namespace, self.name)
            before = TradingSessionStatus.model_validate(obj.get("status") or {})
            after = before.model_copy(deep=True)
            result["value"] = fn(after, dt.datetime.now(dt.UTC))
            old, new = _wire_fields(before), _wire_fields(after)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if not changed:
                return obj
            raw = obj.get("status")
            ops = transactions.latch_guard(raw) + transactions.status_ops(raw, new, changed)
            try:
                return await self.kube.json_patch_session_status(self.namespace, self.name, ops)
            except Conflict:
                CONFLICTS.labels("transact").inc()
                raise

        written = await with_retries(attempt, max_delay=20)  # Conflict is transient: re-read and re-run
        return result.get("value"), written

    async def merge(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A plain merge patch of fields only this writer owns (no precondition: nobody else writes them)."""
        assert set(fields) <= transactions.WORKER_FIELDS, f"not a worker's report: {sorted(fields)}"
        return await self.kube.patch_session_status(self.namespace, self.name, {"status": fields})


class EventRecorder:
    """Kubernetes Events about one TradingSession, deduplicated and counted (see module docstring)."""

    def __init__(self, kube: Kube, namespace: str, name: str, component: str, window: float = 600.0) -> None:
        self.kube, self.namespace, self.name, self.component = kube, namespace, name, component
        self.window = window
        self._uid: str | None = None
        self._seen: dict[tuple[str, str, str], tuple[str, int, float]] = {}  # key -> (event name, count, first)

    async def record(self, type_: str, reason: str, message: str) -> None:
        """Post (or count) one Event; failures are logged, never raised (Events are best effort)."""
        EVENTS.labels(reason).inc()
        key = (type_, reason, message[:1024])
        now = time.monotonic()
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        try:
            seen = self._seen.get(key)
            if seen is not None and now - seen[2] < self.window:
                name, count, first = seen
                await self.kube.patch_event(self.namespace, name, {"count": count + 1, "lastTimestamp": stamp})
                self._seen[key] = (name, count + 1, first)
                return
            if self._uid is None:
                self._uid = (await self.kube.get_session(self.namespace, self.name))["metadata"]["uid"]
            name = f"{self.name}.{secrets.token_hex(8)}"
            await self.kube.create_event(self.namespace, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": self.namespace},
                "involvedObject": {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession",
                                   "name": self.name, "namespace": self.namespace, "uid": self._uid},
                "type": type_, "reason": reason, "message": message[:1024], "count": 1,
                "firstTimestamp": stamp, "lastTimestamp": stamp,
                "source": {"component": f"trading-{self.component}"},
                "reportingComponent": f"trading.dev/{self.component}", "reportingInstance": self.name,
            })
            self._seen[key] = (name, 1, now)
        except Exception as exc:
            log.warning("event not recorded", extra={"reason": reason, "error": str(exc)})
