"""The workers' NetworkPolicy: rendered by the chart, accepted by the real API server, and selecting
exactly the pods the operator builds. Enforcement needs a CNI plugin that implements NetworkPolicy;
neither the local control plane nor `make cluster`'s bridge plugin does, so this proves the policy's
shape and its selection, not packets dropped."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.security.conftest import render
from trading_operator.api.backup import Backup
from trading_operator.api.session import Role, TradingSession
from trading_operator.build import backup as build_backup
from trading_operator.build import workers as build_workers
from trading_operator.settings import Settings

pytestmark = pytest.mark.cluster


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchExpressions"}
    return all(labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"] if e["operator"] == "In")


def test_the_workers_policy_selects_worker_and_backup_pods_and_allows_only_their_peers(
        helm: pathlib.Path, crds_installed: Kubectl) -> None:
    docs = [d for d in yaml.safe_load_all(render(helm, "networkpolicy-workers.yaml",
                                                 {"sessionNamespaces": ["desk-a", "desk-b"]})) if d]
    assert sorted(d["metadata"]["namespace"] for d in docs) == ["desk-a", "desk-b"]
    policy = docs[0]["spec"]
    ts = TradingSession.model_validate({"metadata": {"name": "s", "namespace": "desk-a", "uid": "u"},
                                        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}})
    settings = Settings()
    for role in Role:
        pod = build_workers.deployment(ts, role, settings)["spec"]["template"]
        assert _selects(policy["podSelector"], pod["metadata"]["labels"]), role
        assert pod["spec"]["containers"][0]["ports"][0]["name"] == policy["ingress"][0]["ports"][0]["port"]
    backup = Backup.model_validate({"metadata": {"name": "b", "namespace": "desk-a"},
                                    "spec": {"sessionRef": {"name": "s"}, "targets": ["journal"],
                                             "destination": {"pvc": {"claimName": "c"}}}})
    assert _selects(policy["podSelector"], build_backup.pod_template(backup, settings)["metadata"]["labels"])
    assert not _selects(policy["podSelector"], {"app.kubernetes.io/name": "trading-platform",
                                                "app.kubernetes.io/part-of": "trading-platform"})  # the operator
    assert policy["policyTypes"] == ["Ingress", "Egress"] and len(policy["ingress"]) == 1
    ports = sorted(p["port"] for rule in policy["egress"] for p in rule["ports"])
    assert ports == sorted([53, 53, 6379, 5432, 443, 6443, 443]), ports
    # The API server accepts it (server-side dry run: the namespaces need not exist for validation).
    crds_installed("create", "namespace", "desk-a", check=False)
    out = crds_installed("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(docs[0]))
    assert out.returncode == 0, out.stderr
