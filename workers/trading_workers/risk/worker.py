"""The risk worker role: portfolio risk from the journal and the quotes, acted on through the session's status.

Every second it revalues the journal's positions at the latest quotes,
computes the figures (``metrics``), evaluates them against the session's
RiskPolicy (``engine``) and acts on rules that are beyond their limits:

* every rule in breach -> ``status.risk.breaches`` (the operator derives RiskBreached for
  Reduce/Halt/Flatten rules and RiskAlert for Alert rules), a risk event in the journal,
  a Kubernetes Event (deduplicated and counted), a log line and a metric
* Reduce  -> the ``status.reducing`` latch (source Risk, or CircuitBreaker for the breaker)
* Halt    -> ``status.halt`` {active, source: Risk, action: Halt, rule, reason, since, id}
* Flatten -> the same halt with ``action: Flatten``; executors flatten positions

Position exits (``risk.exits``; RiskPolicy ``exits``: stop loss, take profit, trailing stop, a
gross-exposure cap) go out as reduce-only market intents on the bus, through the executor's
pre-trade checks and journal like any order, each once per position state.

Latches are raised through ``trading_operator.api.transactions`` (the same
code the operator runs) under a resourceVersion precondition, and are
cleared only by a human. A rule acts when it enters breach, and again every
``REACT_SECONDS`` while it stays there (the transactions never overwrite a
latch in force). ``status.risk`` also carries the circuit breaker (tripped,
scaled per-order limits) and each symbol's quote age. P&L snapshots go to the journal every few seconds; the summary
goes to ``status.summary`` at most every ``summary_interval`` seconds. The
risk worker also mirrors the operator's phase transitions
(``status.transitions``) into the journal, since it is the role that holds
both the session and the journal.

The session day is the calendar day of the session clock in the
calendar's time zone; "start equity" is the first snapshot of that day
(else the last before it, else the simulated account's initial cash).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
import time
import zoneinfo
from collections import deque
from typing import Any

from trading_operator.api import metric_names as mn
from trading_operator.api import transactions
from trading_operator.api.clock import wall_at
from trading_operator.api.phases import ORDER_PHASES
from trading_operator.api.riskpolicy import RiskPolicySpec
from trading_operator.api.session import (
    BreachStatus,
    CircuitBreakerStatus,
    DailyReportStatus,
    DataFreshnessStatus,
    ReportFigures,
    RiskReport,
    ScaledLimits,
    SnapshotRetention,
)
from trading_operator.api.status import HaltAction, HaltSource, Reason, ReducingSource, Rule, RuleAction
from trading_workers import bus as bus_mod
from trading_workers import report as report_mod
from trading_workers.errors import DependencyUnavailable, MalformedMessage, TradingError, TransientError
from trading_workers.journal import Journal, PnlSnapshot
from trading_workers.risk import metrics
from trading_workers.risk.engine import SEVERITY, Breach, Figures, breaker_tripped, evaluate, worst
from trading_workers.risk.exits import decide_exits, update_best
from trading_workers.runtime import NotFound, Runtime, with_retries
from trading_workers.session_status import EventRecorder, SessionStatus

log = logging.getLogger("trading_workers.risk")

BREACHES = mn.collector(mn.RISK_BREACHES)
EXITS = mn.collector(mn.RISK_EXITS)
EQUITY = mn.collector(mn.RISK_EQUITY)
DAILY_PNL = mn.collector(mn.RISK_DAILY_PNL)
REALIZED = mn.collector(mn.RISK_REALIZED_PNL)
UNREALIZED = mn.collector(mn.RISK_UNREALIZED_PNL)
DRAWDOWN = mn.collector(mn.RISK_DRAWDOWN)
EXPOSURE = mn.collector(mn.RISK_EXPOSURE)
POSITION = mn.collector(mn.RISK_POSITION)
VAR = mn.collector(mn.RISK_VAR)
MARGIN = mn.collector(mn.RISK_MARGIN)
CONCENTRATION = mn.collector(mn.RISK_CONCENTRATION)
WIN_RATE = mn.collector(mn.RISK_WIN_RATE)
CLOSED_TRADES = mn.collector(mn.RISK_CLOSED_TRADES)
CORRELATION = mn.collector(mn.RISK_CORRELATION)
SHARPE = mn.collector(mn.RISK_SHARPE)
DATA_AGE = mn.collector(mn.MARKET_DATA_AGE)
REPORT_REALIZED = mn.collector(mn.REPORT_REALIZED_PNL)
REPORT_TRADES = mn.collector(mn.REPORT_TRADES)
REPORT_WIN_RATE = mn.collector(mn.REPORT_WIN_RATE)
REPORT_AVERAGE_WIN = mn.collector(mn.REPORT_AVERAGE_WIN)
REPORT_AVERAGE_LOSS = mn.collector(mn.REPORT_AVERAGE_LOSS)
REPORT_PROFIT_FACTOR = mn.collector(mn.REPORT_PROFIT_FACTOR)
REPORT_SHARPE = mn.collector(mn.REPORT_SHARPE)
REPORT_MAX_DRAWDOWN = mn.collector(mn.REPORT_MAX_DRAWDOWN)
REPORT_REJECTIONS = mn.collector(mn.REPORT_REJECTIONS)
REPORT_FINAL = mn.collector(mn.REPORT_FINAL)
#: Annotation a user sets (any new value, e.g. a timestamp) to have the day's report written now.
REPORT_REQUEST_ANNOTATION = "trading.dev/report-request"
#: Phases in which the day's report is final (the close; AfterHours if the worker missed MarketClose).
CLOSE_PHASES = frozenset({"MarketClose", "AfterHours"})
TRADING_DAY_SECONDS = 23_400.0
REACT_SECONDS = 30.0
HISTORY_CAP = 5_001
RETENTION_EVERY = 3600.0  # P&L snapshot retention (spec.journal.pnlSnapshots): at start, then hourly
REPORT_EVERY = 5.0  # status.risk is rewritten when it changes, and at least this often (freshness vouches)


POLICY_REFRESH_SECONDS = 1.0


class RiskWorker:
    def __init__(self, rt: Runtime, bus: bus_mod.Bus, journal: Journal, status: SessionStatus, *,
                 eval_interval: float = 1.0, summary_interval: float = 2.0, snapshot_interval: float = 5.0,
                 report_interval: float = 30.0, events: EventRecorder | None = None) -> None:
        self.rt, self.bus, self.journal, self.status = rt, bus, journal, status
        self.events = events
        self.config = rt.config
        self.eval_interval, self.summary_interval, self.snapshot_interval = (eval_interval, summary_interval,
                                                                             snapshot_interval)
        self.capital = self.config.broker.simulated.initial_cash
        self.inference: dict[str, Any] | None = None   # status.inference, read while modelAccuracy is enabled
        self.policy = RiskPolicySpec()
        self.policy_generation: int | None = None
        self.policy_read_at = -math.inf
        self.marks: dict[str, float] = {}
        self.history: dict[str, deque[float]] = {}
        self.quote_ts: deque[float] = deque(maxlen=256)
        self.day_open: dict[str, float] = {}
        self.last_md_id: str | None = None
        self.day: dt.date | None = None
        self.day_start_wall: dt.datetime | None = None
        self.start_equity: float | None = None
        self.peak_equity = 0.0
        self.active: dict[str, Breach] = {}
        self.acted_at: dict[str, float] = {}
        self.summary_at = -math.inf
        self.snapshot_at = -math.inf
        self.transitions_seen: dt.datetime | None = None
        self.last_ok = 0.0
        self.last_figures: Figures | None = None
        self.quote_seen: dict[str, float] = {}     # symbol -> wall time (s) its last quote reached the bus
        self.quote_session_ts: dict[str, float] = {}  # symbol -> session time of its last quote
        self.prior_close: dict[str, float] = {}
        self.breach_since: dict[str, dt.datetime] = {}
        self.phase: str | None = None
        self.best_marks: dict[str, float] = {}
        self.exits_sent: set[str] = set()
        self.started = time.time()
        self.report_at = -math.inf
        self.last_report: dict[str, object] | None = None
        self.day_equity: list[float] = []   # equity at each evaluation of the session day (Sharpe)
        self.exported_positions: set[str] = set()
        self.report_interval = report_interval
        self.daily_report_at = -math.inf
        self.final_day: dt.date | None = None        # the day whose final report is written
        self.report_request: str | None = None       # the report-request annotation as last read
        self.report_answered: str | None = None
        self.exported_report_labels: set[tuple[str, str]] = set()
        self.retention_at = -math.inf

    # ------------------------------------------------------------ inputs

    async def _load_policy(self) -> None:
        # Re-read at most once a second: a risk owner's change must bind before a resume can race it
        # (a 10 s cache let a resumed session be re-halted under the limits it had just replaced).
        if time.monotonic() - self.policy_read_at < POLICY_REFRESH_SECONDS:
            return
        kube = self.rt.require_kube()
        obj = await kube.get_policy(self.rt.settings.namespace, self.config.risk_policy_name)
        self.policy = RiskPolicySpec.model_validate(obj.get("spec") or {})
        generation = (obj.get("metadata") or {}).get("generation")
        if generation != self.policy_generation:
            log.info("risk policy loaded", extra={"policy": self.config.risk_policy_name, "generation": generation})
        self.policy_generation = generation
        self.policy_read_at = time.monotonic()

    def _observe_quote(self, fields: dict[str, str], msg_id: str) -> None:
        try:
            quote = bus_mod.decode_quote(fields)
        except MalformedMessage as exc:
            bus_mod.MALFORMED.labels(bus_mod.MARKET_DATA).inc()
            log.warning("malformed message skipped", extra={"stream": bus_mod.MARKET_DATA, "message_id": msg_id,
                                                            "error": str(exc)})
            return
        try:
            self.quote_seen[quote.symbol] = int(msg_id.split("-", 1)[0]) / 1000.0  # stream id: wall ms at publish
        except ValueError:
            self.quote_seen[quote.symbol] = time.time()
        self.marks[quote.symbol] = quote.price
        self.quote_session_ts[quote.symbol] = quote.ts
        self.day_open.setdefault(quote.symbol, quote.price)
        history = self.history.get(quote.symbol)
        if history is None:
            history = self.history[quote.symbol] = deque(maxlen=HISTORY_CAP)
        history.append(quote.price)
        self.quote_ts.append(quote.ts)

    async def _read_quotes(self) -> None:
        if self.last_md_id is None:
            count = min(50_000, (self.policy.limits.var.lookback + 1) * max(1, len(self.config.symbols)))
            entries = await self.bus.latest(bus_mod.MARKET_DATA, count)
            self.last_md_id = entries[-1][0] if entries else "0-0"
        else:
            entries = await self.bus.read_after(bus_mod.MARKET_DATA, self.last_md_id, count=5000, block_ms=0)
            if entries:
                self.last_md_id = entries[-1][0]
        for msg_id, fields in entries:
            self._observe_quote(fields, msg_id)

    async def _roll_day(self) -> None:
        tz = zoneinfo.ZoneInfo(self.config.calendar.timezone)
        session_now = self.rt.session_now()
        day = session_now.astimezone(tz).date()
        if day == self.day:
            return
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.UTC)
        self.day, self.day_start_wall = day, wall_at(self.config.clock, self.config.clock_anchor, midnight)
        snapshots = await self.journal.pnl_snapshots()
        today = [s for s in snapshots if s.at is not None and s.at >= self.day_start_wall]
        before = [s for s in snapshots if s.at is not None and s.at < self.day_start_wall]
        if today:
            self.start_equity = today[0].equity
        elif before:
            self.start_equity = before[-1].equity
        else:
            self.start_equity = self.capital
        self.peak_equity = max([self.start_equity, *(s.equity for s in today)])
        # The prior close: each symbol's last quote from before this day began (session time).
        day_start = midnight.timestamp()
        self.prior_close = {sym: price for sym, price in self.marks.items()
                            if self.quote_session_ts.get(sym, math.inf) < day_start}
        self.day_open = dict(self.marks)
        self.active.clear()
        self.day_equity = []
        log.info("session day", extra={"day": day.isoformat(), "start_equity": self.start_equity})

    # ------------------------------------------------------------ figures

    def figures(self, positions: dict[str, Any], fills: list[Any]) -> Figures:
        realized = sum(p.realized_pnl for p in positions.values())
        exposures: dict[str, float] = {}
        unrealized = 0.0
        for symbol, position in positions.items():
            if position.qty == 0:
                continue
            mark = self.marks.get(symbol, position.avg_price)
            exposures[symbol] = position.qty * mark
            unrealized += position.qty * (mark - position.avg_price)
        equity = self.capital + realized + unrealized
        start = self.start_equity or self.capital
        self.peak_equity = max(self.peak_equity, equity)
        gross = sum(abs(v) for v in exposures.values())
        var_rule = self.policy.limits.var
        scenarios = metrics.pnl_scenarios(exposures, {s: list(h) for s, h in self.history.items()}, var_rule.lookback)
        win_pct, trades = metrics.win_rate(fills)
        index = self.policy.circuit_breaker.index_symbol
        return Figures(
            equity=equity, start_equity=start, peak_equity=self.peak_equity,
            daily_pnl_pct=metrics.daily_pnl_pct(equity, start),
            drawdown_pct=metrics.drawdown_pct(equity, self.peak_equity),
            exposures=exposures, gross_exposure=gross, concentration_pct=metrics.concentration_pct(exposures),
            var_pct=metrics.historical_var_pct(scenarios, equity, var_rule.confidence, self._horizon_scale()),
            var_scenarios=len(scenarios), margin_usage_pct=metrics.margin_usage_pct(gross, equity),
            win_rate_pct=win_pct, closed_trades=trades,
            correlation=metrics.average_pairwise_correlation(self.history, exposures) if len(exposures) >= 2 else None,
            index_drop_pct=metrics.drop_pct(self.prior_close.get(index) or self.day_open.get(index, 0.0),
                                            self.marks.get(index, 0.0)),
            volatility_level=self.marks.get(self.policy.circuit_breaker.volatility_symbol),
            **self._freshness(),
            **self._model_quality(),
        )

    def _model_quality(self) -> dict[str, Any]:
        """The stable model's accuracy window from the last ``status.inference`` read (``step``)."""
        report = (self.inference or {}).get("models") or []
        stable = next((m for m in report if m.get("role") == "stable"), None)
        if stable is None or stable.get("accuracyPct") is None:
            return {}
        return {"model_accuracy_pct": float(stable["accuracyPct"]), "model_outcomes": int(stable.get("outcomes") or 0)}

    def _freshness(self) -> dict[str, Any]:
        """Quote age per traded symbol; the stale set only while the phase allows orders (else None)."""
        limit = self.policy.limits.data_freshness.max_age_seconds
        now = time.time()
        # A symbol never quoted counts from the worker's start: a feed that never started is silent too.
        ages = {s: now - self.quote_seen.get(s, self.started) for s in self.config.symbols}
        oldest = max(ages.values(), default=0.0)
        in_order_phase = self.phase in {p.value for p in ORDER_PHASES}
        stale = tuple(sorted(s for s, age in ages.items() if age > limit)) if in_order_phase else None
        return {"stale_symbols": stale, "max_quote_age": oldest}

    def _horizon_scale(self) -> float:
        """sqrt(trading day / quote interval): per-quote scenarios scaled to the limit's one-day horizon."""
        steps = [b - a for a, b in zip(self.quote_ts, list(self.quote_ts)[1:], strict=False) if b > a]
        if not steps:
            return 1.0
        return math.sqrt(max(1.0, TRADING_DAY_SECONDS / statistics.median(steps)))

    # ------------------------------------------------------------ one evaluation

    async def step(self) -> Figures:
        await self._load_policy()
        await self._read_quotes()
        await self._roll_day()
        positions = await self.journal.positions()
        fills = await self.journal.fills(since=self.day_start_wall)  # the day's trades: win rate is per day
        if self.policy.limits.model_accuracy.enabled:  # one read of the session per evaluation, only when needed
            obj = await self.status.kube.get_session(self.status.namespace, self.status.name)
            self.inference = (obj.get("status") or {}).get("inference")
        figures = self.figures(positions, fills)
        self.last_figures = figures
        self._export(figures, sum(p.realized_pnl for p in positions.values()))
        breaches = evaluate(self.policy.limits, self.policy.circuit_breaker, figures)
        await self._act(breaches)
        await self._exits(positions)
        await self._report(breaches, figures)
        now = time.monotonic()
        if now - self.snapshot_at >= self.snapshot_interval:
            await self.journal.record_pnl(PnlSnapshot(
                equity=figures.equity, realized_pnl=sum(p.realized_pnl for p in positions.values()),
                unrealized_pnl=figures.equity - self.capital - sum(p.realized_pnl for p in positions.values()),
                daily_pnl_pct=figures.daily_pnl_pct, drawdown_pct=figures.drawdown_pct,
                exposure=figures.gross_exposure))
            self.snapshot_at = now
        if now - self.summary_at >= self.summary_interval:
            await self._summary(figures, positions)
            self.summary_at = now
        await self._daily_report(positions)
        await self._retention()
        self.last_ok = time.monotonic()
        return figures

    def _export(self, f: Figures, realized: float) -> None:
        """The figures as gauges (Prometheus adds the session's identity at scrape time)."""
        EQUITY.set(f.equity)
        DAILY_PNL.set(f.daily_pnl_pct)
        REALIZED.set(realized)
        UNREALIZED.set(f.equity - self.capital - realized)
        DRAWDOWN.set(f.drawdown_pct)
        EXPOSURE.set(f.gross_exposure)
        MARGIN.set(f.margin_usage_pct)
        CONCENTRATION.set(f.concentration_pct)
        WIN_RATE.set(f.win_rate_pct)
        CLOSED_TRADES.set(f.closed_trades)
        DATA_AGE.set(f.max_quote_age)
        for symbol, exposure in f.exposures.items():
            POSITION.labels(symbol).set(exposure)
        for symbol in self.exported_positions - f.exposures.keys():
            POSITION.remove(symbol)
        self.exported_positions = set(f.exposures)
        self.day_equity.append(f.equity)
        del self.day_equity[:-HISTORY_CAP]
        # Figures that need enough data are NaN until they have it: unknown, never beyond a threshold.
        for gauge, value in ((VAR, f.var_pct), (CORRELATION, f.correlation),
                             (SHARPE, metrics.sharpe_ratio(self.day_equity))):
            gauge.set(math.nan if value is None else value)

    async def _act(self, breaches: list[Breach]) -> None:
        now = time.monotonic()
        current = {b.rule: b for b in breaches}
        due: list[Breach] = []
        for rule, breach in current.items():
            entering = rule not in self.active or self.active[rule].action != breach.action
            if entering:
                self.breach_since[rule] = dt.datetime.now(dt.UTC)
                BREACHES.labels(rule, breach.action).inc()
                await self.journal.record_risk_event(rule=rule, action=breach.action, value=breach.value,
                                                     threshold=breach.threshold, message=breach.message)
                log.warning("risk limit breached", extra={"rule": rule, "action": breach.action,
                                                          "detail": breach.message})
                await self._event("Warning", Reason.RISK_BREACHED, f"{rule} ({breach.action}): {breach.message}")
            repeat = SEVERITY[breach.action] > 0 and now - self.acted_at.get(rule, -math.inf) >= REACT_SECONDS
            if entering or repeat:
                self.acted_at[rule] = now
                due.append(breach)
        for rule, old in self.active.items():
            if rule not in current:
                self.breach_since.pop(rule, None)
                await self._event("Normal", Reason.BREACH_CLEARED,
                                  f"{rule} ({old.action}) back within its limit")
        # Every due Reduce latches Reducing; the worst Halt/Flatten raises (or escalates) the halt.
        for breach in due:
            if breach.action == RuleAction.REDUCE:
                await self._apply(breach)
        top = worst([b for b in due if SEVERITY[b.action] >= RuleAction.HALT.severity])
        if top is not None:
            await self._apply(top)
        self.active = current

    async def _exits(self, positions: dict[str, Any]) -> None:
        """Stop loss, take profit, trailing stop, gross-exposure cap: reduce-only intents on the bus.

        Each goes through the executor's pre-trade checks and journal like any order; its signal id
        names the rule and the position state, so a repeat is the same order (see ``risk.exits``).
        """
        update_best(self.best_marks, positions, self.marks)
        for exit_ in decide_exits(self.policy.exits, positions, self.marks, self.best_marks):
            if exit_.intent.signal_id in self.exits_sent:
                continue
            await self.bus.publish(bus_mod.INTENTS, bus_mod.encode_intent(exit_.intent))
            self.exits_sent.add(exit_.intent.signal_id)
            EXITS.labels(exit_.rule).inc()
            log.warning("position exit sent", extra={"rule": exit_.rule, "symbol": exit_.intent.symbol,
                                                     "qty": exit_.intent.qty, "detail": exit_.reason})
            await self._event("Normal", Reason.POSITION_EXIT, f"{exit_.rule}: {exit_.reason}")

    async def _event(self, type_: str, reason: Reason, message: str) -> None:
        if self.events is not None:
            await self.events.record(type_, reason.value, message)

    async def _apply(self, breach: Breach) -> None:
        if breach.action in (RuleAction.HALT, RuleAction.FLATTEN):
            action = HaltAction.FLATTEN if breach.action == RuleAction.FLATTEN else HaltAction.HALT
            (halt_id, changed), _ = await self.status.transact(lambda st, now: transactions.raise_halt(
                st, source=HaltSource.RISK, reason=breach.message, now=now, action=action, rule=breach.rule))
            if changed:
                log.warning("halt raised in session status", extra={"halt_id": halt_id, "rule": breach.rule,
                                                                    "action": action.value})
        elif breach.action == RuleAction.REDUCE:
            source = ReducingSource.CIRCUIT_BREAKER if breach.rule == Rule.CIRCUIT_BREAKER else ReducingSource.RISK
            (latch_id, changed), _ = await self.status.transact(lambda st, now: transactions.request_reducing(
                st, source=source, reason=breach.message, now=now, rule=breach.rule))
            if changed:
                log.warning("reducing latched in session status", extra={"reducing_id": latch_id,
                                                                         "rule": breach.rule})

    async def _report(self, breaches: list[Breach], f: Figures) -> None:
        """``status.risk``: breaches, circuit breaker, quote freshness (owned by this worker: a plain merge)."""
        cb = self.policy.circuit_breaker
        tripped = breaker_tripped(cb, f)
        controls = self.policy.order_controls
        breaker = CircuitBreakerStatus(
            tripped=tripped is not None, reason=tripped or "", index_drop_pct=round(f.index_drop_pct, 4),
            volatility_level=f.volatility_level, limit_scale=cb.limit_scale if tripped else None,
            since=self.breach_since.get(Rule.CIRCUIT_BREAKER) if tripped else None,
            scaled_limits=ScaledLimits(max_order_notional=controls.max_order_notional * cb.limit_scale,
                                       max_position_notional=controls.max_position_notional * cb.limit_scale,
                                       max_orders_per_second=controls.max_orders_per_second * cb.limit_scale)
            if tripped else None)
        limit = self.policy.limits.data_freshness.max_age_seconds
        report = RiskReport(
            breaches=[BreachStatus(rule=b.rule, action=b.action, value=round(b.value, 4),  # type: ignore[arg-type]
                                   threshold=b.threshold, message=b.message[:1024], since=self.breach_since.get(b.rule))
                      for b in breaches],
            circuit_breaker=breaker,
            data=DataFreshnessStatus(max_age_seconds=round(f.max_quote_age, 1), limit_seconds=limit,
                                     stale_symbols=list(f.stale_symbols or ())),
            policy_generation=self.policy_generation)
        comparable = report.model_dump(exclude={"data": {"max_age_seconds"}})
        now = time.monotonic()
        if comparable == self.last_report and now - self.report_at < REPORT_EVERY:
            return
        report.updated_at = dt.datetime.now(dt.UTC)
        obj = await self.status.merge({"risk": report.wire()})
        self.phase = str((obj.get("status") or {}).get("phase") or "") or None
        self.report_request = ((obj.get("metadata") or {}).get("annotations") or {}).get(REPORT_REQUEST_ANNOTATION)
        self.last_report, self.report_at = comparable, now

    async def _summary(self, f: Figures, positions: dict[str, Any]) -> None:
        counts = await self.journal.counts(since=self.day_start_wall)
        realized = sum(p.realized_pnl for p in positions.values())
        summary = {
            "orders": counts.orders, "fills": counts.fills, "rejected": counts.rejected,
            "openOrders": counts.open_orders, "realizedPnl": round(realized, 2),
            "unrealizedPnl": round(f.equity - self.capital - realized, 2),
            "dailyPnlPct": round(f.daily_pnl_pct, 4), "exposure": round(f.gross_exposure, 2),
            "updatedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        obj = await self.status.merge({"summary": summary})
        await self._mirror_transitions(obj)

    async def _daily_report(self, positions: dict[str, Any]) -> None:
        """The day's report (``trading_workers.report``) to the journal, ``status.report`` and the metrics.

        Refreshed every ``report_interval`` seconds while the day runs, written final once when the
        phase reaches the close, and written at once when the report-request annotation changes.
        """
        if self.day is None or (self.final_day == self.day and self.report_request == self.report_answered):
            return
        closing = self.phase in CLOSE_PHASES
        requested = self.report_request is not None and self.report_request != self.report_answered
        due = time.monotonic() - self.daily_report_at >= self.report_interval
        if not (closing or requested or due):
            return
        final = closing or self.final_day == self.day
        orders, rejections = await self.journal.report_rows(since=self.day_start_wall)
        fills = await self.journal.fills(since=self.day_start_wall)
        snapshots = await self.journal.pnl_snapshots(since=self.day_start_wall)
        built = report_mod.build(orders=orders, fills=fills, rejections=rejections,
                                 equities=[s.equity for s in snapshots], positions=positions, marks=self.marks)
        status = report_status(built, self.day, final=final, request=self.report_request)
        status.updated_at = dt.datetime.now(dt.UTC)
        wire = status.wire()
        await self.journal.record_daily_report(self.day, wire, final=final)
        await self.status.merge({"report": wire})
        self._export_report(built, final)
        self.daily_report_at = time.monotonic()
        self.report_answered = self.report_request
        if final and self.final_day != self.day:
            self.final_day = self.day
            log.info("daily report final", extra={"day": self.day.isoformat(), "orders": built.total.orders,
                                                  "fills": built.total.fills,
                                                  "realized_pnl": round(built.total.realized_pnl, 2)})

    async def _retention(self) -> None:
        """Downsample and delete old P&L snapshots as the session's ``journal.pnlSnapshots`` says."""
        if time.monotonic() - self.retention_at < RETENTION_EVERY:
            return
        self.retention_at = time.monotonic()
        downsample_before, bucket, delete_before = retention_cutoffs(self.config.journal.pnl_snapshots,
                                                                     dt.datetime.now(dt.UTC))
        if downsample_before is None and delete_before is None:
            return
        downsampled, deleted = await self.journal.retain_snapshots(
            downsample_before=downsample_before, bucket_seconds=bucket, delete_before=delete_before)
        log.info("P&L snapshot retention applied", extra={"downsampled": downsampled, "deleted": deleted})

    def _export_report(self, built: report_mod.DailyReport, final: bool) -> None:
        t = built.total
        for gauge, value in ((REPORT_WIN_RATE, t.win_rate_pct), (REPORT_AVERAGE_WIN, t.average_win),
                             (REPORT_AVERAGE_LOSS, t.average_loss), (REPORT_PROFIT_FACTOR, t.profit_factor),
                             (REPORT_SHARPE, built.sharpe)):
            gauge.set(math.nan if value is None else value)
        REPORT_MAX_DRAWDOWN.set(built.max_drawdown_pct)
        REPORT_FINAL.set(1 if final else 0)
        labels: set[tuple[str, str]] = set()
        for symbol, figures in built.symbols.items():
            REPORT_REALIZED.labels(symbol).set(figures.realized_pnl)
            REPORT_TRADES.labels(symbol).set(figures.trades)
            labels.add(("symbol", symbol))
        for reason, count in built.rejections_by_reason.items():
            REPORT_REJECTIONS.labels(reason).set(count)
            labels.add(("reason", reason))
        for kind, label in self.exported_report_labels - labels:  # a new day starts without yesterday's series
            if kind == "symbol":
                REPORT_REALIZED.remove(label)
                REPORT_TRADES.remove(label)
            else:
                REPORT_REJECTIONS.remove(label)
        self.exported_report_labels = labels

    async def _mirror_transitions(self, obj: dict[str, Any]) -> None:
        if self.transitions_seen is None:
            self.transitions_seen = await self.journal.last_transition_at() or dt.datetime.min.replace(tzinfo=dt.UTC)
        for entry in (obj.get("status") or {}).get("transitions") or []:
            try:
                at = dt.datetime.fromisoformat(str(entry["at"]).replace("Z", "+00:00"))
            except (KeyError, ValueError):
                continue
            if at > self.transitions_seen:
                await self.journal.record_transition(entry.get("from"), str(entry.get("to")),
                                                     str(entry.get("reason") or ""), at=at)
                self.transitions_seen = at

    def healthy(self) -> bool:
        return time.monotonic() - self.last_ok < 10

    async def run(self) -> None:
        while not self.rt.stop.is_set():
            try:
                await self.step()
            except NotFound as exc:
                log.error("session or policy not found", extra={"error": str(exc)})
            except TransientError as exc:
                log.warning("risk evaluation failed; will retry", extra={"error": str(exc)})
            except TradingError as exc:
                log.error("risk evaluation failed", extra={"error": str(exc)})
            await self.rt.sleep(self.eval_interval)


def retention_cutoffs(spec: SnapshotRetention, now: dt.datetime
                      ) -> tuple[dt.datetime | None, int, dt.datetime | None]:
    """(downsample rows before, bucket seconds, delete rows before) for ``now`` (wall time)."""
    def before(days: int | None) -> dt.datetime | None:
        return None if days is None else now - dt.timedelta(days=days)

    return before(spec.downsample_after_days), spec.downsample_seconds, before(spec.delete_after_days)


def _figures(name: str | None, f: report_mod.Figures) -> ReportFigures:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return ReportFigures(name=name, realized_pnl=round(f.realized_pnl, 4), unrealized_pnl=r(f.unrealized_pnl),
                         trades=f.trades, win_rate_pct=r(f.win_rate_pct), average_win=r(f.average_win),
                         average_loss=r(f.average_loss), profit_factor=r(f.profit_factor), orders=f.orders,
                         fills=f.fills, rejected=f.rejected)


def report_status(built: report_mod.DailyReport, day: dt.date, *, final: bool,
                  request: str | None = None) -> DailyReportStatus:
    """The report as ``status.report`` (and the journal's ``daily_reports.report``)."""
    return DailyReportStatus(
        day=day, final=final, total=_figures(None, built.total),
        sharpe=None if built.sharpe is None else round(built.sharpe, 4),
        max_drawdown_pct=round(built.max_drawdown_pct, 4), rejections_by_reason=built.rejections_by_reason,
        symbols=[_figures(s, f) for s, f in list(built.symbols.items())[:100]],
        strategies=[_figures(s, f) for s, f in list(built.strategies.items())[:20]], request=request)


async def run(rt: Runtime) -> None:
    """The risk role."""
    kube = rt.require_kube()
    dsn = rt.require_journal_dsn()
    client = bus_mod.connect(rt.settings.redis_url)
    bus = bus_mod.Bus(client, rt.redis_prefix)
    journal: Journal | None = None
    worker: RiskWorker | None = None
    rt.health.add("risk", lambda: (worker is not None and worker.healthy(), "no successful evaluation in 10s"))
    try:
        journal = await with_retries(lambda: Journal.open(dsn, rt.session_key), max_delay=300)
        worker = RiskWorker(rt, bus, journal, SessionStatus(kube, rt.settings.namespace, rt.settings.name),
                            events=EventRecorder(kube, rt.settings.namespace, rt.settings.name, "risk"))
        await worker.run()
    except DependencyUnavailable:
        log.error("journal unreachable for 5 minutes; exiting so the pod restarts")
        raise
    finally:
        if journal is not None:
            await journal.close()
        await client.aclose()
