"""The status vocabulary shared by the operator and every worker, and the pure status transactions.

A TradingSession's status is written by three parties: the operator (phase,
conditions, the halts it raises, what it clears on a resume), the risk
worker (its figures, the breaches it sees, the halts and Reducing latches
it raises) and the executor (its own report). Before this module each side
spelled conditions, reasons and halt actions as free strings, and a reason
one side wrote (``ConcentrationReduce``) was not the one the other side
tested (``Reduce``), so the operator silently undid a Reduce. Here every
word is an enum, and the transactions that change the latches are pure
functions over the pydantic status model, so both sides run the same code
and a word the operator does not know is an import error, not drift.

Latches (see docs/decisions/0010-reducing-latches.md):

* ``status.halt`` is present only while a halt is in force; its ``action``
  (Halt or Flatten) is a field, never a prefix of the reason. Clearing it
  moves it to ``status.lastHalt``.
* ``status.reducing`` is the same for Reducing: raised by a Reduce rule,
  the inference guard or the circuit breaker; only a human clears it, by
  naming its id in ``spec.clearReducingId`` once the rule that raised it is
  back within its limit.
"""

from __future__ import annotations

import datetime as dt
import secrets
from enum import StrEnum

from trading_operator.api.common import Condition


class ConditionType(StrEnum):
    """Every condition type a TradingSession carries."""

    READY = "Ready"                        # True only while the executor may trade normally (Active)
    WORKERS_AVAILABLE = "WorkersAvailable"
    HALTED = "Halted"
    REDUCING = "Reducing"
    RISK_BREACHED = "RiskBreached"         # a Reduce/Halt/Flatten rule is beyond its limit (blocks a resume)
    RISK_ALERT = "RiskAlert"               # an Alert rule is beyond its limit (blocks nothing)
    BROKER_CONNECTED = "BrokerConnected"
    DATA_FRESH = "DataFresh"
    POLICY_APPLIED = "PolicyApplied"
    PRE_MARKET_CHECKS = "PreMarketChecks"
    RESUMABLE = "Resumable"
    SUSPENDED = "Suspended"
    LIVE_TRADING_ALLOWED = "LiveTradingAllowed"
    CIRCUIT_BREAKER = "CircuitBreaker"
    RECONCILED = "Reconciled"              # the last end-of-day reconciliation found no difference
    SECRETS_CURRENT = "SecretsCurrent"     # every role runs the current version of each Secret it uses
    MODEL_ROLLOUT = "ModelRollout"         # True while a candidate model is being rolled out (canary steps)
    RETRAINING = "Retraining"              # True while a training Job for the session's model runs


