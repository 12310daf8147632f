"""TradingSession: what to trade, with which broker, strategy, workers and calendar.

The spec is the user's intent (including the user's halt switch); the
status is the controller's and the workers' observations, including
automatic halts, which live in status so a GitOps controller never reverts
them.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Literal

import pydantic

from trading_operator.api import common
from trading_operator.api.common import ApiModel, cel, object_default, rules
from trading_operator.api.phases import Phase
from trading_operator.api.status import (
    CandidateSource,
    Difference,
    DifferenceAction,
    HaltAction,
    HaltSource,
    ModelState,
    ReconciliationTrigger,
    ReducingSource,
    RetrainTrigger,
    RolloutPhase,
    RuleAction,
    TradingState,
)

SYMBOL_PATTERN = r"^[A-Z][A-Z0-9]{0,9}([./][A-Z0-9]{1,5})?$"
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class Role(StrEnum):
    MARKET_DATA = "marketData"
    STRATEGY = "strategy"
    INFERENCE = "inference"
    RISK = "risk"
    EXECUTOR = "executor"


class SecretRef(ApiModel):
    """Where the broker's API keys live. Keys are never written inline in the session."""

    name: str = pydantic.Field(description="Name of a Secret in the session's namespace.",
                               min_length=1, max_length=253)
    key_id_key: str = pydantic.Field(default="APCA_API_KEY_ID", max_length=253,
                                     description="Key in the Secret holding the API key id.")
    secret_key_key: str = pydantic.Field(default="APCA_API_SECRET_KEY", max_length=253,
                                         description="Key in the Secret holding the API secret key.")


class SimulatedExchange(ApiModel):
    """Knobs of the embedded simulated exchange."""

    seed: int = pydantic.Field(default=42, ge=0, le=2**31 - 1,
                               description="Seed of the deterministic price process.")
    latency_ms: float = pydantic.Field(default=0.0, ge=0, le=10_000,
                                       description="Added latency per order acknowledgement, in milliseconds.")
    initial_cash: float = pydantic.Field(default=1_000_000.0, gt=0, le=1e12,
                                         description="Starting cash of the simulated account, in USD.")
    volatility: float = pydantic.Field(default=0.02, ge=0, le=1,
                                       description="Daily volatility of the simulated price process (fraction).")
    return_autocorrelation: float = pydantic.Field(
        default=0.0, ge=-0.9, le=0.9,
        description="Correlation of each price step's return with the previous one: 0 is a random walk (no "
                    "model beats 50 % there), above 0 trends, below 0 reverts (gives models something to "
                    "predict, for drills and demos of the model lifecycle).")


