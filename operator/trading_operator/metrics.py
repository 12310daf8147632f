"""Prometheus metrics of the operator (served on /metrics by ``__main__``).

Names match the PrometheusRule and the Grafana dashboard in the Helm chart.
"""

from __future__ import annotations

import prometheus_client as prom

RECONCILES = prom.Counter("trading_operator_reconcile", "Reconciles run.", ["kind"])
RECONCILE_FAILURES = prom.Counter("trading_operator_reconcile_failures", "Reconciles that failed.", ["kind", "reason"])
RECONCILE_SECONDS = prom.Histogram("trading_operator_reconcile_duration_seconds", "Reconcile duration.", ["kind"],
                                   buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
SESSIONS = prom.Gauge("trading_operator_sessions", "Sessions by phase.", ["phase"])
ACTIVE_HALTS = prom.Gauge("trading_operator_active_halts", "Sessions with an active halt.")
TRANSITIONS = prom.Counter("trading_operator_phase_transitions", "Phase transitions.", ["from_phase", "to_phase"])
HALTS = prom.Counter("trading_operator_halts", "Halts raised.", ["source"])
WATCH_AGE = prom.Gauge("trading_operator_watch_age_seconds", "Seconds since the liveness canary was last seen.")

# Backups (from each Backup's status, which the backup run writes).
BACKUP_LAST_SUCCESS = prom.Gauge("trading_backup_last_success_timestamp_seconds",
                                 "Unix time of the last Completed run of a Backup.", ["namespace", "backup"])
BACKUP_LAST_VERIFIED = prom.Gauge("trading_backup_last_verified_timestamp_seconds",
                                  "Unix time of the last run of a Backup whose verification passed.",
                                  ["namespace", "backup"])
BACKUP_SIZE = prom.Gauge("trading_backup_size_bytes", "Bytes written by the latest run of a Backup.",
                         ["namespace", "backup"])
BACKUP_DURATION = prom.Gauge("trading_backup_duration_seconds", "Duration of the latest run of a Backup.",
                             ["namespace", "backup"])
BACKUP_FAILED = prom.Gauge("trading_backup_failed", "1 while the latest run of a Backup is Failed.",
                           ["namespace", "backup"])
