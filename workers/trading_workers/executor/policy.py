"""The RiskPolicy as the executor enforces it, read without restarts.

The policy named in the worker config is read whenever the operator reports a new
``status.riskPolicy.observedGeneration`` (carried by the gate), every 30 s as a safety net, and
while the last read failed. Its order controls become the pre-trade check limits (scaled while the
market circuit breaker is tripped), its mode takes part in the gate, ``allowLive`` in the live
refusal, and its generation is reported as ``status.executor.policyGeneration``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from trading_operator.api.riskpolicy import ExtendedHours, OrderControls, RiskPolicySpec
from trading_workers.pretrade import CheckLimits, PreTradeChecks
from trading_workers.runtime.kube import Kube, NotFound

log = logging.getLogger("trading_workers.executor")

RECHECK_SECONDS = 30.0


class Policy:
    """The loaded RiskPolicy: mode, generation, order controls (as check limits), allowLive, or why it is not loaded."""

    def __init__(self, kube: Kube, namespace: str, name: str, checks: PreTradeChecks, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.checks = checks
        self._clock = clock
        self.mode: str | None = None
        self.generation: int | None = None
        self.error: str | None = "not loaded yet"
        self.allow_live = False
        self._controls: OrderControls | None = None
        self._extended = ExtendedHours()
        self._observed: int | None = None
        self._read_at = 0.0
        self._scale = 1.0

    async def refresh(self, observed: int | None, scale: float) -> bool:
        """Read the policy if it is due; True if its generation or mode changed."""
        due = self._clock() - self._read_at > RECHECK_SECONDS
        if self.error is None and observed == self._observed and not due:
            return False
        self._read_at = self._clock()
        try:
            obj: dict[str, Any] = await self.kube.get_policy(self.namespace, self.name)
            spec = RiskPolicySpec.model_validate(obj.get("spec") or {})
        except NotFound:
            self.error = f"RiskPolicy {self.name} not found"
            return False
        except ValueError as exc:
            self.error = f"RiskPolicy {self.name} invalid: {exc}"
            return False
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        self._controls, self._extended, self.allow_live = spec.order_controls, spec.extended_hours, spec.allow_live
        self._scale = scale
        self.checks.update_limits(CheckLimits.from_controls(spec.order_controls, scale, self._extended))
        changed = generation != self.generation or spec.mode != self.mode
        if changed:
            log.info("risk policy applied", extra={"policy": self.name, "generation": generation, "mode": spec.mode})
        self.mode, self.generation, self._observed = spec.mode, generation, observed
        self.error = None
        return changed

    def scale_limits(self, scale: float) -> None:
        """The market circuit breaker tripped or reset: per-order limits scale with it."""
        if scale == self._scale or self._controls is None:
            return
        self._scale = scale
        self.checks.update_limits(CheckLimits.from_controls(self._controls, scale, self._extended))
        log.warning("per-order limits scaled", extra={"scale": scale})