class BrokerSpec(ApiModel):
    """Which broker the executor sends orders to."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("self.kind != 'alpaca' || has(self.credentialsSecretRef)",
            "an alpaca broker needs credentialsSecretRef (keys are never inline)",
            field_path=".credentialsSecretRef", reason="FieldValueRequired"),
    ))

    kind: Literal["simulated", "alpaca"] = pydantic.Field(
        default="simulated",
        description="simulated: the embedded in-process exchange (no keys, no network). "
                    "alpaca: Alpaca's trading API through alpaca-py.")
    paper: bool = pydantic.Field(
        default=True,
        description="Trade on the broker's paper (simulated money) endpoint. Live trading (false) needs the "
                    "RiskPolicy's allowLive and the namespace label trading.dev/live=enabled: without both the "
                    "chart's admission policy refuses the session, the operator holds its executor at zero "
                    "replicas (LiveTradingAllowed=False) and the executor never connects to the live endpoint.")
    credentials_secret_ref: SecretRef | None = pydantic.Field(
        default=None, description="Secret with the broker's API keys (required for alpaca).")
    simulated: SimulatedExchange = pydantic.Field(
        default_factory=SimulatedExchange, json_schema_extra=object_default(SimulatedExchange),
        description="Settings of the simulated exchange (kind: simulated).")


class RolloutSpec(ApiModel):
    """How a new model is rolled out: canary steps over the session's symbols, judged against the stable model.

    The candidate serves the first step's share of the symbols; both models score every symbol (the one not
    serving a symbol only in the shadow), so their directional accuracy is compared on the same quotes. After
    ``dwellSeconds`` at a step, with ``minOutcomes`` judged predictions each, the rollout advances while the
    candidate's accuracy is within ``maxAccuracyDropPct`` points of the stable model's and its batch latency
    within ``maxLatencyRatio`` of it; reaching 100 promotes it. It rolls back by itself as soon as either fails.
    """

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("self.steps.isSorted() && self.steps[self.steps.size() - 1] == 100",
            "steps must rise and end at 100", field_path=".steps", reason="FieldValueInvalid"),
    ))

    steps: list[int] = pydantic.Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=10,
        description="Percent of the session's symbols the candidate serves at each step, rising, ending at 100 "
                    "(reaching 100 promotes it). Runbook: 10, 50, 100.",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 100},
                           "x-kubernetes-list-type": "set", "default": [10, 50, 100]})
    dwell_seconds: float = pydantic.Field(default=300.0, ge=1, le=7 * 86_400,
                                          description="Minimum wall seconds at a step before it may advance.")
    min_outcomes: int = pydantic.Field(
        default=200, ge=10, le=10_000_000,
        description="Judged directional predictions each model needs at a step before the step is judged "
                    "(an accuracy on fewer is noise).")
    max_accuracy_drop_pct: float = pydantic.Field(
        default=5.0, ge=0, le=100,
        description="Roll back when the candidate's accuracy is more than this many percentage points below "
                    "the stable model's on the same quotes (runbook: a drop of more than 5 %).")
    max_latency_ratio: float = pydantic.Field(
        default=2.0, ge=1, le=1000,
        description="Roll back when the candidate's mean batch time exceeds this multiple of the stable "
                    "model's (differences under 1 ms count as equal).")

    @pydantic.field_validator("steps")
    @classmethod
    def _rising(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)) or value[-1] != 100 or value[0] < 1:
            raise ValueError("steps must rise strictly from at least 1 and end at 100")
        return value


class RetrainSpec(ApiModel):
    """Retraining: a training Job that writes a new versioned artifact and offers it to the rollout.

    A Job starts on ``spec.retrainRequest`` (a new value), on ``schedule`` (a CronJob), or automatically when
    the stable model's live accuracy falls ``onAccuracyDropPct`` points below its training accuracy or
    ``onNewRows`` quotes were scored since it became stable. Its artifact is a candidate: it goes through the
    staged rollout, never straight to 100 %.
    """

    output: str = pydantic.Field(
        description="Where training Jobs publish versions (docs/model-artifacts.md): s3://bucket/prefix (with the "
                    "model's s3 access), pvc://claim/dir or file:///dir; each run is a new version "
                    "<output>/<session>/<version> with a manifest (sha256, training data, metrics).",
        pattern=r"^(file|pvc|s3)://.+$", max_length=1024)
    schedule: str | None = pydantic.Field(
        default=None, max_length=128,
        description="Cron schedule of a retraining CronJob (e.g. '0 6 * * 6': weekly, as the runbook). Absent: "
                    "no CronJob.")
    time_zone: str = pydantic.Field(default="Etc/UTC", max_length=64,
                                    description="IANA time zone the schedule is read in.")
    samples: int = pydantic.Field(default=40_000, ge=1_000, le=10_000_000,
                                  description="Training windows per run (synthetic price process).")
    epochs: int = pydantic.Field(default=3, ge=1, le=100, description="Passes over the training windows.")
    seed: int | None = pydantic.Field(default=None, ge=0, le=2**31 - 1,
                                      description="Training seed (absent: a new one per run, from its start time).")
    on_accuracy_drop_pct: float | None = pydantic.Field(
        default=5.0, gt=0, le=100,
        description="Start a Job when the stable model's live accuracy is this many points below its training "
                    "accuracy (runbook: accuracy drop > 5 %). Absent: no such trigger.")
    on_new_rows: int | None = pydantic.Field(
        default=10_000, ge=1, le=10**12,
        description="Start a Job once this many quotes were scored since the stable model was adopted "
                    "(runbook: > 10k new rows). Absent: no such trigger.")
    min_interval_seconds: float = pydantic.Field(
        default=3600.0, ge=0, le=30 * 86_400,
        description="No automatic Job sooner than this after the last one started (requests are not limited).")


class ModelSpec(ApiModel):
    """A torch model artifact used by the inference workers."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("!self.uri.startsWith('s3://') || has(self.s3)",
            "an s3:// model needs s3 (endpoint, region and credentialsSecretRef)",
            field_path=".s3", reason="FieldValueRequired"),
        cel("!has(self.retrain) || !self.retrain.output.startsWith('s3://') || has(self.s3)",
            "retraining into s3:// needs s3 (endpoint, region and credentialsSecretRef)",
            field_path=".s3", reason="FieldValueRequired"),
        cel("!self.uri.startsWith('pvc://') || self.uri.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^/].*$')",
            "a pvc:// model is pvc://CLAIM/path (CLAIM a PersistentVolumeClaim of the session's namespace)",
            field_path=".uri", reason="FieldValueInvalid"),
    ))

    uri: str = pydantic.Field(
        default="builtin://default",
        description="Model artifact: builtin://default (shipped with the workers); a published version "
                    "s3://bucket/prefix/NAME/VERSION or pvc://CLAIM/path/NAME/VERSION (a directory with "
                    "manifest.json: its sha256 is checked before the model is served, docs/model-artifacts.md); "
                    "or a bare file pvc://CLAIM/path/model.pt or file:///path (served unverified). A pvc:// "
                    "claim is mounted read-only into the inference pods at /models/CLAIM. "
                    "Changing it on a running session starts a staged rollout (rollout); it restarts no worker "
                    "unless it names another PVC claim, which the inference pods must then mount.",
        pattern=r"^(builtin|file|pvc|s3)://.+$", max_length=1024)
    s3: common.S3Access | None = pydantic.Field(
        default=None, description="Where the s3:// bucket is and the Secret with its keys (required for s3://).")
    device: Literal["cuda", "cpu"] = pydantic.Field(
        default="cuda",
        description="cuda schedules inference on the GPU pool (nvidia.com/gpu limit, pool nodeSelector "
                    "and toleration); cpu drops them. On a node without a GPU the worker falls back to cpu.")
    batch_size: int = pydantic.Field(default=256, ge=1, le=65536,
                                     description="Maximum predictions per inference batch.")
    max_latency_ms: float = pydantic.Field(
        default=50.0, gt=0, le=60_000,
        description="A batch slower than this (or any NaN output) moves the session to Reducing.")
    quality_window: int = pydantic.Field(
        default=500, ge=10, le=1_000_000,
        description="Judged directional predictions in each model's sliding accuracy window (status.inference).")
    report_seconds: float = pydantic.Field(
        default=10.0, ge=0.5, le=3600,
        description="How often the inference worker reports quality to status.inference and reads the rollout.")
    rollout: RolloutSpec = pydantic.Field(default_factory=RolloutSpec, json_schema_extra=object_default(RolloutSpec),
                                          description="Staged rollout of a new model (canary steps, rollback).")
    retrain: RetrainSpec | None = pydantic.Field(default=None,
                                                 description="Retraining Jobs (absent: none).")


class StrategySpec(ApiModel):
    """The trading strategy the strategy workers run."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("self.name != 'model' || has(self.model)",
            "strategy 'model' needs a model", field_path=".model", reason="FieldValueRequired"),
    ))

    name: Literal["momentum", "mean-reversion", "model"] = pydantic.Field(
        default="momentum",
        description="momentum and mean-reversion are rule-based; model uses the torch model in `model`.")
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "default": {}},
        description="Strategy parameters (free-form, e.g. lookback, threshold, orderQty).")
    model: ModelSpec | None = pydantic.Field(default=None, description="Model for the inference workers.")


class CalendarSpec(ApiModel):
    """The exchange calendar that drives the session's phases."""

    exchange: str = pydantic.Field(
        default="XNYS", pattern=r"^[A-Z0-9]{2,8}$",
        description="Exchange calendar code (ISO 10383 MIC as used by exchange_calendars, e.g. XNYS, XNAS).")
    timezone: str = pydantic.Field(default="America/New_York", max_length=64,
                                   description="IANA time zone of the pre-market and after-hours times.")
    pre_market_start: str = pydantic.Field(default="04:00", pattern=HHMM_PATTERN,
                                           description="Start of pre-market trading, HH:MM local time.")
    after_hours_end: str = pydantic.Field(default="20:00", pattern=HHMM_PATTERN,
                                          description="End of after-hours trading, HH:MM local time.")


