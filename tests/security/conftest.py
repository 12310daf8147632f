"""Fixtures of the security tests: the chart's admission policies applied to the real API server, and
kubectl calls made as another identity (impersonation, as ``kubectl --as``)."""

from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, Kubectl

CHART = ROOT / "charts" / "trading-platform"
RELEASE, RELEASE_NAMESPACE = "sec", "trading"
OPERATOR = f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-trading-platform-operator"
# The binding applies to namespaces with this label only, so the policy never meets the sessions of
# other test packages (whose operator and workers run with the admin's credentials).
SCOPE_LABEL = "trading.dev/security-test"


@pytest.fixture(scope="session")
def helm() -> pathlib.Path:
    return helm_binary()


def helm_binary() -> pathlib.Path:
    """The helm binary the project builds (hack/install-helm.sh; cached after the first build)."""
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, f"hack/install-helm.sh failed:\n{proc.stderr}"
    return pathlib.Path(proc.stdout.strip().splitlines()[-1])


def render(helm: pathlib.Path, template: str | None, values: dict[str, Any] | None = None,
           api_versions: tuple[str, ...] = ()) -> str:
    """``helm template`` of one template (None: the whole chart); ``api_versions``: what the cluster serves."""
    args = [str(helm), "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
            *(["--show-only", f"templates/{template}"] if template else []),
            *(f"--api-versions={v}" for v in api_versions)]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.fixture(scope="package")
def status_admission(crds_installed: Kubectl, helm: pathlib.Path) -> Iterator[Kubectl]:
    rendered = render(helm, "statusadmission.yaml",
                      {"statusAdmission.namespaceSelector": {"matchLabels": {SCOPE_LABEL: "true"}}})
    crds_installed("apply", "-f", "-", input=rendered, check=True)
    try:
        yield crds_installed
    finally:
        crds_installed("delete", "-f", "-", "--ignore-not-found", input=rendered)


def service_account(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def as_identity(kubectl: Kubectl, user: str | None, *args: str,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl as ``user`` (None: the admin of the kubeconfig, in system:masters)."""
    if user is None:
        return kubectl(*args, input=input)
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    return kubectl(f"--as={user}", *(f"--as-group={g}" for g in groups), *args, input=input)


MAP = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


def serves_mutating_policies(kubectl: Kubectl) -> bool:
    out = kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name", check=True).stdout
    return "mutatingadmissionpolicies.admissionregistration.k8s.io" in out.split()


@contextlib.contextmanager
def identity_policies(kubectl: Kubectl, helm: pathlib.Path) -> Iterator[bool]:
    """The chart's identity policies bound to SCOPE_LABEL namespaces, applied when the API server serves
    them; yields whether it does."""
    if not serves_mutating_policies(kubectl):
        yield False
        return
    rendered = render(helm, "identityadmission.yaml",
                      {"identityAdmission.namespaceSelector": {"matchLabels": {SCOPE_LABEL: "true"}}}, (MAP,))
    kubectl("apply", "-f", "-", input=rendered, check=True)
    try:
        _wait_until_stamping(kubectl)
        yield True
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered)


def _wait_until_stamping(kubectl: Kubectl, timeout: float = 60.0) -> None:
    """An applied admission policy takes effect when the API server's policy informer has it, not when
    ``kubectl apply`` returns: a write in between is admitted unmutated. Wait until a server-side dry-run
    halt in a scoped namespace comes back stamped with who asked."""
    namespace = f"who-probe-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace, check=True)
    kubectl("label", "namespace", namespace, f"{SCOPE_LABEL}=true", check=True)
    probe = json.dumps({"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession",
                        "metadata": {"name": "probe", "namespace": namespace},
                        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}, "halted": True,
                                 "haltReason": "probe"}})
    deadline = time.monotonic() + timeout
    try:
        while True:
            out = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=probe)
            stamped = out.returncode == 0 and "trading.dev/halt-requested-by" in (
                json.loads(out.stdout).get("metadata", {}).get("annotations") or {})
            if stamped:
                return
            assert time.monotonic() < deadline, (
                f"the identity policies did not take effect within {timeout:.0f} s: {out.stderr or out.stdout}")
            time.sleep(0.2)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="package")
def identity_admission(crds_installed: Kubectl, helm: pathlib.Path) -> Iterator[bool]:
    with identity_policies(crds_installed, helm) as served:
        yield served
