"""The live-trading gate at admission: the chart's ValidatingAdmissionPolicies on the real API server.

A TradingSession with ``broker.paper: false`` is refused before it is stored unless its namespace
carries ``trading.dev/live=enabled`` and the RiskPolicy it names sets ``allowLive: true``; a paper
session is never affected. (The operator's and the executor's halves of the gate are proven in
test_decide.py, tests/workers/test_units.py and the drills.)
"""

from __future__ import annotations

import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, Kubectl

pytestmark = pytest.mark.cluster
CHART = ROOT / "charts" / "trading-platform"


@pytest.fixture(scope="module")
def admission(crds_installed: Kubectl) -> Iterator[Kubectl]:
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, f"hack/install-helm.sh failed:\n{proc.stderr}"
    helm = pathlib.Path(proc.stdout.strip().splitlines()[-1])
    rendered = subprocess.run([str(helm), "template", "gate", str(CHART), "--namespace", "trading",
                               "--show-only", "templates/validatingadmissionpolicy.yaml"],
                              capture_output=True, text=True, timeout=120, check=True).stdout
    crds_installed("apply", "-f", "-", input=rendered, check=True)
    try:
        yield crds_installed
    finally:
        crds_installed("delete", "-f", "-", "--ignore-not-found", input=rendered)


def _namespace(kubectl: Kubectl, live_label: bool, allow_live: bool) -> str:
    name = f"gate-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name, check=True)
    if live_label:
        kubectl("label", "namespace", name, "trading.dev/live=enabled", check=True)
    kubectl("apply", "-n", name, "-f", "-", check=True, input=_yaml({
        "apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": "limits"},
        "spec": {"allowLive": allow_live}}))
    return name


def _yaml(obj: dict[str, Any]) -> str:
    import json

    return json.dumps(obj)


def _session(kubectl: Kubectl, namespace: str, paper: bool) -> subprocess.CompletedProcess[str]:
    return kubectl("create", "-n", namespace, "-f", "-", input=_yaml({
        "apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession",
        "metadata": {"name": f"s-{uuid.uuid4().hex[:6]}"},
        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "limits"},
                 "broker": {"kind": "alpaca", "paper": paper, "credentialsSecretRef": {"name": "keys"}}}}))


def test_a_live_session_is_refused_at_admission_without_label_and_allow_live(admission: Kubectl) -> None:
    unlabelled = _namespace(admission, live_label=False, allow_live=True)
    not_allowed = _namespace(admission, live_label=True, allow_live=False)
    cleared = _namespace(admission, live_label=True, allow_live=True)
    # The API server loads a new policy within a second or so: wait until it refuses.
    deadline, refused = time.monotonic() + 30, _session(admission, unlabelled, paper=False)
    while refused.returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        refused = _session(admission, unlabelled, paper=False)
    assert refused.returncode != 0, "a live session in an unlabelled namespace was admitted"
    assert "spec.broker.paper" in refused.stderr and "trading.dev/live=enabled" in refused.stderr, refused.stderr
    refused = _session(admission, not_allowed, paper=False)
    assert refused.returncode != 0 and "allowLive" in refused.stderr, refused.stderr
    admitted = _session(admission, cleared, paper=False)
    assert admitted.returncode == 0, admitted.stderr
    for namespace in (unlabelled, not_allowed):
        paper = _session(admission, namespace, paper=True)
        assert paper.returncode == 0, paper.stderr
