"""Prometheus metrics of the operator (served on /metrics by ``__main__``).

Names, help and labels come from ``trading_operator.api.metric_names``, the one list the Helm
chart's PrometheusRule and dashboard are checked against.
"""

from __future__ import annotations

import contextlib
from typing import Any

from trading_operator.api import metric_names as m

RECONCILES = m.collector(m.OPERATOR_RECONCILES)
RECONCILE_FAILURES = m.collector(m.OPERATOR_RECONCILE_FAILURES)
# A session reconcile that loses no race never counts a Conflict (decision 0015): the series exists from
# the start at 0, so rate() and the dashboard's failures panel have data instead of nothing.
RECONCILE_FAILURES.labels("TradingSession", "Conflict")
RECONCILE_SECONDS = m.collector(m.OPERATOR_RECONCILE_SECONDS)
SESSIONS = m.collector(m.OPERATOR_SESSIONS)
ACTIVE_HALTS = m.collector(m.OPERATOR_ACTIVE_HALTS)
TRANSITIONS = m.collector(m.OPERATOR_TRANSITIONS)
HALTS = m.collector(m.OPERATOR_HALTS)
WATCH_AGE = m.collector(m.OPERATOR_WATCH_AGE)
DRIFT_REPAIRS = m.collector(m.OPERATOR_DRIFT_REPAIRS)
FENCED_WRITES = m.collector(m.OPERATOR_FENCED_WRITES)
# Per session: whether a halt is in force (by source) and how old the executor's heartbeat is.
SESSION_HALTED = m.collector(m.SESSION_HALTED)
EXECUTOR_HEARTBEAT_AGE = m.collector(m.EXECUTOR_HEARTBEAT_AGE)

# Backups (from each Backup's status, which the backup run writes).
BACKUP_LAST_SUCCESS = m.collector(m.BACKUP_LAST_SUCCESS)
BACKUP_LAST_VERIFIED = m.collector(m.BACKUP_LAST_VERIFIED)
BACKUP_SIZE = m.collector(m.BACKUP_SIZE)
BACKUP_DURATION = m.collector(m.BACKUP_DURATION)
BACKUP_FAILED = m.collector(m.BACKUP_FAILED)

_halt_sources: dict[tuple[str, str], str] = {}


def session_state(namespace: str, name: str, status: dict[str, Any], heartbeat_age: float | None) -> None:
    """Export one session's halt (``status.halt`` while active, by source) and its executor's heartbeat age
    (None: no executor heartbeat counts now, e.g. outside the order phases)."""
    key = (namespace, name)
    halt = status.get("halt") or {}
    source = str(halt.get("source") or "Unknown") if halt.get("active") else None
    old = _halt_sources.get(key)
    if old is not None and old != source:
        SESSION_HALTED.remove(namespace, name, old)
        del _halt_sources[key]
    if source is not None:
        SESSION_HALTED.labels(namespace, name, source).set(1)
        _halt_sources[key] = source
    if heartbeat_age is None:
        forget(EXECUTOR_HEARTBEAT_AGE, namespace, name)
    else:
        EXECUTOR_HEARTBEAT_AGE.labels(namespace, name).set(heartbeat_age)


def session_gone(namespace: str, name: str) -> None:
    """Drop a deleted session's series."""
    source = _halt_sources.pop((namespace, name), None)
    if source is not None:
        forget(SESSION_HALTED, namespace, name, source)
    forget(EXECUTOR_HEARTBEAT_AGE, namespace, name)


def forget(gauge: object, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)  # type: ignore[attr-defined]
