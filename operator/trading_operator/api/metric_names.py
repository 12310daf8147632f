"""Every Prometheus metric the platform exports, named once.

Why here: three parties must agree on these names — the operator and the workers that export
them, and the Helm chart whose PrometheusRule and dashboard query them. The exporters build their
collectors from these entries (``collector``), the chart tests check that every alert expression
and dashboard query names only metrics listed here (``series``), and the live-Prometheus drill
checks that each one it queries is really scraped from the process named in ``exporter``.

Identity: worker metrics carry no session labels of their own. Prometheus attaches ``namespace``,
``session`` and ``role`` to every sample at scrape time, from the pod's labels (the chart's
PodMonitor) or from the local runtime's process list (``trading_dev.monitoring``). Metrics the
operator exports *about* sessions or backups carry ``namespace`` and ``session``/``backup``
labels themselves, which the operator's scrape keeps (``honorLabels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram"]

OPERATOR = "operator"
EVERY_WORKER = "every worker"


@dataclass(frozen=True)
class Metric:
    """One metric: its name as exposed (counters end in ``_total``), kind, help, labels, who exports it."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    exporter: str = OPERATOR   # "operator", a worker role (market-data, risk, executor, inference), or EVERY_WORKER
    buckets: tuple[float, ...] = ()

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names Prometheus stores for it (a histogram's _bucket, _sum and _count)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def collector(metric: Metric) -> Any:
    """The prometheus-client collector for ``metric``, registered in the default registry."""
    import prometheus_client as prom

    if metric.kind == "counter":
        return prom.Counter(metric.name, metric.help, list(metric.labels))
    if metric.kind == "gauge":
        return prom.Gauge(metric.name, metric.help, list(metric.labels))
    if metric.buckets:
        return prom.Histogram(metric.name, metric.help, list(metric.labels), buckets=metric.buckets)
    return prom.Histogram(metric.name, metric.help, list(metric.labels))


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# ------------------------------------------------------------------ operator
OPERATOR_RECONCILES = Metric("trading_operator_reconcile_total", "counter", "Reconciles run.", ("kind",))
OPERATOR_RECONCILE_FAILURES = Metric("trading_operator_reconcile_failures_total", "counter",
                                     "Reconciles that failed.", ("kind", "reason"))
OPERATOR_RECONCILE_SECONDS = Metric("trading_operator_reconcile_duration_seconds", "histogram", "Reconcile duration.",
                                    ("kind",), buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
OPERATOR_SESSIONS = Metric("trading_operator_sessions", "gauge", "Sessions by phase.", ("phase",))
OPERATOR_ACTIVE_HALTS = Metric("trading_operator_active_halts", "gauge", "Sessions with an active halt.")
OPERATOR_TRANSITIONS = Metric("trading_operator_phase_transitions_total", "counter", "Phase transitions.",
                              ("from_phase", "to_phase"))
OPERATOR_HALTS = Metric("trading_operator_halts_total", "counter", "Halts raised.", ("source",))
OPERATOR_WATCH_AGE = Metric("trading_operator_watch_age_seconds", "gauge",
                            "Seconds since the liveness canary was last seen.")
OPERATOR_DRIFT_REPAIRS = Metric("trading_operator_drift_repairs_total", "counter",
                                "Children (Deployments, ConfigMaps) applied again: missing, changed or edited.",
                                ("kind", "reason"))
OPERATOR_FENCED_WRITES = Metric("trading_operator_fenced_writes_total", "counter",
                                "Writes refused inside the operator because its Lease was past the renew deadline.")
SESSION_HALTED = Metric("trading_operator_session_halted", "gauge",
                        "1 while a session's halt is in force (status.halt), by the halt's source.",
                        ("namespace", "session", "source"))
EXECUTOR_HEARTBEAT_AGE = Metric("trading_operator_executor_heartbeat_age_seconds", "gauge",
                                "Age of the executor's last heartbeat (status.executor.heartbeat) at the last "
                                "reconcile, for sessions that run an executor.", ("namespace", "session"))
BACKUP_LAST_SUCCESS = Metric("trading_backup_last_success_timestamp_seconds", "gauge",
                             "Unix time of the last Completed run of a Backup.", ("namespace", "backup"))
BACKUP_LAST_VERIFIED = Metric("trading_backup_last_verified_timestamp_seconds", "gauge",
                              "Unix time of the last run of a Backup whose verification passed.",
                              ("namespace", "backup"))
BACKUP_SIZE = Metric("trading_backup_size_bytes", "gauge", "Bytes written by the latest run of a Backup.",
                     ("namespace", "backup"))
BACKUP_DURATION = Metric("trading_backup_duration_seconds", "gauge", "Duration of the latest run of a Backup.",
                         ("namespace", "backup"))
BACKUP_FAILED = Metric("trading_backup_failed", "gauge", "1 while the latest run of a Backup is Failed.",
                       ("namespace", "backup"))

# ------------------------------------------------------------------ every worker
WORKER_ERRORS = Metric("trading_worker_errors_total", "counter", "Log records at level ERROR or above.",
                       exporter=EVERY_WORKER)
WORKER_CPU_LIMIT = Metric("trading_worker_cpu_limit_cores", "gauge",
                          "CPU cores the process may use: its cgroup's quota, else the machine's CPUs.",
                          exporter=EVERY_WORKER)
WORKER_MEMORY_LIMIT = Metric("trading_worker_memory_limit_bytes", "gauge",
                             "Memory the process may use: its cgroup's limit, else the machine's memory.",
                             exporter=EVERY_WORKER)
# prometheus-client's own process collector (Linux); named here because the CPU and memory alerts use them.
PROCESS_CPU = Metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
                     exporter=EVERY_WORKER)
PROCESS_MEMORY = Metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                        exporter=EVERY_WORKER)
APISERVER_ERRORS = Metric("trading_apiserver_errors_total", "counter", "Failed calls to the Kubernetes API server.",
                          ("op",), exporter=EVERY_WORKER)
