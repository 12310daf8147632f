"""RiskPolicy: the limits a session trades under, and the risk owner's kill switch.

Thresholds come from the runbooks (daily loss reduce 2 % / halt 3 %,
concentration 30 %, VaR 5 % at 95 %, margin 80 %, win-rate floor 40 %,
correlation spike 0.9) and per-order controls from SEC 15c3-5 / FIA
guidance. Every rule carries an action so the owner decides what a breach
does. Cross-field rules are CEL, so the API server refuses them.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from trading_operator.api import common
from trading_operator.api.common import ApiModel, cel, object_default, rules
from trading_operator.api.session import SYMBOL_PATTERN

Action = Literal["Alert", "Reduce", "Halt", "Flatten"]
ACTION_DESCRIPTION = ("What a breach does: Alert (Event, RiskAlert condition and metric; blocks nothing), "
                      "Reduce (only exposure-reducing orders; latched in status.reducing until cleared), "
                      "Halt (stop new orders and apply onHalt; latched), Flatten (halt and close positions).")
ENABLED_DESCRIPTION = "Whether the rule is evaluated (every rule can be switched off the same way)."


def _enabled() -> bool:
    return pydantic.Field(default=True, description=ENABLED_DESCRIPTION)  # type: ignore[no-any-return]


def _pct(default: float, description: str) -> float:
    return pydantic.Field(default=default, gt=0, le=100, description=description)  # type: ignore[no-any-return]


class PctRule(ApiModel):
    """A percentage threshold with an action."""

    threshold_pct: float = _pct(5.0, "Threshold in percent (0 < x <= 100).")
    action: Action = pydantic.Field(default="Alert", description=ACTION_DESCRIPTION)
    enabled: bool = _enabled()


class DailyLoss(ApiModel):
    """Daily loss as a percentage of start-of-day equity: reduce first, then halt."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("self.reducePct < self.haltPct", "reducePct must be below haltPct",
            field_path=".reducePct", reason="FieldValueInvalid"),
    ))

    reduce_pct: float = _pct(2.0, "Loss (percent) at which the session moves to Reducing.")
    halt_pct: float = _pct(3.0, "Loss (percent) at which the session halts (latched).")
    halt_action: Action = pydantic.Field(default="Halt", description=ACTION_DESCRIPTION)
    enabled: bool = _enabled()


class VaRRule(ApiModel):
    """Historical portfolio value-at-risk."""

    max_pct: float = _pct(5.0, "Maximum one-day VaR in percent of equity.")
    confidence: float = pydantic.Field(default=0.95, ge=0.5, lt=1, description="Confidence level (e.g. 0.95).")
    lookback: int = pydantic.Field(default=250, ge=20, le=5000, description="Observations in the historical window.")
    action: Action = pydantic.Field(default="Reduce", description=ACTION_DESCRIPTION)
    enabled: bool = _enabled()


class WinRateFloor(ApiModel):
    """Share of winning round trips over the day."""

    min_pct: float = _pct(40.0, "Minimum share of winning round trips, percent.")
    min_trades: int = pydantic.Field(default=20, ge=1, le=100_000,
                                     description="Round trips before the floor is evaluated.")
    action: Action = pydantic.Field(default="Alert", description=ACTION_DESCRIPTION)
    enabled: bool = _enabled()


class CorrelationSpike(ApiModel):
    """Average pairwise correlation of the positions' returns."""

    threshold: float = pydantic.Field(default=0.9, gt=0, le=1,
                                      description="Average pairwise correlation of positions that counts as a spike.")
    action: Action = pydantic.Field(default="Alert", description=ACTION_DESCRIPTION)
    enabled: bool = _enabled()


class DataFreshness(ApiModel):
    """A silent feed: a traded symbol with no quote for longer than maxAgeSeconds (runbook: 60 s)."""

    max_age_seconds: float = pydantic.Field(default=60.0, ge=1, le=86_400,
                                            description="Age of a symbol's last quote beyond which it is stale.")
    action: Action = pydantic.Field(default="Halt", description=ACTION_DESCRIPTION)
    enabled: bool = _enabled()


class ModelAccuracy(ApiModel):
    """The stable model's live directional accuracy (status.inference), as the runbook watches it.

    Off by default: on the simulated exchange's default random walk no model can beat 50 %.
    """

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("self.criticalBelowPct < self.alertBelowPct", "criticalBelowPct must be below alertBelowPct",
            field_path=".criticalBelowPct", reason="FieldValueInvalid"),
    ))

    alert_below_pct: float = _pct(55.0, "Accuracy (percent) below which alertAction applies (runbook: 55).")
    critical_below_pct: float = _pct(50.0, "Accuracy (percent) below which criticalAction applies (runbook: 50).")
    alert_action: Action = pydantic.Field(default="Alert", description=ACTION_DESCRIPTION)
    critical_action: Action = pydantic.Field(default="Reduce", description=ACTION_DESCRIPTION)
    min_outcomes: int = pydantic.Field(default=200, ge=10, le=10_000_000,
                                       description="Judged predictions in the window before the rule is evaluated.")
    enabled: bool = pydantic.Field(default=False, description="Whether the rule is evaluated (off by default).")