class SnapshotRetention(ApiModel):
    """How long the journal keeps the risk worker's P&L snapshots (one every 5 s) at full resolution.

    Off by default: without ``downsampleAfterDays`` and ``deleteAfterDays`` nothing is removed. The
    risk worker applies it at start and hourly. Removed rows are gone from the journal: take a Backup
    first if they must be kept (docs/backup.md).
    """

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("!has(self.downsampleAfterDays) || !has(self.deleteAfterDays) || "
            "self.downsampleAfterDays < self.deleteAfterDays",
            "downsampleAfterDays must be below deleteAfterDays", reason="FieldValueInvalid"),
    ))

    downsample_after_days: int | None = pydantic.Field(
        default=None, ge=1, le=36_500,
        description="Snapshots older than this many days keep one row (the last) per downsampleSeconds.")
    downsample_seconds: int = pydantic.Field(default=300, ge=10, le=86_400,
                                             description="Bucket of the downsampled snapshots, seconds.")
    delete_after_days: int | None = pydantic.Field(default=None, ge=1, le=36_500,
                                                   description="Snapshots older than this many days are deleted.")

    @pydantic.model_validator(mode="after")
    def _downsample_before_delete(self) -> SnapshotRetention:
        if (self.downsample_after_days is not None and self.delete_after_days is not None
                and self.downsample_after_days >= self.delete_after_days):
            raise ValueError("downsampleAfterDays must be below deleteAfterDays")
        return self


class JournalSpec(ApiModel):
    """What the trade journal keeps."""

    pnl_snapshots: SnapshotRetention = pydantic.Field(
        default_factory=SnapshotRetention, json_schema_extra=object_default(SnapshotRetention),
        description="Retention of the P&L snapshots (pnl_snapshots).")


class ClockSpec(ApiModel):
    """Wall time, or a simulated clock for drills and demos."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("self.mode == 'simulated' || !has(self.start)",
            "start only applies to a simulated clock", field_path=".start", reason="FieldValueForbidden"),
    ))

    mode: Literal["wall", "simulated"] = pydantic.Field(
        default="wall", description="wall: real time. simulated: starts at `start` and runs `speed` times faster.")
    speed: float = pydantic.Field(default=1.0, ge=1, le=100_000,
                                  description="Simulated seconds per real second (simulated clock only).")
    start: dt.datetime | None = pydantic.Field(
        default=None, description="Simulated time at the session's start (RFC 3339). Default: now.")


class Toleration(ApiModel):
    """A pod toleration (subset of core/v1 Toleration)."""

    key: str | None = pydantic.Field(default=None, max_length=316, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = pydantic.Field(default=None, description="Exists or Equal.")
    value: str | None = pydantic.Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = pydantic.Field(
        default=None, description="Taint effect to tolerate; empty tolerates all.")


class Resources(ApiModel):
    """Compute requests and limits (Kubernetes quantities)."""

    requests: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Minimum resources, e.g. cpu: 100m, memory: 128Mi.",
        json_schema_extra={"additionalProperties": {"type": "string", "pattern": QUANTITY_PATTERN}})
    limits: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Maximum resources, e.g. memory: 512Mi.",
        json_schema_extra={"additionalProperties": {"type": "string", "pattern": QUANTITY_PATTERN}})


class WorkerSpec(ApiModel):
    """One worker role's Deployment."""

    replicas: int = pydantic.Field(default=1, ge=0, le=20, description="Number of worker pods.")
    resources: Resources = pydantic.Field(default_factory=Resources,
                                          description="Compute requests and limits of the worker container.")
    image: str | None = pydantic.Field(default=None, max_length=512,
                                       description="Worker image; default from the operator's settings.")
    node_selector: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Node labels the pods must land on (merged over defaults).")
    tolerations: list[Toleration] = pydantic.Field(
        default_factory=list, max_length=16, description="Extra tolerations for the pods.")


class ExecutorWorkerSpec(WorkerSpec):
    """The executor: at most one replica, so one process owns a session's order flow."""

    replicas: int = pydantic.Field(default=1, ge=0, le=1,
                                   description="0 or 1: a single executor owns the session's order flow.")


class WorkersSpec(ApiModel):
    """Per-role worker settings."""

    market_data: WorkerSpec = pydantic.Field(default_factory=WorkerSpec, json_schema_extra=object_default(WorkerSpec),
                                             description="Market-data workers (publish quotes to the bus).")
    strategy: WorkerSpec = pydantic.Field(default_factory=WorkerSpec, json_schema_extra=object_default(WorkerSpec),
                                          description="Strategy workers (turn quotes into signals).")
    inference: WorkerSpec = pydantic.Field(default_factory=WorkerSpec, json_schema_extra=object_default(WorkerSpec),
                                           description="Inference workers (torch; GPU pool unless model.device is cpu).")
    risk: WorkerSpec = pydantic.Field(default_factory=WorkerSpec, json_schema_extra=object_default(WorkerSpec),
                                      description="Risk worker (portfolio risk; writes automatic halts to status).")
    executor: ExecutorWorkerSpec = pydantic.Field(
        default_factory=ExecutorWorkerSpec, json_schema_extra=object_default(ExecutorWorkerSpec),
        description="Executor (pre-trade checks, journal, broker).")

    def for_role(self, role: Role | str) -> WorkerSpec:
        return getattr(self, pydantic.alias_generators.to_snake(Role(role).value))


