"""The demo's story on the real cluster: ``make demo``'s default, run as the command itself.

One run of ``python -m trading_dev.demo --short --record FILE`` (no ``--runtime``: the real node):
binaries and images (cached after the first run), the node, ``helm install`` of the chart, then the
same story as the process runtime's, with the operator and every worker as pods under a real kubelet.
The story's result, recorded as JSON, is then held to the same assertions as the process runtime's
(the test functions imported below run again here, on this module's ``result``); the Prometheus ones
stay with the process runtime, where ``--prometheus`` runs.

Only one real cluster runs on a machine: the demo takes the machine's cluster lock like the
cluster_node and cluster_platform tests, and fails loudly when it is held.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.e2e.test_story import (  # noqa: F401 - collected again here, on the real cluster's result
    test_backup_completes_and_verifies,
    test_orders_and_fills_are_in_the_journal,
    test_phases_advance_in_order_and_legally,
    test_risk_breach_halts_and_the_named_resume_clears_it,
    test_the_day_ends_with_a_clean_reconciliation,
    test_the_day_ends_with_its_daily_report,
    test_the_summary_reconciles,
)
from trading_dev import story
from trading_dev.cluster import deploy

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.node]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], pathlib.Path]:
    record = tmp_path_factory.mktemp("demo-cluster") / "result.json"
    proc = subprocess.run([sys.executable, "-m", "trading_dev.demo", "--short", "--timeout", "900",
                           "--record", str(record)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    return proc, record


@pytest.fixture(scope="module")
def result(demo: tuple[subprocess.CompletedProcess[str], pathlib.Path]) -> story.StoryResult:
    proc, record = demo
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return story.StoryResult(**json.loads(record.read_text()))


def test_make_demo_runs_on_the_real_cluster_by_default(demo: tuple[subprocess.CompletedProcess[str], pathlib.Path],
                                                       result: story.StoryResult) -> None:
    """Every slow step says what it does and roughly how long it takes, then how long it took; the
    platform is the chart on the real node; the run ends with the summary and removes the cluster."""
    out = demo[0].stdout
    assert "on a real single-node Kubernetes cluster" in out
    for step in ("binaries", "images", "cluster", "install"):
        assert f"[demo] {step}: " in out, step
        assert f"[demo]     {step} done in " in out, step
    assert "[cluster] node trading-node Ready in" in out
    assert f"-n {deploy.NAMESPACE} get trading,pods" in out
    assert "realized P&L" in out and "demo finished; the cluster is stopped and removed" in out
    # The closing figures: resident memory of every component and pod while the session runs.
    assert "resident memory with the session running" in out
    for row in ("kube-apiserver", "kubelet", "containerd", "trading/demo-executor-", "trading/trading-platform-operator-"):
        assert re.search(rf"^{re.escape(row)}\S*\s+[1-9][0-9]*\.[0-9]$", out, re.M), row
    assert not pathlib.Path("/run/trading-platform/cluster/containerd.sock").exists()


def test_the_workers_ran_as_pods(demo: tuple[subprocess.CompletedProcess[str], pathlib.Path],
                                 result: story.StoryResult) -> None:
    """The pods' logs saved at the end: the operator and each worker role of the session ran as pods."""
    pods = ROOT / ".dev" / "cluster-demo" / "pods"
    names = [p.name for p in pods.glob("*.log")]
    for role in ("trading-platform-operator-", "demo-market-data-", "demo-strategy-", "demo-risk-", "demo-executor-"):
        assert any(role in n for n in names), (role, names)
