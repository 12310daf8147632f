"""One error taxonomy for the operator.

Every failure a reconcile can meet is one of these. Each class says how
kopf should retry it (``retry_delay``; ``None`` means permanent: wait for
the next spec change) and carries the ``reason`` used as the metric label
and as the condition/Event reason, so one name follows a failure from the
log to the dashboard.

    OperatorError
    ├── TransientError          (retry soon)
    │   ├── ApiConflict         status write lost a race (409): re-read, retry now
    │   └── ApiUnavailable      API server/network trouble
    ├── NotFound                the object is gone (404): callers decide whether that matters
    └── PermanentError          (retry on the next change)
        └── InvalidSpec         the object parsed but cannot be run as written (also a 422)

The workers' Kubernetes wrapper (``trading_workers.runtime.kube``) gives a 404 the same meaning: a
``NotFound`` that is neither transient nor permanent. A missing or invalid RiskPolicy is not an
error here: ``decide`` reports it as the PolicyApplied condition and the session stops trading.
"""

from __future__ import annotations


class OperatorError(Exception):
    reason = "Error"
    retry_delay: float | None = 5.0

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason


class TransientError(OperatorError):
    reason = "Transient"
    retry_delay = 2.0


class ApiConflict(TransientError):
    reason = "Conflict"
    retry_delay = 0.0


class ApiUnavailable(TransientError):
    reason = "ApiUnavailable"
    retry_delay = 5.0


class NotFound(OperatorError):
    reason = "NotFound"
    retry_delay = 2.0


class PermanentError(OperatorError):
    reason = "Permanent"
    retry_delay = None


class InvalidSpec(PermanentError):
    reason = "InvalidSpec"
