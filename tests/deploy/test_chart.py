"""The Helm chart without a cluster: lint, renders with default and non-default values, the values
schema and its comments, the CRD copies, the operator's settings, alerts and dashboard."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.conftest import CHART, NON_DEFAULT, Helm, env_of, find, one
from trading_operator.api import metric_names

#: The series the operator and workers export (the PrometheusRule and dashboard may use no other).
METRICS = set(metric_names.SERIES)
NAMESPACED = {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
              "NetworkPolicy", "Pod", "Job", "ConfigMap", "ServiceMonitor", "PodMonitor", "PrometheusRule"}


def _hack(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "hack" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ lint and render

@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
def test_helm_lint_is_clean(helm: Helm, values: dict[str, Any] | None) -> None:
    proc = helm("lint", "--strict", str(CHART), "--values", helm.values_file(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_default_render(helm: Helm) -> None:
    docs = helm.template()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["CustomResourceDefinition"] * 3 + ["ServiceAccount"] * 3 + ["ClusterRole"] * 3
                           + ["ClusterRoleBinding"] * 3 + ["Role"] * 2 + ["RoleBinding"] * 2
                           + ["Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "NetworkPolicy", "Pod", "Job"]
                           + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 3)
    for doc in docs:
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63 or doc["kind"] == "CustomResourceDefinition", meta["name"]
        if doc["kind"] in NAMESPACED:
            assert meta["namespace"] == "trading", (doc["kind"], meta["name"])
        if doc["kind"] != "CustomResourceDefinition":
            labels = meta["labels"]
            assert labels["app.kubernetes.io/instance"] == "rel"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/part-of"] == "trading-platform"
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "trading-platform/operator:0.1.0"
    assert pod["containers"][0]["args"] == ["--log-format", "json"]  # no --namespace: the whole cluster
    assert pod["serviceAccountName"] == "rel-trading-platform-operator"
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"] == deployment["spec"]["selector"]


def test_non_default_render(helm: Helm) -> None:
    values = {**NON_DEFAULT, "sessionNamespaces": ["desk-a", "desk-b"]}
    docs = helm.template(values)
    assert not find(docs, "CustomResourceDefinition")
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert len(find(docs, kind)) == 1, kind
    dashboard = one(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    deployment = one(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--namespace", "desk-a", "--namespace", "desk-b", "--verbose", "--log-format", "json"]
    assert container["image"] == "trading-platform/operator@sha256:" + "ab" * 32
    assert env_of(deployment)["TRADING_JOURNAL_DSN_SECRET_NAME"] == "trading-journal"  # the DSN itself: never
    assert deployment["spec"]["replicas"] == 3
    # Namespace scope: the operator's namespaced rules are Roles in the session namespaces, never a ClusterRole.
    operator_roles = [r for r in find(docs, "Role") if r["metadata"]["name"] == "rel-trading-platform-operator"]
    assert sorted(r["metadata"]["namespace"] for r in operator_roles) == ["desk-a", "desk-b"]
    cluster_roles = {c["metadata"]["name"] for c in find(docs, "ClusterRole")}
    assert cluster_roles == {"rel-trading-platform-operator-cluster-read", "rel-trading-platform-test"}
    workers = [r for r in find(docs, "Role") if r["metadata"]["name"] == "trading-worker"]
    assert sorted(r["metadata"]["namespace"] for r in workers) == ["desk-a", "desk-b"]
    monitor = one(docs, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["desk-a", "desk-b"]}
    policy = one(docs, "NetworkPolicy", "rel-trading-platform-operator")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}} in peers
    assert any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "test"
               for p in peers), "the helm test pod must stay able to reach the metrics port"


def test_service_monitor_selects_the_service(helm: Helm) -> None:
    docs = helm.template(NON_DEFAULT)
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_crds_can_be_left_out_or_unprotected(helm: Helm) -> None:
    assert not find(helm.template({"crds": {"create": False}}), "CustomResourceDefinition")
    for crd in find(helm.template({"crds": {"keep": False}}), "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"]
    for crd in find(helm.template(), "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


# ------------------------------------------------------------------ CRDs are crds/, byte for byte

def test_chart_crds_are_in_sync_with_crds_dir() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "sync-chart-crds.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_rendered_crds_equal_crds_dir(helm: Helm) -> None:
    rendered = {d["metadata"]["name"]: d for d in find(helm.template(), "CustomResourceDefinition")}
    source = {d["metadata"]["name"]: d for p in sorted((ROOT / "crds").glob("*.yaml"))
              for d in yaml.safe_load_all(p.read_text()) if d}
    assert rendered.keys() == source.keys()
    for name, doc in rendered.items():
        doc["metadata"].pop("annotations")
        assert doc == source[name], name


# ------------------------------------------------------------------ values: comments and schema

def _paths(values: Any, docs: dict[tuple[str, ...], Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in values.items():
        path = (*prefix, key)
        out.append(path)
        free_form = "type" in docs.get(path, ("", {}))[1]
        if isinstance(value, dict) and not free_form:
            out.extend(_paths(value, docs, path))
    return out


def test_every_value_has_a_comment_and_a_schema_entry() -> None:
    gen = _hack("gen-values-schema")
    text = (CHART / "values.yaml").read_text()
    docs = gen.comments(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    paths = _paths(yaml.safe_load(text), docs)
    assert len(paths) > 60
    for path in paths:
        description, _ = docs.get(path, ("", {}))
        assert description, f"{'.'.join(path)} has no comment above it"
        node = schema
        for key in path:
            node = node["properties"][key]
        assert node.get("description") == description, ".".join(path)
        assert "type" in node or "enum" in node, ".".join(path)


def test_values_schema_is_fresh() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "gen-values-schema.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("flag", "complaint"), [
    ("rbac.scope=everything", "/rbac/scope"),
    ("operator.replica=2", "replica"),
    ("operator.replicas=0", "/operator/replicas"),
    ("crds.create=maybe", "/crds/create"),
    ("monitoring.prometheusRule.thresholds.varPct=150", "varPct"),
    ("monitoring.serviceMonitor.interval=often", "interval"),
    ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
])
def test_schema_refuses_bad_values(helm: Helm, flag: str, complaint: str) -> None:
    proc = helm("template", "rel", str(CHART), "--set", flag)
    assert proc.returncode != 0, f"--set {flag} was accepted"
    assert complaint in proc.stderr, proc.stderr


def test_contradictory_values_fail(helm: Helm) -> None:
    proc = helm("template", "rel", str(CHART), "--set", "operator.leaderElection.enabled=false")
    assert proc.returncode != 0 and "needs operator.replicas=1" in proc.stderr, proc.stderr
    single = helm("template", "rel", str(CHART), "--set", "operator.leaderElection.enabled=false",
                  "--set", "operator.replicas=1")
    assert single.returncode == 0, single.stderr


THRESHOLDS = "monitoring.prometheusRule.thresholds"


@pytest.mark.parametrize(("values", "complaint"), [
    ({"operator": {"serviceAccount": {"create": False}}}, "operator.serviceAccount.create=false needs"),
    ({"podDisruptionBudget": {"maxUnavailable": 0}}, "podDisruptionBudget.maxUnavailable=0 would block"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"dailyLossWarningPct": 3}}}},
     f"{THRESHOLDS}.dailyLossWarningPct (3) must be below dailyLossCriticalPct (3)"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"orderErrorRatioWarning": 0.02}}}},
     f"{THRESHOLDS}.orderErrorRatioWarning (0.02) must be below orderErrorRatioCritical"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"brokerLatencyWarningSeconds": 0.2}}}},
     f"{THRESHOLDS}.brokerLatencyWarningSeconds (0.2) must be below brokerLatencyCriticalSeconds"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"cpuCriticalPct": 70}}}},
     f"{THRESHOLDS}.cpuWarningPct (75) must be below cpuCriticalPct (70)"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"memoryWarningPct": 95}}}},
     f"{THRESHOLDS}.memoryWarningPct (95) must be below memoryCriticalPct"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"predictionsPerSecondWarning": 3000}}}},
     f"{THRESHOLDS}.predictionsPerSecondWarning (3000) must be above predictionsPerSecondCritical (3000)"),
    ({"monitoring": {"prometheusRule": {"thresholds": {"modelAccuracyCritical": 0.6}}}},
     f"{THRESHOLDS}.modelAccuracyWarning (0.55) must be above modelAccuracyCritical (0.6)"),
    ({"monitoring": {"serviceMonitor": {"enabled": True, "scrapeTimeout": "2m"}}},
     "monitoring.serviceMonitor.scrapeTimeout (2m) must not be longer than its interval (30s)"),
    ({"monitoring": {"serviceMonitor": {"enabled": True, "interval": "500ms", "scrapeTimeout": "1s"}}},
     "scrapeTimeout (1s) must not be longer than its interval (500ms)"),
])
def test_more_contradictory_values_fail(helm: Helm, values: dict[str, Any], complaint: str) -> None:
    proc = helm("template", "rel", str(CHART), "--values", helm.values_file(values))
    assert proc.returncode != 0, f"{values} rendered"
    assert complaint in proc.stderr, proc.stderr


@pytest.mark.parametrize("values", [
    {"operator": {"serviceAccount": {"create": False, "name": "existing"}}},
    {"podDisruptionBudget": {"enabled": False, "maxUnavailable": 0}},
    {"monitoring": {"serviceMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "60s"}}},
    {"monitoring": {"prometheusRule": {"thresholds": {"dailyLossWarningPct": 2.9, "modelAccuracyWarning": 0.51}}}},
], ids=["existing-sa", "pdb-off", "timeout-equals-interval", "close-thresholds"])
def test_consistent_neighbours_of_those_values_render(helm: Helm, values: dict[str, Any]) -> None:
    proc = helm("template", "rel", str(CHART), "--values", helm.values_file(values))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("quantity", "ok"), [
    ("100m", True), ("0.5", True), (2, True), ("256Mi", True), ("1G", True), ("1e3", True),
    ("lots", False), ("256MB", False), ("-1", False), ("1.5 Gi", False), (-2, False),
])
def test_resource_quantities_are_typed(helm: Helm, quantity: Any, ok: bool) -> None:
    values = {"operator": {"resources": {"requests": {"cpu": quantity}, "limits": {"memory": "512Mi"}}}}
    proc = helm("template", "rel", str(CHART), "--values", helm.values_file(values))
    assert (proc.returncode == 0) is ok, proc.stderr
    if not ok:
        assert "/operator/resources/requests/cpu" in proc.stderr, proc.stderr
    typo = helm("template", "rel", str(CHART), "--values",
                helm.values_file({"operator": {"resources": {"request": {"cpu": "1"}}}}))
    assert typo.returncode != 0 and "request" in typo.stderr


def test_uninstall_guard_is_a_pre_delete_hook_on_the_operators_identity(helm: Helm) -> None:
    """The hook Job runs the guard with the operator's image and ServiceAccount (which may list sessions),
    over every namespace with rbac.scope=cluster and over the session namespaces with scope=namespace."""
    docs = helm.template()
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    deployment = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == deployment["serviceAccountName"]
    assert pod["containers"][0]["image"] == deployment["containers"][0]["image"]
    argv = pod["containers"][0]["command"] + pod["containers"][0]["args"]
    assert argv == ["python", "-m", "trading_operator.uninstall_guard", "--release", "rel",
                    "--release-namespace", "trading"]
    scoped = one(helm.template({"rbac": {"scope": "namespace"}, "sessionNamespaces": ["a", "b"]}), "Job")
    assert scoped["spec"]["template"]["spec"]["containers"][0]["args"][-4:] == ["--namespace", "a", "--namespace", "b"]
    assert not find(helm.template({"uninstallGuard": {"enabled": False}}), "Job")


# ------------------------------------------------------------------ operator settings

def test_operator_settings_come_from_values(helm: Helm) -> None:
    values = {
        "workers": {"image": {"repository": "registry.local/trading/workers", "tag": "1.2.3"}},
        # Helm merges maps: null drops a default key.
        "gpuPool": {"nodeSelector": {"pool": "a100", "trading.dev/pool": None}, "resourceName": "nvidia.com/mig-1g.10gb",
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}]},
        "operator": {"leaderElection": {"leaseName": "trading-leader"}},
    }
    deployment = one(helm.template(values), "Deployment")
    env = env_of(deployment)
    assert env["TRADING_WORKER_IMAGE"] == "registry.local/trading/workers:1.2.3"
    assert json.loads(env["TRADING_GPU_NODE_SELECTOR"]) == {"pool": "a100"}
    assert json.loads(env["TRADING_GPU_TOLERATIONS"]) == values["gpuPool"]["tolerations"]
    assert env["TRADING_GPU_RESOURCE"] == "nvidia.com/mig-1g.10gb"
    assert env["TRADING_LEASE_NAME"] == "trading-leader"
    assert env["TRADING_LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["TRADING_WORKER_SERVICE_ACCOUNT"] == "trading-worker"


def test_operator_settings_match_what_the_operator_reads(helm: Helm) -> None:
    """Every TRADING_* variable the chart sets is a field of trading_operator.settings.Settings, and the
    defaults parse (JSON where the settings expect JSON)."""
    from trading_operator import settings as settings_module

    env = env_of(one(helm.template(), "Deployment"))
    fields = {f"TRADING_{name.upper()}" for name in settings_module.Settings.model_fields}
    unknown = {k for k in env if k.startswith("TRADING_")} - fields - {"TRADING_WORKER_SERVICE_ACCOUNT"}
    assert not unknown, f"the chart sets variables the operator does not read: {sorted(unknown)}"
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    parsed = settings_module.Settings(**{k.removeprefix("TRADING_").lower(): v for k, v in plain.items()
                                         if k.removeprefix("TRADING_").lower() in settings_module.Settings.model_fields})
    assert parsed.gpu_node_selector == {"trading.dev/pool": "gpu"}
    assert parsed.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert parsed.worker_image == "trading-platform/workers:0.1.0"


def test_pod_security_context_is_restricted(helm: Helm) -> None:
    docs = helm.template()
    pods = [one(docs, "Deployment")["spec"]["template"]["spec"], one(docs, "Pod")["spec"],
            one(docs, "Job")["spec"]["template"]["spec"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}


# ------------------------------------------------------------------ alerts and dashboard

def _rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = one(docs, "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_alerts_carry_the_runbook_thresholds(helm: Helm) -> None:
    rules = _rules(helm.template({"monitoring": {"prometheusRule": {"enabled": True}}}))
    assert "trading_risk_daily_pnl_pct <= -1.5" in rules["TradingDailyLossWarning"]["expr"]
    assert rules["TradingDailyLossWarning"]["labels"]["severity"] == "warning"
    assert rules["TradingDailyLossCritical"]["expr"] == "trading_risk_daily_pnl_pct <= -3"
    assert rules["TradingDailyLossCritical"]["labels"]["severity"] == "critical"
    assert rules["TradingValueAtRiskHigh"]["expr"] == "trading_risk_var_pct > 5"
    assert rules["TradingMarginUsageHigh"]["expr"] == "trading_risk_margin_usage_pct > 80"
    assert rules["TradingConcentrationHigh"]["expr"] == "trading_risk_concentration_pct > 30"
    assert rules["TradingCorrelationSpike"]["expr"] == "trading_risk_correlation > 0.9"
    assert rules["TradingBrokerDisconnected"]["expr"] == "trading_executor_broker_connected == 0"
    assert rules["TradingBrokerDisconnected"]["for"] == "30s"
    assert rules["TradingMarketDataStale"]["expr"] == "trading_risk_market_data_age_seconds > 60"
    assert rules["TradingOrderErrorRatioHigh"]["expr"].endswith("> 0.005")
    assert rules["TradingOrderErrorRatioCritical"]["expr"].endswith("> 0.01")
    assert rules["TradingPredictionRateLow"]["expr"].endswith("< 4000")
    assert rules["TradingModelAccuracyCritical"]["expr"].endswith("< 0.5")
    assert "{{ $labels.session }}" in rules["TradingDailyLossCritical"]["annotations"]["summary"]


def test_alert_thresholds_are_values(helm: Helm) -> None:
    rules = _rules(helm.template({"monitoring": {"prometheusRule": {"enabled": True, "thresholds": {
        "dailyLossWarningPct": 1, "dailyLossCriticalPct": 2.5, "marginUsagePct": 70, "brokerDisconnectedFor": "1m"}}}}))
    assert rules["TradingDailyLossWarning"]["expr"].startswith("trading_risk_daily_pnl_pct <= -1 ")
    assert rules["TradingDailyLossCritical"]["expr"] == "trading_risk_daily_pnl_pct <= -2.5"
    assert rules["TradingMarginUsageHigh"]["expr"] == "trading_risk_margin_usage_pct > 70"
    assert rules["TradingBrokerDisconnected"]["for"] == "1m"


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:trading|process)_[a-z_]+\b", expr))


def test_alerts_and_dashboard_use_only_exported_metrics(helm: Helm) -> None:
    docs = helm.template(NON_DEFAULT)
    for rule in _rules(docs).values():
        names = _metric_names(rule["expr"])
        assert names <= METRICS, (rule["alert"], names - METRICS)
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    board = json.loads(one(docs, "ConfigMap")["data"]["trading-platform.json"])
    assert board["uid"] == "trading-platform"
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    on_board = set().union(*(_metric_names(e) for e in exprs))
    assert on_board <= METRICS, on_board - METRICS
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.fixture(scope="module")
def promql_check() -> pathlib.Path:
    """Prometheus' own PromQL parser (hack/promql-check), built by the project's script."""
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-promql-check.sh")], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return pathlib.Path(proc.stdout.strip().splitlines()[-1])


def test_every_alert_and_dashboard_query_is_valid_promql(helm: Helm, promql_check: pathlib.Path) -> None:
    docs = helm.template(NON_DEFAULT)
    board = json.loads(one(docs, "ConfigMap")["data"]["trading-platform.json"])
    exprs = [r["expr"] for r in _rules(docs).values()]
    exprs += [t["expr"] for p in board["panels"] for t in p["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # Grafana's label_values(<selector>, <label>): the selector is PromQL
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            exprs.append(match.group(1))
    assert all("\n" not in e for e in exprs)
    proc = subprocess.run([str(promql_check)], input="\n".join(exprs) + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = subprocess.run([str(promql_check)], input="rate(trading_worker_errors_total[5m]\n",
                            capture_output=True, text=True)
    assert broken.returncode == 1, "the checker must catch a broken expression"


def test_dashboard_file_is_the_configmap_payload(helm: Helm) -> None:
    payload = one(helm.template({"monitoring": {"dashboard": {"enabled": True}}}), "ConfigMap")["data"]
    assert payload["trading-platform.json"] == (CHART / "dashboards" / "trading-platform.json").read_text().rstrip("\n")


# ------------------------------------------------------------------ kind, images, Argo CD

def test_kind_config_has_the_charts_gpu_pool() -> None:
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())["gpuPool"]
    roles = [n["role"] for n in kind["nodes"]]
    assert roles == ["control-plane", "worker"]
    gpu = kind["nodes"][1]
    assert values["nodeSelector"].items() <= gpu["labels"].items()
    patch = yaml.safe_load(gpu["kubeadmConfigPatches"][0])
    assert patch["kind"] == "JoinConfiguration"
    for taint in patch["nodeRegistration"]["taints"]:
        assert any(t["key"] == taint["key"] and t.get("effect") in (None, taint["effect"])
                   and (t["operator"] == "Exists" or t.get("value") == taint["value"])
                   for t in values["tolerations"]), f"the chart's tolerations do not tolerate {taint}"


def test_dockerfiles_match_the_chart() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["operator"]["podSecurityContext"]["runAsUser"]
    operator = (ROOT / "docker" / "operator.Dockerfile").read_text()
    workers = (ROOT / "docker" / "workers.Dockerfile").read_text()
    for text in (operator, workers):
        assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
        assert f"USER {uid}:{uid}" in text
        assert "-c requirements.lock" in text
    assert 'ENTRYPOINT ["python", "-m", "trading_operator"]' in operator
    assert 'ENTRYPOINT ["trading-platform"]' in workers
    assert f"-t {values['operator']['image']['repository']}:" in operator
    assert f"-t {values['workers']['image']['repository']}:" in workers


def test_install_helm_explains_a_missing_go(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "GO": str(tmp_path / "no-go"), "HOME": str(tmp_path),
                               "HELM_VERSION": "v3.0.0-missing", "TRADING_DEV_CACHE": str(tmp_path)})
    assert proc.returncode == 1
    assert "Go toolchain was not found" in proc.stderr


def test_argocd_application() -> None:
    apps = {d["metadata"]["name"]: d for d in yaml.safe_load_all((ROOT / "argocd" / "application.yaml").read_text())}
    platform, sessions = apps["trading-platform"], apps["trading-sessions"]
    assert (ROOT / platform["spec"]["source"]["path"]).is_dir()
    waves = {n: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for n, a in apps.items()}
    assert waves["trading-platform"] < waves["trading-sessions"]
    ignored = sessions["spec"]["ignoreDifferences"][0]
    assert (ignored["group"], ignored["kind"]) == ("trading.dev", "TradingSession")
    assert sorted(ignored["jsonPointers"]) == ["/spec/clearReducingId", "/spec/haltReason", "/spec/halted",
                                               "/spec/resumeHaltId"]
    assert "RespectIgnoreDifferences=true" in sessions["spec"]["syncPolicy"]["syncOptions"]
    assert "CreateNamespace=true" in sessions["spec"]["syncPolicy"]["syncOptions"]
    # The platform serves the namespace the sessions Application deploys into.
    served = platform["spec"]["source"]["helm"]["valuesObject"]["sessionNamespaces"]
    assert sessions["spec"]["destination"]["namespace"] in served
    assert sessions["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


def test_argocd_application_values_render(helm: Helm) -> None:
    app = next(d for d in yaml.safe_load_all((ROOT / "argocd" / "application.yaml").read_text())
               if d["metadata"]["name"] == "trading-platform")
    docs = helm.template(app["spec"]["source"]["helm"]["valuesObject"])
    assert find(docs, "PrometheusRule") and find(docs, "ServiceMonitor")
    assert find(docs, "ServiceAccount", namespace="trading"), "no workers' ServiceAccount in the sessions' namespace"


def test_argocd_cm_patch_carries_the_scripts() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "gen-argocd-cm.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load((ROOT / "argocd" / "argocd-cm.yaml").read_text())["data"]
    base = ROOT / "argocd" / "resource_customizations" / "trading.dev"
    for kind in ("TradingSession", "RiskPolicy", "Backup"):
        assert data[f"resource.customizations.health.trading.dev_{kind}"] == (base / kind / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.trading.dev_TradingSession"])
    assert actions["discovery.lua"] == (base / "TradingSession" / "actions" / "discovery.lua").read_text()
    for definition in actions["definitions"]:
        path = base / "TradingSession" / "actions" / definition["name"] / "action.lua"
        assert definition["action.lua"] == path.read_text()
