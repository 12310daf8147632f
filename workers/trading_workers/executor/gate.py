"""The gate (what one version of the TradingSession allows) and the executor's one view of its session.

``derive_gate`` is pure: a TradingSession object as the API server returns it, and the RiskPolicy's
mode, in; a ``Gate`` out. A halt is a halt whether it comes from spec (the user), ``status.halt``
(risk, policy, operator, with its action), the policy's mode Halted; ``tradingState: Halted``
without ``status.halt`` or a phase that allows no orders is a *gate* (no ``halt_key``): new orders
are refused and ``onHalt`` is not applied.

``SessionView`` is the only writer of the gate. Versions of the session arrive from two threads —
the session watch (its own thread, so a halt reaches the submit path without waiting for the event
loop) and the event loop (the response of every status write) — so the resourceVersion
compare-and-set happens under a lock: an older version only confirms that the session is still
there, it never replaces a newer one. When the gate opens after a halt, ``on_resume`` runs *before*
the open gate is published, so the submit path never sees an open gate without the "sync with the
broker first" rule already in force.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trading_operator.api import metric_names as mn
from trading_operator.api.phases import ORDER_PHASES, Phase
from trading_operator.api.status import ConditionType, HaltAction, Reason
from trading_workers.pretrade import TradingState
from trading_workers.runtime.kube import resource_version

log = logging.getLogger("trading_workers.executor")

EXTENDED_PHASES = frozenset({Phase.PRE_MARKET.value, Phase.AFTER_HOURS.value})
HALTED = mn.collector(mn.EXECUTOR_HALTED)
HALTED_CHANGED = mn.collector(mn.EXECUTOR_HALTED_CHANGED)


@dataclass(frozen=True, slots=True)
class Gate:
    """What one version of the TradingSession allows the executor to do."""

    halted: bool                 # no new orders
    state: TradingState          # Active / Reducing / Halted
    reason: str
    halt_key: str | None         # identifies the halt onHalt was applied for (None: a gate, not a halt)
    halt_id: str | None          # status.halt.id, when the halt has one
    flatten: bool                # the halt's action is Flatten
    observed_policy_generation: int | None
    limit_scale: float = 1.0     # < 1 while the market circuit breaker is tripped
    live_cleared: bool = False   # the operator's LiveTradingAllowed condition is True for this generation
    extended_hours: bool = False  # the phase is PreMarket or AfterHours (policy extendedHours applies)


CLOSED = Gate(True, TradingState.HALTED, "session not observed yet", None, None, False, None)


def _live_cleared(status: dict[str, Any], generation: int) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == ConditionType.LIVE_TRADING_ALLOWED:
            return bool(cond.get("status") == "True" and cond.get("reason") == Reason.LIVE_ALLOWED
                        and cond.get("observedGeneration") == generation)
    return False


def derive_gate(obj: dict[str, Any] | None, policy_mode: str | None = None) -> Gate:
    """The gate for a TradingSession object (as the API server returns it) and the policy's mode."""
    if obj is None:
        return Gate(True, TradingState.HALTED, "session not found", "deleted", None, False, None)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    halt = status.get("halt") or {}
    policy_ref = status.get("riskPolicy") or {}
    observed = policy_ref.get("observedGeneration")
    phase = status.get("phase")
    generation = (obj.get("metadata") or {}).get("generation", 0)
    breaker = (status.get("risk") or {}).get("circuitBreaker") or {}
    scale = float(breaker.get("limitScale") or 1.0) if breaker.get("tripped") else 1.0
    live = _live_cleared(status, generation)
    if halt.get("active"):
        halt_id = halt.get("id")
        reason = f"{halt.get('source') or 'unknown'} halt: {halt.get('reason') or ''}".strip()
        return Gate(True, TradingState.HALTED, reason, halt_id or f"status:{halt.get('since')}", halt_id,
                    halt.get("action") == HaltAction.FLATTEN, observed, scale, live)
    if spec.get("halted"):
        return Gate(True, TradingState.HALTED, f"user halt: {spec.get('haltReason') or ''}".strip(),
                    f"spec:{generation}", None, False, observed, scale, live)
    if policy_mode == "Halted":
        return Gate(True, TradingState.HALTED, "RiskPolicy mode Halted", "policy", None, False, observed, scale, live)
    if status.get("tradingState") == TradingState.HALTED:
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), {})
        why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "trading state Halted"
        return Gate(True, TradingState.HALTED, why, None, None, False, observed, scale, live)
    if phase not in {p.value for p in ORDER_PHASES}:
        return Gate(True, TradingState.HALTED, f"phase {phase} does not allow orders", None, None, False, observed,
                    scale, live)
    reducing = (status.get("reducing") is not None or status.get("tradingState") == TradingState.REDUCING
                or policy_mode == "Reducing")
    return Gate(False, TradingState.REDUCING if reducing else TradingState.ACTIVE, "", None, None, False, observed,
                scale, live, phase in EXTENDED_PHASES)