class Reason(StrEnum):
    """Every condition reason and Event reason the platform writes (CamelCase, stable)."""

    # Ready
    TRADING = "Trading"
    HALTED = "Halted"
    REDUCING = "Reducing"
    SUSPENDED = "Suspended"
    OUT_OF_HOURS = "OutOfHours"
    PRE_MARKET_CHECKS_FAILING = "PreMarketChecksFailing"
    LIVE_TRADING_NOT_ALLOWED = "LiveTradingNotAllowed"
    POLICY_NOT_FOUND = "PolicyNotFound"
    POLICY_INVALID = "PolicyInvalid"
    POLICY_DELETING = "PolicyDeleting"
    WORKERS_NOT_READY = "WorkersNotReady"
    UNKNOWN_EXCHANGE = "UnknownExchange"
    PENDING = "Pending"
    # WorkersAvailable
    ALL_READY = "AllReady"
    # Halted / Reducing
    NOT_HALTED = "NotHalted"
    HALTED_BY_USER = "HaltedByUser"
    HALTED_BY_RISK = "HaltedByRisk"
    HALTED_BY_POLICY = "HaltedByPolicy"
    HALTED_BY_OPERATOR = "HaltedByOperator"
    HALTED_BY_ROTATION = "HaltedByRotation"
    NOT_REDUCING = "NotReducing"
    REDUCING_LATCHED = "ReducingLatched"
    POLICY_MODE_REDUCING = "PolicyModeReducing"
    REDUCING_CLEARED = "ReducingCleared"
    CLEAR_REFUSED = "ClearRefused"
    CLEAR_BLOCKED = "ClearBlocked"
    # RiskBreached / RiskAlert
    WITHIN_LIMITS = "WithinLimits"
    LIMITS_BREACHED = "LimitsBreached"
    ALERTING = "Alerting"
    NO_ALERT = "NoAlert"
    BREACH_CLEARED = "BreachCleared"
    # BrokerConnected
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    # DataFresh
    QUOTES_FRESH = "QuotesFresh"
    QUOTES_STALE = "QuotesStale"
    NO_RISK_REPORT = "NoRiskReport"
    RISK_REPORT_STALE = "RiskReportStale"
    # PolicyApplied
    POLICY_APPLIED = "PolicyApplied"
    # PreMarketChecks
    CHECKS_PASSED = "ChecksPassed"
    CHECKS_FAILING = "ChecksFailing"
    NOT_EVALUATED = "NotEvaluated"
    # Resumable
    AWAITING_RESUME = "AwaitingResume"
    STALE_HALT_ID = "StaleHaltId"
    RESUME_BLOCKED = "ResumeBlocked"
    RESUMED = "Resumed"
    RESUME_REFUSED = "ResumeRefused"
    # Suspended
    OPEN_ORDERS = "OpenOrders"
    RUNNING = "Running"
    SUSPEND_REFUSED = "SuspendRefused"
    UNSUSPENDED = "Unsuspended"
    # LiveTradingAllowed
    PAPER = "Paper"
    LIVE_ALLOWED = "LiveAllowed"
    # CircuitBreaker
    TRIPPED = "Tripped"
    NOT_TRIPPED = "NotTripped"
    # Reconciled (and the executor's Events on each reconciliation)
    RECONCILED_CLEAN = "ReconciledClean"
    RECONCILIATION_MISMATCH = "ReconciliationMismatch"
    RECONCILIATION_FAILED = "ReconciliationFailed"   # Event only: the run itself failed (not a transient outage)
    # SecretsCurrent
    CURRENT = "Current"
    ROLLING = "Rolling"                    # a role's pods are being replaced for a new Secret version
    ROTATION_WAITING = "RotationWaiting"   # the executor rolls only once it has handled the rotation halt
    SECRET_VERSIONS_UNKNOWN = "SecretVersionsUnknown"
    # ModelRollout (conditions and Events; docs/decisions/0017-model-rollout-in-the-operator.md)
    ROLLOUT_PROGRESSING = "RolloutProgressing"
    ROLLOUT_STEP_ADVANCED = "RolloutStepAdvanced"
    MODEL_PROMOTED = "ModelPromoted"
    MODEL_ROLLED_BACK = "ModelRolledBack"
    ROLLOUT_ABORTED = "RolloutAborted"
    MODEL_STABLE = "ModelStable"
    NO_MODEL = "NoModel"
    # Retraining
    RETRAIN_STARTED = "RetrainStarted"
    RETRAIN_SUCCEEDED = "RetrainSucceeded"
    RETRAIN_FAILED = "RetrainFailed"
    NOT_RETRAINING = "NotRetraining"
    # Events only
    SECRET_CHANGED = "SecretChanged"
    ROTATED = "Rotated"
    PHASE_CHANGED = "PhaseChanged"
    RISK_BREACHED = "RiskBreached"
    LIVE_TRADING_REFUSED = "LiveTradingRefused"
    FINALIZING = "Finalizing"
    FINALIZE_TIMEOUT = "FinalizeTimeout"
    POLICY_IN_USE = "PolicyInUse"
    POSITION_EXIT = "PositionExit"
    # status.model (the inference workers) and its Events
    MODEL_VERIFIED = "ModelVerified"        # loaded after its sha256 matched the manifest
    MODEL_UNVERIFIED = "ModelUnverified"    # a bare file without a manifest: loaded, nothing to check against
    MODEL_CORRUPT = "ModelCorrupt"          # the file does not match its manifest: refused, not served
    MODEL_LOAD_FAILED = "ModelLoadFailed"   # unreachable store, no manifest, not a model: refused


class Difference(StrEnum):
    """What an end-of-day reconciliation found different between the broker and the journal."""

    POSITION_MISMATCH = "PositionMismatch"          # a symbol's quantity differs (broker vs journal)
    FILL_MISSING_IN_JOURNAL = "FillMissingInJournal"  # the broker reports a fill of the day the journal lacks
    FILL_MISSING_AT_BROKER = "FillMissingAtBroker"    # the journal has a fill of the day the broker does not report
    UNKNOWN_BROKER_ORDER = "UnknownBrokerOrder"       # an open broker order the journal does not know


class DifferenceAction(StrEnum):
    """What the reconciliation did about a difference (the rule: adopt only on a session's own broker)."""

    ADOPTED = "Adopted"      # an unknown open order on a session-scoped broker, journaled now
    FLAGGED = "Flagged"      # named for a human (a shared account's order, any fill or position difference)


class ReconciliationTrigger(StrEnum):
    CLOSE = "Close"          # the phase reached the close (MarketClose, or AfterHours if missed)
    REQUEST = "Request"      # the trading.dev/reconcile-request annotation changed


class TradingState(StrEnum):
    """What executors may do (NautilusTrader's trading states)."""

    ACTIVE = "Active"
    REDUCING = "Reducing"   # only orders that reduce exposure
    HALTED = "Halted"       # no new orders; cancels allowed


class ModelState(StrEnum):
    """``status.model.state``: what the inference workers do with the model of ``spec.strategy.model.uri``."""

    SERVING = "Serving"
    REFUSED = "Refused"