class TradingSessionSpec(ApiModel):
    """Desired state of a trading session."""


    broker: BrokerSpec = pydantic.Field(default_factory=BrokerSpec, json_schema_extra=object_default(BrokerSpec),
                                        description="Broker the executor trades with.")
    symbols: list[str] = pydantic.Field(
        min_length=1, max_length=500,
        description="Tickers to trade (1 to 500, unique, upper case, e.g. AAPL, BRK.B).",
        json_schema_extra={"items": {"type": "string", "pattern": SYMBOL_PATTERN, "maxLength": 16},
                           "x-kubernetes-list-type": "set"})
    strategy: StrategySpec = pydantic.Field(default_factory=StrategySpec, json_schema_extra=object_default(StrategySpec),
                                            description="Strategy and its parameters.")
    risk_policy_ref: common.LocalObjectRef = pydantic.Field(
        description="RiskPolicy (same namespace) whose limits and mode this session obeys.")
    calendar: CalendarSpec = pydantic.Field(default_factory=CalendarSpec, json_schema_extra=object_default(CalendarSpec),
                                            description="Exchange calendar and extended-hours window.")
    clock: ClockSpec = pydantic.Field(default_factory=ClockSpec, json_schema_extra=object_default(ClockSpec),
                                      description="Session clock: wall time or simulated.")
    journal: JournalSpec = pydantic.Field(default_factory=JournalSpec, json_schema_extra=object_default(JournalSpec),
                                          description="Journal retention (off by default).")
    workers: WorkersSpec = pydantic.Field(default_factory=WorkersSpec, json_schema_extra=object_default(WorkersSpec),
                                          description="Worker Deployments per role.")
    halted: bool = pydantic.Field(
        default=False,
        description="The user's halt switch. true stops every executor from sending new orders at once "
                    "and moves the session to Halted; false (with resumeHaltId for automatic halts) resumes.")
    halt_reason: str | None = pydantic.Field(default=None, max_length=256,
                                             description="Why the user halted the session (shown in status and Events).")
    resume_halt_id: str | None = pydantic.Field(
        default=None, max_length=64, pattern=r"^h-[a-z0-9]{1,60}$",
        description="To resume from an automatic halt (Risk, Policy, Operator), set this to status.halt.id. "
                    "A stale or wrong id is refused, so an old command cannot clear a newer halt.")
    clear_reducing_id: str | None = pydantic.Field(
        default=None, max_length=64, pattern=r"^r-[a-z0-9]{1,60}$",
        description="To clear a latched Reducing state, set this to status.reducing.id. Refused while the rule "
                    "that raised it is still breached; a stale or wrong id is refused.")
    promote_rollout_id: str | None = pydantic.Field(
        default=None, max_length=64, pattern=r"^m-[a-z0-9]{1,60}$",
        description="Promote the model rollout in progress at once: set this to status.modelRollout.id. An id "
                    "naming no rollout in progress does nothing, so a stale command cannot promote a later one.")
    abort_rollout_id: str | None = pydantic.Field(
        default=None, max_length=64, pattern=r"^m-[a-z0-9]{1,60}$",
        description="Abort the model rollout in progress (the stable model serves every symbol again): set this "
                    "to status.modelRollout.id.")
    retrain_request: str | None = pydantic.Field(
        default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Start a training Job now (needs strategy.model.retrain): any new value starts one; "
                    "status.retrain.request names the last one answered.")
    on_halt: Literal["CancelOpenOrders", "FlattenPositions", "None"] = pydantic.Field(
        default="CancelOpenOrders", description="What executors do with open orders/positions when halted.")
    suspend: bool = pydantic.Field(
        default=False,
        description="Maintenance mode: scale every worker to zero. Refused while orders are open.")

    @pydantic.field_validator("symbols")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("symbols must be unique")
        return value


# ---------------------------------------------------------------- status

_STAMPED = ("stamped by the API server at admission (the chart's identityAdmission policies); absent where they are "
            "not installed")


class HaltStatus(ApiModel):
    """A halt. ``status.halt`` is present only while it is in force; a cleared one moves to ``status.lastHalt``."""

    active: bool = pydantic.Field(default=False, description="Whether the halt is in force.")
    source: HaltSource | None = pydantic.Field(
        default=None,
        description="Who raised the halt: User, Risk, Policy, Operator, or Rotation (the operator, to replace the "
                    "executor after a Secret it reads changed; the operator clears it once the new executor has "
                    "handled it).")
    action: HaltAction = pydantic.Field(
        default=HaltAction.HALT,
        description="Halt: stop new orders and apply spec.onHalt. Flatten: stop new orders and close positions.")
    rule: str | None = pydantic.Field(default=None, max_length=64,
                                      description="The RiskPolicy rule that raised it (source Risk).")
    reason: str | None = pydantic.Field(default=None, max_length=1024, description="Why.")
    since: dt.datetime | None = pydantic.Field(default=None, description="When the halt was raised.")
    id: str | None = pydantic.Field(default=None, max_length=64,
                                    description="Halt id; name it in spec.resumeHaltId to resume.")
    cleared_at: dt.datetime | None = pydantic.Field(default=None, description="When it was cleared (lastHalt only).")
    raised_by: str | None = pydantic.Field(
        default=None, max_length=512,
        description="The identity that wrote this halt into status (a worker's ServiceAccount, or the operator's), "
                    + _STAMPED + ".")
    requested_by: str | None = pydantic.Field(
        default=None, max_length=512,
        description="Who asked for it: the user who set spec.halted (source User), or who set the RiskPolicy's mode "
                    "(source Policy); " + _STAMPED + ".")
    resume_requested_by: str | None = pydantic.Field(
        default=None, max_length=512,
        description="Who asked for the resume that cleared it (spec.resumeHaltId or spec.halted false; lastHalt only); "
                    + _STAMPED + ".")


