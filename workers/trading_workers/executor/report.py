"""The executor's status report: ``status.executor``, a field only the executor writes.

Written every ``report_interval`` and at once when something worth knowing changed (a sync, an
onHalt, a dependency, the policy), as a JSON merge patch of the typed ``ExecutorReport`` of the
shared status vocabulary. The operator reads the heartbeat, ``haltHandled`` (a resume waits for
it), ``policyGeneration`` and the connection flags. The response is a version of the session: it
goes to the session view like any watch event, so a status write also confirms the session.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from trading_operator.api import workerconfig as wc
from trading_operator.api.session import ExecutorReport, ReconciliationStatus
from trading_workers.pretrade import TradingState


def executor_report(*, now: dt.datetime, state: TradingState, open_orders: int, broker: bool, journal: bool,
                    policy_generation: int | None, halt_handled: str | None,
                    reconciliation: ReconciliationStatus | None = None,
                    secret_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``status.executor`` patch (pure). Without a reconciliation of this process the field is left
    out, so the merge keeps the last one written (also by an earlier executor)."""
    report = ExecutorReport(heartbeat=now.replace(microsecond=0), trading_state=state, open_orders=open_orders,
                            broker_connected=broker, journal_connected=journal, policy_generation=policy_generation,
                            halt_handled=halt_handled or None, reconciliation=reconciliation,
                            secret_versions=secret_versions or None)
    return {"status": {"executor": report.wire()}}


def own_secret_versions() -> dict[str, str] | None:
    """The Secret versions this process started with: its pod template's annotation, through the Downward API
    (``TRADING_SECRET_VERSIONS``); None where the operator does not track them."""
    return wc.parse_versions(os.environ.get(wc.ENV_SECRET_VERSIONS)) or None
