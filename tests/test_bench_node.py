"""``make bench``'s real-node figures (issue 19): what counts as ready, the baseline's objects, the rows and the
table, from made-up measurements. Pure: no cluster (the benchmark itself needs the real node)."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks import common, halt, node

from trading_operator import names
from trading_operator.api.session import Role, TradingSession
from trading_operator.build import workers as build_workers
from trading_operator.settings import Settings


def _status(phase: str = "MarketOpen", workers: str = "True", executor: str | None = "Active") -> dict[str, Any]:
    return {"phase": phase, "conditions": [{"type": "WorkersAvailable", "status": workers, "reason": "AllReady"},
                                           {"type": "Ready", "status": "True", "reason": "Trading"}],
            **({"executor": {"tradingState": executor}} if executor else {})}


def test_market_open_ready_needs_the_phase_every_worker_and_the_executors_open_gate() -> None:
    assert node.market_open_ready(_status())
    assert not node.market_open_ready(_status(phase="PreMarket"))
    assert not node.market_open_ready(_status(workers="False"))
    assert not node.market_open_ready(_status(executor="Halted"))
    assert not node.market_open_ready(_status(executor=None))
    assert not node.market_open_ready(None)


def _deployment(replicas: int, ready: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": ready}}


def test_deployments_ready_means_all_five_rolled_out_with_every_pod_ready() -> None:
    five = [_deployment(1, 1) for _ in range(4)] + [_deployment(0, 0)]
    assert node.deployments_ready(five)
    assert not node.deployments_ready(five[:4])                                  # one not created yet
    assert not node.deployments_ready([*five[:4], _deployment(1, 0)])             # a pod not Ready
    assert not node.deployments_ready([*five[:4], _deployment(1, 1, generation=2)])  # an old generation's status


def test_the_baseline_writes_what_the_operator_builds_owned_by_the_session() -> None:
    body = node.session_manifest("node-plain-0", 1)
    body["metadata"].update(namespace="trading", uid="u-1")
    ts = TradingSession.model_validate(body)
    settings = node.settings_from_env([{"name": "POD_NAME", "valueFrom": {"fieldRef": {}}},
                                       {"name": "TRADING_WORKER_IMAGE", "value": "workers:test"},
                                       {"name": "TRADING_GPU_NODE_SELECTOR", "value": '{"pool": "gpu"}'}])
    assert settings.worker_image == "workers:test" and settings.gpu_node_selector == {"pool": "gpu"}
    objects = node.plain_objects(ts, settings)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", *["Deployment"] * 5]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in objects)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for role in Role:
        built = build_workers.deployment(ts, role, Settings(worker_image="workers:test",
                                                            gpu_node_selector={"pool": "gpu"}))
        mine = deployments[names.deployment("node-plain-0", role)]
        container = mine["spec"]["template"]["spec"]["containers"][0]
        expected = built["spec"]["template"]["spec"]["containers"][0]
        for key in ("image", "readinessProbe", "livenessProbe", "startupProbe", "command"):
            assert container[key] == expected[key], (role, key)
        assert container.get("resources") == expected.get("resources")
        assert mine["spec"]["replicas"] == (0 if role is Role.INFERENCE else 1)


def _report() -> node.Report:
    report = node.Report(load_average=[1.5, 1.2, 1.0], load_average_end=[2.0, 1.5, 1.1], kubernetes="v1.37.2",
                         setup_s=200)
    # refusal = watch + 1 ms; phase = 3x the watch; watch 10..29 ms
    report.halts = [halt.HaltSample("s", 2.0, 10.0 + i, 11.0 + i, 3 * (10.0 + i)) for i in range(20)]
    report.starts = [node.Start("operator", 40.0, 30.0, created_s=1.5), node.Start("plain", 25.0, 25.0)]
    return report


def test_the_rows_are_each_figure_beside_its_same_run_baseline() -> None:
    rows = {r["figure"]: r for r in node.rows(_report(), "cmd")}
    p50 = rows["node: halt -> executor pod refuses, p50 (20 halts)"]
    assert p50["value"] == pytest.approx(20.5) and p50["baseline"] == pytest.approx(19.5)
    p99 = rows["node: halt -> executor pod refuses, p99 (20 halts)"]
    assert p99["value"] == pytest.approx(29.81) and p99["ratio"] == pytest.approx(29.81 / 28.81)
    assert rows["node: halt -> status.phase Halted, p50 (20 halts)"]["ratio"] == pytest.approx(3.0)
    start = rows["node: session create -> MarketOpen-ready (median of 1)"]
    assert (start["value"], start["baseline"], start["ratio"]) == (40.0, 25.0, 1.6)
    assert rows["node: session create -> its worker pods Ready (median of 1)"]["ratio"] == 1.2
    assert all(r["goal"] == "" and r["meets_goal"] is None for r in rows.values())  # beside, no invented goal
    assert all(r["load_average"] == [1.5, 1.2, 1.0] for r in rows.values())
    text = common.table(list(rows.values()))
    assert "1.60x" in text and "baselines (measured in the same run):" in text and "goals missed" not in text


def test_no_figure_is_printed_without_its_measurements() -> None:
    empty = _report()
    empty.halts = []
    with pytest.raises(ValueError, match="no halt measured"):
        node.rows(empty)
    no_baseline = _report()
    no_baseline.starts = [s for s in no_baseline.starts if s.side == "operator"]
    with pytest.raises(ValueError, match="no measurement"):
        node.rows(no_baseline)


def test_the_table_says_the_load_and_each_start() -> None:
    text = node.table(_report())
    assert "load average 1.50 1.20 1.00 at the start" in text
    assert "executor pod refuses new orders" in text
    assert "operator  MarketOpen-ready: 40.0 s (Deployments created at 1.5 s, worker pods Ready at 30.0 s)" in text


def test_the_executor_gate_is_read_from_its_metrics_text() -> None:
    text = ("# HELP trading_executor_halted ...\ntrading_executor_halted 1.0\n"
            "trading_executor_halted_changed_timestamp_seconds 1.7e+09\n")
    assert halt.gate_of(text) == (1.0, 1.7e9)
    assert halt.gate_of("") == (-1.0, -1.0)


def test_make_bench_fails_loudly_and_prints_no_node_figure_when_the_node_cannot_start(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The node's start failing (here a PlatformError like the one ``ClusterPlatform`` raises for a held lock) is a
    failed benchmark: exit status 1, ``FAILED: node``, and no node row in the table or the JSON."""
    from benchmarks import __main__ as bench

    from trading_dev.platform import PlatformError

    def cannot_start(**_: Any) -> node.Report:
        raise PlatformError("a cluster already runs on this machine (pid 1; lock /run/trading-platform/cluster.lock)")

    monkeypatch.setattr(node, "run", cannot_start)
    monkeypatch.setattr(bench.common, "stop_on_sigterm", lambda: None)
    out = tmp_path / "results.json"
    assert bench.main(["node", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED: node" in captured.err and "a cluster already runs on this machine" in captured.err
    assert "node: halt" not in captured.out and not out.exists()


def test_the_baseline_runs_between_two_halves_of_the_operators_rounds() -> None:
    assert node.schedule(5) == [("operator", 3), ("plain", 5), ("operator", 2)]
    assert node.schedule(2) == [("operator", 1), ("plain", 2), ("operator", 1)]
    assert node.schedule(1) == [("operator", 1), ("plain", 1)]


def test_machine_busy_seconds_count_every_state_but_idle_and_iowait() -> None:
    import os

    tick = os.sysconf("SC_CLK_TCK")
    stat = "cpu  100 10 50 1000 40 5 5 2 0 0\ncpu0 50 5 25 500 20 2 3 1 0 0\n"
    assert node.machine_busy_s(stat) == (100 + 10 + 50 + 5 + 5 + 2) / tick


def test_the_table_says_where_the_cpu_went_during_a_start() -> None:
    report = _report()
    report.starts[0].cpu_s = {"machine": 12.34, "cluster": 3.0, "operator": 1.25, "services": 0.5, "workers": 8.0}
    assert ("CPU s meanwhile: machine 12.3, cluster 3.0, operator 1.2, services 0.5, workers 8.0"
            in node.table(report))
