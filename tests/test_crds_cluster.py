"""The CRDs against the real API server: install, examples, invalid corpus, phase rule, explain, RBAC."""

from __future__ import annotations

import collections
import itertools
import pathlib

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import ROOT, Kubectl
from tests.fixtures.api import G, V
from trading_operator.api import phases
from trading_operator.api.phases import Phase

pytestmark = pytest.mark.cluster

INVALID = sorted((ROOT / "tests" / "data" / "invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def expected(path: pathlib.Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


def test_corpus_is_big_enough() -> None:
    assert len(INVALID) >= 30


def test_crds_are_established_with_category(crds_installed: Kubectl) -> None:
    out = crds_installed("api-resources", "--api-group=trading.dev", "-o", "name", check=True).stdout.split()
    assert sorted(out) == ["backups.trading.dev", "riskpolicies.trading.dev", "tradingsessions.trading.dev"]
    assert crds_installed("get", "trading", "-A", check=True).returncode == 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(crds_installed: Kubectl, namespace: str, path: pathlib.Path) -> None:
    crds_installed("apply", "-n", namespace, "-f", str(path), check=True)


def test_defaults_are_filled_by_the_api_server(crds_installed: Kubectl, namespace: str) -> None:
    crds_installed("apply", "-n", namespace, "-f", "-", check=True, input=(
        "apiVersion: trading.dev/v1alpha1\nkind: TradingSession\nmetadata: {name: minimal}\n"
        "spec: {symbols: [AAPL], riskPolicyRef: {name: p}}\n"))
    got = crds_installed("get", "ts", "minimal", "-n", namespace, "-o",
                         "jsonpath={.spec.broker.kind}/{.spec.calendar.exchange}/{.spec.workers.executor.replicas}",
                         check=True).stdout
    assert got == "simulated/XNYS/1"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(
        crds_installed: Kubectl, namespace: str, path: pathlib.Path) -> None:
    proc = crds_installed("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", str(path))
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert expected(path) in proc.stderr, proc.stderr


# ------------------------------------------------------------------ phase transitions

def _path_to(target: Phase) -> list[Phase]:
    """Shortest legal walk from Initializing to ``target``."""
    queue = collections.deque([[Phase.INITIALIZING]])
    while queue:
        walk = queue.popleft()
        if walk[-1] is target:
            return walk
        queue.extend([*walk, n] for n in phases.TRANSITIONS[walk[-1]] if n not in walk)
    raise AssertionError(target)


@pytest.fixture(scope="module")
def custom(control_plane) -> client.CustomObjectsApi:  # type: ignore[no-untyped-def]
    return client.CustomObjectsApi(config.new_client_from_config(str(control_plane.kubeconfig_path)))


def _set_phase(api: client.CustomObjectsApi, ns: str, name: str, phase: Phase) -> None:
    api.patch_namespaced_custom_object_status(
        G, V, ns, "tradingsessions", name, {"status": {"phase": phase.value}})


def test_every_phase_transition_is_enforced_by_the_api_server(
        crds_installed: Kubectl, namespace: str, custom: client.CustomObjectsApi) -> None:
    body = {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession",
            "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}}
    results = {}
    for i, (src, dst) in enumerate(itertools.product(Phase, Phase)):
        name = f"t{i}"
        custom.create_namespaced_custom_object(G, V, namespace, "tradingsessions",
                                               {**body, "metadata": {"name": name}})
        for step in _path_to(src):
            _set_phase(custom, namespace, name, step)
        try:
            _set_phase(custom, namespace, name, dst)
            results[(src, dst)] = True
        except ApiException as exc:
            assert exc.status == 422, exc.body
            assert "illegal phase transition" in exc.body
            results[(src, dst)] = False
    wrong = {k: v for k, v in results.items() if v != phases.can_transition(*k)}
    assert not wrong, f"API server disagrees with the table on: {wrong}"
    assert sum(results.values()) < len(results)  # some were refused


def test_first_phase_must_be_initializing(
        crds_installed: Kubectl, namespace: str, custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(G, V, namespace, "tradingsessions", {
        "apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "first"},
        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}})
    with pytest.raises(ApiException) as err:
        _set_phase(custom, namespace, "first", Phase.MARKET_OPEN)
    assert "first phase must be Initializing" in err.value.body
    _set_phase(custom, namespace, "first", Phase.INITIALIZING)


# ------------------------------------------------------------------ explain and RBAC

def test_kubectl_explain_prints_the_description(crds_installed: Kubectl) -> None:
    out = crds_installed("explain", "tradingsession.spec.halted", check=True).stdout
    assert "halt switch" in out
    out = crds_installed("explain", "riskpolicy.spec.limits.dailyLoss.haltPct", check=True).stdout
    assert "halts" in out
    out = " ".join(crds_installed("explain", "backup.spec.timeZone", check=True).stdout.split())
    assert "IANA time zone" in out and "America/New_York" in out
    out = " ".join(crds_installed("explain", "backup.spec.destination.s3.credentialsSecretRef", check=True).stdout.split())
    assert "secretKeyRef (never inline)" in out
    out = " ".join(crds_installed("explain", "tradingsession.spec.strategy.model.uri", check=True).stdout.split())
    assert "manifest.json" in out and "mounted read-only" in out


def test_non_admin_user_is_denied_what_rbac_does_not_grant(control_plane, crds_installed: Kubectl,  # type: ignore[no-untyped-def]
                                                           namespace: str) -> None:
    viewer = Kubectl(control_plane.mint_user("risk-owner", ["trading:risk"]))
    denied = viewer("get", "tradingsessions", "-n", namespace)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    crds_installed("create", "role", "policy-editor", "-n", namespace, "--verb=get,list,patch,update",
                   "--resource=riskpolicies.trading.dev", check=True)
    crds_installed("create", "rolebinding", "risk-owner", "-n", namespace, "--role=policy-editor",
                   "--group=trading:risk", check=True)
    assert viewer("get", "riskpolicies", "-n", namespace).returncode == 0
    still = viewer("get", "tradingsessions", "-n", namespace)
    assert still.returncode != 0 and "forbidden" in still.stderr.lower()
    can = viewer("auth", "can-i", "delete", "riskpolicies.trading.dev", "-n", namespace)
    assert can.stdout.strip() == "no"