SESSION_WATCH_RESTARTS = Metric("trading_session_watch_restarts_total", "counter",
                                "Session watch re-lists after an error.", exporter=EVERY_WORKER)
WORKER_STATUS_CONFLICTS = Metric("trading_worker_status_conflicts_total", "counter",
                                  "Guarded status writes of this worker that lost a race and were re-run.", ("op",),
                                  exporter=EVERY_WORKER)
WORKER_EVENTS = Metric("trading_worker_events_total", "counter",
                       "Kubernetes Events recorded by workers (repeats included).", ("reason",),
                       exporter=EVERY_WORKER)
BUS_MALFORMED = Metric("trading_bus_malformed_total", "counter", "Bus messages that could not be decoded (skipped).",
                       ("stream",), exporter=EVERY_WORKER)
BUS_CONSUMED = Metric("trading_bus_consumed_total", "counter", "Bus messages handled and acknowledged.",
                      ("stream",), exporter=EVERY_WORKER)
BUS_RETRIED = Metric("trading_bus_retried_total", "counter", "Bus messages left pending after a transient failure.",
                     ("stream",), exporter=EVERY_WORKER)
BUS_DEAD_LETTERED = Metric("trading_bus_dead_lettered_total", "counter", "Bus messages moved to the dead stream.",
                           ("stream",), exporter=EVERY_WORKER)
BUS_PUBLISHED = Metric("trading_bus_published_total", "counter", "Bus messages published.", ("stream",),
                       exporter=EVERY_WORKER)

# ------------------------------------------------------------------ market data
MARKET_DATA_QUOTES = Metric("trading_market_data_quotes_total", "counter", "Quotes published.", exporter="market-data")
MARKET_DATA_STEP = Metric("trading_market_data_step", "gauge", "Last price-process step published.",
                          exporter="market-data")

# ------------------------------------------------------------------ risk (the session's portfolio figures)
RISK_BREACHES = Metric("trading_risk_breaches_total", "counter", "Portfolio rules that entered breach.",
                       ("rule", "action"), exporter="risk")
ALPACA_QUOTES = Metric("trading_alpaca_quotes_total", "counter",
                       "Alpaca quotes published to the bus, by source (stream or rest).", ("source",),
                       exporter="market-data")
RISK_EXITS = Metric("trading_risk_exits_total", "counter",
                    "Position exits (stop loss, take profit, trailing stop, gross-exposure cap) sent as intents.",
                    ("rule",), exporter="risk")
RISK_EQUITY = Metric("trading_risk_equity", "gauge", "Session equity, USD.", exporter="risk")
RISK_DAILY_PNL = Metric("trading_risk_daily_pnl_pct", "gauge", "Daily P&L, percent of start equity.", exporter="risk")
RISK_REALIZED_PNL = Metric("trading_risk_realized_pnl", "gauge", "Realized P&L of the session's positions, USD.",
                           exporter="risk")
RISK_UNREALIZED_PNL = Metric("trading_risk_unrealized_pnl", "gauge",
                             "Unrealized P&L of the session's positions at the latest quotes, USD.", exporter="risk")
RISK_DRAWDOWN = Metric("trading_risk_drawdown_pct", "gauge", "Drawdown from the day's peak equity, percent.",
                       exporter="risk")
RISK_EXPOSURE = Metric("trading_risk_gross_exposure", "gauge", "Gross exposure at the latest quotes, USD.",
                       exporter="risk")
