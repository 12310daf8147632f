"""Dependency liveness: the executor's fail-closed rules in one place.

The executor consumes intents only while every one of these holds; otherwise intents stay pending on
the bus (nothing is lost) and ``/readyz`` lists what fails (``blockers``, pure):

* the session is confirmed (watched or written within ``stale_after``);
* Redis, the journal and the broker answer;
* its RiskPolicy is loaded;
* a live (non-paper) endpoint, if configured, has been cleared (policy ``allowLive`` and the
  operator's ``LiveTradingAllowed``);
* it has synced with the broker since the last outage or resume.

``Dependencies`` holds the three reachability flags and the sync epoch. Anything that may have cut an
order in half (an outage, a failed call, a resume) calls ``need_sync``, which starts a new epoch; a
broker sync takes the epoch when it starts and counts only if no new epoch began while it ran
(``finish_sync``). So a resume or an outage seen while a sync is in flight is never swallowed by
that sync's end.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from trading_workers.brokers.base import BrokerError
from trading_workers.errors import DependencyUnavailable


def blockers(*, session: str | None, redis: bool, journal: bool, broker: bool, policy_error: str | None,
             live_refusal: str | None, synced: bool) -> list[str]:
    """Why the executor may not consume intents right now (empty: it may)."""
    out = []
    if session:
        out.append(session)
    if not redis:
        out.append("redis unreachable")
    if not journal:
        out.append("journal unreachable")
    if not broker:
        out.append("broker unreachable")
    if policy_error:
        out.append(f"risk policy: {policy_error}")
    if live_refusal is not None:
        out.append(live_refusal)
    if not synced:
        out.append("not reconciled with the broker")
    return out


@dataclass
class Reachability:
    redis: bool = False
    journal: bool = False
    broker: bool = False

    def all(self) -> bool:
        return self.redis and self.journal and self.broker


class Dependencies:
    """Reachability of Redis, the journal and the broker, and whether the broker sync is current."""

    def __init__(self) -> None:
        self.up = Reachability()
        self._lock = threading.Lock()  # need_sync is called from the watch thread too (a resume)
        self._epoch = 1
        self._synced_epoch = 0

    @property
    def synced(self) -> bool:
        return self._synced_epoch == self._epoch

    def need_sync(self) -> None:
        """Something may have cut an order in half, or a halt ended: sync with the broker before sending."""
        with self._lock:
            self._epoch += 1

    def start_sync(self) -> int:
        """The epoch a sync starting now covers."""
        with self._lock:
            return self._epoch

    def finish_sync(self, epoch: int) -> bool:
        """The sync that started at ``epoch`` succeeded; True if it is current (nothing happened meanwhile)."""
        with self._lock:
            if epoch != self._epoch:
                return False
            self._synced_epoch = epoch
            return True

    def report(self, up: Reachability) -> bool:
        """The liveness loop's latest answers; True if anything changed. Any outage requires a new sync."""
        if up == self.up:
            return False
        if not up.all():
            self.need_sync()
        self.up = up
        return True

    def failed(self, exc: BaseException) -> str:
        """A call failed: mark what, require a new sync, and return the dependency's name."""
        dependency = ""
        if isinstance(exc, BrokerError):
            dependency = "broker"
        elif isinstance(exc, DependencyUnavailable):
            dependency = exc.dependency
        if dependency in ("redis", "journal", "broker"):
            self.up = Reachability(**{**vars(self.up), dependency: False})
        self.need_sync()
        return dependency
