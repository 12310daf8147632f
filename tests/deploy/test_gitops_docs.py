"""docs/gitops.md against what it describes: the health table against the Lua's test cases (which
tests/deploy/test_argocd_lua.py runs under Lua 5.1), the Argo CD RBAC lines against the example
Applications and the actions that exist, and the Helm-managed Argo CD values against argocd-cm."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT

DOC = (ROOT / "docs" / "gitops.md").read_text()
CUSTOMIZATIONS = ROOT / "argocd" / "resource_customizations" / "trading.dev"
ROW = re.compile(r"^\| (TradingSession|RiskPolicy|Backup) \| (\w+) \| (.+?) \| `(\w+)` \|$", re.M)


def test_health_table_is_the_lua_cases() -> None:
    """Every row names a test case that gives that health; every test case has its row."""
    rows = {(kind, case): health for kind, health, _, case in ROW.findall(DOC)}
    cases = {}
    for kind in ("TradingSession", "RiskPolicy", "Backup"):
        for case in yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())["tests"]:
            name = case["inputPath"].removeprefix("testdata/").removesuffix(".yaml")
            cases[(kind, name)] = case["healthStatus"]["status"]
    assert len(ROW.findall(DOC)) == len(rows), "a case appears twice in the table"
    assert rows == cases


def test_rbac_lines_match_the_sessions_application_and_the_actions() -> None:
    apps = {a["metadata"]["name"]: a for a in yaml.safe_load_all((ROOT / "argocd" / "application.yaml").read_text())}
    sessions = apps["trading-sessions"]
    target = f"{sessions['spec']['project']}/{sessions['metadata']['name']}"
    lines = re.findall(r"^p, role:trading-oncall, (.+)$", DOC, re.M)
    assert lines
    granted = set()
    for line in lines:
        resource, action, obj, effect = (x.strip() for x in line.split(","))
        assert (resource, obj, effect) == ("applications", target, "allow"), line
        granted.add(action)
    actions = CUSTOMIZATIONS / "TradingSession" / "actions"
    offered = {p.name for p in actions.iterdir() if (p / "action.lua").is_file()}
    assert granted == {"get"} | {f"action/trading.dev/TradingSession/{a}" for a in offered}
    assert f"`{target}` is the project and name of the sessions' Application" in DOC.replace("\n", " ")


def test_helm_values_carry_the_same_keys_as_the_argocd_cm_patch() -> None:
    patch = yaml.safe_load((ROOT / "argocd" / "argocd-cm.yaml").read_text())["data"]
    values = yaml.safe_load((ROOT / "argocd" / "argocd-helm-values.yaml").read_text())
    assert values == {"configs": {"cm": patch}}
    assert "argocd/argocd-helm-values.yaml" in DOC and "configs.cm" in DOC
