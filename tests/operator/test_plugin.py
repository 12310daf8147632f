"""``kubectl trading`` (plugin/kubectl-trading) against the real API server and the running operator.

Each command must leave the same spec as the documented raw patch, and ``resume`` /
``clear-reducing`` must say what blocks them (exit 1) or that the latch cleared (exit 0).
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fixtures.api import Api, G, V
from tests.fixtures.waiting import eventually_sync
from trading_operator.api.session import Role

pytestmark = pytest.mark.cluster
PLUGIN = ROOT / "plugin" / "kubectl-trading"
ZERO_WORKERS = {role.value: {"replicas": 0} for role in Role}


def run(kubeconfig: pathlib.Path, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PLUGIN), *args, "--kubeconfig", str(kubeconfig), "-n", namespace],
                          capture_output=True, text=True, timeout=120)


def create(api: Api, ns: str, name: str) -> None:
    api.create(ns, "riskpolicies", {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy",
                                    "metadata": {"name": "limits"}, "spec": {}})
    api.create(ns, "tradingsessions", {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession",
                                       "metadata": {"name": name},
                                       "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "limits"},
                                                "workers": ZERO_WORKERS}})
    eventually_sync(lambda: (api.get(ns, "tradingsessions", name).get("status") or {}).get("phase"), timeout=20)


def status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return api.get(ns, "tradingsessions", name).get("status") or {}


def test_status_halt_resume_suspend(api: Api, operator: Any, namespace: str, control_plane: Any) -> None:
    kc = control_plane.kubeconfig_path
    create(api, namespace, "p")
    shown = run(kc, namespace, "status", "p")
    assert shown.returncode == 0, shown.stderr
    assert f"TradingSession {namespace}/p" in shown.stdout and "trading state" in shown.stdout

    halted = run(kc, namespace, "halt", "p", "--reason", "desk asked")
    assert halted.returncode == 0, halted.stderr
    spec = api.get(namespace, "tradingsessions", "p")["spec"]
    assert (spec["halted"], spec["haltReason"]) == (True, "desk asked")  # = the README's raw patch
    halt = eventually_sync(lambda: status(api, namespace, "p").get("halt"), timeout=15)
    assert halt["source"] == "User"
    assert f"halt           {halt['id']} by User" in run(kc, namespace, "status", "p").stdout

    resumed = run(kc, namespace, "resume", "p")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"halt {halt['id']} cleared" in resumed.stdout
    assert "halt" not in status(api, namespace, "p")
    assert run(kc, namespace, "resume", "p").stdout.strip().endswith("nothing to resume (no halt in force)")

    assert run(kc, namespace, "suspend", "p").returncode == 0
    assert api.get(namespace, "tradingsessions", "p")["spec"]["suspend"] is True
    eventually_sync(lambda: any(c["type"] == "Ready" and c["reason"] == "Suspended"
                         for c in status(api, namespace, "p").get("conditions", [])), timeout=15)
    assert run(kc, namespace, "unsuspend", "p").returncode == 0
    assert api.get(namespace, "tradingsessions", "p")["spec"]["suspend"] is False


def test_kill_switch_and_a_blocked_resume_say_why(api: Api, operator: Any, namespace: str,
                                                  control_plane: Any) -> None:
    kc = control_plane.kubeconfig_path
    create(api, namespace, "k")
    on = run(kc, namespace, "kill-switch", "limits", "on")
    assert on.returncode == 0, on.stderr
    assert api.get(namespace, "riskpolicies", "limits")["spec"]["mode"] == "Halted"
    halt = eventually_sync(lambda: (status(api, namespace, "k").get("halt") or {}).get("source") == "Policy"
                           and status(api, namespace, "k")["halt"], timeout=15)
    blocked = run(kc, namespace, "resume", "k", "--timeout", "20")
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "ResumeBlocked" in blocked.stderr and "RiskPolicy mode is Halted" in blocked.stderr
    assert api.get(namespace, "tradingsessions", "k")["spec"]["resumeHaltId"] == halt["id"]  # = the raw patch

    assert run(kc, namespace, "kill-switch", "limits", "off").returncode == 0
    resumed = run(kc, namespace, "resume", "k")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "halt" not in status(api, namespace, "k")


def test_clear_reducing_names_the_rule_that_blocks(api: Api, operator: Any, namespace: str,
                                                    control_plane: Any) -> None:
    kc = control_plane.kubeconfig_path
    create(api, namespace, "r")
    assert "no Reducing latch" in run(kc, namespace, "clear-reducing", "r").stdout
    # What the risk worker writes when a Reduce rule is breached: the latch and its report.
    api.custom.patch_namespaced_custom_object_status(G, V, namespace, "tradingsessions", "r", {
        "status": {"reducing": {"source": "Risk", "rule": "concentration", "reason": "60% >= 30%", "id": "r-0123456789",
                                "since": "2026-12-01T10:00:00Z"},
                   "risk": {"breaches": [{"rule": "concentration", "action": "Reduce", "value": 60, "threshold": 30,
                                          "message": "largest position 60% of gross >= 30%"}]}}})
    blocked = run(kc, namespace, "clear-reducing", "r", "--timeout", "20")
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "ClearBlocked" in blocked.stderr and "concentration" in blocked.stderr
    api.custom.patch_namespaced_custom_object_status(G, V, namespace, "tradingsessions", "r",
                                                     {"status": {"risk": {"breaches": []}}})
    cleared = run(kc, namespace, "clear-reducing", "r")
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert "reducing" not in status(api, namespace, "r")
    assert status(api, namespace, "r")["lastReducing"]["id"] == "r-0123456789"


def test_promote_and_abort_name_the_rollout_in_progress(api: Api, operator: Any, namespace: str,
                                                         control_plane: Any) -> None:
    """The operator alone decides the rollout: with no inference worker reporting, a candidate holds at its
    first step until a human promotes or aborts it."""
    kc = control_plane.kubeconfig_path
    api.create(namespace, "riskpolicies", {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy",
                                           "metadata": {"name": "limits"}, "spec": {}})
    api.create(namespace, "tradingsessions", {
        "apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "m"},
        "spec": {"symbols": ["AAPL", "MSFT"], "riskPolicyRef": {"name": "limits"}, "workers": ZERO_WORKERS,
                 "strategy": {"name": "model", "model": {"uri": "builtin://default", "device": "cpu"}}}})
    rollout = lambda: status(api, namespace, "m").get("modelRollout") or {}  # noqa: E731
    eventually_sync(lambda: rollout().get("phase") == "Stable", timeout=20, what="the stable model")
    nothing = run(kc, namespace, "promote", "m")
    assert nothing.returncode == 1 and "no model rollout in progress" in nothing.stdout, nothing.stdout
    for command, uri, phase in (("abort", "file:///models/a.pt", "Aborted"),
                                ("promote", "file:///models/b.pt", "Promoted")):
        api.patch(namespace, "tradingsessions", "m", {"spec": {"strategy": {"model": {"uri": uri}}}})
        eventually_sync(lambda uri=uri: rollout().get("candidateUri") == uri and rollout().get("phase") == "Progressing",
                        timeout=20, what=f"the rollout of {uri}")
        rid = rollout()["id"]
        out = run(kc, namespace, command, "m")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"rollout {rid} {phase}" in out.stdout, out.stdout
        field = "promoteRolloutId" if command == "promote" else "abortRolloutId"
        assert api.get(namespace, "tradingsessions", "m")["spec"][field] == rid
    assert rollout()["stableUri"] == "file:///models/b.pt"


def test_backup_runs_a_scheduled_backup_now(api: Api, operator: Any, namespace: str, control_plane: Any) -> None:
    kc = control_plane.kubeconfig_path
    api.create(namespace, "backups", {"apiVersion": "trading.dev/v1alpha1", "kind": "Backup",
                                      "metadata": {"name": "nightly"},
                                      "spec": {"sessionRef": {"name": "any"}, "schedule": "0 2 * * *",
                                               "destination": {"pvc": {"claimName": "b", "path": "/x"}}}})
    eventually_sync(lambda: subprocess.run(
        ["kubectl", f"--kubeconfig={kc}", "-n", namespace, "get", "cronjobs", "-l", "trading.dev/backup=nightly",
         "-o", "name"], capture_output=True, text=True).stdout.strip(), timeout=30, what="the Backup's CronJob")
    made = run(kc, namespace, "backup", "nightly")
    assert made.returncode == 0, made.stderr
    jobs = subprocess.run(["kubectl", f"--kubeconfig={kc}", "-n", namespace, "get", "jobs", "-l",
                           "trading.dev/backup=nightly", "-o", "name"], capture_output=True, text=True).stdout
    assert "-manual-" in jobs, jobs
    assert run(kc, namespace, "backup", "nosuch").returncode == 1


def test_report_says_when_there_is_none_and_refresh_asks_by_annotation(api: Api, operator: Any, namespace: str,
                                                                      control_plane: Any) -> None:
    """Without a risk worker there is no report: ``report`` says so (exit 1); ``--refresh`` sets the request
    annotation and says nobody answered. The table itself is checked on a real day in
    tests/drills/test_daily_report.py."""
    kc = control_plane.kubeconfig_path
    create(api, namespace, "q")
    none = run(kc, namespace, "report", "q")
    assert none.returncode == 1 and "no daily report yet" in none.stderr, none.stdout + none.stderr
    asked = run(kc, namespace, "report", "q", "--refresh", "--timeout", "2")
    assert asked.returncode == 1 and "is the risk worker running?" in asked.stderr, asked.stdout + asked.stderr
    token = api.get(namespace, "tradingsessions", "q")["metadata"]["annotations"]["trading.dev/report-request"]
    assert token in asked.stderr
