"""The example Argo CD Applications (argocd/application.yaml) deploy a working platform and session
namespace, checked on the real API server by doing what Argo CD does with them.

The platform Application: `helm template` with its release name, destination namespace, values and the
cluster's API versions; Helm hooks Argo CD does not run at sync left out (`test`, `pre-delete`); the
destination namespace created (CreateNamespace=true); Namespaces, then CRDs, then the rest applied with
`kubectl apply --server-side --force-conflicts` (ServerSideApply=true). The operator then runs as the
rendered Deployment would (its args and TRADING_* env; a local process: this control plane has no
kubelet). The sessions' Application: its folder applied wave by wave, each wave only once every
resource of the one before is Healthy by the project's own Argo CD health Lua (run under Lua 5.1).
Finally every ServiceAccount the resulting workloads name exists, in the namespace they run in.

The API server is shared with other tests, so the two destination namespaces get unique names (the
mapping is applied to the values too) and the operator watches the sessions' namespace only.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Kubectl
from tests.deploy import luasandbox
from tests.deploy.conftest import Helm, dumps, one, unique
from tests.fixtures.waiting import eventually_sync
from trading_dev import procs
from trading_dev.controlplane import server

pytestmark = pytest.mark.cluster

MONITORING_CRDS = pathlib.Path(__file__).parent / "data" / "monitoring-crds.yaml"
HEALTH = ROOT / "argocd" / "resource_customizations" / "trading.dev"
NOT_RUN_AT_SYNC = {"test", "test-success", "test-failure", "pre-delete", "post-delete"}
KIND_ORDER = {"Namespace": 0, "CustomResourceDefinition": 1}
PLURALS = {"RiskPolicy": "riskpolicies", "TradingSession": "tradingsessions", "Backup": "backups"}


def applications() -> dict[str, dict[str, Any]]:
    return {a["metadata"]["name"]: a for a in yaml.safe_load_all((ROOT / "argocd" / "application.yaml").read_text())}


def sync_apply(kubectl: Kubectl, docs: list[dict[str, Any]], namespace: str | None = None) -> None:
    """One sync step as Argo CD does it with ServerSideApply=true."""
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-"]
    proc = kubectl(*args, *(["-n", namespace] if namespace else []), input=dumps(docs))
    assert proc.returncode == 0, proc.stderr


def health(sandbox: luasandbox.Sandbox, kubectl: Kubectl, ns: str, doc: dict[str, Any]) -> str:
    live = json.loads(kubectl("get", PLURALS[doc["kind"]], doc["metadata"]["name"], "-n", ns, "-o", "json",
                              check=True).stdout)
    return sandbox.health((HEALTH / doc["kind"] / "health.lua").read_text(), live)["status"]


@pytest.fixture
def operator_as_rendered(control_plane: server.ControlPlane, tmp_path: pathlib.Path) -> Iterator[Any]:
    """Start the operator with a rendered Deployment's args and env (called with that Deployment)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(deployment: dict[str, Any], watch: str) -> pathlib.Path:
        # As its pod would: authenticated as the Deployment's ServiceAccount (a token from the
        # TokenRequest API), so the chart's RBAC and admission policies apply to it.
        ns = deployment["metadata"]["namespace"]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        admin = Kubectl(control_plane.kubeconfig_path)
        token = admin("create", "token", account, "-n", ns, "--duration=1h", check=True).stdout.strip()
        kubeconfig = yaml.safe_load(control_plane.kubeconfig_path.read_text())
        kubeconfig["users"] = [{"name": account, "user": {"token": token}}]
        for context in kubeconfig["contexts"]:
            context["context"]["user"] = account
        as_account = tmp_path / "operator.kubeconfig"
        as_account.write_text(yaml.safe_dump(kubeconfig))
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
        env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
        env.update(KUBECONFIG=str(as_account), POD_NAME=unique("operator"),
                   TRADING_LEASE_NAMESPACE=deployment["metadata"]["namespace"],
                   TRADING_METRICS_PORT=str(server.free_port()), TRADING_LIVENESS_PORT=str(server.free_port()),
                   TRADING_RECONCILE_INTERVAL="0.5")
        log = tmp_path / "operator.log"
        with open(log, "wb") as fh:
            started.append(subprocess.Popen([sys.executable, "-m", "trading_operator", *container["args"],
                                             "--namespace", watch],
                                            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        return log

    yield start
    for proc in started:
        procs.stop_group(proc, grace=15)


def test_example_applications_deploy_a_working_platform_and_session_namespace(  # type: ignore[no-untyped-def]
        helm: Helm, crds_installed: Kubectl, operator_as_rendered) -> None:
    kubectl = crds_installed
    kubectl("apply", "--server-side", "-f", str(MONITORING_CRDS), check=True)  # the platform enables monitoring
    kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(MONITORING_CRDS), check=True)
    apps = applications()
    platform, sessions = apps["trading-platform"], apps["trading-sessions"]
    rename = {platform["spec"]["destination"]["namespace"]: unique("trading-system"),
              sessions["spec"]["destination"]["namespace"]: unique("trading")}
    platform_ns, sessions_ns = (rename[a["spec"]["destination"]["namespace"]] for a in (platform, sessions))

    # --- the platform Application
    source = platform["spec"]["source"]
    values = copy.deepcopy(source["helm"]["valuesObject"])
    values["sessionNamespaces"] = [rename.get(n, n) for n in values["sessionNamespaces"]]
    assert source["helm"]["releaseName"] == platform["metadata"]["name"], "Argo CD's instance label = release name"
    api_versions = kubectl("api-versions", check=True).stdout.split()
    docs = helm.template(values, source["helm"]["releaseName"], platform_ns,
                         *[arg for v in api_versions for arg in ("--api-versions", v)])
    docs = [d for d in docs
            if not NOT_RUN_AT_SYNC & set(((d["metadata"].get("annotations") or {}).get("helm.sh/hook") or "").split(","))]
    assert "CreateNamespace=true" in platform["spec"]["syncPolicy"]["syncOptions"]
    kubectl("create", "namespace", platform_ns, check=True)
    docs.sort(key=lambda d: KIND_ORDER.get(d["kind"], 2))
    sync_apply(kubectl, docs)
    # The session namespace came from the platform's own sync, ahead of the sessions' Application.
    created = one(docs, "Namespace")
    assert created["metadata"]["name"] == sessions_ns
    assert "Delete=false" in created["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    kubectl("get", "namespace", sessions_ns, check=True)
    operator_log = operator_as_rendered(one(docs, "Deployment"), sessions_ns)

    # --- the sessions' Application, wave by wave
    folder = ROOT / sessions["spec"]["source"]["path"]
    manifests = [d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    waves: dict[int, list[dict[str, Any]]] = {}
    for doc in manifests:
        wave = int((doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0"))
        waves.setdefault(wave, []).append(doc)
    assert sorted(waves) == [-1, 0] and {d["kind"] for d in waves[-1]} == {"RiskPolicy"}
    sandbox = luasandbox.Sandbox()
    for wave in sorted(waves):
        sync_apply(kubectl, waves[wave], sessions_ns)
        if wave < max(waves):  # Argo CD moves on only when the wave is Healthy
            for doc in waves[wave]:
                eventually_sync(lambda doc=doc: health(sandbox, kubectl, sessions_ns, doc) == "Healthy", timeout=60,
                                what=f"{doc['kind']} {doc['metadata']['name']} Healthy",
                                hint=operator_log.read_text()[-3000:] if operator_log.exists() else "")

    session = next(d for d in waves[0] if d["kind"] == "TradingSession")["metadata"]["name"]

    def reconciled() -> bool:
        live = json.loads(kubectl("get", "tradingsession", session, "-n", sessions_ns, "-o", "json", check=True).stdout)
        conditions = {c["type"]: c["status"] for c in (live.get("status") or {}).get("conditions") or []}
        return conditions.get("PolicyApplied") == "True" and bool(live["status"].get("phase"))

    eventually_sync(reconciled, timeout=60, what="the session reconciled against its policy",
                    hint=kubectl("get", "tradingsession", session, "-n", sessions_ns, "-o", "yaml").stdout[-3000:]
                    + operator_log.read_text()[-3000:])
    for doc in waves[0]:  # not Degraded: Progressing while its workers start (no kubelet here) is expected
        assert health(sandbox, kubectl, sessions_ns, doc) in {"Healthy", "Progressing"}, doc["metadata"]["name"]

    # --- every ServiceAccount a workload names exists where it runs (the Backup's CronJob uses the
    #     chart's worker ServiceAccount, which exists only because the platform serves this namespace)
    def workloads() -> list[dict[str, Any]]:
        items = json.loads(kubectl("get", "deployments,cronjobs", "-n", sessions_ns, "-o", "json", check=True).stdout)
        return items["items"]

    found = eventually_sync(lambda: {w["kind"] for w in workloads()} >= {"Deployment", "CronJob"} and workloads(),
                            timeout=60, what="the session's worker Deployments and the Backup's CronJob")
    for workload in found:
        spec = workload["spec"]["template"]["spec"] if workload["kind"] == "Deployment" \
            else workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        account = spec.get("serviceAccountName", "default")
        got = kubectl("get", "serviceaccount", account, "-n", sessions_ns)
        assert got.returncode == 0, f"{workload['kind']} {workload['metadata']['name']} names a missing {account}"

    kubectl("delete", "tradingsession", session, "-n", sessions_ns, "--wait", "--timeout=60s", check=True)

    # The control: without createSessionNamespaces the platform's sync cannot put the workers' objects
    # into a session namespace nobody has created yet (server-side dry run: nothing changes).
    missing = unique("trading")
    values = {**values, "sessionNamespaces": [missing], "createSessionNamespaces": False}
    docs = [d for d in helm.template(values, source["helm"]["releaseName"], platform_ns) if d["kind"] in
            {"ServiceAccount", "Role", "RoleBinding"} and d["metadata"].get("namespace") == missing]
    assert docs
    proc = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=dumps(docs))
    assert proc.returncode != 0 and f'namespaces "{missing}" not found' in proc.stderr, proc.stderr


def test_sessions_folder_is_the_examples_plus_waves() -> None:
    """argocd/sessions carries the examples' specs (they cannot drift apart) plus the sync wave."""
    pairs = {"riskpolicy.yaml": "riskpolicy.yaml", "session.yaml": "session-simulated.yaml", "backup.yaml": "backup.yaml"}
    folder = ROOT / "argocd" / "sessions"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(pairs)
    for mine, example in pairs.items():
        a, b = yaml.safe_load((folder / mine).read_text()), yaml.safe_load((ROOT / "examples" / example).read_text())
        assert (a["kind"], a["metadata"]["name"], a["spec"]) == (b["kind"], b["metadata"]["name"], b["spec"]), mine
