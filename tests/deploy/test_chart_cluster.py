"""The chart against the real control plane: every rendered manifest applied server-side, a real
`helm install`/`uninstall` (CRDs kept), RBAC by impersonation, and the `restricted` Pod Security
Standard with no warnings from the API server. There is no controller-manager, so Deployments
never get pods; their pod templates are checked by creating Pods from them."""

from __future__ import annotations

import collections.abc
import copy
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.deploy.conftest import CHART, NON_DEFAULT, Helm, dumps, find, one, unique
from tests.deploy.rbac import Check, Impersonator

pytestmark = pytest.mark.cluster

MONITORING_CRDS = pathlib.Path(__file__).parent / "data" / "monitoring-crds.yaml"
TRADING = ["tradingsessions", "riskpolicies", "backups"]
WORKER_SA = "trading-worker"


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def monitoring_crds(crds_installed: Kubectl) -> Kubectl:
    crds_installed("apply", "--server-side", "-f", str(MONITORING_CRDS), check=True)
    crds_installed("wait", "--for=condition=Established", "--timeout=30s", "-f", str(MONITORING_CRDS), check=True)
    return crds_installed


@pytest.fixture(scope="module")
def impersonator(control_plane) -> collections.abc.Iterator[Impersonator]:  # type: ignore[no-untyped-def]
    imp = Impersonator(control_plane.kubeconfig_path)
    yield imp
    imp.close()


def new_namespace(kubectl: Kubectl, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = unique(prefix)
    kubectl("create", "namespace", name, check=True)
    if labels:
        kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()), check=True)
    return name


def apply(kubectl: Kubectl, docs: list[dict[str, Any]]) -> str:
    """Server-side apply; returns stderr (where kubectl prints the API server's warnings)."""
    proc = kubectl("apply", "--server-side", "--field-manager=chart-test", "-f", "-", input=dumps(docs))
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def assert_exist(kubectl: Kubectl, docs: list[dict[str, Any]]) -> None:
    proc = kubectl("get", "-f", "-", "-o", "name", input=dumps(docs))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == len(docs)


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Warning:" in line]


# ------------------------------------------------------------------ every manifest, applied

def test_default_render_is_accepted_by_the_api_server(helm: Helm, crds_installed: Kubectl) -> None:
    ns = new_namespace(crds_installed, "chart-default")
    docs = helm.template(None, unique("r"), ns)
    stderr = apply(crds_installed, docs)
    assert not warnings(stderr), stderr
    assert_exist(crds_installed, docs)
    for crd in find(docs, "CustomResourceDefinition"):
        got = crds_installed("get", "crd", crd["metadata"]["name"], "-o",
                             "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}", check=True).stdout
        assert got == "keep"


def test_non_default_render_is_accepted_by_the_api_server(helm: Helm, monitoring_crds: Kubectl) -> None:
    ns = new_namespace(monitoring_crds, "chart-nondefault")
    desks = [new_namespace(monitoring_crds, "desk"), new_namespace(monitoring_crds, "desk")]
    docs = helm.template({**NON_DEFAULT, "sessionNamespaces": desks}, unique("r"), ns)
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= {d["kind"] for d in docs}
    stderr = apply(monitoring_crds, docs)
    assert not warnings(stderr), stderr
    assert_exist(monitoring_crds, docs)


def test_monitoring_objects_with_a_typo_are_refused(helm: Helm, monitoring_crds: Kubectl, namespace: str) -> None:
    """The minimal monitoring CRDs are strict enough to catch a mistake in the chart's objects."""
    rule = one(helm.template(NON_DEFAULT, "typo", namespace), "PrometheusRule")
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["fro"] = "1m"
    proc = monitoring_crds("apply", "--server-side", "-f", "-", input=yaml.safe_dump(bad))
    assert proc.returncode != 0 and "fro" in proc.stderr, proc.stderr
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["for"] = "a minute"
    proc = monitoring_crds("apply", "--server-side", "-f", "-", input=yaml.safe_dump(bad))
    assert proc.returncode != 0, proc.stderr


