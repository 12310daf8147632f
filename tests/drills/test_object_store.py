"""Drill: models and backups through the S3-compatible object store, on the whole local platform.

The operator builds the inference Deployment and the backup Job with the store's keys as
``secretKeyRef`` env; the local runtime resolves them from a real Secret as the kubelet would. A
published model version is served and its version reported in ``status.model`` and the worker's
metrics; a corrupted version named next is refused by the worker's check (the staged rollout rolls it
back at once, a Warning Event, ``trading_inference_model_refused_total{reason="ModelCorrupt"}``) and
nothing of it is served; a one-shot Backup to S3 completes, verified, in the bucket. A version on a
PersistentVolumeClaim (``pvc://``) is served from the claim mounted into the inference pod.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.drills.harness import Drill, G, V
from tests.fixtures.waiting import eventually_sync
from trading_operator.api.session import Role
from trading_workers import objectstore
from trading_workers.inference import artifact, model

pytestmark = [pytest.mark.drill, pytest.mark.e2e]

S3_SECRET = "drill-s3"


def test_a_model_version_from_s3_is_served_a_corrupt_one_refused_and_a_backup_lands_in_the_bucket(
        make_drill: Callable[..., Drill], monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_drill(wait=None)
    object_store = d.platform.s3                     # the platform's own object store, as make up starts it
    assert object_store is not None
    for key, value in object_store.env.items():     # this process publishes the versions
        monkeypatch.setenv(key, value)
    models = "s3://trading-models"
    good, manifest = artifact.publish(model.builtin_path(), f"{models}/m", "price-mlp", metrics={"valAccuracy": 0.57})
    bad, _ = artifact.publish(model.builtin_path(), f"{models}/m", "price-mlp", version="v20261201T000000Z-corrupt")
    store = objectstore.open_s3(bad)
    data = bytearray(store.get_bytes("model.pt"))
    data[len(data) // 3] ^= 0x04
    store.put_bytes("model.pt", bytes(data))

    # The Secret as make up says to make it: from the platform's env file.
    d.platform.kubectl("create", "secret", "generic", S3_SECRET, f"--from-env-file={d.platform.s3_env_file}",
                       "-n", d.namespace)
    s3 = {"endpoint": object_store.endpoint, "credentialsSecretRef": {"name": S3_SECRET}}
    d.patch_spec({"strategy": {"name": "model", "model": {"uri": good, "device": "cpu", "s3": s3}},
                  "workers": {"inference": {"replicas": 1}}})

    st = d.wait_status(lambda s: (s.get("model") or {}).get("uri") == good, "the inference worker reports its model",
                       timeout=180)
    assert st["model"]["state"] == "Serving" and st["model"]["version"] == manifest.version, st["model"]
    assert st["model"]["verified"] is True and st["model"]["sha256"] == manifest.sha256
    d.wait_event("ModelVerified")
    assert d.metric(Role.INFERENCE, "trading_inference_model_info", uri=good, version=manifest.version,
                    verified="true") == 1

    # The corrupt version as a new model.uri: a candidate of the staged rollout (no restart), refused by the
    # worker's check before a byte of it is loaded, so rolled back at once; the good version keeps serving.
    d.patch_spec({"strategy": {"model": {"uri": bad}}})
    st = d.wait_status(lambda s: (s.get("modelRollout") or {}).get("phase") == "RolledBack", "the corrupt version rolled back",
                       timeout=180)
    assert st["modelRollout"]["candidateUri"] == bad and st["modelRollout"]["stableUri"] == good, st["modelRollout"]
    assert "in the manifest" in st["modelRollout"]["message"], st["modelRollout"]
    assert st["model"]["uri"] == good and st["model"]["state"] == "Serving", st["model"]
    event = d.wait_event("ModelRolledBack")
    assert event["type"] == "Warning" and bad in event["message"]
    assert d.metric(Role.INFERENCE, "trading_inference_model_refused_total", reason="ModelCorrupt") == 1

    # A one-shot Backup to S3: the Job gets the keys from the Secret, uploads, verifies what it stored.
    backups = "s3://trading-backups"
    d.custom.create_namespaced_custom_object(G, V, d.namespace, "backups", {
        "apiVersion": f"{G}/{V}", "kind": "Backup", "metadata": {"name": "to-s3"},
        "spec": {"sessionRef": {"name": d.name}, "targets": ["journal", "resources"],
                 "destination": {"s3": {"bucket": backups.removeprefix("s3://"), "prefix": d.namespace, **s3}}}})

    def completed() -> dict[str, object] | None:
        status = d.custom.get_namespaced_custom_object(G, V, d.namespace, "backups", "to-s3").get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed") else None

    status = eventually_sync(completed, timeout=180, what="the S3 Backup's run")
    assert status["phase"] == "Completed" and status["verified"] is True, status
    run = str(status["location"]).rsplit("/", 1)[-1]
    assert status["location"] == f"{backups}/{d.namespace}/to-s3/{run}"
    stored = {o.key for o in objectstore.open_s3(f"{backups}/{d.namespace}/to-s3/{run}").objects()}
    assert {"manifest.json", "manifest.json.sha256", "verify.json", "journal/journal.dump"} <= stored


def test_a_version_on_a_claim_is_served_from_the_claim_mounted_into_the_inference_pod(
        make_drill: Callable[..., Drill]) -> None:
    version = "v20261201T000000Z-onclaim"
    uri = f"pvc://models/published/price-mlp/{version}"
    d = make_drill(wait=None, spec={"strategy": {"name": "model", "model": {"uri": uri, "device": "cpu"}}})
    assert d.platform.runtime is not None           # the local runtime: a directory per claim, shared by its pods
    claim_dir = d.platform.runtime.workdir / "volumes" / d.namespace / "models"
    _, manifest = artifact.publish(model.builtin_path(), f"file://{claim_dir}/published", "price-mlp", version=version)
    d.patch_spec({"workers": {"inference": {"replicas": 1}}})
    st = d.wait_status(lambda s: (s.get("model") or {}).get("uri") == uri, "the pvc:// version's report", timeout=180)
    assert st["model"]["state"] == "Serving" and st["model"]["verified"] is True, st["model"]
    assert st["model"]["version"] == version and st["model"]["sha256"] == manifest.sha256