class ReducingStatus(ApiModel):
    """A latched Reducing state: only exposure-reducing orders until a human clears it (spec.clearReducingId)."""

    source: ReducingSource = pydantic.Field(description="Who raised it: Risk, Inference or CircuitBreaker.")
    rule: str | None = pydantic.Field(default=None, max_length=64, description="The rule or guard that raised it.")
    reason: str = pydantic.Field(default="", max_length=1024, description="Why.")
    since: dt.datetime | None = pydantic.Field(default=None, description="When it was raised.")
    id: str = pydantic.Field(max_length=64, description="Name it in spec.clearReducingId to clear the latch.")
    cleared_at: dt.datetime | None = pydantic.Field(default=None, description="When it was cleared (lastReducing only).")
    raised_by: str | None = pydantic.Field(
        default=None, max_length=512,
        description="The identity that wrote this latch into status, " + _STAMPED + ".")
    clear_requested_by: str | None = pydantic.Field(
        default=None, max_length=512,
        description="Who named it in spec.clearReducingId (lastReducing only), " + _STAMPED + ".")


class BreachStatus(ApiModel):
    """One RiskPolicy rule beyond its limit, as the risk worker last saw it."""

    rule: str = pydantic.Field(max_length=64, description="Rule (dailyLoss, concentration, dataFreshness, ...).")
    action: RuleAction = pydantic.Field(description="The action the policy attaches to it.")
    value: float = pydantic.Field(description="Measured value.")
    threshold: float = pydantic.Field(description="Limit.")
    message: str = pydantic.Field(default="", max_length=1024, description="Human-readable detail.")
    since: dt.datetime | None = pydantic.Field(default=None, description="When the rule entered breach.")


class ScaledLimits(ApiModel):
    """Per-order limits while the circuit breaker is tripped (the policy's, times limitScale)."""

    max_order_notional: float = pydantic.Field(description="USD.")
    max_position_notional: float = pydantic.Field(description="USD.")
    max_orders_per_second: float = pydantic.Field(description="Orders per second.")


class CircuitBreakerStatus(ApiModel):
    tripped: bool = pydantic.Field(default=False, description="Whether the market circuit breaker is tripped.")
    reason: str = pydantic.Field(default="", max_length=1024, description="What tripped it.")
    since: dt.datetime | None = pydantic.Field(default=None, description="When it tripped.")
    index_drop_pct: float | None = pydantic.Field(default=None, description="Index drop from the prior close, percent.")
    volatility_level: float | None = pydantic.Field(default=None, description="Last volatility index level.")
    limit_scale: float | None = pydantic.Field(default=None, description="Factor applied to the per-order limits.")
    scaled_limits: ScaledLimits | None = pydantic.Field(default=None,
                                                        description="Per-order limits in force while tripped.")


class DataFreshnessStatus(ApiModel):
    max_age_seconds: float | None = pydantic.Field(default=None, ge=0,
                                                   description="Age of the stalest symbol's last quote, seconds.")
    limit_seconds: float = pydantic.Field(default=60.0, description="Age beyond which a symbol is stale.")
    stale_symbols: list[str] = pydantic.Field(default_factory=list, max_length=500,
                                              description="Symbols with no quote within the limit.")


class RiskReport(ApiModel):
    """What the risk worker reports: the rules in breach, the circuit breaker, data freshness."""

    breaches: list[BreachStatus] = pydantic.Field(default_factory=list, max_length=32,
                                                  description="Rules beyond their limits right now.")
    circuit_breaker: CircuitBreakerStatus | None = pydantic.Field(default=None, description="Market circuit breaker.")
    data: DataFreshnessStatus | None = pydantic.Field(default=None, description="Quote freshness per symbol.")
    policy_generation: int | None = pydantic.Field(default=None, ge=0,
                                                   description="RiskPolicy generation evaluated.")
    updated_at: dt.datetime | None = pydantic.Field(default=None, description="When reported (wall time).")


class Transition(ApiModel):
    """One phase change."""

    from_: str | None = pydantic.Field(default=None, alias="from", description="Previous phase.")
    to: str = pydantic.Field(description="New phase.")
    at: dt.datetime = pydantic.Field(description="When (wall time).")
    reason: str = pydantic.Field(default="", max_length=1024, description="Why.")


class WorkerCount(ApiModel):
    ready: int = pydantic.Field(default=0, ge=0, description="Ready replicas.")
    desired: int = pydantic.Field(default=0, ge=0, description="Desired replicas.")
    secret_versions: dict[str, str] | None = pydantic.Field(
        default=None, max_length=16,
        description="The Secrets this role's pods read, each with the version (the Secret's resourceVersion) "
                    "they run with; present once the role's rollout to those versions has completed. A rotated "
                    "Secret reaches a pod only when it is replaced: see the SecretsCurrent condition.")


class PolicyStatusRef(ApiModel):
    name: str = pydantic.Field(description="RiskPolicy name.")
    observed_generation: int = pydantic.Field(default=0, ge=0,
                                              description="Policy generation the session enforces.")
    mode: str | None = pydantic.Field(default=None, description="Policy mode in force.")


class Summary(ApiModel):
    """Trading figures reported by the risk worker (throttled)."""

    orders: int = pydantic.Field(default=0, ge=0, description="Orders sent today.")
    fills: int = pydantic.Field(default=0, ge=0, description="Fills today.")
    rejected: int = pydantic.Field(default=0, ge=0, description="Orders rejected by pre-trade checks today.")
    open_orders: int = pydantic.Field(default=0, ge=0, description="Orders open at the broker.")
    realized_pnl: float = pydantic.Field(default=0.0, description="Realized P&L, USD.")
    unrealized_pnl: float = pydantic.Field(default=0.0, description="Unrealized P&L, USD.")
    daily_pnl_pct: float = pydantic.Field(default=0.0, description="Daily P&L in percent of start equity.")
    exposure: float = pydantic.Field(default=0.0, description="Gross exposure, USD.")
    updated_at: dt.datetime | None = pydantic.Field(default=None, description="When reported.")