def play_the_job_controller(kubectl: Kubectl, kubeconfig: str, ns: str, name: str,
                            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Do for one Job what the Job controller and the kubelet would (this control plane has neither): wait
    for it, run its container's command here (the image's `python` is this interpreter, the pod's
    ServiceAccount is this kubeconfig), and write the status they would write. Returns the process."""
    deadline = time.monotonic() + timeout
    while True:
        got = kubectl("get", "job", name, "-n", ns, "-o", "json")
        if got.returncode == 0:
            break
        assert time.monotonic() < deadline, f"the hook Job {ns}/{name} never appeared"
        time.sleep(0.3)
    job = json.loads(got.stdout)
    container = job["spec"]["template"]["spec"]["containers"][0]
    argv = [sys.executable if a == "python" else a for a in container["command"] + container.get("args", [])]
    env = {**os.environ, "KUBECONFIG": kubeconfig, **{e["name"]: e["value"] for e in container.get("env", [])}}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def cond(type_: str, reason: str) -> dict[str, str]:
        return {"type": type_, "status": "True", "reason": reason, "message": "played by the test",
                "lastTransitionTime": now, "lastProbeTime": now}

    if proc.returncode == 0:
        status = {"startTime": started, "completionTime": now, "succeeded": 1, "active": 0,
                  "conditions": [cond("SuccessCriteriaMet", "CompletionsReached"), cond("Complete", "CompletionsReached")]}
    else:
        status = {"startTime": started, "failed": 1, "active": 0,
                  "conditions": [cond("FailureTarget", "BackoffLimitExceeded"), cond("Failed", "BackoffLimitExceeded")]}
    patched = kubectl("patch", "job", name, "-n", ns, "--subresource=status", "--type=merge",
                      "-p", json.dumps({"status": status}))
    assert patched.returncode == 0, patched.stderr
    return proc


def uninstall(helm: Helm, kubectl: Kubectl, kubeconfig: str, release: str, ns: str,
              ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """`helm uninstall` with its pre-delete hook run as a cluster would: (helm's result, the guard's)."""
    with subprocess.Popen([str(helm.binary), "uninstall", release, "-n", ns, "--kubeconfig", kubeconfig,
                           "--timeout", "90s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        guard = play_the_job_controller(kubectl, kubeconfig, ns, f"{release}-trading-platform-uninstall-guard")
        out, err = running.communicate(timeout=120)
    return subprocess.CompletedProcess(running.args, running.returncode, out, err), guard


def test_install_upgrade_and_uninstall_refused_while_sessions_exist(  # type: ignore[no-untyped-def]
        helm: Helm, control_plane, crds_installed: Kubectl) -> None:
    """The chart README's install, upgrade and uninstall, on the real API server: `helm uninstall` is
    refused by its pre-delete hook while a TradingSession exists (nothing is deleted: the operator stays),
    and goes through once the sessions are gone, keeping the CRDs."""
    ns = new_namespace(crds_installed, "chart-install")
    release = unique("inst")
    kubeconfig = str(control_plane.kubeconfig_path)
    # Namespaced, so the guard looks at this namespace only (other tests leave sessions elsewhere).
    scoped = ["--set", "rbac.scope=namespace", "--set", f"sessionNamespaces={{{ns}}}"]
    # The CRDs already exist (installed by the test session): take them over, as an upgrade from a
    # manual `kubectl apply -f crds/` would.
    proc = helm("install", release, str(CHART), "-n", ns, "--kubeconfig", kubeconfig, "--take-ownership", *scoped)
    assert proc.returncode == 0, proc.stderr
    notes = helm("get", "notes", release, "-n", ns, "--kubeconfig", kubeconfig, check=True).stdout
    assert f"kubectl -n {ns} patch tradingsession demo" in notes
    first = re.search(r"cat <<'YAML' \| kubectl -n \S+ apply -f -\n(.*?)\n\s*YAML\n", notes, re.S)
    assert first, notes
    deadline = time.monotonic() + 30
    while True:  # helm has just updated the CRDs it took over: the API server serves them again shortly
        applied = crds_installed("apply", "-n", ns, "-f", "-", input=textwrap.dedent(first.group(1)))
        if applied.returncode == 0 or "ServiceUnavailable" not in applied.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert applied.returncode == 0, applied.stderr
    assert "riskpolicy.trading.dev/default-limits created" in applied.stdout
    assert "tradingsession.trading.dev/demo created" in applied.stdout
    operator = f"{release}-trading-platform-operator"
    assert crds_installed("get", "deployment", "-n", ns, operator).returncode == 0
    # The guard runs as the operator's ServiceAccount, which may list the sessions it must look for.
    can = crds_installed("auth", "can-i", "list", "tradingsessions.trading.dev", "-n", ns,
                         f"--as=system:serviceaccount:{ns}:{operator}")
    assert can.stdout.strip() == "yes", can.stdout + can.stderr

    # Upgrade: new values on the same release, sessions untouched.
    proc = helm("upgrade", release, str(CHART), "-n", ns, "--kubeconfig", kubeconfig, "--reuse-values",
                "--set", "operator.replicas=1")
    assert proc.returncode == 0, proc.stderr
    replicas = crds_installed("get", "deployment", operator, "-n", ns, "-o", "jsonpath={.spec.replicas}", check=True)
    assert replicas.stdout == "1"
    assert crds_installed("get", "tradingsession", "demo", "-n", ns).returncode == 0

    # Uninstall while the session exists: refused, nothing deleted, the guard says why and what to do.
    refused, guard = uninstall(helm, crds_installed, kubeconfig, release, ns)
    assert guard.returncode == 1, guard.stdout + guard.stderr
    assert f"{ns}/demo" in guard.stderr and f"kubectl -n {ns} delete tradingsessions --all" in guard.stderr
    assert f"helm uninstall {release} -n {ns}" in guard.stderr
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert f"job {release}-trading-platform-uninstall-guard failed" in refused.stderr, refused.stderr
    assert crds_installed("get", "deployment", "-n", ns, operator).returncode == 0, "the operator must stay"
    assert crds_installed("get", "tradingsession", "demo", "-n", ns).returncode == 0
    logs_hint = crds_installed("get", "job", f"{release}-trading-platform-uninstall-guard", "-n", ns)
    assert logs_hint.returncode == 0, "the refused hook's Job stays for `kubectl logs`"
    # Helm has marked the release `uninstalling`; keeping the platform after all: a rollback to the
    # current revision marks it deployed again (nothing was deleted), and upgrades work again.
    status = helm("status", release, "-n", ns, "--kubeconfig", kubeconfig, check=True).stdout
    assert "STATUS: uninstalling" in status and "REVISION: 2" in status, status
    helm("rollback", release, "2", "-n", ns, "--kubeconfig", kubeconfig, check=True)
    assert "STATUS: deployed" in helm("status", release, "-n", ns, "--kubeconfig", kubeconfig, check=True).stdout
    helm("upgrade", release, str(CHART), "-n", ns, "--kubeconfig", kubeconfig, "--reuse-values", check=True)

    # The sessions deleted deliberately, the uninstall goes through and keeps the CRDs.
    crds_installed("delete", "tradingsession", "demo", "-n", ns, "--wait", check=True)
    done, guard = uninstall(helm, crds_installed, kubeconfig, release, ns)
    assert guard.returncode == 0 and "no TradingSession" in guard.stdout, guard.stdout + guard.stderr
    assert done.returncode == 0, done.stderr
    assert "kept due to the resource policy" in done.stdout + done.stderr
    for crd in ("tradingsessions.trading.dev", "riskpolicies.trading.dev", "backups.trading.dev"):
        crds_installed("get", "crd", crd, check=True)
    gone = crds_installed("get", "deployment", "-n", ns, operator)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert crds_installed("get", "job", f"{release}-trading-platform-uninstall-guard", "-n", ns).returncode != 0


def test_uninstall_guard_with_cluster_scope_counts_every_namespace(control_plane, crds_installed: Kubectl,  # type: ignore[no-untyped-def]
                                                                 namespace: str) -> None:
    """rbac.scope=cluster: the Job passes no --namespace, so a session in any namespace refuses."""
    session = {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "anywhere"},
               "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "none"}}}
    crds_installed("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(session), check=True)
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)}
    proc = subprocess.run([sys.executable, "-m", "trading_operator.uninstall_guard"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 1 and f"{namespace}/anywhere" in proc.stderr, proc.stdout + proc.stderr
    empty = new_namespace(crds_installed, "no-sessions")
    proc = subprocess.run([sys.executable, "-m", "trading_operator.uninstall_guard", "--namespace", empty],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and f"no TradingSession in {empty}" in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------------------------ RBAC

def operator_calls(ns: str) -> list[Check]:
    """Every namespaced call the operator makes, in a session namespace."""
    calls = [Check(v, r, "trading.dev", ns) for r in TRADING for v in ("get", "list", "watch", "patch", "update")]
    calls += [Check(v, r, "trading.dev", ns, "status") for r in TRADING for v in ("get", "patch", "update")]
    calls += [Check("update", r, "trading.dev", ns, "finalizers") for r in TRADING]
    crud = ("get", "list", "watch", "create", "update", "patch", "delete")
    calls += [Check(v, "deployments", "apps", ns) for v in crud]
    calls += [Check(v, "configmaps", "", ns) for v in crud]
    calls += [Check(v, r, "batch", ns) for r in ("jobs", "cronjobs") for v in crud]
    calls += [Check(v, "events", g, ns) for g in ("", "events.k8s.io") for v in ("create", "patch")]
    # The metadata-only Secret watch of rotation (secretwatch.py; values rotation.enabled).
    calls += [Check(v, "secrets", "", ns) for v in ("list", "watch")]
    # Each session's worker identity (build/rbac.py).
    calls += [Check(v, r, g, ns) for r, g in (("serviceaccounts", ""), ("roles", "rbac.authorization.k8s.io"),
                                              ("rolebindings", "rbac.authorization.k8s.io"))
              for v in ("get", "create", "patch", "delete")]
    return calls


def operator_cluster_calls(release_ns: str, lease: str) -> list[Check]:
    return [
        Check("create", "leases", "coordination.k8s.io", release_ns),
        Check("get", "leases", "coordination.k8s.io", release_ns, name=lease),
        Check("update", "leases", "coordination.k8s.io", release_ns, name=lease),
        *(Check(v, "namespaces") for v in ("get", "list", "watch")),
        *(Check(v, "customresourcedefinitions", "apiextensions.k8s.io") for v in ("get", "list", "watch")),
    ]


def operator_must_not(ns: str, release_ns: str, lease: str) -> list[Check]:
    return [
        *(Check("get", "secrets", "", n) for n in (ns, release_ns)),  # list/watch: metadata only, rotation
        Check("create", "pods", "", ns, "exec"),
        Check("create", "pods", "", ns, "portforward"),
        Check("create", "pods", "", ns),
        Check("create", "serviceaccounts", "", ns, "token"),
        Check("create", "services", "", ns),
        Check("create", "statefulsets", "apps", ns),
        Check("create", "daemonsets", "apps", ns),
        Check("list", "events", "", ns),
        Check("delete", "events", "", ns),
        *(Check(v, r, "trading.dev", ns) for r in TRADING for v in ("create", "delete", "deletecollection")),
        Check("create", "clusterroles", "rbac.authorization.k8s.io"),
        Check("create", "clusterrolebindings", "rbac.authorization.k8s.io"),
        Check("escalate", "clusterroles", "rbac.authorization.k8s.io"),
        Check("escalate", "roles", "rbac.authorization.k8s.io", ns),
        Check("bind", "roles", "rbac.authorization.k8s.io", ns),
        Check("bind", "clusterroles", "rbac.authorization.k8s.io"),
        Check("impersonate", "users"),
        Check("impersonate", "serviceaccounts", "", ns),
        *(Check(v, "customresourcedefinitions", "apiextensions.k8s.io") for v in ("create", "update", "patch", "delete")),
        *(Check(v, "namespaces") for v in ("create", "update", "patch", "delete")),
        Check("list", "nodes"),
        Check("create", "mutatingwebhookconfigurations", "admissionregistration.k8s.io"),
        Check("create", "certificatesigningrequests", "certificates.k8s.io"),
        Check("get", "leases", "coordination.k8s.io", release_ns, name="kube-scheduler"),
        Check("update", "leases", "coordination.k8s.io", release_ns, name="someone-elses-lease"),
        Check("delete", "leases", "coordination.k8s.io", release_ns, name=lease),
        Check("list", "leases", "coordination.k8s.io", release_ns),
        Check("get", "leases", "coordination.k8s.io", "kube-system", name=lease),
    ]


def worker_calls(ns: str) -> list[Check]:
    return [
        *(Check(v, r, "trading.dev", ns) for r in ("tradingsessions", "riskpolicies") for v in ("get", "list", "watch")),
        Check("get", "backups", "trading.dev", ns),
        Check("get", "backups", "trading.dev", ns, "status"),
        Check("patch", "backups", "trading.dev", ns, "status"),
        Check("create", "events", "", ns),
        Check("patch", "events", "", ns),  # a repeated Event's count (trading_workers.session_status)
    ]


def worker_must_not(ns: str) -> list[Check]:
    return [
        *(Check(v, "tradingsessions", "trading.dev", ns) for v in ("create", "update", "patch", "delete")),
        *(Check(v, "riskpolicies", "trading.dev", ns) for v in ("create", "update", "patch", "delete")),
        *(Check(v, "backups", "trading.dev", ns) for v in ("list", "watch", "create", "update", "patch", "delete")),
        # Session status belongs to each session's own workers (trading_operator.build.rbac), not to backups.
        *(Check(v, "tradingsessions", "trading.dev", ns, "status") for v in ("get", "patch", "update")),
        Check("update", "backups", "trading.dev", ns, "status"),
        Check("patch", "riskpolicies", "trading.dev", ns, "status"),
        Check("update", "tradingsessions", "trading.dev", ns, "finalizers"),
        *(Check(v, "configmaps", "", ns) for v in ("get", "list", "watch", "create", "update", "patch", "delete")),
        *(Check(v, "secrets", "", ns) for v in ("get", "list", "watch")),
        Check("list", "events", "", ns),
        *(Check(v, "deployments", "apps", ns) for v in ("get", "list", "patch", "create")),
        Check("get", "pods", "", ns),
        Check("create", "pods", "", ns, "exec"),
        Check("create", "jobs", "batch", ns),
        Check("get", "leases", "coordination.k8s.io", ns, name="trading-operator"),
        Check("get", "namespaces", name=ns),
        Check("list", "customresourcedefinitions", "apiextensions.k8s.io"),
    ]


def judge(imp: Impersonator, ns: str, sa: str, allowed: list[Check], denied: list[Check]) -> None:
    wrongly_denied = [str(c) for c in allowed if not imp.allowed(ns, sa, c)]
    wrongly_allowed = [str(c) for c in denied if imp.allowed(ns, sa, c)]
    assert not wrongly_denied, f"{sa} is denied calls it makes: {wrongly_denied}"
    assert not wrongly_allowed, f"{sa} is allowed calls it must not make: {wrongly_allowed}"


def test_rbac_cluster_scope(helm: Helm, crds_installed: Kubectl, impersonator: Impersonator) -> None:
    ns = new_namespace(crds_installed, "rbac-cluster")
    other = new_namespace(crds_installed, "rbac-other")
    release = unique("r")
    docs = helm.template(None, release, ns)
    apply(crds_installed, docs)
    operator = f"{release}-trading-platform-operator"
    lease = "trading-operator"
    # cluster scope: the operator's calls are allowed in every namespace.
    allowed = operator_calls(ns) + operator_calls(other) + operator_calls("default")
    allowed += operator_cluster_calls(ns, lease)
    judge(impersonator, ns, operator, allowed, operator_must_not(ns, ns, lease))
    # the workers: their session namespace only.
    judge(impersonator, ns, WORKER_SA, worker_calls(ns), worker_must_not(ns) + worker_calls(other))


def test_rbac_namespace_scope(helm: Helm, crds_installed: Kubectl, impersonator: Impersonator) -> None:
    ns = new_namespace(crds_installed, "rbac-ns")
    desks = [new_namespace(crds_installed, "desk"), new_namespace(crds_installed, "desk")]
    outside = new_namespace(crds_installed, "outside")
    release = unique("r")
    docs = helm.template({"rbac": {"scope": "namespace"}, "sessionNamespaces": desks}, release, ns)
    apply(crds_installed, docs)
    operator = f"{release}-trading-platform-operator"
    lease = "trading-operator"
    allowed = operator_calls(desks[0]) + operator_calls(desks[1]) + operator_cluster_calls(ns, lease)
    denied = operator_must_not(desks[0], ns, lease)
    # nothing namespaced outside the session namespaces: not its own namespace (bar its Lease), not others.
    denied += operator_calls(outside) + operator_calls(ns) + operator_calls("kube-system")
    judge(impersonator, ns, operator, allowed, denied)
    # a worker of one desk cannot touch the other desk.
    judge(impersonator, desks[0], WORKER_SA, worker_calls(desks[0]),
          worker_must_not(desks[0]) + worker_calls(desks[1]))
    judge(impersonator, desks[1], WORKER_SA, worker_calls(desks[1]), worker_calls(desks[0]))


def test_rbac_without_rotation_grants_no_secret_access(helm: Helm, crds_installed: Kubectl,
                                                       impersonator: Impersonator) -> None:
    """rotation.enabled=false: the operator has no verb at all on Secrets (rotation is the manual runbook)."""
    ns = new_namespace(crds_installed, "rbac-norot")
    release = unique("r")
    apply(crds_installed, helm.template({"rotation": {"enabled": False}}, release, ns))
    operator = f"{release}-trading-platform-operator"
    allowed = [c for c in operator_calls(ns) if c.resource != "secrets"]
    judge(impersonator, ns, operator, allowed, [Check(v, "secrets", "", ns) for v in ("get", "list", "watch")])


def test_rbac_real_calls_as_the_service_accounts(helm: Helm, crds_installed: Kubectl) -> None:
    """The same rules end to end: real requests, impersonating the ServiceAccounts with kubectl --as."""
    ns = new_namespace(crds_installed, "rbac-real")
    release = unique("r")
    apply(crds_installed, helm.template(None, release, ns))

    def as_sa(sa: str, *args: str, input: str | None = None) -> Any:
        return crds_installed(f"--as=system:serviceaccount:{ns}:{sa}", "--as-group=system:serviceaccounts",
                              f"--as-group=system:serviceaccounts:{ns}", *args, input=input)

    operator = f"{release}-trading-platform-operator"
    crds_installed("create", "secret", "generic", "alpaca", "-n", ns, "--from-literal=APCA_API_KEY_ID=x", check=True)
    assert as_sa(operator, "create", "configmap", "demo-config", "-n", ns, "--from-literal=a=b").returncode == 0
    assert as_sa(operator, "create", "deployment", "demo-executor", "-n", ns, "--image=x").returncode == 0
    lease = ("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: trading-operator}\n"
             "spec: {holderIdentity: op-0, leaseDurationSeconds: 15}\n")
    assert as_sa(operator, "create", "-n", ns, "-f", "-", input=lease).returncode == 0
    # The operator reads and replaces its Lease (get + update, as leader.py does); patch is not granted.
    current = as_sa(operator, "get", "lease", "trading-operator", "-n", ns, "-o", "json")
    assert current.returncode == 0, current.stderr
    renewed = json.loads(current.stdout)
    renewed["spec"]["holderIdentity"] = "op-1"
    taken = as_sa(operator, "replace", "-f", "-", input=json.dumps(renewed))
    assert taken.returncode == 0, taken.stderr
    patched = as_sa(operator, "patch", "lease", "trading-operator", "-n", ns, "--type=merge",
                    "-p", '{"spec":{"holderIdentity":"op-2"}}')
    assert patched.returncode != 0 and "forbidden" in patched.stderr.lower()
    for forbidden in (as_sa(operator, "get", "secret", "alpaca", "-n", ns),
                      as_sa(operator, "get", "lease", "kube-controller-manager", "-n", "kube-system"),
                      as_sa(operator, "create", "clusterrole", "x", "--verb=get", "--resource=secrets")):
        assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr.lower(), forbidden.stderr

    crds_installed("apply", "-n", ns, "-f", "-", check=True, input=(
        "apiVersion: trading.dev/v1alpha1\nkind: TradingSession\nmetadata: {name: demo}\n"
        "spec: {symbols: [AAPL], riskPolicyRef: {name: p}}\n"))
    assert as_sa(WORKER_SA, "get", "tradingsession", "demo", "-n", ns).returncode == 0  # a backup reads it
    for forbidden in (as_sa(WORKER_SA, "patch", "tradingsession", "demo", "-n", ns, "--subresource=status",
                            "--type=merge", "-p", '{"status":{"executor":{"openOrders":0}}}'),
                      as_sa(WORKER_SA, "get", "configmap", "demo-config", "-n", ns),
                      as_sa(WORKER_SA, "patch", "tradingsession", "demo", "-n", ns, "--type=merge",
                            "-p", '{"spec":{"halted":true}}'),
                      as_sa(WORKER_SA, "delete", "tradingsession", "demo", "-n", ns),
                      as_sa(WORKER_SA, "get", "secret", "alpaca", "-n", ns),
                      as_sa(WORKER_SA, "get", "pods", "-n", ns)):
        assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr.lower(), forbidden.stderr


# ------------------------------------------------------------------ Pod Security Standard: restricted

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
              "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "latest",
              "pod-security.kubernetes.io/audit": "restricted"}


def pods_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod the render would run: its Pods, and a Pod from each Deployment's and Job's template."""
    pods = [d for d in docs if d["kind"] == "Pod"]
    for deployment in find(docs, "Deployment") + find(docs, "Job"):
        template = deployment["spec"]["template"]
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": deployment["metadata"]["name"] + "-pod",
                                  "namespace": deployment["metadata"]["namespace"],
                                  "labels": template["metadata"]["labels"]},
                     "spec": template["spec"]})
    return pods