RISK_POSITION = Metric("trading_risk_position_exposure", "gauge",
                       "Signed exposure of one position at the latest quote, USD.", ("symbol",), exporter="risk")
RISK_VAR = Metric("trading_risk_var_pct", "gauge", "Historical one-day value-at-risk, percent of equity.",
                  exporter="risk")
RISK_MARGIN = Metric("trading_risk_margin_usage_pct", "gauge", "Margin usage, percent of the margin available.",
                     exporter="risk")
RISK_CONCENTRATION = Metric("trading_risk_concentration_pct", "gauge",
                            "Largest position, percent of gross exposure.", exporter="risk")
RISK_WIN_RATE = Metric("trading_risk_win_rate_pct", "gauge", "Winning closed trades of the day, percent.",
                       exporter="risk")
RISK_CLOSED_TRADES = Metric("trading_risk_closed_trades", "gauge", "Closed trades of the day.", exporter="risk")
RISK_CORRELATION = Metric("trading_risk_correlation", "gauge",
                          "Average pairwise return correlation of the held positions (with two or more).",
                          exporter="risk")
RISK_SHARPE = Metric("trading_risk_sharpe_ratio", "gauge",
                     "Sharpe ratio of the day's equity returns between evaluations, scaled to one trading day.",
                     exporter="risk")
MARKET_DATA_AGE = Metric("trading_risk_market_data_age_seconds", "gauge",
                         "Seconds since the oldest of the session's symbols was last quoted on the bus.",
                         exporter="risk")

# ------------------------------------------------------------------ the daily report (risk worker; docs/daily-report.md)
REPORT_REALIZED_PNL = Metric("trading_report_realized_pnl", "gauge",
                             "Daily report: P&L of the day's closing trades, USD, per symbol.", ("symbol",),
                             exporter="risk")
REPORT_TRADES = Metric("trading_report_trades", "gauge", "Daily report: closing trades of the day, per symbol.",
                       ("symbol",), exporter="risk")
REPORT_WIN_RATE = Metric("trading_report_win_rate_pct", "gauge",
                         "Daily report: winning trades, percent of the day's closing trades (NaN without one).",
                         exporter="risk")
REPORT_AVERAGE_WIN = Metric("trading_report_average_win", "gauge",
                            "Daily report: mean P&L of a winning trade, USD (NaN without one).", exporter="risk")
REPORT_AVERAGE_LOSS = Metric("trading_report_average_loss", "gauge",
                             "Daily report: mean P&L of a losing trade, USD, negative (NaN without one).",
                             exporter="risk")
REPORT_PROFIT_FACTOR = Metric("trading_report_profit_factor", "gauge",
                              "Daily report: gross profit over gross loss (NaN without a losing trade).",
                              exporter="risk")
REPORT_SHARPE = Metric("trading_report_sharpe_ratio", "gauge",
                       "Daily report: mean over sd of equity returns between P&L snapshots (NaN with too few).",
                       exporter="risk")
REPORT_MAX_DRAWDOWN = Metric("trading_report_max_drawdown_pct", "gauge",
                             "Daily report: largest fall of equity from a running peak, percent of the peak.",
                             exporter="risk")
REPORT_REJECTIONS = Metric("trading_report_rejections", "gauge",
                           "Daily report: pre-trade rejections of the day, per reason.", ("reason",), exporter="risk")
REPORT_FINAL = Metric("trading_report_final", "gauge",
                      "1 once the day's report is final (written at the close), else 0.", exporter="risk")

# ------------------------------------------------------------------ executor (the order path)
EXECUTOR_ORDERS_SENT = Metric("trading_executor_orders_sent_total", "counter",
                              "Orders submitted to the broker (first send or retry).", exporter="executor")
EXECUTOR_ORDERS_NOT_SENT = Metric("trading_executor_orders_not_sent_total", "counter",
                                  "Journaled orders cancelled before sending because the session halted.",
                                  exporter="executor")
EXECUTOR_FILLS = Metric("trading_executor_fills_total", "counter", "Fills recorded in the journal.",
                        exporter="executor")
EXECUTOR_HALTS_HANDLED = Metric("trading_executor_halts_handled_total", "counter",
                                "Halts whose onHalt action completed.", ("action",), exporter="executor")
EXECUTOR_RECONCILES = Metric("trading_executor_reconciles_total", "counter", "Reconciliations with the broker.",
                             ("outcome",), exporter="executor")
RECONCILIATION_DIFFERENCES = Metric(
    "trading_reconciliation_differences", "gauge",
    "Differences the last end-of-day reconciliation of this executor found, by kind (each 0 when clean).",
    ("kind",), exporter="executor")
