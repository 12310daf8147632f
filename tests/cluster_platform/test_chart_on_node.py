"""The chart on a real node, as a user deploys it (issue 12).

One real cluster for the module: the images built here (no registry) loaded into
its containerd, Redis and PostgreSQL as pods, then ``helm install`` into a
namespace that enforces the restricted Pod Security profile. The tests then
walk what only a real kubelet and real controllers can show: the operator as
pods under its ServiceAccount, ``helm test``, a session's workers as pods with
inference placed on the GPU pool by the scheduler, a Backup's CronJob firing on
its schedule, garbage collection through owner references, ``helm uninstall``
refused while a session exists (the chart's pre-delete hook as a real Job), then, the session
deleted, uninstall and reinstall. The tests run in order and build on each other.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster_node.conftest import wait_until
from trading_dev.cluster import deploy, node

pytestmark = [pytest.mark.cluster, pytest.mark.node]

ROOT = pathlib.Path(__file__).resolve().parents[2]
NS = deploy.NAMESPACE
# The chart's defaults: two operator replicas electing a leader through their Lease. (The standby used
# to serve no liveness endpoint while it waited, and the kubelet restarted it every minute: a defect
# this node revealed, fixed in trading_operator.leader; test_the_standby_waits_and_takes_over.)
VALUES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def platform() -> Iterator[node.Cluster]:
    with node.running(gpu=True) as cluster:
        deploy.prepare(cluster)
        proc = deploy.install(cluster, VALUES)
        assert proc.returncode == 0, f"helm install failed: {proc.stderr}\n{proc.stdout}"
        yield cluster


def get(cluster: node.Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("-n", NS, "get", *args, "-o", "json"))


def session(inference: int = 1) -> dict[str, Any]:
    return {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "demo"},
            "spec": {"broker": {"kind": "simulated", "simulated": {"seed": 7}},
                     "symbols": ["AAPL", "MSFT", "NVDA", "AMZN", "SPY"],
                     "strategy": {"name": "model", "params": {"orderQty": 10},
                                  "model": {"uri": "builtin://default", "device": "cuda"}},
                     "riskPolicyRef": {"name": "default-limits"},
                     "clock": {"mode": "simulated", "speed": 120, "start": "2026-11-23T08:55:00Z"},
                     "workers": {"inference": {"replicas": inference}}}}


def test_the_operator_runs_as_pods_under_its_service_account(platform: node.Cluster) -> None:
    pods = get(platform, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)
    assert {p["spec"]["serviceAccountName"] for p in pods} == {"trading-platform-operator"}
    # It holds its Lease: it reached the API server from the pod with its own token.
    wait_until(lambda: get(platform, "lease", "trading-operator")["spec"].get("holderIdentity"), 60,
               "the operator's Lease")


def test_helm_test_passes(platform: node.Cluster) -> None:
    proc = deploy.helm(platform, "test", deploy.RELEASE, "-n", NS, "--timeout", "3m", "--logs")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "metrics endpoint serves trading_operator_* metrics" in proc.stdout


def test_a_session_runs_its_workers_as_pods_and_inference_on_the_gpu_pool(platform: node.Cluster) -> None:
    platform.kubectl("-n", NS, "apply", "-f", str(ROOT / "examples" / "riskpolicy.yaml"))
    platform.kubectl("-n", NS, "apply", "-f", "-", input=yaml.safe_dump(session()))
    roles = ["market-data", "strategy", "inference", "risk", "executor"]

    def all_ready() -> bool:
        deployments = {d["metadata"]["name"]: d for d in get(platform, "deployments")["items"]}
        return all(deployments.get(f"demo-{r}", {}).get("status", {}).get("readyReplicas") == 1 for r in roles)

    wait_until(all_ready, 300, "every worker Deployment of the session to be ready")
    inference = get(platform, "pods", "-l", "app.kubernetes.io/component=inference")["items"][0]
    assert inference["spec"]["nodeName"] == node.NODE_NAME
    assert inference["spec"]["nodeSelector"] == {node.GPU_LABEL[0]: node.GPU_LABEL[1]}
    assert inference["spec"]["containers"][0]["resources"]["limits"][node.GPU_RESOURCE] == "1"
    for d in get(platform, "deployments", "-l", "app.kubernetes.io/instance=demo")["items"]:
        assert d["metadata"]["ownerReferences"][0]["kind"] == "TradingSession"
    # The simulated day moves on: the operator drives the phase from the pods' reports.
    wait_until(lambda: get(platform, "tradingsession", "demo").get("status", {}).get("phase")
               not in (None, "Initializing"), 120, "the session to leave Initializing")


def test_gpu_bound_inference_rolls_out_on_a_one_gpu_pool(platform: node.Cluster) -> None:
    """A change of the session's config replaces every worker pod; inference's new pod needs the only GPU,
    which its old pod holds (a second pod asking for it stays Pending: Insufficient nvidia.com/gpu, shown by
    tests/cluster_node), so a surge-first RollingUpdate never ended; inference's Deployment is Recreate, so
    the rollout completes."""
    before = get(platform, "deployment", "demo-inference")
    assert before["spec"]["strategy"] == {"type": "Recreate"}
    old_pods = {p["metadata"]["name"] for p in get(platform, "pods", "-l", "app.kubernetes.io/component=inference")
                ["items"]}
    platform.kubectl("-n", NS, "patch", "tradingsession", "demo", "--type=merge",
                     "-p", json.dumps({"spec": {"symbols": ["AAPL", "MSFT", "NVDA", "AMZN"]}}))
    wait_until(lambda: get(platform, "deployment", "demo-inference")["metadata"]["generation"]
               > before["metadata"]["generation"], 60, "the operator to change inference's pod template")
    platform.kubectl("-n", NS, "rollout", "status", "deployment/demo-inference", "--timeout=300s", timeout=310)

    def replaced() -> bool:
        pods = get(platform, "pods", "-l", "app.kubernetes.io/component=inference")["items"]
        return bool(pods) and not {p["metadata"]["name"] for p in pods} & old_pods and all(
            p["status"]["phase"] == "Running" for p in pods)

    wait_until(replaced, 60, "the new inference pod, alone, on the GPU")


def test_the_standby_operator_waits_and_takes_over(platform: node.Cluster) -> None:
    """Two operator replicas: one holds the Lease, the other waits without being restarted by the kubelet
    (its /healthz answers while it waits); deleting the leader's pod hands the Lease to another replica."""
    pods = get(platform, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert len(pods) == 2
    holder = get(platform, "lease", "trading-operator")["spec"]["holderIdentity"]
    names = {p["metadata"]["name"] for p in pods}
    assert holder in names, (holder, names)
    # Past the liveness probe's delay and failure threshold (30 s + 3 x 10 s) since they started.
    started = max(dt.datetime.fromisoformat(p["status"]["startTime"]) for p in pods)
    time.sleep(max(0.0, 75 - (dt.datetime.now(dt.UTC) - started).total_seconds()))
    pods = get(platform, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pods), pods
    platform.kubectl("-n", NS, "delete", "pod", holder, "--wait=false")

    def taken_over() -> bool:
        # The standby or the ReplicaSet's replacement pod, whichever wins the race: never the deleted leader.
        now = get(platform, "lease", "trading-operator")["spec"].get("holderIdentity")
        running = {p["metadata"]["name"] for p in get(platform, "pods", "-l", "app.kubernetes.io/component=operator")
                   ["items"] if p["status"].get("phase") == "Running"}
        return bool(now) and now != holder and now in running

    wait_until(taken_over, 90, f"another replica to take the Lease from {holder}")


def test_a_backup_cronjob_fires_on_its_schedule(platform: node.Cluster) -> None:
    backup = {"apiVersion": "trading.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "every-minute"},
              "spec": {"sessionRef": {"name": "demo"}, "targets": ["journal", "redis", "resources"],
                       "schedule": "* * * * *", "retention": {"keepLast": 2},
                       "destination": {"pvc": {"claimName": deploy.BACKUP_CLAIM, "path": "/every-minute"}},
                       "verify": False}}
    platform.kubectl("-n", NS, "apply", "-f", "-", input=yaml.safe_dump(backup))
    wait_until(lambda: get(platform, "cronjobs")["items"], 60, "the operator to create the CronJob")

    def job_done() -> Any:
        jobs = get(platform, "jobs")["items"]
        failed = [j["metadata"]["name"] for j in jobs if j["status"].get("failed")]
        assert not failed, f"backup Jobs failed: {failed}: " + platform.kubectl(
            "-n", NS, "logs", f"job/{failed[0]}", "--tail=30")
        return [j for j in jobs if j["status"].get("succeeded")]

    wait_until(job_done, 200, "a backup Job started by the CronJob to succeed")


def test_uninstall_is_refused_while_a_session_exists(platform: node.Cluster) -> None:
    """The chart's pre-delete hook, run by the real Job controller and kubelet: `helm uninstall` fails and
    deletes nothing while the session exists; its Job's log names the session (chart README, Uninstall)."""
    proc = deploy.helm(platform, "uninstall", deploy.RELEASE, "-n", NS, "--timeout", "3m")
    assert proc.returncode != 0 and "uninstall-guard failed" in proc.stderr, proc.stderr + proc.stdout
    jobs = get(platform, "jobs", "-l", "app.kubernetes.io/component=uninstall-guard")["items"]
    assert len(jobs) == 1, jobs
    logs = platform.kubectl("-n", NS, "logs", f"job/{jobs[0]['metadata']['name']}")
    assert f"{NS}/demo" in logs and "uninstall refused" in logs, logs
    pods = get(platform, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods), "the operator must stay"
    assert get(platform, "tradingsession", "demo")["metadata"]["name"] == "demo"
    # Helm marked the release `uninstalling`; a rollback to its revision marks it deployed again.
    revision = str(json.loads(deploy.helm(platform, "status", deploy.RELEASE, "-n", NS, "-o", "json").stdout)["version"])
    rolled = deploy.helm(platform, "rollback", deploy.RELEASE, revision, "-n", NS, "--wait", "--timeout", "3m")
    assert rolled.returncode == 0, rolled.stderr


def test_deleting_the_session_collects_its_workers(platform: node.Cluster) -> None:
    platform.kubectl("-n", NS, "delete", "backup", "every-minute", "--wait=false")
    platform.kubectl("-n", NS, "delete", "tradingsession", "demo", "--timeout=120s", timeout=130)

    def gone() -> bool:
        left = get(platform, "deployments,pods", "-l", "app.kubernetes.io/instance=demo")["items"]
        return not left

    wait_until(gone, 120, "the garbage collector to remove the session's Deployments and pods")


def test_uninstall_then_reinstall(platform: node.Cluster) -> None:
    proc = deploy.helm(platform, "uninstall", deploy.RELEASE, "-n", NS, "--wait", "--timeout", "2m")
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: not get(platform, "pods", "-l", "app.kubernetes.io/component=operator")["items"], 60,
               "the operator pods to go")
    proc = deploy.install(platform, VALUES)
    assert proc.returncode == 0, proc.stderr
    pods = get(platform, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)
