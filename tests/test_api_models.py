"""Unit tests of the API contract: models, defaults, the phase table, the CRD generator."""

from __future__ import annotations

import itertools

import pydantic
import pytest

from tests.conftest import CRDS
from trading_operator import crdgen
from trading_operator.api import phases
from trading_operator.api.phases import Phase
from trading_operator.api.riskpolicy import RiskPolicySpec
from trading_operator.api.session import TradingSessionSpec


def test_checked_in_crds_are_fresh() -> None:
    assert crdgen.main(["--out", str(CRDS), "--check"]) == 0, "crds/ is stale: run `make crds`"


def test_base_table_is_contained_in_the_extended_table() -> None:
    for src, targets in phases.BASE_TRANSITIONS.items():
        assert targets <= phases.TRANSITIONS[src], src


@pytest.mark.parametrize("src", [p for p in Phase if p not in (Phase.HALTED, Phase.ERROR)])
def test_halt_is_reachable_from_every_phase_but_error(src: Phase) -> None:
    assert phases.can_transition(src, Phase.HALTED)


def test_illegal_transitions_are_refused() -> None:
    assert not phases.can_transition(Phase.MARKET_CLOSE, Phase.MARKET_OPEN)
    assert not phases.can_transition(Phase.AFTER_HOURS, Phase.PRE_MARKET)
    assert not phases.can_transition(Phase.ERROR, Phase.MARKET_OPEN)
    assert not phases.can_transition(None, Phase.MARKET_OPEN)
    with pytest.raises(phases.IllegalTransition):
        phases.check_transition(Phase.INITIALIZING, Phase.MARKET_OPEN)


def test_cel_rule_mentions_every_allowed_pair_and_no_other() -> None:
    rule = phases.cel_transition_rule()
    for src, dst in itertools.product(Phase, Phase):
        clause = f"oldSelf == '{src.value}' && self in ["
        start = rule.index(clause) + len(clause)
        allowed = rule[start:rule.index("]", start)]
        assert (f"'{dst.value}'" in allowed) == (dst in phases.TRANSITIONS[src]), (src, dst)


def test_session_defaults_are_the_embedded_ones() -> None:
    spec = TradingSessionSpec.model_validate({"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}})
    assert spec.broker.kind == "simulated" and spec.broker.paper is True
    assert spec.calendar.exchange == "XNYS" and spec.calendar.pre_market_start == "04:00"
    assert spec.clock.mode == "wall"
    assert spec.on_halt == "CancelOpenOrders"
    assert spec.workers.executor.replicas == 1


def test_session_rejects_duplicate_symbols_and_unknown_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="unique"):
        TradingSessionSpec.model_validate({"symbols": ["AAPL", "AAPL"], "riskPolicyRef": {"name": "p"}})
    with pytest.raises(pydantic.ValidationError, match="apiKey"):
        TradingSessionSpec.model_validate(
            {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}, "broker": {"apiKey": "x"}})


def test_policy_defaults_are_the_runbook_thresholds() -> None:
    spec = RiskPolicySpec()
    assert (spec.limits.daily_loss.reduce_pct, spec.limits.daily_loss.halt_pct) == (2.0, 3.0)
    assert spec.limits.concentration.threshold_pct == 30.0
    assert spec.limits.var.max_pct == 5.0 and spec.limits.var.confidence == 0.95
    assert spec.limits.margin_usage.threshold_pct == 80.0
    assert spec.allow_live is False
    with pytest.raises(pydantic.ValidationError, match="reducePct"):
        RiskPolicySpec.model_validate({"limits": {"dailyLoss": {"reducePct": 3, "haltPct": 2}}})


def test_generated_schema_is_structural() -> None:
    def walk(node: dict, path: str) -> None:
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for forbidden in ("$ref", "anyOf", "allOf", "title", "uniqueItems"):
            assert forbidden not in node, f"{path}: {forbidden}"
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    for kind in crdgen.KINDS:
        walk(crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], kind.kind)


def test_every_spec_field_has_a_description() -> None:
    def walk(node: dict, path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    for kind in crdgen.KINDS:
        root = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(root["properties"]["spec"], f"{kind.kind}.spec")
