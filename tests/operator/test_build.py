"""Unit tests of the pure builders: literal sessions in, manifests out, no client."""

from __future__ import annotations

from typing import Any

from trading_operator import names
from trading_operator.api.session import Role, TradingSession
from trading_operator.build import workers
from trading_operator.settings import Settings


def ts(**spec: Any) -> TradingSession:
    body = {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"}}
    body.update(spec)
    return TradingSession.model_validate({"metadata": {"name": "s", "namespace": "ns", "uid": "u1"}, "spec": body})


def test_inference_goes_to_the_gpu_pool_by_default_and_not_with_cpu() -> None:
    settings = Settings(gpu_node_selector={"pool": "gpu"})
    gpu = workers.deployment(ts(), Role.INFERENCE, settings)["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"pool": "gpu"}
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cpu = workers.deployment(ts(strategy={"name": "model", "model": {"device": "cpu"}}), Role.INFERENCE,
                             settings)["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu


def test_gpu_bound_inference_is_recreated_and_cpu_inference_rolls() -> None:
    """A surge pod would wait forever for the GPU its predecessor holds: GPU-bound inference is replaced."""
    assert workers.deployment(ts(), Role.INFERENCE, Settings())["spec"]["strategy"] == {"type": "Recreate"}
    cpu = ts(strategy={"name": "model", "model": {"device": "cpu"}})
    assert workers.deployment(cpu, Role.INFERENCE, Settings())["spec"]["strategy"]["type"] == "RollingUpdate"
    assert workers.deployment(ts(), Role.STRATEGY, Settings())["spec"]["strategy"]["type"] == "RollingUpdate"


def test_config_hash_changes_with_symbols_but_not_with_a_halt() -> None:
    base = workers.config_hash(ts())
    assert workers.config_hash(ts(symbols=["AAPL", "MSFT"])) != base
    assert workers.config_hash(ts(halted=True)) == base
    # Journal retention is read by the risk worker from its config: a change restarts the workers.
    assert workers.config_hash(ts(journal={"pnlSnapshots": {"deleteAfterDays": 365}})) != base


def test_suspend_scales_to_zero_and_executor_never_surges() -> None:
    settings = Settings()
    assert workers.deployment(ts(), Role.RISK, settings, suspended=True)["spec"]["replicas"] == 0
    assert workers.deployment(ts(), Role.EXECUTOR, settings)["spec"]["strategy"] == {"type": "Recreate"}


def test_broker_keys_come_from_the_secret_only_for_the_executor_and_alpacas_market_data() -> None:
    def refs(session: Any, role: Role) -> list[dict[str, str]]:
        container = workers.deployment(session, role, Settings())["spec"]["template"]["spec"]["containers"][0]
        return [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]

    alpaca = ts(broker={"kind": "alpaca", "credentialsSecretRef": {"name": "keys"}})
    for role in (Role.EXECUTOR, Role.MARKET_DATA):   # Alpaca's data stream authenticates with the account keys
        assert {r["name"] for r in refs(alpaca, role)} == {"keys"} and len(refs(alpaca, role)) == 2
    for role in (Role.STRATEGY, Role.INFERENCE, Role.RISK):
        assert refs(alpaca, role) == []
    simulated = ts(broker={"kind": "simulated", "credentialsSecretRef": {"name": "keys"}})
    assert refs(simulated, Role.MARKET_DATA) == [] and len(refs(simulated, Role.EXECUTOR)) == 2


def test_names_and_labels_come_from_one_place() -> None:
    dep = workers.deployment(ts(), Role.MARKET_DATA, Settings())
    assert dep["metadata"]["name"] == names.deployment("s", Role.MARKET_DATA) == "s-market-data"
    assert dep["spec"]["selector"]["matchLabels"] == names.selector("s", Role.MARKET_DATA)
    assert workers.config_map(ts())["metadata"]["name"] == names.configmap("s")


def test_a_pvc_model_is_mounted_read_only_into_the_inference_pods_only() -> None:
    session = ts(strategy={"name": "model", "model": {"uri": "pvc://models/price-mlp/v20261201T150000Z-1a2b3c4d",
                                                      "device": "cpu"}})
    pod = workers.deployment(session, Role.INFERENCE, Settings())["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert {"name": "model", "mountPath": "/models/models", "readOnly": True} in container["volumeMounts"]
    assert {"name": "TRADING_MODEL_ROOT", "value": "/models"} in container["env"]
    for role in (Role.STRATEGY, Role.EXECUTOR):
        other = workers.deployment(session, role, Settings())["spec"]["template"]["spec"]
        assert "model" not in {v["name"] for v in other["volumes"]}
    builtin = workers.deployment(ts(), Role.INFERENCE, Settings())["spec"]["template"]["spec"]
    assert "model" not in {v["name"] for v in builtin["volumes"]}


def test_an_s3_model_gets_its_endpoint_and_a_download_cache() -> None:
    session = ts(strategy={"name": "model", "model": {
        "uri": "s3://models/price-mlp/v1", "device": "cpu",
        "s3": {"endpoint": "http://s3.trading:7070", "region": "eu-west-1", "credentialsSecretRef": {"name": "k"}}}})
    [container] = workers.deployment(session, Role.INFERENCE, Settings())["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRADING_S3_ENDPOINT"] == "http://s3.trading:7070" and env["TRADING_S3_REGION"] == "eu-west-1"
    assert env["TRADING_MODEL_CACHE"] == "/tmp/models"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
