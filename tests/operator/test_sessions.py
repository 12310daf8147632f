"""The operator against the real control plane: workers, the calendar day, halts, policies, deletion."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.fixtures.api import Api
from tests.fixtures.waiting import eventually_sync
from trading_operator import names
from trading_operator.api import phases
from trading_operator.api.session import Role

pytestmark = pytest.mark.cluster

ZERO_WORKERS = {role.value: {"replicas": 0} for role in Role}


def policy(name: str = "limits", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": name}, "spec": spec}


def session(name: str, policy_name: str = "limits", **spec: Any) -> dict[str, Any]:
    body = {"symbols": ["AAPL", "MSFT"], "riskPolicyRef": {"name": policy_name}}
    body.update(spec)
    return {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": name}, "spec": body}


def status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return api.get(ns, "tradingsessions", name).get("status") or {}


def condition(api: Api, ns: str, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(api, ns, name).get("conditions", []) if c["type"] == type_), {})


def assert_legal(api: Api, ns: str, name: str) -> list[str]:
    """Every recorded transition is in the table; returns the phases in order."""
    seen = [t["to"] for t in status(api, ns, name).get("transitions", [])]
    for src, dst in itertools.pairwise([None, *seen]):
        assert phases.can_transition(src, dst), f"illegal transition observed: {src} -> {dst}"
    return seen


def test_session_becomes_five_deployments(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("s1", workers={"inference": {"replicas": 1}}))
    deps = eventually_sync(lambda: len(items := api.apps.list_namespaced_deployment(
        namespace, label_selector=f"{names.LABEL_SESSION}=s1").items) == 5 and items, what="5 deployments")
    by_role = {d.metadata.labels[names.LABEL_ROLE]: d for d in deps}
    assert set(by_role) == set(names.ROLE_SLUG.values())
    uid = api.get(namespace, "tradingsessions", "s1")["metadata"]["uid"]
    for dep in deps:
        owner = dep.metadata.owner_references[0]
        assert (owner.kind, owner.uid, owner.controller) == ("TradingSession", uid, True)
        assert dep.metadata.labels["app.kubernetes.io/managed-by"] == names.MANAGED_BY
        pod = dep.spec.template.spec
        sc = pod.containers[0].security_context
        assert pod.security_context.run_as_non_root and sc.read_only_root_filesystem
        assert sc.capabilities.drop == ["ALL"] and sc.allow_privilege_escalation is False
        assert sc.seccomp_profile.type == "RuntimeDefault"
        assert pod.containers[0].command[-2:] == ["--session", f"{namespace}/s1"]
    inference = by_role["inference"].spec.template.spec
    assert inference.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert inference.node_selector == {"trading.dev/pool": "gpu"}
    assert any(t.key == "nvidia.com/gpu" for t in inference.tolerations)
    assert by_role["strategy"].spec.template.spec.node_selector is None
    assert by_role["executor"].spec.strategy.type == "Recreate"
    assert api.core.read_namespaced_config_map(names.configmap("s1"), namespace).data["config.json"]

    # Status reflects the Deployments (written here as a kubelet/controller would).
    eventually_sync(lambda: status(api, namespace, "s1").get("workers", {}).get("strategy") == {"ready": 0, "desired": 1})
    api.apps.patch_namespaced_deployment_status(names.deployment("s1", Role.STRATEGY), namespace,
                                                {"status": {"replicas": 1, "readyReplicas": 1}})
    eventually_sync(lambda: status(api, namespace, "s1")["workers"]["strategy"] == {"ready": 1, "desired": 1},
                    what="ready count in session status")


def test_no_diff_base_is_written_to_sessions_or_policies(api: Api, operator: Any, namespace: str) -> None:
    """kopf's diff-base is not kept (handlers.NoDiffBase): nothing reads it, and writing it cost a PATCH of
    every new object. The finalizer is the only thing kopf itself puts on our objects."""
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("nd", workers=ZERO_WORKERS))
    eventually_sync(lambda: status(api, namespace, "nd").get("phase")
                    and names.FINALIZER in api.get(namespace, "tradingsessions", "nd")["metadata"].get("finalizers", []),
                    what="the session reconciled and finalized")
    eventually_sync(lambda: (api.get(namespace, "riskpolicies", "limits").get("status") or {}).get("observedGeneration"),
                    what="the policy reconciled")
    for plural, name in (("tradingsessions", "nd"), ("riskpolicies", "limits")):
        annotations = api.get(namespace, plural, name)["metadata"].get("annotations") or {}
        assert not [k for k in annotations if k.endswith("last-handled-configuration")], (plural, annotations)


def test_device_cpu_keeps_inference_off_the_gpu_pool(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session(
        "cpu", strategy={"name": "model", "model": {"device": "cpu"}}))
    dep = eventually_sync(lambda: api.apps.read_namespaced_deployment(names.deployment("cpu", Role.INFERENCE), namespace))
    pod = dep.spec.template.spec
    assert pod.node_selector is None and pod.tolerations is None
    assert "nvidia.com/gpu" not in (pod.containers[0].resources.limits or {})


def test_simulated_clock_drives_a_full_day_and_a_holiday_does_not_open(api: Api, operator: Any,
                                                                         namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    fast = {"mode": "simulated", "speed": 2400}
    # Monday 2026-11-23, 03:59:30 New York; and Thanksgiving, 2026-11-26, the same time.
    api.create(namespace, "tradingsessions", session("day", workers=ZERO_WORKERS,
                                                     clock={**fast, "start": "2026-11-23T08:59:30Z"}))
    api.create(namespace, "tradingsessions", session("holiday", workers=ZERO_WORKERS,
                                                     clock={**fast, "start": "2026-11-26T08:59:30Z"}))
    want = ["Initializing", "PreMarket", "MarketOpen", "MarketClose", "AfterHours", "Initializing"]
    eventually_sync(lambda: assert_legal(api, namespace, "day")[:6] == want, timeout=60, interval=0.5,
                    what="a full trading day")
    seen = assert_legal(api, namespace, "holiday")
    assert "MarketOpen" not in seen and seen[0] == "Initializing", seen
    kinds = [e.reason for e in api.events(namespace, "day")]
    assert kinds.count("PhaseChanged") >= 6
    assert status(api, namespace, "day")["nextTransition"]["phase"] == "PreMarket"


def test_halt_and_resume_by_halt_id(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("h", workers=ZERO_WORKERS))
    eventually_sync(lambda: status(api, namespace, "h").get("phase"))
    api.patch(namespace, "tradingsessions", "h", {"spec": {"halted": True, "haltReason": "drill"}})
    eventually_sync(lambda: status(api, namespace, "h").get("phase") == "Halted", timeout=10)
    halt = status(api, namespace, "h")["halt"]
    assert halt["active"] and halt["source"] == "User" and halt["reason"] == "drill"
    assert condition(api, namespace, "h", "Halted")["status"] == "True"
    eventually_sync(lambda: "Halted" in [e.reason for e in api.events(namespace, "h")], what="Halted event")

    api.patch(namespace, "tradingsessions", "h", {"spec": {"halted": False, "resumeHaltId": "h-stale0"}})
    eventually_sync(lambda: condition(api, namespace, "h", "Resumable").get("reason") == "StaleHaltId", timeout=10)
    assert status(api, namespace, "h")["halt"]["active"] is True
    eventually_sync(lambda: "ResumeRefused" in [e.reason for e in api.events(namespace, "h")])

    api.patch(namespace, "tradingsessions", "h", {"spec": {"resumeHaltId": halt["id"]}})
    eventually_sync(lambda: "halt" not in status(api, namespace, "h"), timeout=10, what="resume")
    assert status(api, namespace, "h")["lastHalt"]["id"] == halt["id"]
    # Back into the phase the calendar dictates now (not necessarily the one before the halt).
    eventually_sync(lambda: status(api, namespace, "h")["phase"] != "Halted", timeout=10, what="left Halted")
    last = status(api, namespace, "h")["transitions"][-1]
    assert last["from"] == "Halted" and last["reason"] == f"resumed from halt {halt['id']}", last
    eventually_sync(lambda: "Resumed" in [e.reason for e in api.events(namespace, "h")], what="the Resumed Event")
    assert_legal(api, namespace, "h")


def test_policy_mode_halted_halts_every_session_and_latches(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy("kill"))
    for name in ("a", "b"):
        api.create(namespace, "tradingsessions", session(name, "kill", workers=ZERO_WORKERS))
    for name in ("a", "b"):
        eventually_sync(lambda n=name: status(api, namespace, n).get("phase"))
    api.patch(namespace, "riskpolicies", "kill", {"spec": {"mode": "Halted"}})
    for name in ("a", "b"):
        eventually_sync(lambda n=name: status(api, namespace, n).get("halt", {}).get("source") == "Policy", timeout=10)
        assert status(api, namespace, name)["phase"] == "Halted"
    api.patch(namespace, "riskpolicies", "kill", {"spec": {"mode": "Active"}})
    # Latched: the policy going back to Active does not clear the halt by itself.
    eventually_sync(lambda: status(api, namespace, "a")["riskPolicy"]["mode"] == "Active")
    assert status(api, namespace, "a")["halt"]["active"] is True
    halt_id = status(api, namespace, "a")["halt"]["id"]
    api.patch(namespace, "tradingsessions", "a", {"spec": {"resumeHaltId": halt_id}})
    eventually_sync(lambda: "halt" not in status(api, namespace, "a"), timeout=10)
    assert status(api, namespace, "b")["halt"]["active"] is True
    assert_legal(api, namespace, "a")


def test_hand_deleted_deployment_is_restored_and_changes_roll_out(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("r"))
    dep_name = names.deployment("r", Role.MARKET_DATA)
    first = eventually_sync(lambda: api.apps.read_namespaced_deployment(dep_name, namespace))
    api.apps.delete_namespaced_deployment(dep_name, namespace)
    eventually_sync(lambda: api.apps.read_namespaced_deployment(dep_name, namespace).metadata.uid != first.metadata.uid,
                    timeout=10, what="deployment restored")
    api.apps.patch_namespaced_deployment(dep_name, namespace, {"spec": {"replicas": 7}})
    eventually_sync(lambda: api.apps.read_namespaced_deployment(dep_name, namespace).spec.replicas == 1, timeout=10,
                    what="hand edit put back")

    old_hash = first.spec.template.metadata.annotations[names.ANNOTATION_CONFIG_HASH]
    api.patch(namespace, "tradingsessions", "r", {"spec": {"symbols": ["AAPL", "MSFT", "NVDA"]}})
    eventually_sync(lambda: api.apps.read_namespaced_deployment(dep_name, namespace)
                    .spec.template.metadata.annotations[names.ANNOTATION_CONFIG_HASH] != old_hash, timeout=10,
                    what="symbols change rolled out")
    assert "NVDA" in api.core.read_namespaced_config_map(names.configmap("r"), namespace).data["config.json"]

    eventually_sync(lambda: status(api, namespace, "r").get("riskPolicy", {}).get("observedGeneration") == 1)
    api.patch(namespace, "riskpolicies", "limits", {"spec": {"orderControls": {"maxOrderNotional": 5000}}})
    eventually_sync(lambda: status(api, namespace, "r")["riskPolicy"]["observedGeneration"] == 2, timeout=10,
                    what="policy generation propagated")
    pol = api.get(namespace, "riskpolicies", "limits")
    eventually_sync(lambda: "r" in api.get(namespace, "riskpolicies", "limits").get("status", {}).get("sessions", []),
                    timeout=15)
    assert pol["spec"]["orderControls"]["maxOrderNotional"] == 5000


def test_missing_policy_blocks_trading_with_a_condition(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "tradingsessions", session("orphan", "does-not-exist", workers=ZERO_WORKERS))
    cond = eventually_sync(lambda: condition(api, namespace, "orphan", "PolicyApplied"))
    assert cond["status"] == "False" and cond["reason"] == "PolicyNotFound"
    assert status(api, namespace, "orphan")["tradingState"] == "Halted"


def test_delete_runs_the_finalizer_and_removes_workers(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("bye"))
    eventually_sync(lambda: api.get(namespace, "tradingsessions", "bye")["metadata"].get("finalizers"))
    eventually_sync(lambda: len(api.apps.list_namespaced_deployment(
        namespace, label_selector=f"{names.LABEL_SESSION}=bye").items) == 5)
    api.delete(namespace, "tradingsessions", "bye")

    def gone() -> bool:
        try:
            api.get(namespace, "tradingsessions", "bye")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually_sync(gone, timeout=20, what="finalizer released")
    eventually_sync(lambda: not api.apps.list_namespaced_deployment(
        namespace, label_selector=f"{names.LABEL_SESSION}=bye").items, timeout=10, what="workers deleted")


def test_a_policy_in_use_is_protected_from_deletion(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy("held"))
    api.create(namespace, "tradingsessions", session("user", "held", workers=ZERO_WORKERS))
    eventually_sync(lambda: condition(api, namespace, "user", "PolicyApplied").get("status") == "True", timeout=15)
    eventually_sync(lambda: api.get(namespace, "riskpolicies", "held")["metadata"].get("finalizers"), timeout=15,
                    what="the policy's finalizer")
    api.delete(namespace, "riskpolicies", "held")
    eventually_sync(lambda: "PolicyInUse" in [e.reason for e in api.events(namespace, "held")], timeout=15,
                    what="PolicyInUse event naming the session")
    event = next(e for e in api.events(namespace, "held") if e.reason == "PolicyInUse")
    assert "user" in event.message
    assert api.get(namespace, "riskpolicies", "held")["metadata"].get("deletionTimestamp")
    cond = eventually_sync(lambda: condition(api, namespace, "user", "PolicyApplied").get("reason") == "PolicyDeleting"
                           and condition(api, namespace, "user", "PolicyApplied"), timeout=15)
    assert cond["status"] == "False"
    ready = condition(api, namespace, "user", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PolicyDeleting")
    assert status(api, namespace, "user")["tradingState"] == "Halted"
    # Once no session uses it, the deletion completes.
    api.delete(namespace, "tradingsessions", "user")

    def gone() -> bool:
        try:
            api.get(namespace, "riskpolicies", "held")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually_sync(gone, timeout=30, what="the policy deleted once unused")


def test_events_are_reported_by_the_operator_not_kopf(api: Api, operator: Any, namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("ev", workers=ZERO_WORKERS))
    eventually_sync(lambda: "PhaseChanged" in [e.reason for e in api.events(namespace, "ev")], what="PhaseChanged")
    events = api.events(namespace, "ev")
    assert {e.source.component for e in events} == {"trading-operator"}, [e.source for e in events]
    first = next(e for e in events if e.reason == "PhaseChanged" and "Initializing" in e.message
                 and "->" not in e.message)
    assert first.message == "started in Initializing"
