"""One error taxonomy for every worker.

Workers make exactly one decision about a failure: retry it (the world may
heal: a server restarts, a connection comes back) or not (the input is
wrong and will stay wrong). Every exception a worker raises on purpose is a
``TradingError`` and says which of the two it is, so retry policies
(tenacity) and loops can be written once, against ``TransientError``,
instead of catching library exceptions all over the code.
"""

from __future__ import annotations


class TradingError(RuntimeError):
    """Root of every error the workers raise on purpose."""


class TransientError(TradingError):
    """May succeed if retried later (a dependency is down, a request timed out)."""


class PermanentError(TradingError):
    """Will fail again if retried with the same input; log, count, and move on."""


class DependencyUnavailable(TransientError):
    """A server the worker needs (Redis, PostgreSQL, the API server, the broker) is unreachable."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency} unavailable{': ' + detail if detail else ''}")
        self.dependency = dependency


class MalformedMessage(PermanentError):
    """A bus message that cannot be decoded or fails validation; it is skipped, never retried."""


class ConfigError(PermanentError):
    """The worker's configuration is missing or invalid; the worker cannot start."""
