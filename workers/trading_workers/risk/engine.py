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
* The circuit breaker watches the index proxy's drop from the day's first
  quote; it trips with its own action (Reduce by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trading_operator.api.riskpolicy import CircuitBreaker, Limits

SEVERITY = {"Alert": 0, "Reduce": 1, "Halt": 2, "Flatten": 3}
MIN_VAR_SCENARIOS = 20


@dataclass(frozen=True, slots=True)
class Breach:
    rule: str          # camelCase, as in the RiskPolicy (dailyLoss, maxDrawdown, ...)
    action: str        # Alert | Reduce | Halt | Flatten
    value: float
    threshold: float
    message: str

    @property
    def reason(self) -> str:
        """CamelCase condition reason, e.g. DailyLossHalt."""
        return f"{self.rule[0].upper()}{self.rule[1:]}{self.action}"


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


def evaluate(limits: Limits, breaker: CircuitBreaker, f: Figures) -> list[Breach]:
    out: list[Breach] = []
    loss = -f.daily_pnl_pct
    dl = limits.daily_loss
    if loss >= dl.halt_pct:
        out.append(Breach("dailyLoss", dl.halt_action, loss, dl.halt_pct,
                          f"daily loss {loss:.2f}% >= {dl.halt_pct:g}%"))
    elif loss >= dl.reduce_pct:
        out.append(Breach("dailyLoss", "Reduce", loss, dl.reduce_pct,
                          f"daily loss {loss:.2f}% >= {dl.reduce_pct:g}%"))
    dd = limits.max_drawdown
    if dd.enabled and f.drawdown_pct >= dd.threshold_pct:
        out.append(Breach("maxDrawdown", dd.action, f.drawdown_pct, dd.threshold_pct,
                          f"drawdown {f.drawdown_pct:.2f}% >= {dd.threshold_pct:g}%"))
    conc = limits.concentration
    held = sum(1 for v in f.exposures.values() if v)
    if conc.enabled and held >= 2 and f.concentration_pct >= conc.threshold_pct:
        out.append(Breach("concentration", conc.action, f.concentration_pct, conc.threshold_pct,
                          f"largest position {f.concentration_pct:.1f}% of gross >= {conc.threshold_pct:g}%"))
    var = limits.var
    if f.var_pct is not None and f.var_scenarios >= MIN_VAR_SCENARIOS and f.var_pct >= var.max_pct:
        out.append(Breach("var", var.action, f.var_pct, var.max_pct,
                          f"VaR({var.confidence:g}) {f.var_pct:.2f}% >= {var.max_pct:g}%"))
    margin = limits.margin_usage
    if margin.enabled and f.margin_usage_pct >= margin.threshold_pct:
        out.append(Breach("marginUsage", margin.action, f.margin_usage_pct, margin.threshold_pct,
                          f"margin usage {f.margin_usage_pct:.1f}% >= {margin.threshold_pct:g}%"))
    wr = limits.win_rate_floor
    if f.closed_trades >= wr.min_trades and f.win_rate_pct < wr.min_pct:
        out.append(Breach("winRateFloor", wr.action, f.win_rate_pct, wr.min_pct,
                          f"win rate {f.win_rate_pct:.1f}% < {wr.min_pct:g}% over {f.closed_trades} trades"))
    cs = limits.correlation_spike
    if f.correlation is not None and f.correlation >= cs.threshold:
        out.append(Breach("correlationSpike", cs.action, f.correlation, cs.threshold,
                          f"average correlation {f.correlation:.2f} >= {cs.threshold:g}"))
    if breaker.enabled and f.index_drop_pct >= breaker.index_drop_pct:
        out.append(Breach("circuitBreaker", breaker.action, f.index_drop_pct, breaker.index_drop_pct,
                          f"{breaker.index_symbol} down {f.index_drop_pct:.2f}% >= {breaker.index_drop_pct:g}%"))
    return out


def worst(breaches: list[Breach]) -> Breach | None:
    return max(breaches, key=lambda b: SEVERITY[b.action], default=None)
