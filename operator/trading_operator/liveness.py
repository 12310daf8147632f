"""Is an executor alive? Judged by its heartbeat's progress while the API server was reachable.

An executor proves it is alive by writing ``status.executor.heartbeat`` (its own clock) every few
seconds. Comparing that timestamp with the operator's clock makes every outage look like a dead
executor: while the API server is down neither can write nor read, and when it returns the last
heartbeat is as old as the outage, so a healthy session used to be halted ("executor lost: no
heartbeat for 42s", issue 20). Clock skew between the two hosts did the same.

So the operator never subtracts clocks. Like the node lifecycle controller, it remembers *when it
saw each heartbeat value change*, on its own monotonic clock, and counts silence only from the
later of that moment and the moment the API server became reachable again to the operator
(``ApiProbe`` checks ``/readyz`` every second). An outage, on either side, restarts the count;
an operator restart does too. An executor that stops writing while the API server is up is
lost after ``executor_stale_seconds``, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from trading_operator import kube

__all__ = ["PROBE", "WATCH", "ApiProbe", "HeartbeatWatch"]

log = logging.getLogger(__name__)


class HeartbeatWatch:
    """Heartbeat values seen per session, and since when the API server has been reachable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[str, tuple[str | None, float]] = {}
        self._reachable_since: float | None = clock()  # a start counts as the server just coming back

    def api_reachable(self) -> None:
        if self._reachable_since is None:
            self._reachable_since = self.clock()
            log.info("API server reachable again: executor silence is counted from now")

    def api_unreachable(self) -> None:
        if self._reachable_since is not None:
            log.warning("API server unreachable: executor silence is not counted until it returns")
        self._reachable_since = None

    def saw(self, key: str, heartbeat: str | None, now: float | None = None) -> float:
        """Record ``key``'s heartbeat as delivered (every watch event of the session, which does not wake a
        reconcile for a heartbeat alone); returns when this value was first seen."""
        now = self.clock() if now is None else now
        seen = self._seen.get(key)
        if seen is None or seen[0] != heartbeat:
            self._seen[key] = (heartbeat, now)
            return now
        return seen[1]

    def silence(self, key: str, heartbeat: str | None) -> float | None:
        """Seconds without a new heartbeat from ``key`` while the server was reachable; None: cannot judge."""
        now = self.clock()
        first = self.saw(key, heartbeat, now)
        if self._reachable_since is None:
            return None
        return max(0.0, now - max(first, self._reachable_since))

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)


class ApiProbe:
    """Checks the API server every ``interval`` seconds and tells the watch whether it is reachable."""

    def __init__(self, watch: HeartbeatWatch, check: Callable[[], Awaitable[object]], *, interval: float = 1.0,
                 timeout: float = 2.0) -> None:
        self.watch, self.check, self.interval, self.timeout = watch, check, interval, timeout
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        """Start the probe on the running loop once (the first reconcile does it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="api-probe")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.check(), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # any failure means "not reachable now"
                self.watch.api_unreachable()
            else:
                self.watch.api_reachable()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


#: The operator process's watch and probe (one per process; the session reconcile feeds and starts them).
WATCH = HeartbeatWatch()
PROBE = ApiProbe(WATCH, lambda: kube.readyz(timeout=2.0))
