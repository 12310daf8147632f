"""Evaluate portfolio figures against a RiskPolicy's limits. Pure.

``Figures`` is what the risk worker measured; ``evaluate`` returns one
``Breach`` per rule that is beyond its limit, with the action the policy
attached to that rule. The worker decides what to do with the worst one.

Interpretations worth stating:

* Daily loss has two thresholds: ``reducePct`` (action Reduce) and
  ``haltPct`` (action ``haltAction``, Halt by default).
* Concentration is the largest position as a share of gross exposure, so
  it is only meaningful with two or more positions; with one position it
  is not evaluated (margin usage and VaR still bound a single large bet).
* VaR needs at least 20 scenarios before it is evaluated.
* The circuit breaker trips on the index proxy's drop from the prior close
  (the last quote before the session day began; on a session's first day,
  with no earlier quote, the day's first quote stands in) or on the
  volatility symbol's level reaching ``vixLevel``; it has its own action
  (Reduce by default), and while tripped the executor scales its per-order
  limits by ``limitScale``.
* Data freshness: a symbol with no quote for longer than ``maxAgeSeconds``
  is stale; the rule is evaluated only while the phase allows orders (the
  worker passes ``None`` otherwise).
* Model accuracy: the stable model's live accuracy from ``status.inference`` (the inference
  worker's window), once it holds ``minOutcomes``; below ``criticalBelowPct`` the critical
  action, else below ``alertBelowPct`` the alert action. Off unless enabled.
* Every rule can be disabled with ``enabled: false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trading_operator.api.riskpolicy import CircuitBreaker, Limits
from trading_operator.api.status import Rule, RuleAction, rule_reason

SEVERITY = {a.value: a.severity for a in RuleAction}
MIN_VAR_SCENARIOS = 20


@dataclass(frozen=True, slots=True)
class Breach:
    rule: str          # a Rule: camelCase, as in the RiskPolicy (dailyLoss, maxDrawdown, ...)
    action: str        # a RuleAction: Alert | Reduce | Halt | Flatten
    value: float
    threshold: float
    message: str

    @property
    def reason(self) -> str:
        """CamelCase reason, e.g. DailyLossHalt."""
        return rule_reason(self.rule, self.action)


@dataclass(frozen=True)
class Figures:
    equity: float
    start_equity: float
    peak_equity: float
    daily_pnl_pct: float
    drawdown_pct: float
    exposures: dict[str, float] = field(default_factory=dict)
    gross_exposure: float = 0.0
    concentration_pct: float = 0.0
    var_pct: float | None = None
    var_scenarios: int = 0
    margin_usage_pct: float = 0.0
    win_rate_pct: float = 100.0
    closed_trades: int = 0
    correlation: float | None = None
    index_drop_pct: float = 0.0
    volatility_level: float | None = None
    stale_symbols: tuple[str, ...] | None = None   # None: freshness not evaluated (phase allows no orders)
    max_quote_age: float = 0.0
    model_accuracy_pct: float | None = None   # the stable model's live accuracy (status.inference); None: no report
    model_outcomes: int = 0


def breaker_tripped(breaker: CircuitBreaker, f: Figures) -> str | None:
    """Why the market circuit breaker is tripped (None if it is not)."""
    if not breaker.enabled:
        return None
    reasons = []
    if f.index_drop_pct >= breaker.index_drop_pct:
        reasons.append(f"{breaker.index_symbol} down {f.index_drop_pct:.2f}% from the prior close "
                       f">= {breaker.index_drop_pct:g}%")
    if f.volatility_level is not None and f.volatility_level >= breaker.vix_level:
        reasons.append(f"{breaker.volatility_symbol} at {f.volatility_level:.2f} >= {breaker.vix_level:g}")
    return "; ".join(reasons) or None


def evaluate(limits: Limits, breaker: CircuitBreaker, f: Figures) -> list[Breach]:
    out: list[Breach] = []
    loss = -f.daily_pnl_pct
    dl = limits.daily_loss
    if dl.enabled and loss >= dl.halt_pct:
        out.append(Breach(Rule.DAILY_LOSS, dl.halt_action, loss, dl.halt_pct,
                          f"daily loss {loss:.2f}% >= {dl.halt_pct:g}%"))
    elif dl.enabled and loss >= dl.reduce_pct:
        out.append(Breach(Rule.DAILY_LOSS, RuleAction.REDUCE, loss, dl.reduce_pct,
                          f"daily loss {loss:.2f}% >= {dl.reduce_pct:g}%"))
    dd = limits.max_drawdown
    if dd.enabled and f.drawdown_pct >= dd.threshold_pct:
        out.append(Breach(Rule.MAX_DRAWDOWN, dd.action, f.drawdown_pct, dd.threshold_pct,
                          f"drawdown {f.drawdown_pct:.2f}% >= {dd.threshold_pct:g}%"))
    conc = limits.concentration
    held = sum(1 for v in f.exposures.values() if v)
    if conc.enabled and held >= 2 and f.concentration_pct >= conc.threshold_pct:
        out.append(Breach(Rule.CONCENTRATION, conc.action, f.concentration_pct, conc.threshold_pct,
                          f"largest position {f.concentration_pct:.1f}% of gross >= {conc.threshold_pct:g}%"))
    var = limits.var
    if var.enabled and f.var_pct is not None and f.var_scenarios >= MIN_VAR_SCENARIOS and f.var_pct >= var.max_pct:
        out.append(Breach(Rule.VAR, var.action, f.var_pct, var.max_pct,
                          f"VaR({var.confidence:g}) {f.var_pct:.2f}% >= {var.max_pct:g}%"))
    margin = limits.margin_usage
    if margin.enabled and f.margin_usage_pct >= margin.threshold_pct:
        out.append(Breach(Rule.MARGIN_USAGE, margin.action, f.margin_usage_pct, margin.threshold_pct,
                          f"margin usage {f.margin_usage_pct:.1f}% >= {margin.threshold_pct:g}%"))
    wr = limits.win_rate_floor
    if wr.enabled and f.closed_trades >= wr.min_trades and f.win_rate_pct < wr.min_pct:
        out.append(Breach(Rule.WIN_RATE_FLOOR, wr.action, f.win_rate_pct, wr.min_pct,
                          f"win rate {f.win_rate_pct:.1f}% < {wr.min_pct:g}% over {f.closed_trades} trades"))
    cs = limits.correlation_spike
    if cs.enabled and f.correlation is not None and f.correlation >= cs.threshold:
        out.append(Breach(Rule.CORRELATION_SPIKE, cs.action, f.correlation, cs.threshold,
                          f"average correlation {f.correlation:.2f} >= {cs.threshold:g}"))
    fresh = limits.data_freshness
    if fresh.enabled and f.stale_symbols:
        out.append(Breach(Rule.DATA_FRESHNESS, fresh.action, f.max_quote_age, fresh.max_age_seconds,
                          f"no quote for {f.max_quote_age:.0f}s (> {fresh.max_age_seconds:g}s) for: "
                          + ", ".join(f.stale_symbols[:10])))
    ma = limits.model_accuracy
    acc = f.model_accuracy_pct
    if ma.enabled and acc is not None and f.model_outcomes >= ma.min_outcomes:
        for below, action, level in ((ma.critical_below_pct, ma.critical_action, "critical"),
                                     (ma.alert_below_pct, ma.alert_action, "alert")):
            if acc < below:
                out.append(Breach(Rule.MODEL_ACCURACY, action, acc, below,
                                  f"model accuracy {acc:.1f}% < {below:g}% ({level}) over {f.model_outcomes} "
                                  "predictions"))
                break
    tripped = breaker_tripped(breaker, f)
    if tripped is not None:
        value = f.index_drop_pct if f.index_drop_pct >= breaker.index_drop_pct else (f.volatility_level or 0.0)
        threshold = breaker.index_drop_pct if f.index_drop_pct >= breaker.index_drop_pct else breaker.vix_level
        out.append(Breach(Rule.CIRCUIT_BREAKER, breaker.action, value, threshold, tripped))
    return out


def worst(breaches: list[Breach]) -> Breach | None:
    return max(breaches, key=lambda b: SEVERITY[b.action], default=None)
