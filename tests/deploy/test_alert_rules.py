"""`promtool test rules` for every alert of the chart's PrometheusRule, rendered by helm.

For each alert the table below gives input series that put its expression just beyond the
threshold (``fire``) and at or just within it (``quiet``). The generated promtool test asserts,
through the ``ALERTS`` series Prometheus writes, that the alert is not yet firing before its
``for:`` has elapsed, fires (with the session's identity) once it has, and never fires on the
quiet series. promtool is Debian's (hack/install-sysdeps.sh); the test fails loudly without it.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Helm, one

STEP = 15          # seconds between samples and between rule evaluations
SAMPLES = 160      # 40 minutes of samples
WORKER = {"job": "workers", "instance": "127.0.0.1:9000", "namespace": "desk", "session": "s1"}
SESSION = {"namespace": "desk", "session": "s1"}


@dataclass
class Case:
    """One alert: the series that breach (fire) and those that do not (quiet), and when it must fire."""

    alert: str
    fire: dict[str, str]
    quiet: dict[str, str]
    labels: dict[str, str]          # the firing alert's labels besides alertname, alertstate and severity
    active_at: int = 0              # first evaluation at which the breaching expression is true
    settle: int = 0                 # extra time a rate over a filling window needs to reach the breach
    more_quiet: list[dict[str, str]] = field(default_factory=list)


def sel(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def gauge(value: float) -> str:
    return f"{value:g}x{SAMPLES}"


def counter(per_step: float) -> str:
    return f"0+{per_step:g}x{SAMPLES}"


def risk(name: str, value: float) -> dict[str, str]:
    return {sel(name, {**WORKER, "role": "risk"}): gauge(value)}


def executor(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**WORKER, "role": "executor", **(extra or {})}


def histogram(name: str, bucket: str, per_step: float = 10) -> dict[str, str]:
    """All observations in the bucket whose upper bound is ``bucket`` (buckets 0.025 .. 0.25, +Inf)."""
    out = {}
    for le in ("0.025", "0.05", "0.1", "0.25", "+Inf"):
        inside = le == "+Inf" or float(le) >= float(bucket)
        out[sel(f"{name}_bucket", executor({"le": le}))] = counter(per_step if inside else 0)
    return out


def requests(ok: float, rejected: float, error: float = 0) -> dict[str, str]:
    name = "trading_executor_broker_requests_total"
    return {sel(name, executor({"outcome": o})): counter(n) for o, n in
            (("ok", ok), ("rejected", rejected), ("error", error))}


def outcomes(hit: float, miss: float) -> dict[str, str]:
    name = "trading_inference_direction_outcomes_total"
    return {sel(name, {**WORKER, "role": "inference", "outcome": "hit"}): counter(hit),
            sel(name, {**WORKER, "role": "inference", "outcome": "miss"}): counter(miss)}


def predictions(per_second: float) -> dict[str, str]:
    return {sel("trading_inference_predictions_total", {**WORKER, "role": "inference"}): counter(per_second * STEP)}


def cpu(pct: float) -> dict[str, str]:
    labels = {**WORKER, "role": "executor"}
    return {sel("process_cpu_seconds_total", labels): counter(pct / 100 * STEP),
            sel("trading_worker_cpu_limit_cores", labels): gauge(1)}


def memory(used: float) -> dict[str, str]:
    labels = {**WORKER, "role": "executor"}
    return {sel("process_resident_memory_bytes", labels): gauge(used),
            sel("trading_worker_memory_limit_bytes", labels): gauge(1000)}


def slippage(avg_pct: float) -> dict[str, str]:
    return {sel("trading_executor_slippage_pct_sum", executor()): counter(avg_pct * 10),
            sel("trading_executor_slippage_pct_count", executor()): counter(10)}


def backup_age(age: int) -> dict[str, str]:
    # The last success moves with the clock, so the age stays `age` seconds.
    return {sel("trading_backup_last_success_timestamp_seconds", {"namespace": "desk", "backup": "nightly"}):
            f"{-age}+{STEP}x{SAMPLES}"}


RISK = {**WORKER, "role": "risk"}
EXEC = executor()
CASES = [
    Case("TradingDailyLossWarning", risk("trading_risk_daily_pnl_pct", -1.5), risk("trading_risk_daily_pnl_pct", -1.49),
         RISK, more_quiet=[risk("trading_risk_daily_pnl_pct", -3)]),
    Case("TradingDailyLossCritical", risk("trading_risk_daily_pnl_pct", -3), risk("trading_risk_daily_pnl_pct", -2.99),
         RISK),
    Case("TradingValueAtRiskHigh", risk("trading_risk_var_pct", 5.01), risk("trading_risk_var_pct", 5), RISK),
    Case("TradingMarginUsageHigh", risk("trading_risk_margin_usage_pct", 80.01),
         risk("trading_risk_margin_usage_pct", 80), RISK),
    Case("TradingConcentrationHigh", risk("trading_risk_concentration_pct", 30.01),
         risk("trading_risk_concentration_pct", 30), RISK),
    Case("TradingWinRateLow", {**risk("trading_risk_win_rate_pct", 39.9), **risk("trading_risk_closed_trades", 20)},
         {**risk("trading_risk_win_rate_pct", 40), **risk("trading_risk_closed_trades", 20)}, RISK,
         more_quiet=[{**risk("trading_risk_win_rate_pct", 10), **risk("trading_risk_closed_trades", 19)}]),
    Case("TradingCorrelationSpike", risk("trading_risk_correlation", 0.91), risk("trading_risk_correlation", 0.9), RISK),
    Case("TradingMarketDataStale", risk("trading_risk_market_data_age_seconds", 60.5),
         risk("trading_risk_market_data_age_seconds", 60), RISK),
    Case("TradingBrokerDisconnected", {sel("trading_executor_broker_connected", EXEC): gauge(0)},
         {sel("trading_executor_broker_connected", EXEC): gauge(1)}, EXEC),
    Case("TradingReconciliationMismatch",
         {sel("trading_reconciliation_differences", executor({"kind": "PositionMismatch"})): gauge(1),
          sel("trading_reconciliation_differences", executor({"kind": "FillMissingInJournal"})): gauge(0)},
         {sel("trading_reconciliation_differences", executor({"kind": "PositionMismatch"})): gauge(0),
          sel("trading_reconciliation_differences", executor({"kind": "FillMissingInJournal"})): gauge(0)}, SESSION),
    Case("TradingOrderErrorRatioHigh", requests(994, 3, 3), requests(996, 2, 2), SESSION, active_at=STEP),
    Case("TradingOrderErrorRatioCritical", requests(989, 11), requests(991, 9), SESSION, active_at=STEP),
    Case("TradingOrderLatencyHigh", histogram("trading_executor_submit_seconds", "0.25"),
         histogram("trading_executor_submit_seconds", "0.1"), SESSION, active_at=STEP),
    Case("TradingBrokerLatencyHigh", histogram("trading_executor_broker_request_seconds", "0.1"),
         histogram("trading_executor_broker_request_seconds", "0.05"), SESSION, active_at=STEP),
    Case("TradingBrokerLatencyCritical", histogram("trading_executor_broker_request_seconds", "0.25"),
         histogram("trading_executor_broker_request_seconds", "0.1"), SESSION, active_at=STEP),
    Case("TradingSlippageHigh", slippage(0.11), slippage(0.09), SESSION, active_at=STEP),
    Case("TradingPredictionRateLow", predictions(3999), predictions(4001), SESSION, active_at=STEP),
    Case("TradingPredictionRateCritical", predictions(2999), predictions(3001), SESSION, active_at=STEP),
    Case("TradingModelAccuracyLow", outcomes(54, 46), outcomes(56, 44), SESSION, active_at=STEP),
    Case("TradingModelAccuracyCritical", outcomes(49, 51), outcomes(51, 49), SESSION, active_at=STEP),
    # Absolute rates fill their 5-minute window first: the breach shows by the time the window is full.
    Case("TradingWorkerCpuHigh", cpu(76), cpu(74), EXEC, active_at=STEP, settle=300),
    Case("TradingWorkerCpuCritical", cpu(86), cpu(84), EXEC, active_at=STEP, settle=300),
    Case("TradingWorkerMemoryHigh", memory(801), memory(799), EXEC),
    Case("TradingWorkerMemoryCritical", memory(901), memory(899), EXEC),
    Case("TradingSessionHalted", {sel("trading_operator_session_halted", {**SESSION, "source": "Risk"}): gauge(1)},
         {sel("trading_operator_session_halted", {**SESSION, "source": "Risk"}): gauge(0)},
         {**SESSION, "source": "Risk"}),
    Case("TradingExecutorLost", {sel("trading_operator_executor_heartbeat_age_seconds", SESSION): gauge(30.5)},
         {sel("trading_operator_executor_heartbeat_age_seconds", SESSION): gauge(30)}, SESSION),
    Case("TradingSessionsInError", {sel("trading_operator_sessions", {"phase": "Error"}): gauge(1)},
         {sel("trading_operator_sessions", {"phase": "Error"}): gauge(0)}, {}),
    Case("TradingBackupTooOld", backup_age(93601), backup_age(93600), {"namespace": "desk", "backup": "nightly"}),
    Case("TradingBackupFailed", {sel("trading_backup_failed", {"namespace": "desk", "backup": "nightly"}): gauge(1)},
         {sel("trading_backup_failed", {"namespace": "desk", "backup": "nightly"}): gauge(0)},
         {"namespace": "desk", "backup": "nightly"}),
    Case("TradingOperatorReconcileFailures",
         {sel("trading_operator_reconcile_failures_total", {"kind": "TradingSession", "reason": "ApiError"}): counter(6),
          sel("trading_operator_reconcile_total", {"kind": "TradingSession"}): counter(100)},
         {sel("trading_operator_reconcile_failures_total", {"kind": "TradingSession", "reason": "ApiError"}): counter(4),
          sel("trading_operator_reconcile_total", {"kind": "TradingSession"}): counter(100)},
         {"kind": "TradingSession"}, active_at=STEP),
    Case("TradingOperatorDown", {sel("up", {"job": "OPERATOR_JOB"}): gauge(0)},
         {sel("up", {"job": "OPERATOR_JOB"}): gauge(1)}, {}),  # absent() of a comparison keeps no label
]


def _seconds(duration: str | None) -> int:
    if not duration:
        return 0
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def _alerts(name: str, labels: dict[str, str], severity: str) -> dict[str, Any]:
    return {"labels": sel("ALERTS", {"alertname": name, "alertstate": "firing", "severity": severity, **labels}),
            "value": 1}


def _tests(rules: dict[str, dict[str, Any]], job: str) -> list[dict[str, Any]]:
    tests = []
    for case in CASES:
        rule = rules[case.alert]
        hold = _seconds(rule.get("for"))
        severity = rule["labels"]["severity"]
        query = f'ALERTS{{alertname="{case.alert}",alertstate="firing"}}'
        labels = {k: (job if v == "OPERATOR_JOB" else v) for k, v in case.labels.items()}
        fires_by = case.active_at + case.settle + hold
        checks = [{"expr": query, "eval_time": f"{fires_by}s", "exp_samples": [_alerts(case.alert, labels, severity)]}]
        if hold:  # `for:` respected: still pending one evaluation before it has elapsed
            checks.insert(0, {"expr": query, "eval_time": f"{case.active_at + hold - STEP}s", "exp_samples": []})
        tests.append({"name": f"{case.alert} fires", "interval": f"{STEP}s", "promql_expr_test": checks,
                      "input_series": [{"series": s.replace("OPERATOR_JOB", job), "values": v}
                                       for s, v in case.fire.items()]})
        for quiet in (case.quiet, *case.more_quiet):
            tests.append({"name": f"{case.alert} stays quiet", "interval": f"{STEP}s",
                          "input_series": [{"series": s.replace("OPERATOR_JOB", job), "values": v}
                                           for s, v in quiet.items()],
                          "promql_expr_test": [{"expr": query, "eval_time": f"{t}s", "exp_samples": []}
                                               for t in sorted({fires_by, fires_by + 300, (SAMPLES - 1) * STEP})]})
    return tests


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: run hack/install-sysdeps.sh (Debian's prometheus package)"
    proc = subprocess.run([path, "test", "rules", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, "this promtool has no `test rules`"
    return path


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, Any]:
    return one(helm.template({"monitoring": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")


def test_every_alert_has_a_promtool_case(rendered: dict[str, Any]) -> None:
    names = [r["alert"] for g in rendered["spec"]["groups"] for r in g["rules"]]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(c.alert for c in CASES)


def test_promtool_rule_tests(promtool: str, rendered: dict[str, Any], tmp_path: pathlib.Path) -> None:
    groups = rendered["spec"]["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    job = re.fullmatch(r'absent\(up\{job="([^"]+)"\} == 1\)', rules["TradingOperatorDown"]["expr"])
    assert job, rules["TradingOperatorDown"]["expr"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": f"{STEP}s", "tests": _tests(rules, job.group(1))}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-8000:]
    assert "SUCCESS" in proc.stdout


def test_promtool_catches_an_alert_that_does_not_fire(promtool: str, tmp_path: pathlib.Path) -> None:
    """The harness itself: a case whose alert never fires fails promtool (so a green run means something)."""
    groups = [{"name": "g", "rules": [{"alert": "Never", "expr": "vector(1) < 0", "labels": {"severity": "warning"}}]}]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": [],
        "promql_expr_test": [{"expr": 'ALERTS{alertname="Never"}', "eval_time": "1m",
                              "exp_samples": [_alerts("Never", {}, "warning")]}]}]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0


def test_every_alert_says_what_to_do(rendered: dict[str, Any]) -> None:
    for group in rendered["spec"]["groups"]:
        for rule in group["rules"]:
            notes = rule["annotations"]
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert notes["summary"] and notes["description"], rule["alert"]
            assert "kubectl" in notes["runbook"], rule["alert"]


def test_the_chart_readme_lists_every_alert_with_its_expression(rendered: dict[str, Any]) -> None:
    readme = (pathlib.Path(__file__).parents[2] / "charts" / "trading-platform" / "README.md").read_text()
    for group in rendered["spec"]["groups"]:
        for rule in group["rules"]:
            assert f"| `{rule['alert']}` | {rule['labels']['severity']} | `{rule['expr'].replace('|', chr(92) + '|')}` |" \
                in readme, rule["alert"]