class HaltSource(StrEnum):
    USER = "User"
    RISK = "Risk"
    POLICY = "Policy"
    OPERATOR = "Operator"
    ROTATION = "Rotation"   # the operator, to replace the executor after a Secret it uses changed


class HaltAction(StrEnum):
    """What executors do on top of refusing new orders: Halt applies spec.onHalt; Flatten closes positions."""

    HALT = "Halt"
    FLATTEN = "Flatten"


class ReducingSource(StrEnum):
    RISK = "Risk"                       # a portfolio rule with action Reduce
    INFERENCE = "Inference"             # the inference guard (NaN output, slow batches)
    CIRCUIT_BREAKER = "CircuitBreaker"  # the market circuit breaker


class RolloutPhase(StrEnum):
    """Where a model rollout stands (``status.modelRollout.phase``)."""

    STABLE = "Stable"              # one model serves every symbol; no candidate in progress
    PROGRESSING = "Progressing"    # the candidate serves the current step's share of the symbols
    PROMOTED = "Promoted"          # the candidate became the stable model (it serves every symbol)
    ROLLED_BACK = "RolledBack"     # the candidate degraded against the stable model and was withdrawn
    ABORTED = "Aborted"            # a user withdrew the candidate (spec.abortRolloutId)


class CandidateSource(StrEnum):
    """Where a candidate model came from."""

    SPEC = "Spec"          # spec.strategy.model.uri changed
    RETRAIN = "Retrain"    # a training Job offered it (status.modelCandidate)


class RetrainTrigger(StrEnum):
    """Why a training Job was started."""

    REQUEST = "Request"              # spec.retrainRequest changed
    ACCURACY_DROP = "AccuracyDrop"   # the stable model's live accuracy fell below its training accuracy
    NEW_ROWS = "NewRows"             # enough new quotes were scored since the stable model was trained
    SCHEDULE = "Schedule"            # the CronJob (spec.strategy.model.retrain.schedule)


class RuleAction(StrEnum):
    """A RiskPolicy rule's action, in increasing severity."""

    ALERT = "Alert"
    REDUCE = "Reduce"
    HALT = "Halt"
    FLATTEN = "Flatten"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def blocks_resume(self) -> bool:
        """Alert never blocks a resume; Reduce, Halt and Flatten do while the rule stays breached."""
        return self is not RuleAction.ALERT


_SEVERITY = {RuleAction.ALERT: 0, RuleAction.REDUCE: 1, RuleAction.HALT: 2, RuleAction.FLATTEN: 3}


class Rule(StrEnum):
    """The RiskPolicy rules the risk worker evaluates (camelCase, as spelled in the policy)."""

    DAILY_LOSS = "dailyLoss"
    MAX_DRAWDOWN = "maxDrawdown"
    CONCENTRATION = "concentration"
    VAR = "var"
    MARGIN_USAGE = "marginUsage"
    WIN_RATE_FLOOR = "winRateFloor"
    CORRELATION_SPIKE = "correlationSpike"
    CIRCUIT_BREAKER = "circuitBreaker"
    DATA_FRESHNESS = "dataFreshness"
    MODEL_ACCURACY = "modelAccuracy"


def rule_reason(rule: Rule | str, action: RuleAction | str) -> str:
    """The CamelCase reason for one rule in breach with one action, e.g. ``ConcentrationReduce``."""
    rule, action = str(rule), str(action)
    return f"{rule[0].upper()}{rule[1:]}{action}"


def new_halt_id() -> str:
    """``h-`` and ten lowercase hex characters (spec.resumeHaltId's pattern)."""
    return f"h-{secrets.token_hex(5)}"


def new_reducing_id() -> str:
    """``r-`` and ten lowercase hex characters (spec.clearReducingId's pattern)."""
    return f"r-{secrets.token_hex(5)}"


def set_condition(conditions: list[Condition], type_: ConditionType | str, status: bool | str, reason: Reason | str,
                  message: str, now: dt.datetime, generation: int | None = None) -> bool:
    """Set one condition in place; return True when its status or reason changed (worth an Event).

    lastTransitionTime moves only when the status does (the metav1 contract).
    """
    value = status if isinstance(status, str) else ("True" if status else "False")
    for i, cond in enumerate(conditions):
        if cond.type == type_:
            flipped = cond.status != value
            conditions[i] = Condition(type=str(type_), status=value, reason=str(reason),  # type: ignore[arg-type]
                                      message=message[:4000],
                                      last_transition_time=now if flipped else cond.last_transition_time,
                                      observed_generation=generation)
            return flipped or cond.reason != reason
    conditions.append(Condition(type=str(type_), status=value, reason=str(reason),  # type: ignore[arg-type]
                                message=message[:4000], last_transition_time=now, observed_generation=generation))
    return True


def get_condition(conditions: list[Condition], type_: ConditionType | str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: ConditionType | str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == "True"