EXECUTOR_SUBMIT_SECONDS = Metric("trading_executor_submit_seconds", "histogram",
                                 "Intent handling time, read to broker ack.", exporter="executor",
                                 buckets=_LATENCY_BUCKETS)
EXECUTOR_READY = Metric("trading_executor_ready", "gauge", "1 when the executor may send orders (not counting halts).",
                        exporter="executor")
EXECUTOR_HALTED = Metric("trading_executor_halted", "gauge", "1 while the executor observes a halt.",
                         exporter="executor")
EXECUTOR_HALTED_CHANGED = Metric("trading_executor_halted_changed_timestamp_seconds", "gauge",
                                 "Wall-clock time (Unix s) the halt gate last closed (new orders refused) or opened.",
                                 exporter="executor")
BROKER_CONNECTED = Metric("trading_executor_broker_connected", "gauge",
                          "1 while the executor's last check of the broker succeeded.", exporter="executor")
BROKER_REQUESTS = Metric("trading_executor_broker_requests_total", "counter",
                         "Order submissions to the broker, by outcome (ok, rejected by the broker, error).",
                         ("outcome",), exporter="executor")
BROKER_REQUEST_SECONDS = Metric("trading_executor_broker_request_seconds", "histogram",
                                "Broker API latency of one order submission.", exporter="executor",
                                buckets=_LATENCY_BUCKETS)
SLIPPAGE = Metric("trading_executor_slippage_pct", "histogram",
                  "Adverse price move of each fill against the quote the order was sent at, percent.",
                  # No negative bucket: prometheus-client omits _sum for histograms with one. A price
                  # improvement (negative) counts in le="0" and lowers the sum.
                  exporter="executor", buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
PRETRADE_REJECTIONS = Metric("trading_pretrade_rejections_total", "counter", "Orders refused by a pre-trade check.",
                             ("reason",), exporter="executor")
PRETRADE_PASSED = Metric("trading_pretrade_passed_total", "counter", "Orders that passed every pre-trade check.",
                         exporter="executor")

# ------------------------------------------------------------------ strategy and inference
STRATEGY_INTENTS = Metric("trading_strategy_intents_total", "counter", "Order intents published by the strategy.",
                          ("side",), exporter="strategy")
INFERENCE_BATCH_SECONDS = Metric("trading_inference_batch_seconds", "histogram",
                                 "Wall time of one inference step (all changed symbols).", exporter="inference",
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
INFERENCE_PREDICTIONS = Metric("trading_inference_predictions_total", "counter", "Symbols scored by the model.",
                               exporter="inference")
INFERENCE_SIGNALS = Metric("trading_inference_signals_total", "counter", "Model signals published.", ("side",),
                           exporter="inference")
INFERENCE_GUARD_TRIPS = Metric("trading_inference_guard_trips_total", "counter",
                               "Inference steps the guard judged unsafe.", ("reason",), exporter="inference")
INFERENCE_INVALID_INPUTS = Metric("trading_inference_invalid_inputs_total", "counter",
                                  "Price windows masked for non-positive or non-finite prices.", exporter="inference")
INFERENCE_OUTCOMES = Metric("trading_inference_direction_outcomes_total", "counter",
                            "Directional predictions (score beyond the threshold) judged against the symbol's next "
                            "quote: hit when the price moved the predicted way, miss otherwise.", ("outcome",),
                            exporter="inference")
INFERENCE_MODEL_INFO = Metric("trading_inference_model_info", "gauge",
                              "1 for the model this worker serves: its URI, its version (from the artifact's "
                              "manifest; sha256:<12 hex> for a bare file) and whether its sha256 was verified.",
                              ("uri", "version", "verified"), exporter="inference")
INFERENCE_MODEL_REFUSED = Metric("trading_inference_model_refused_total", "counter",
                                 "Models refused before serving: reason ModelCorrupt (the file does not match its "
                                 "manifest) or ModelLoadFailed (unreachable, unpublished, not a model).", ("reason",),
                                 exporter="inference")
INFERENCE_ACCURACY = Metric("trading_inference_accuracy_pct", "gauge",
                            "Directional accuracy over the model's sliding window, percent (NaN before any is "
                            "judged); role stable, or candidate during a staged rollout.", ("role",),
                            exporter="inference")
INFERENCE_PREDICTION_RATE = Metric("trading_inference_prediction_rate", "gauge",
                                   "Symbols scored per second by the model between two quality reports.", ("role",),
                                   exporter="inference")
INFERENCE_SERVING = Metric("trading_inference_serving_pct", "gauge",
                           "Percent of the session's symbols whose signals the model serves.", ("role",),
                           exporter="inference")

ALL: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))
BY_NAME: dict[str, Metric] = {m.name: m for m in ALL}
SERIES: dict[str, Metric] = {s: m for m in ALL for s in m.series}