class ReportFigures(ApiModel):
    """The daily report's figures for the session, one symbol or one strategy (docs/daily-report.md)."""

    name: str | None = pydantic.Field(default=None, max_length=64,
                                      description="Symbol or strategy (absent for the session's total).")
    realized_pnl: float = pydantic.Field(default=0.0, description="P&L of the day's closing trades, USD.")
    unrealized_pnl: float | None = pydantic.Field(
        default=None, description="Open positions at the latest marks, USD (absent per strategy: the journal "
                                  "keeps positions per symbol).")
    trades: int = pydantic.Field(default=0, ge=0, description="Closing trades of the day.")
    win_rate_pct: float | None = pydantic.Field(default=None, description="Winning trades, percent of trades.")
    average_win: float | None = pydantic.Field(default=None, description="Mean P&L of a winning trade, USD.")
    average_loss: float | None = pydantic.Field(default=None, description="Mean P&L of a losing trade (negative).")
    profit_factor: float | None = pydantic.Field(default=None,
                                                 description="Gross profit / gross loss (absent without a loss).")
    orders: int = pydantic.Field(default=0, ge=0, description="Orders journaled today.")
    fills: int = pydantic.Field(default=0, ge=0, description="Fills today.")
    rejected: int = pydantic.Field(default=0, ge=0, description="Pre-trade rejections today.")


class DailyReportStatus(ApiModel):
    """The session day's report (risk worker): refreshed while the day runs, final at the close."""

    day: dt.date = pydantic.Field(description="The session day (calendar time zone).")
    final: bool = pydantic.Field(default=False, description="Written at the close; no longer refreshed.")
    total: ReportFigures = pydantic.Field(description="The whole session.")
    sharpe: float | None = pydantic.Field(default=None,
                                          description="Mean / sd of equity returns between P&L snapshots.")
    max_drawdown_pct: float = pydantic.Field(default=0.0, ge=0, description="Largest fall from an equity peak, %.")
    rejections_by_reason: dict[str, int] = pydantic.Field(default_factory=dict,
                                                          description="Pre-trade rejections per reason.")
    symbols: list[ReportFigures] = pydantic.Field(default_factory=list, max_length=100, description="Per symbol.")
    strategies: list[ReportFigures] = pydantic.Field(
        default_factory=list, max_length=20,
        description="Per strategy (the signal id's prefix; trades attributed to the closing order).")
    request: str | None = pydantic.Field(
        default=None, max_length=64,
        description="The last on-demand request answered (the trading.dev/report-request annotation's value).")
    updated_at: dt.datetime | None = pydantic.Field(default=None, description="When written (wall time).")


class ReconciliationDifference(ApiModel):
    """One difference between the broker and the journal (docs/reconciliation.md)."""

    kind: Difference = pydantic.Field(description="PositionMismatch, FillMissingInJournal, FillMissingAtBroker "
                                                  "or UnknownBrokerOrder.")
    symbol: str = pydantic.Field(max_length=32, description="The symbol.")
    broker_qty: float | None = pydantic.Field(default=None, description="Quantity at the broker (signed for a "
                                                                        "position; absent if the broker has none).")
    journal_qty: float | None = pydantic.Field(default=None, description="Quantity in the journal (signed for a "
                                                                         "position; absent if the journal has none).")
    order_id: str | None = pydantic.Field(default=None, max_length=128,
                                          description="The order's client_order_id (fills and orders).")
    broker_order_id: str | None = pydantic.Field(default=None, max_length=128,
                                                 description="The broker's own order id, when known.")
    fill_id: str | None = pydantic.Field(default=None, max_length=128, description="The broker's fill id.")
    action: DifferenceAction = pydantic.Field(default=DifferenceAction.FLAGGED,
                                              description="Adopted (journaled now) or Flagged (for a human).")

    def describe(self) -> str:
        """One line naming the difference: kind, symbol, quantities, order (used in Events and conditions)."""
        def qty(value: float | None) -> str:
            return "none" if value is None else f"{value:g}"

        text = f"{self.kind} {self.symbol}: broker {qty(self.broker_qty)}, journal {qty(self.journal_qty)}"
        if self.order_id:
            text += f", order {self.order_id}"
        if self.broker_order_id:
            text += f" (broker {self.broker_order_id})"
        if self.fill_id:
            text += f", fill {self.fill_id}"
        return text + ("" if self.action == DifferenceAction.FLAGGED else f" [{str(self.action).lower()}]")


class ReconciliationStatus(ApiModel):
    """The last end-of-day reconciliation of the broker against the journal (executor; journal: reconciliations)."""

    day: dt.date = pydantic.Field(description="The session day (calendar time zone).")
    at: dt.datetime = pydantic.Field(description="When it ran (wall time).")
    trigger: ReconciliationTrigger = pydantic.Field(description="Close (the day's close) or Request (on demand).")
    clean: bool = pydantic.Field(description="No difference was found.")
    positions: int = pydantic.Field(default=0, ge=0, description="Symbols compared (either side holds a position).")
    fills: int = pydantic.Field(default=0, ge=0, description="The day's fills compared (broker and journal, union).")
    adopted: int = pydantic.Field(default=0, ge=0, description="Unknown broker orders adopted into the journal.")
    flagged: int = pydantic.Field(default=0, ge=0, description="Differences left for a human.")
    differences: list[ReconciliationDifference] = pydantic.Field(
        default_factory=list, max_length=50, description="Every difference (the first 50; the journal keeps all).")
    request: str | None = pydantic.Field(
        default=None, max_length=64,
        description="The last on-demand request answered (the trading.dev/reconcile-request annotation's value).")


class ExecutorReport(ApiModel):
    """What the executor reports about itself (written by the executor, read by the operator)."""

    heartbeat: dt.datetime | None = pydantic.Field(default=None, description="Last heartbeat (wall time).")
    trading_state: TradingState | None = pydantic.Field(
        default=None, description="Trading state the executor enforces right now.")
    policy_generation: int | None = pydantic.Field(default=None, ge=0,
                                                   description="RiskPolicy generation the executor enforces.")
    open_orders: int = pydantic.Field(default=0, ge=0, description="Orders open at the broker.")
    halt_handled: str | None = pydantic.Field(
        default=None, max_length=64,
        description="Halt id whose onHalt action (cancel/flatten) the executor has completed.")
    broker_connected: bool | None = pydantic.Field(default=None, description="Broker reachable.")
    secret_versions: dict[str, str] | None = pydantic.Field(
        default=None, max_length=16,
        description="The Secrets this executor process started with, each with its version (the Secret's "
                    "resourceVersion), as its pod template said: how a Rotation halt knows the new executor runs.")
    journal_connected: bool | None = pydantic.Field(default=None, description="Journal reachable.")
    reconciliation: ReconciliationStatus | None = pydantic.Field(
        default=None, description="The last end-of-day reconciliation (at the close, or on demand).")


