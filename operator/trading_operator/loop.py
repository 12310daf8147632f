"""The session loop: one dispatcher for every TradingSession, woken by events, one reconcile per wake-up.

``handlers`` only wires kopf to this module; everything that decides *when* and *from which view* a
session is reconciled lives here, in small pieces tested on virtual time (tests/operator/test_loop.py):

* ``SessionLoop`` keeps, per session, the newest body the watch delivered, a due timer (the requeue
  delay: the calendar's next boundary, a deadline, the backstop) and at most one reconcile in flight.
  A watch event or a timer starts a reconcile as an asyncio task; an event during a reconcile makes
  it run once more when done. A session at rest costs one dict entry and one timer handle — no task,
  no kopf daemon (1,000 kopf daemons were a third of the operator's memory at 1,000 sessions and
  most of its CPU besides the API calls; decision 0021).

* ``NewestSeen`` — the newest version of each session this process has seen outside the watch (its
  own status write's response, a re-read after a conflict). A reconcile woken before the watch
  delivers that version starts from it instead of from a stale view (which would only lose a 409
  round trip); the watch event that is the echo of our own write wakes nobody.
* admission — a session without a status yet is being set up (ConfigMap, five Deployments, first
  status): at most ``NEW_SESSIONS`` of those at once, so 1,000 sessions created together do not hold
  1,000 half-done reconciles in memory. Sessions already running never wait.
* conflicts — only the status write can lose a race, and only when a latch (``status.halt``,
  ``status.reducing``) changed since our view, or anything changed before a write that clears one
  (decision 0015: reports merged by the workers and kopf's finalizer do not fail it). The session is
  re-read and the reconcile re-run at once on the fresh view, status only: the children were just
  applied. A second conflict requeues immediately.
* ``SessionGauges`` — sessions by phase and active halts, recounted only when a session's phase or
  halt changed (recounting on every reconcile was O(sessions) per reconcile).
* every attempt is counted and timed, failures included, and failures are counted by reason.

The reconcile itself (observe -> decide -> children -> status) is ``reconcile.session.reconcile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from trading_operator import errors, kube, metrics
from trading_operator.api.session import Role
from trading_operator.reconcile import session as session_reconcile
from trading_operator.reconcile.conditions import Event
from trading_operator.settings import Settings

Key = tuple[str, str]  # (namespace, name)
PostEvent = Callable[[Event], None]
KIND = "TradingSession"
NEW_SESSIONS = 2 * kube.POOL_SIZE  # sessions set up concurrently (each has up to 5 calls in flight)
PHASES = ("Initializing", "PreMarket", "MarketOpen", "MarketClose", "AfterHours", "Halted", "Error", "")


class Reconcile(Protocol):
    def __call__(self, body: dict[str, Any], policy_body: dict[str, Any] | None,
                 deployments: dict[Role, dict[str, Any] | None], settings: Settings, post_event: PostEvent,
                 config_map: dict[str, Any] | None, children: bool = True,
                 ) -> Awaitable[tuple[float, dict[str, Any] | None]]: ...


@dataclass(frozen=True)
class Inputs:
    """What a reconcile reads besides the session (from kopf's indexes): its policy and live children."""

    policy: dict[str, Any] | None
    deployments: dict[Role, dict[str, Any] | None]
    config_map: dict[str, Any] | None = None


Lookup = Callable[[Mapping[str, Any]], Inputs]
Reread = Callable[[str, str], Awaitable[dict[str, Any] | None]]
Later = Callable[[float, Callable[[], None]], Any]  # loop.call_later's shape; the handle has .cancel()


@dataclass(eq=False)
class _Slot:
    """One session's place in the loop: what to reconcile from, and what is pending for it."""

    body: Mapping[str, Any]
    essence: tuple[Any, ...]           # essence(body), kept so an event computes only the new one
    post_event: PostEvent
    timer: Any = None                  # the due reconcile (a TimerHandle), if none is running
    task: asyncio.Task[None] | None = None
    again: bool = False                # woken while a reconcile ran: run once more when it is done


def lean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A session as the loop keeps it: without ``metadata.managedFields``, which no reconcile reads and
    which is the larger part of a session's metadata (kept for 1,000 sessions, it was tens of MiB)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return dict(obj)
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


# Status fields only people and dashboards read: the risk worker's running summary (every 2 s) and daily
# report. And the executor's heartbeat (every 3 s): its silence is a scheduled wake-up (decide's requeue at
# the moment it would make the executor lost), so a heartbeat that arrives needs no reconcile.
UNREAD_STATUS = ("summary", "report")


def essence(obj: Mapping[str, Any], status: bool = True) -> tuple[Any, ...]:
    """What a reconcile reads of an object besides its name: spec (by generation), labels, annotations,
    and (unless ``status=False``) status, but for ``UNREAD_STATUS`` and the executor's heartbeat. A
    change of anything else (kopf's finalizer, managedFields, a worker's summary) wakes nobody."""
    meta = obj.get("metadata") or {}
    read: Any = None
    if status and (st := obj.get("status")) is not None:
        read = {k: v for k, v in st.items() if k not in UNREAD_STATUS}
        if isinstance(read.get("executor"), Mapping):
            read["executor"] = {k: v for k, v in read["executor"].items() if k != "heartbeat"}
    return (meta.get("generation"), meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"), read)


def version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``a`` is a later version than ``b`` (resourceVersions are etcd revisions; else: not newer)."""
    ra, rb = version(a), version(b)
    return ra.isdigit() and rb.isdigit() and int(ra) > int(rb)


class NewestSeen:
    """Per session, our own newer copy until the watch catches up with it."""

    def __init__(self) -> None:
        self._ours: dict[Key, dict[str, Any]] = {}

    def remember(self, key: Key, obj: dict[str, Any]) -> None:
        self._ours[key] = obj

    def forget(self, key: Key) -> None:
        self._ours.pop(key, None)

    def view(self, key: Key, watched: Mapping[str, Any]) -> dict[str, Any]:
        """What to reconcile from: our copy if it is newer than what the watch delivered, else the watch's."""
        ours = self._ours.get(key)
        if ours is not None and newer(ours, watched):
            return ours
        self._ours.pop(key, None)  # the watch has caught up
        return dict(watched)

    def is_echo(self, key: Key, watched: Mapping[str, Any]) -> bool:
        """A watch event: drop our copy once the watch caught up; True if it is exactly our own write."""
        ours = self._ours.get(key)
        if ours is None or newer(ours, watched):
            return False
        del self._ours[key]  # the watch caught up: drop our copy now, not at the next reconcile
        return version(ours) == version(watched)


class SessionGauges:
    """``trading_operator_sessions{phase}`` and ``trading_operator_active_halts``, recounted on change only."""

    def __init__(self) -> None:
        self.phases: dict[Key, str] = {}
        self.halted: set[Key] = set()
        self.exports = 0

    def record(self, key: Key, status: Mapping[str, Any]) -> None:
        phase, halted = str(status.get("phase") or ""), bool((status.get("halt") or {}).get("active"))
        if self.phases.get(key) == phase and (key in self.halted) == halted:
            return
        self.phases[key] = phase
        if halted:
            self.halted.add(key)
        else:
            self.halted.discard(key)
        self.export()

    def forget(self, key: Key) -> None:
        self.phases.pop(key, None)
        self.halted.discard(key)
        self.export()

    def export(self) -> None:
        self.exports += 1
        counts: dict[str, int] = defaultdict(int)
        for phase in self.phases.values():
            counts[phase] += 1
        for phase in PHASES:
            metrics.SESSIONS.labels(phase or "Pending").set(counts.get(phase, 0))
        metrics.ACTIVE_HALTS.set(len(self.halted))


class SessionLoop:
    """Every session's slot, the reconciles in flight and their timers (see module docstring)."""

    def __init__(self, settings: Settings, *, reconcile: Reconcile = session_reconcile.reconcile,
                 reread: Reread | None = None, new_sessions: int = NEW_SESSIONS, later: Later | None = None,
                 clock: Callable[[], float] = time.monotonic, log: logging.Logger | None = None) -> None:
        self.settings = settings
        self._reconcile = reconcile
        self._reread: Reread = reread or (lambda namespace, name: kube.get("tradingsessions", namespace, name))
        self._later: Later = later or (lambda delay, fn: asyncio.get_running_loop().call_later(delay, fn))
        self._clock = clock
        self.log = log or logging.getLogger("trading_operator.loop")
        self.admission = asyncio.Semaphore(new_sessions)
        self.slots: dict[Key, _Slot] = {}
        self.lookup: Lookup | None = None  # set by ``handlers`` from kopf's indexes before the first event
        self.newest = NewestSeen()
        self.gauges = SessionGauges()

    def session_event(self, namespace: str, name: str, body: Mapping[str, Any], post_event: PostEvent,
                      gone: bool = False) -> None:
        """A watch event of a session: start tracking it, wake it (unless the event is the echo of our own
        status write or changed nothing a reconcile reads: ``essence``), or stop tracking it once it is
        deleted or being deleted (the finalizer takes over)."""
        key = (namespace, name)
        if gone or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(key)
            return
        slot = self.slots.get(key)
        if slot is None:
            kept = lean(body)
            self.slots[key] = _Slot(kept, essence(kept), post_event)
            self.wake(namespace, name)
            return
        before, slot.body = slot.essence, lean(body)
        slot.essence = essence(slot.body)
        if not self.newest.is_echo(key, body) and before != slot.essence:
            self.wake(namespace, name)

    def wake(self, namespace: str, name: str) -> None:
        """Reconcile this session now (or once more after the one in flight); unknown sessions are ignored."""
        slot = self.slots.get((namespace, name))
        if slot is None:
            return
        if slot.task is not None:
            slot.again = True
            return
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        slot.task = asyncio.create_task(self._run((namespace, name), slot), name=f"reconcile {namespace}/{name}")

    def forget(self, key: Key) -> None:
        """Stop reconciling a session: its timer, its state, its gauges and per-session series (a reconcile
        in flight finishes, and nothing follows it)."""
        slot = self.slots.pop(key, None)
        if slot is not None and slot.timer is not None:
            slot.timer.cancel()
        self.newest.forget(key)
        self.gauges.forget(key)
        metrics.session_gone(*key)  # its per-session series (halt, executor heartbeat age)

    async def close(self) -> None:
        """The operator stops: cancel every timer and reconcile in flight."""
        tasks = [slot.task for slot in self.slots.values() if slot.task is not None]
        for slot in self.slots.values():
            if slot.timer is not None:
                slot.timer.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.slots.clear()

    async def _run(self, key: Key, slot: _Slot) -> None:
        """Reconcile until nothing asks for another at once, then arm the timer for the next one."""
        lookup = self.lookup
        if lookup is None:  # a programming error: reconciling without the indexes would recreate every child
            raise RuntimeError("SessionLoop.lookup is not set: handlers set it before the first session event")
        try:
            while True:
                slot.again = False
                delay = await self.once(key, slot.body, lookup, slot.post_event)
                if self.slots.get(key) is not slot:  # deleted meanwhile: nothing follows
                    self.gauges.forget(key)
                    return
                if delay > 0 and not slot.again:
                    break
        finally:
            slot.task = None
        if self.slots.get(key) is slot:
            slot.timer = self._later(delay, lambda: self.wake(*key))

    async def once(self, key: Key, body: Mapping[str, Any], lookup: Lookup, post_event: PostEvent) -> float:
        """One reconcile of one session; returns seconds until the next."""
        snapshot = self.newest.view(key, body)
        admission = self.admission if not snapshot.get("status") else contextlib.nullcontext()
        try:
            async with admission:
                outcome = await self._attempt(key, snapshot, lookup, post_event)
        except errors.OperatorError as exc:
            metrics.RECONCILE_FAILURES.labels(KIND, exc.reason).inc()
            if not isinstance(exc, errors.ApiConflict):
                self.log.warning("reconcile failed (%s): %s", exc.reason, exc)
            return exc.retry_delay if exc.retry_delay is not None else self.settings.reconcile_interval * 5
        except Exception as exc:
            metrics.RECONCILE_FAILURES.labels(KIND, type(exc).__name__).inc()
            self.log.exception("reconcile crashed: %s", exc)
            return self.settings.reconcile_interval
        if isinstance(outcome, float):
            return outcome
        delay, seen = outcome
        self.gauges.record(key, seen.get("status") or {})
        return delay

    async def _attempt(self, key: Key, snapshot: dict[str, Any], lookup: Lookup,
                       post_event: PostEvent) -> float | tuple[float, dict[str, Any]]:
        """The reconcile, and at most one re-run on a fresh view after a 409 (status only)."""
        for children in (True, False):
            try:
                delay, written = await self._timed(snapshot, lookup, post_event, children)
            except errors.ApiConflict as exc:
                metrics.RECONCILE_FAILURES.labels(KIND, exc.reason).inc()
                fresh = await self._reread(*key)
                if fresh is None:
                    return self.settings.reconcile_interval
                snapshot = lean(fresh)
                self.newest.remember(key, snapshot)
                continue
            if written is not None:
                self.newest.remember(key, lean(written))
            return delay, written or snapshot
        return 0.0  # lost the race twice: go again at once, from the view the re-read left

    async def _timed(self, snapshot: dict[str, Any], lookup: Lookup, post_event: PostEvent,
                     children: bool) -> tuple[float, dict[str, Any] | None]:
        inputs = lookup(snapshot)
        started = self._clock()
        metrics.RECONCILES.labels(KIND).inc()
        try:
            return await self._reconcile(snapshot, inputs.policy, inputs.deployments, self.settings, post_event,
                                         inputs.config_map, children=children)
        finally:
            metrics.RECONCILE_SECONDS.labels(KIND).observe(self._clock() - started)