def _rule(default_pct: float, action: str, description: str) -> PctRule:
    return pydantic.Field(  # type: ignore[no-any-return]
        default_factory=lambda: PctRule(threshold_pct=default_pct, action=action),  # type: ignore[arg-type]
        json_schema_extra={"default": {"thresholdPct": default_pct, "action": action}},
        description=description)


class Limits(ApiModel):
    """Portfolio limits evaluated by the risk worker."""

    daily_loss: DailyLoss = pydantic.Field(default_factory=DailyLoss, json_schema_extra=object_default(DailyLoss),
                                           description="Daily loss: Reducing at reducePct, halt at haltPct.")
    max_drawdown: PctRule = _rule(10.0, "Halt", "Peak-to-trough equity drawdown, percent.")
    concentration: PctRule = _rule(30.0, "Reduce", "Largest single position as percent of gross exposure.")
    var: VaRRule = pydantic.Field(default_factory=VaRRule, json_schema_extra=object_default(VaRRule),
                                  description="Historical value-at-risk.")
    margin_usage: PctRule = _rule(80.0, "Reduce", "Margin used as percent of available margin.")
    win_rate_floor: WinRateFloor = pydantic.Field(default_factory=WinRateFloor, json_schema_extra=object_default(WinRateFloor),
                                                  description="Win-rate floor.")
    correlation_spike: CorrelationSpike = pydantic.Field(
        default_factory=CorrelationSpike, json_schema_extra=object_default(CorrelationSpike), description="Correlation spike.")
    data_freshness: DataFreshness = pydantic.Field(
        default_factory=DataFreshness, json_schema_extra=object_default(DataFreshness),
        description="Silent feed: evaluated while the phase allows orders.")
    model_accuracy: ModelAccuracy = pydantic.Field(
        default_factory=ModelAccuracy, json_schema_extra=object_default(ModelAccuracy),
        description="Live accuracy of the session's stable model (strategy model only; off by default).")


class OrderControls(ApiModel):
    """Per-order pre-trade checks run by the executor before anything is journaled or sent."""

    max_order_notional: float = pydantic.Field(default=100_000.0, gt=0, le=1e10,
                                               description="Largest single order, USD notional.")
    max_position_notional: float = pydantic.Field(default=250_000.0, gt=0, le=1e11,
                                                  description="Largest position per symbol, USD notional.")
    max_orders_per_second: float = pydantic.Field(default=50.0, gt=0, le=100_000,
                                                  description="Order rate limit per session (token bucket).")
    price_collar_pct: float = _pct(5.0, "Fat-finger collar: limit price at most this far from the last trade.")
    duplicate_window_seconds: float = pydantic.Field(
        default=1.0, ge=0, le=3600,
        description="Same symbol, side, quantity and price within this window is a duplicate.")
    max_open_orders: int = pydantic.Field(default=200, ge=1, le=100_000, description="Open orders at most.")
    max_intent_age_seconds: float = pydantic.Field(
        default=30.0, ge=0, le=86_400,
        description="An order intent older than this when the executor reads it (the time its bus message was "
                    "written) is refused as StaleIntent, journaled and never sent: intents queued while no executor "
                    "could take them (a crash, a rollout) are not traded on a view the strategy no longer has. "
                    "0: no age limit.")
    restricted_symbols: list[str] = pydantic.Field(
        default_factory=list, max_length=10_000, description="Symbols that must never be traded.",
        json_schema_extra={"items": {"type": "string", "pattern": SYMBOL_PATTERN, "maxLength": 16},
                           "x-kubernetes-list-type": "set"})


class CircuitBreaker(ApiModel):
    """Market-wide circuit breaker: an index drop from the prior close, or a volatility index spike.

    While tripped, its action applies (Reduce by default, latched like any Reduce) and the per-order
    notional, position and rate limits are multiplied by limitScale; status.risk.circuitBreaker shows
    the scaled limits.
    """

    enabled: bool = _enabled()
    index_symbol: str = pydantic.Field(default="SPY", pattern=SYMBOL_PATTERN, max_length=16,
                                       description="Index proxy whose drop from the prior close trips the breaker.")
    index_drop_pct: float = _pct(7.0, "Drop of the index proxy from the prior close that trips the breaker, percent.")
    volatility_symbol: str = pydantic.Field(
        default="VIX", pattern=SYMBOL_PATTERN, max_length=16,
        description="Symbol whose quote is the volatility index level (the market-data worker publishes it).")
    vix_level: float = pydantic.Field(default=50.0, gt=0, le=1000,
                                      description="Volatility index level that trips the breaker.")
    limit_scale: float = pydantic.Field(default=0.3, gt=0, le=1,
                                        description="Factor applied to per-order notional, position and rate limits "
                                                    "while tripped.")
    action: Action = pydantic.Field(default="Reduce", description=ACTION_DESCRIPTION)