class ModelQuality(ApiModel):
    """One served model's live quality, measured by the inference worker over a sliding window."""

    uri: str = pydantic.Field(max_length=1024, description="The model's artifact URI.")
    role: Literal["stable", "candidate"] = pydantic.Field(description="stable, or the rollout's candidate.")
    serving_pct: float = pydantic.Field(ge=0, le=100,
                                        description="Percent of the session's symbols whose signals it serves.")
    accuracy_pct: float | None = pydantic.Field(
        default=None, ge=0, le=100,
        description="Directional predictions that the next quote confirmed, percent of the window (absent "
                    "before any is judged). Runbook: normal 58-62 %, alert < 55 %, critical < 50 %.")
    outcomes: int = pydantic.Field(default=0, ge=0, description="Judged predictions in the window.")
    predictions_per_second: float = pydantic.Field(default=0.0, ge=0,
                                                   description="Symbols scored per second since the last report.")
    mean_batch_ms: float | None = pydantic.Field(default=None, ge=0, description="Mean batch time, ms.")
    max_batch_ms: float | None = pydantic.Field(default=None, ge=0, description="Slowest batch, ms.")
    training_accuracy_pct: float | None = pydantic.Field(
        default=None, ge=0, le=100, description="Accuracy the artifact recorded at training (its metadata).")
    error: str | None = pydantic.Field(default=None, max_length=1024,
                                       description="Why the model could not be loaded or scored.")


class InferenceReport(ApiModel):
    """What the inference worker reports about the models it serves (written by the inference worker)."""

    models: list[ModelQuality] = pydantic.Field(default_factory=list, max_length=2,
                                                description="The stable model and, during a rollout, the candidate.")
    window: int = pydantic.Field(default=0, ge=0, description="Size of the sliding accuracy window.")
    rows_since_stable: int = pydantic.Field(
        default=0, ge=0, description="Quotes scored by the stable model since it was adopted (retraining trigger).")
    rollout_id: str | None = pydantic.Field(default=None, max_length=64,
                                            description="The rollout (status.modelRollout.id) this report serves.")
    updated_at: dt.datetime | None = pydantic.Field(default=None, description="When reported (wall time).")


class RolloutDecision(ApiModel):
    """One decision of a model rollout (also an Event)."""

    at: dt.datetime = pydantic.Field(description="When (wall time).")
    decision: str = pydantic.Field(max_length=64, description="RolloutProgressing, RolloutStepAdvanced, "
                                                              "ModelPromoted, ModelRolledBack or RolloutAborted.")
    weight_pct: int = pydantic.Field(ge=0, le=100, description="Candidate's share of symbols after the decision.")
    message: str = pydantic.Field(default="", max_length=1024, description="Why, with the figures compared.")


class ModelRolloutStatus(ApiModel):
    """The model rollout (written by the operator): which model is stable, which is the candidate, at what step."""

    id: str | None = pydantic.Field(default=None, max_length=64,
                                    description="Rollout id; name it in spec.promoteRolloutId or spec.abortRolloutId.")
    phase: RolloutPhase = pydantic.Field(default=RolloutPhase.STABLE,
                                         description="Stable, Progressing, Promoted, RolledBack or Aborted.")
    stable_uri: str = pydantic.Field(max_length=1024, description="The model serving every symbol not given "
                                                                  "to the candidate.")
    spec_uri: str = pydantic.Field(max_length=1024,
                                   description="spec.strategy.model.uri last acted on (a change starts a rollout).")
    offer_uri: str | None = pydantic.Field(default=None, max_length=1024,
                                           description="status.modelCandidate.uri last acted on (a new offer "
                                                       "starts a rollout).")
    candidate_uri: str | None = pydantic.Field(default=None, max_length=1024,
                                               description="The candidate of the current or last rollout.")
    candidate_source: CandidateSource | None = pydantic.Field(default=None,
                                                              description="Spec or Retrain.")
    step: int = pydantic.Field(default=0, ge=0, description="Index into spec.strategy.model.rollout.steps.")
    weight_pct: int = pydantic.Field(default=0, ge=0, le=100,
                                     description="Percent of the session's symbols the candidate serves now.")
    step_since: dt.datetime | None = pydantic.Field(default=None, description="When the current step began.")
    finished_at: dt.datetime | None = pydantic.Field(default=None,
                                                     description="When the last rollout was promoted, rolled back "
                                                                 "or aborted.")
    message: str = pydantic.Field(default="", max_length=1024, description="The last decision, in words.")
    decisions: list[RolloutDecision] = pydantic.Field(default_factory=list, max_length=20,
                                                      description="Decisions of the current or last rollout, "
                                                                  "oldest first.")


class ModelCandidate(ApiModel):
    """A model offered to the rollout by a training Job (written by the trainer)."""

    uri: str = pydantic.Field(max_length=1024, description="The new artifact.")
    job: str | None = pydantic.Field(default=None, max_length=253, description="The Job that trained it.")
    offered_at: dt.datetime | None = pydantic.Field(default=None, description="When offered.")
    validation_accuracy_pct: float | None = pydantic.Field(default=None, ge=0, le=100,
                                                           description="Its directional accuracy at training.")