@pytest.mark.parametrize("values", [None, {**NON_DEFAULT, "crds": {"create": False}}], ids=["default", "non-default"])
def test_workloads_meet_the_restricted_pod_security_standard(helm: Helm, monitoring_crds: Kubectl,
                                                             values: dict[str, Any] | None) -> None:
    ns = new_namespace(monitoring_crds, "restricted", RESTRICTED)
    docs = helm.template(values, unique("r"), ns)
    # The whole render, workloads included, into the restricted namespace: not one warning.
    stderr = apply(monitoring_crds, docs)
    assert not warnings(stderr), stderr
    # Deployments never get pods here (no controller-manager): create their pods directly, where
    # `enforce` refuses anything non-compliant.
    pods = [p for p in pods_of(docs) if p["metadata"]["name"].endswith("-pod")]
    assert pods
    proc = monitoring_crds("create", "-f", "-", input=dumps(pods))
    assert proc.returncode == 0, proc.stderr
    assert not warnings(proc.stderr), proc.stderr


def test_restricted_namespace_really_refuses_a_non_compliant_pod(crds_installed: Kubectl) -> None:
    """The control: Pod Security admission is on, so the test above would have failed."""
    ns = new_namespace(crds_installed, "restricted", RESTRICTED)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "loose", "namespace": ns},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    proc = crds_installed("create", "-f", "-", input=yaml.safe_dump(pod))
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "loose", "namespace": ns},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}}}
    proc = crds_installed("apply", "--server-side", "-f", "-", input=yaml.safe_dump(deployment))
    assert proc.returncode == 0 and "Warning:" in proc.stderr and "restricted" in proc.stderr, proc.stderr

