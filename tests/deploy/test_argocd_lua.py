"""Argo CD health checks and actions, run under Lua 5.1 the way argo-cd's own tests run them.

Every ``health_test.yaml`` and ``action_test.yaml`` under
argocd/resource_customizations is collected (argo-cd walks its
resource_customizations the same way): health cases compare status and
message exactly; discovery cases check every returned action is one of the
expected ones (and, stricter than argo-cd, that none is missing); action
cases compare the returned object with the expected file.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Kubectl
from tests.deploy import luasandbox

CUSTOMIZATIONS = ROOT / "argocd" / "resource_customizations"
KINDS = ("TradingSession", "RiskPolicy", "Backup")


def _cases(filename: str, key: str) -> list[tuple[pathlib.Path, dict[str, Any]]]:
    out = []
    for test_file in sorted(CUSTOMIZATIONS.rglob(filename)):
        for case in luasandbox.load_yaml(test_file)[key] or []:
            out.append((test_file.parent, case))
    return out


HEALTH = _cases("health_test.yaml", "tests")
DISCOVERY = _cases("action_test.yaml", "discoveryTests")
ACTIONS = _cases("action_test.yaml", "actionTests")


def _id(case: tuple[pathlib.Path, dict[str, Any]]) -> str:
    folder, spec = case
    rel = folder.relative_to(CUSTOMIZATIONS)
    return f"{rel}/{spec.get('action', '')}{'/' if 'action' in spec else ''}{spec['inputPath']}"


@pytest.fixture(scope="module")
def sandbox() -> luasandbox.Sandbox:
    return luasandbox.Sandbox()


def test_layout_is_argo_cds() -> None:
    for kind in KINDS:
        folder = CUSTOMIZATIONS / "trading.dev" / kind
        assert (folder / "health.lua").is_file()
        assert (folder / "health_test.yaml").is_file()
        assert list((folder / "testdata").glob("*.yaml"))
    actions = CUSTOMIZATIONS / "trading.dev" / "TradingSession" / "actions"
    for path in ("discovery.lua", "halt/action.lua", "resume/action.lua", "action_test.yaml"):
        assert (actions / path).is_file(), path


def test_every_testdata_file_is_used() -> None:
    used = {folder / c["inputPath"] for folder, c in HEALTH + DISCOVERY + ACTIONS}
    used |= {folder / c["expectedOutputPath"] for folder, c in ACTIONS if "expectedOutputPath" in c}
    present = set(CUSTOMIZATIONS.rglob("testdata/*.yaml"))
    assert present == used, f"unused: {sorted(map(str, present - used))}, missing: {sorted(map(str, used - present))}"


def test_every_health_status_is_covered() -> None:
    for kind, wanted in (("TradingSession", {"Healthy", "Progressing", "Degraded", "Suspended"}),
                         ("RiskPolicy", {"Healthy", "Progressing", "Degraded", "Suspended"}),
                         ("Backup", {"Healthy", "Progressing", "Degraded", "Suspended"})):
        seen = {c["healthStatus"]["status"] for folder, c in HEALTH if folder.name == kind}
        assert seen == wanted, kind


@pytest.mark.parametrize("case", HEALTH, ids=_id)
def test_health(sandbox: luasandbox.Sandbox, case: tuple[pathlib.Path, dict[str, Any]]) -> None:
    folder, spec = case
    obj = luasandbox.load_yaml(folder / spec["inputPath"])
    got = sandbox.health((folder / "health.lua").read_text(), obj)
    want = {"status": spec["healthStatus"]["status"], "message": spec["healthStatus"].get("message", "")}
    assert got == want


@pytest.mark.parametrize("case", DISCOVERY, ids=_id)
def test_action_discovery(sandbox: luasandbox.Sandbox, case: tuple[pathlib.Path, dict[str, Any]]) -> None:
    folder, spec = case
    obj = luasandbox.load_yaml(folder / spec["inputPath"])
    got = sandbox.discovery((folder / "discovery.lua").read_text(), obj)
    expected = [{"disabled": False, **e} for e in spec["result"]]
    for action in got:  # argo-cd: assert.Contains(t, test.Result, result[i])
        assert action in expected
    assert len(got) == len(expected)


@pytest.mark.parametrize("case", ACTIONS, ids=_id)
def test_action(sandbox: luasandbox.Sandbox, case: tuple[pathlib.Path, dict[str, Any]]) -> None:
    """As argo-cd's TestLuaResourceActionsScript: ``parameters`` become the global actionParams,
    ``expectedErrorMessage`` is the error the action must raise. A case without parameters runs both
    as Argo CD 3.1+ runs it (an empty actionParams) and as earlier releases do (no such global)."""
    folder, spec = case
    obj = luasandbox.load_yaml(folder / spec["inputPath"])
    script = (folder / spec["action"] / "action.lua").read_text()
    runs = [spec["parameters"]] if "parameters" in spec else [{}, None]
    for params in runs:
        if "expectedErrorMessage" in spec:
            with pytest.raises(Exception) as failed:
                sandbox.action(script, obj, params)
            # Argo CD strips Lua's stack trace from an action's error; so does this comparison.
            assert str(failed.value).split("\nstack traceback:")[0] == spec["expectedErrorMessage"]
            continue
        got = sandbox.action(script, obj, params)
        assert got == luasandbox.load_yaml(folder / spec["expectedOutputPath"]), params


def test_halt_reason_is_a_parameter_argo_cd_offers(sandbox: luasandbox.Sandbox) -> None:
    """discovery offers halt with one parameter, reason, in Argo CD's ResourceAction shape
    (params: [{name}]); the halt action reads that same name."""
    actions = CUSTOMIZATIONS / "trading.dev" / "TradingSession" / "actions"
    running = luasandbox.load_yaml(actions / "testdata" / "running.yaml")
    offered = {a["name"]: a for a in sandbox.discovery((actions / "discovery.lua").read_text(), running)}
    assert offered["halt"]["params"] == [{"name": "reason"}]
    assert "params" not in offered["resume"]
    assert 'actionParams["reason"]' in (actions / "halt" / "action.lua").read_text()


def test_sandbox_has_no_string_library(sandbox: luasandbox.Sandbox) -> None:
    """The scripts must not lean on what Argo CD does not load; prove the sandbox would catch it."""
    with pytest.raises(Exception, match="string"):
        sandbox.run("return string.format('%d', 1)", {})
    with pytest.raises(Exception, match="index"):
        sandbox.run("local s = 'abc'; return s:upper()", {})
    assert sandbox.run("return os.time() > 0 and table.concat({'a', 'b'}) == 'ab'", {}) is True
    assert sandbox.run("return io == nil and require == nil and debug == nil", {}) is True


def test_unknown_status_becomes_unknown(sandbox: luasandbox.Sandbox) -> None:
    got = sandbox.health("return {status = 'Fine', message = 'x'}", {})
    assert got == {"status": "Unknown", "message": luasandbox.INVALID_HEALTH}


@pytest.mark.cluster
def test_testdata_objects_are_valid_resources(crds_installed: Kubectl, namespace: str) -> None:
    """Every testdata object is a real resource: the API server accepts it (spec; status is a subresource)."""
    paths = sorted(CUSTOMIZATIONS.rglob("testdata/*.yaml"))
    assert paths
    for path in paths:
        proc = crds_installed("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                              input=_strip_server_fields(path.read_text()))
        assert proc.returncode == 0, f"{path.relative_to(ROOT)}: {proc.stderr}"


def _strip_server_fields(text: str) -> str:
    """Keep what a client may send: metadata.name and spec."""
    obj = yaml.safe_load(text)
    obj["metadata"] = {"name": obj["metadata"]["name"]}
    obj.pop("status", None)
    return yaml.safe_dump(obj)