class PositionExits(ApiModel):
    """Per-position exits and a gross-exposure cap, sent by the risk worker as reduce-only market orders.

    Each exit is an order intent like any other: the executor runs it through the pre-trade checks
    and journals it before sending; its idempotency key names the rule, the symbol and the position
    (quantity and average price), so one position gets one exit of each kind, even across a restart
    of the risk worker. Off by default.
    """

    enabled: bool = pydantic.Field(default=False, description="Whether the risk worker sends exits.")
    stop_loss_pct: float | None = pydantic.Field(
        default=None, gt=0, le=100, description="Close a position this far (percent) against its average price.")
    take_profit_pct: float | None = pydantic.Field(
        default=None, gt=0, le=1000, description="Close a position this far (percent) in favour of its average price.")
    trailing_stop_pct: float | None = pydantic.Field(
        default=None, gt=0, le=100,
        description="Close a position this far (percent) below its best price since the risk worker saw it open "
                    "(the best price is kept in memory: after a restart it trails from the current price).")
    max_gross_exposure: float | None = pydantic.Field(
        default=None, gt=0, le=1e12,
        description="Gross exposure cap, USD: beyond it the largest position is reduced by the excess.")


class ExtendedHours(ApiModel):
    """What the executor may send in PreMarket and AfterHours (the extended-hours phases).

    Enforced by the executor's pre-trade checks (rejection reason ExtendedHours). Orders sent in
    those phases are marked extended-hours: Alpaca receives its extended_hours flag on DAY limit
    orders, and both Alpaca and the simulated exchange refuse an extended-hours market order. The
    defaults keep both phases open to every order (as before this field); the runbook's "limited"
    trading is ``allowed: true, limitOrdersOnly: true`` with a notional scale below 1.
    """

    allowed: bool = pydantic.Field(default=True, description="Whether new orders may be sent in PreMarket and "
                                                             "AfterHours at all.")
    limit_orders_only: bool = pydantic.Field(default=False,
                                             description="Refuse market orders in PreMarket and AfterHours.")
    max_order_notional_scale: float = pydantic.Field(
        default=1.0, gt=0, le=1,
        description="Factor applied to orderControls.maxOrderNotional in PreMarket and AfterHours.")


class RiskPolicySpec(ApiModel):
    """Limits and the kill switch for every session that references this policy."""

    mode: Literal["Active", "Reducing", "Halted"] = pydantic.Field(
        default="Active",
        description="The risk owner's kill switch for every referencing session: Active (trade normally), "
                    "Reducing (only exposure-reducing orders), Halted (halt every session; latched).")
    allow_live: bool = pydantic.Field(
        default=False,
        description="Allow live (non-paper) trading for sessions that name this policy. Also needs the "
                    "namespace label trading.dev/live=enabled; without both, a non-paper session is refused at "
                    "admission (chart policy) and by the operator and the executor.")
    limits: Limits = pydantic.Field(default_factory=Limits, json_schema_extra=object_default(Limits),
                                    description="Portfolio limits.")
    order_controls: OrderControls = pydantic.Field(default_factory=OrderControls, json_schema_extra=object_default(OrderControls),
                                                   description="Per-order pre-trade checks.")
    extended_hours: ExtendedHours = pydantic.Field(
        default_factory=ExtendedHours, json_schema_extra=object_default(ExtendedHours),
        description="What PreMarket and AfterHours allow (pre-trade check ExtendedHours).")
    exits: PositionExits = pydantic.Field(default_factory=PositionExits, json_schema_extra=object_default(PositionExits),
                                          description="Stop-loss, take-profit, trailing stop, gross-exposure cap.")
    circuit_breaker: CircuitBreaker = pydantic.Field(default_factory=CircuitBreaker,
                                                     json_schema_extra=object_default(CircuitBreaker),
                                                     description="Market-wide circuit breaker.")

    @pydantic.model_validator(mode="after")
    def _reduce_below_halt(self) -> RiskPolicySpec:
        if self.limits.daily_loss.reduce_pct >= self.limits.daily_loss.halt_pct:
            raise ValueError("limits.dailyLoss.reducePct must be below haltPct")
        return self


class RiskPolicyStatus(ApiModel):
    observed_generation: int | None = pydantic.Field(default=None, ge=0, description="Generation last validated.")
    conditions: list[common.Condition] = pydantic.Field(
        default_factory=list, max_length=16, description="Valid: the policy parsed and is enforceable.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    sessions: list[str] = pydantic.Field(default_factory=list, max_length=10_000,
                                         description="TradingSessions that reference this policy.")
    session_count: int = pydantic.Field(default=0, ge=0, description="Number of referencing sessions.")


class RiskPolicy(ApiModel):
    """Risk limits and kill switch."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: str = common.API_VERSION
    kind: str = "RiskPolicy"
    metadata: common.ObjectMeta = pydantic.Field(default_factory=common.ObjectMeta)
    spec: RiskPolicySpec = pydantic.Field(default_factory=RiskPolicySpec)
    status: RiskPolicyStatus = pydantic.Field(default_factory=RiskPolicyStatus)