class RetrainStatus(ApiModel):
    """The last training Job (written by the operator)."""

    job: str = pydantic.Field(max_length=253, description="Job name.")
    trigger: RetrainTrigger = pydantic.Field(description="Request, AccuracyDrop, NewRows or Schedule.")
    request: str | None = pydantic.Field(default=None, max_length=63,
                                         description="The spec.retrainRequest it answered (trigger Request).")
    phase: Literal["Running", "Succeeded", "Failed"] = pydantic.Field(default="Running", description="Job state.")
    started_at: dt.datetime | None = pydantic.Field(default=None, description="When the operator created it.")
    finished_at: dt.datetime | None = pydantic.Field(default=None, description="When it ended.")
    message: str = pydantic.Field(default="", max_length=1024, description="Why it started, or how it ended.")


class NextTransition(ApiModel):
    phase: str = pydantic.Field(description="Phase the calendar moves to next.")
    at: dt.datetime = pydantic.Field(description="When, in session clock time.")


class ModelStatus(ApiModel):
    """The model the inference workers loaded (written by them when they load it)."""

    uri: str = pydantic.Field(max_length=1024, description="spec.strategy.model.uri that was loaded.")
    state: ModelState = pydantic.Field(
        description="Serving: verified (or unverifiable: a bare file) and in use. Refused: the artifact does "
                    "not match its manifest (ModelCorrupt) or cannot be loaded; the workers serve nothing.")
    version: str | None = pydantic.Field(default=None, max_length=128,
                                         description="Version id from the manifest (sha256:<12 hex> for a bare file).")
    sha256: str | None = pydantic.Field(default=None, max_length=64, description="sha256 of the model file served.")
    verified: bool | None = pydantic.Field(default=None,
                                           description="The file was checked against its manifest's sha256.")
    reason: str | None = pydantic.Field(default=None, max_length=64,
                                        description="ModelVerified, ModelUnverified, ModelCorrupt or ModelLoadFailed.")
    message: str | None = pydantic.Field(default=None, max_length=2048, description="Detail (why it was refused).")
    at: dt.datetime | None = pydantic.Field(default=None, description="When it was loaded or refused.")


class TradingSessionStatus(ApiModel):
    """Observed state of a trading session."""

    phase: Phase | None = pydantic.Field(
        default=None,
        description="Session phase. The API server refuses transitions not in the state machine.",
        json_schema_extra={"x-kubernetes-validations": []},  # filled by crdgen from phases.TRANSITIONS
    )
    trading_state: TradingState | None = pydantic.Field(
        default=None, description="What executors may do: Active, Reducing (only exposure-reducing orders), "
                                  "Halted (no new orders: a halt, or a gate such as out of hours or failing "
                                  "pre-market checks; the Ready condition says which).")
    observed_generation: int | None = pydantic.Field(default=None, ge=0,
                                                     description="Spec generation last reconciled.")
    conditions: list[common.Condition] = pydantic.Field(
        default_factory=list, max_length=32,
        description="Ready (True only while trading normally; the reason says why not), WorkersAvailable, Halted, "
                    "Reducing, RiskBreached (a Reduce/Halt/Flatten rule beyond its limit), RiskAlert (an Alert "
                    "rule), BrokerConnected, DataFresh, PolicyApplied, PreMarketChecks, Resumable, Suspended, "
                    "LiveTradingAllowed, CircuitBreaker, Reconciled (the last end-of-day reconciliation). "
                    "Types and reasons: trading_operator.api.status.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    halt: HaltStatus | None = pydantic.Field(default=None, description="The halt in force (absent when none).")
    last_halt: HaltStatus | None = pydantic.Field(default=None, description="The last halt that was cleared.")
    consumed_resume_halt_id: str | None = pydantic.Field(
        default=None, max_length=64,
        description="The last spec.resumeHaltId that cleared its halt: consumed, so leaving it in spec is "
                    "neither a resume of a later halt nor a refusal.")
    reducing: ReducingStatus | None = pydantic.Field(default=None,
                                                     description="The latched Reducing state (absent when none).")
    last_reducing: ReducingStatus | None = pydantic.Field(default=None,
                                                          description="The last Reducing latch that was cleared.")
    risk: RiskReport | None = pydantic.Field(default=None, description="Breaches, circuit breaker, data freshness "
                                                                       "(risk worker).")
    transitions: list[Transition] = pydantic.Field(default_factory=list, max_length=50,
                                                   description="Recent phase transitions, newest last.")
    workers: dict[str, WorkerCount] = pydantic.Field(default_factory=dict,
                                                     description="Ready/desired replicas per worker role.")
    risk_policy: PolicyStatusRef | None = pydantic.Field(default=None, description="Policy in force.")
    summary: Summary | None = pydantic.Field(default=None, description="Trading figures (risk worker).")
    report: DailyReportStatus | None = pydantic.Field(
        default=None, description="The session day's report (risk worker; the journal's daily_reports has it too).")
    executor: ExecutorReport | None = pydantic.Field(default=None, description="The executor's own report.")
    model: ModelStatus | None = pydantic.Field(
        default=None, description="The model the inference workers serve (or refused), and its version.")
    next_transition: NextTransition | None = pydantic.Field(default=None,
                                                            description="Next calendar phase change.")
    clock: dt.datetime | None = pydantic.Field(default=None, description="Session clock at last reconcile.")
    config_hash: str | None = pydantic.Field(default=None, max_length=64,
                                             description="Hash of the resolved worker config in force.")
    inference: InferenceReport | None = pydantic.Field(
        default=None, description="Live quality of the served models (inference worker).")
    model_rollout: ModelRolloutStatus | None = pydantic.Field(
        default=None, description="Stable model, candidate and canary step (operator; strategy model only).")
    model_candidate: ModelCandidate | None = pydantic.Field(
        default=None, description="The last model a training Job offered to the rollout.")
    retrain: RetrainStatus | None = pydantic.Field(default=None, description="The last training Job.")


class TradingSession(ApiModel):
    """An automated trading session: workers, calendar-driven phases, halts."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: str = common.API_VERSION
    kind: str = "TradingSession"
    metadata: common.ObjectMeta = pydantic.Field(default_factory=common.ObjectMeta)
    spec: TradingSessionSpec
    status: TradingSessionStatus = pydantic.Field(default_factory=TradingSessionStatus)
