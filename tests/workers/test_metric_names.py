"""The one list of metric names (``trading_operator.api.metric_names``) and the collectors built from it."""

from __future__ import annotations

import importlib
import logging
import math
import pathlib

import prometheus_client
import pytest

from trading_operator.api import metric_names as mn
from trading_workers import process_metrics
from trading_workers.risk import metrics as risk_metrics

#: The modules that export, between them, every metric of the list.
EXPORTERS = ("trading_operator.metrics", "trading_workers.bus", "trading_workers.runtime",
             "trading_workers.session_status", "trading_workers.process_metrics", "trading_workers.market_data",
             "trading_workers.risk.worker", "trading_workers.executor", "trading_workers.order_metrics",
             "trading_workers.pretrade", "trading_workers.strategy.worker", "trading_workers.inference.worker",
             "trading_workers.brokers.alpaca_data")


def test_every_listed_metric_is_registered_by_an_exporter_with_its_kind() -> None:
    for module in EXPORTERS:
        importlib.import_module(module)
    registered = {m.name: m.type for m in prometheus_client.REGISTRY.collect()}
    for metric in mn.ALL:
        base = metric.name.removesuffix("_total") if metric.kind == "counter" else metric.name
        assert registered.get(base) == metric.kind, (metric.name, registered.get(base))
    trading = {name for name in registered if name.startswith("trading_")}
    listed = {m.name.removesuffix("_total") if m.kind == "counter" else m.name for m in mn.ALL}
    assert trading <= listed, f"exported but not listed: {sorted(trading - listed)}"


def test_series_names() -> None:
    assert mn.SERIES["trading_executor_submit_seconds_bucket"] is mn.EXECUTOR_SUBMIT_SECONDS
    assert mn.SERIES["trading_worker_errors_total"] is mn.WORKER_ERRORS
    assert len(mn.BY_NAME) == len(mn.ALL)


def test_limits_come_from_the_cgroup_else_the_machine(tmp_path: pathlib.Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "memory.max").write_text("536870912\n")
    assert process_metrics.cpu_limit(tmp_path) == 1.5
    assert process_metrics.memory_limit(tmp_path) == 536870912
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree: 1 kB\n")
    assert process_metrics.cpu_limit(tmp_path) >= 1
    assert process_metrics.memory_limit(tmp_path, meminfo) == 16384 * 1024


def test_error_logs_are_counted() -> None:
    process_metrics.install()
    before = prometheus_client.REGISTRY.get_sample_value("trading_worker_errors_total") or 0.0
    logging.getLogger("trading_workers.test").warning("not an error")
    logging.getLogger("trading_workers.test").error("an error")
    assert prometheus_client.REGISTRY.get_sample_value("trading_worker_errors_total") == before + 1
    assert (prometheus_client.REGISTRY.get_sample_value("trading_worker_memory_limit_bytes") or 0) > 0


@pytest.mark.parametrize(("equities", "expected"), [
    ([100.0, 100.0], None),
    ([100.0, 100.0, 100.0], None),                       # no variation
    ([100.0, 101.0, 100.0, 101.0], None),                # computed below
])
def test_sharpe_ratio(equities: list[float], expected: float | None) -> None:
    value = risk_metrics.sharpe_ratio(equities)
    if len(set(equities)) == 2 and len(equities) == 4:
        steps = [0.01, 100 / 101 - 1, 0.01]
        mean = sum(steps) / 3
        sd = math.sqrt(sum((s - mean) ** 2 for s in steps) / 3)
        assert value == pytest.approx(mean / sd)
    else:
        assert value is expected