class SessionView:
    """The newest TradingSession this executor has seen, the gate derived from it, and whether it is confirmed.

    ``observe`` may be called from any thread. ``on_resume`` runs (under the lock, before the open gate
    is published) when a halted gate opens; ``on_change`` runs after every accepted version.
    """

    def __init__(self, *, stale_after: float, on_resume: Callable[[], None], on_change: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self._on_resume, self._on_change, self._clock = on_resume, on_change, clock
        self._lock = threading.Lock()
        self._obj: dict[str, Any] | None = None
        self._rv = 0
        self._policy_mode: str | None = None
        self._confirmed_at = 0.0
        self._lost = "not observed yet"
        self.gate: Gate = CLOSED  # read without the lock: one reference, replaced whole

    def observe(self, obj: dict[str, Any] | None) -> None:
        """A version of the session (None: it is gone). Older versions only confirm liveness."""
        with self._lock:
            now = self._clock()
            if obj is not None and resource_version(obj) < self._rv:
                self._confirmed_at, self._lost = now, ""
                return
            self._publish(derive_gate(obj, self._policy_mode))
            self._obj, self._rv = obj, resource_version(obj)
            self._confirmed_at, self._lost = now, ""
        self._on_change()

    def latest(self) -> dict[str, Any] | None:
        """The newest version of the session seen (phase, annotations, status), or None."""
        with self._lock:
            return self._obj

    def set_policy_mode(self, mode: str | None) -> None:
        """The RiskPolicy's mode changed (it takes part in the gate): re-derive from the newest version."""
        with self._lock:
            if mode == self._policy_mode:
                return
            self._policy_mode = mode
            if self._obj is not None or self._rv:
                self._publish(derive_gate(self._obj, mode))
        self._on_change()

    def lose(self, why: str) -> None:
        """The session can no longer be confirmed (watch failed, status writes failing)."""
        with self._lock:
            self._lost = why
        self._on_change()

    def problem(self) -> str | None:
        """Why the view cannot be trusted right now (None: confirmed within ``stale_after``)."""
        lost = self._lost
        if lost:
            return lost
        if self._clock() - self._confirmed_at >= self.stale_after:
            return "session view stale"
        return None

    def confirmed(self) -> bool:
        return self.problem() is None

    def _publish(self, gate: Gate) -> None:
        previous = self.gate
        if gate.halted and not previous.halted:
            log.warning("halt observed: no new orders", extra={"reason": gate.reason, "halt_id": gate.halt_id})
        elif previous.halted and not gate.halted:
            self._on_resume()  # before the open gate is visible: sync with the broker before the first new order
            log.warning("resume observed: reconciling before sending")
        self.gate = gate
        if gate.halted != previous.halted:
            HALTED_CHANGED.set_to_current_time()  # from here on the submit path sees the new gate
        HALTED.set(1 if gate.halted else 0)
