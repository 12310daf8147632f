"""Versioned model artifacts through a real S3-compatible server (versitygw) and through directories.

The drill of issue 17: an artifact round-trips through the object store and a corrupt one is refused
before anything of it is loaded.
"""

from __future__ import annotations

import json
import pathlib

import prometheus_client
import pytest
import torch

from tests.fixtures.servers import ObjectStoreServer
from tests.workers_ml.test_inference_worker import StandInRuntime, quote_stream, session_config
from trading_operator.api.session import ModelStatus
from trading_operator.api.status import ModelState, Reason
from trading_workers import objectstore
from trading_workers.inference import artifact, model, worker

pytestmark = pytest.mark.services

TRAINING = {"start": "2026-11-02T14:30:00Z", "end": "2026-11-27T21:00:00Z", "rows": 120000, "symbols": ["AAPL"]}


@pytest.fixture
def s3(object_store: ObjectStoreServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the shared server, the process's environment pointing at it; its ``s3://`` URI."""
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    bucket = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    return object_store.create_bucket(bucket)


def small_model(tmp_path: pathlib.Path, seed: int = 1) -> pathlib.Path:
    torch.manual_seed(seed)
    path = tmp_path / f"m{seed}.pt"
    model.save(model.PriceMLP(window=8, hidden=(4,)), path, {"seed": seed})
    return path


def test_an_artifact_round_trips_through_the_object_store(s3: str, tmp_path: pathlib.Path) -> None:
    source = small_model(tmp_path)
    uri, manifest = artifact.publish(source, f"{s3}/models", "price-mlp", training_data=TRAINING,
                                     metrics={"valAccuracy": 0.58}, parent="builtin://default")
    assert uri == f"{s3}/models/price-mlp/{manifest.version}"
    assert manifest.version.startswith("v") and manifest.version.endswith(manifest.sha256[:8])
    assert manifest.sha256 == objectstore.sha256_file(source)

    loaded = model.load_uri(uri, cache=tmp_path / "cache")
    assert loaded.verified and loaded.version == manifest.version and loaded.sha256 == manifest.sha256
    assert loaded.manifest is not None and loaded.manifest.training_data == TRAINING
    assert loaded.manifest.metrics == {"valAccuracy": 0.58} and loaded.manifest.parent == "builtin://default"
    original = model.load(source).model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(original[key], value)

    # The manifest as stored is the documented JSON (docs/model-artifacts.md).
    stored = json.loads(objectstore.open_s3(uri).get_bytes("manifest.json"))
    assert stored["format"] == artifact.FORMAT and stored["file"] == "model.pt"
    assert stored["trainingData"] == TRAINING and stored["sizeBytes"] == source.stat().st_size
    assert artifact.list_versions(f"{s3}/models", "price-mlp") == [uri]


def test_a_corrupt_artifact_is_refused_before_it_is_loaded(s3: str, tmp_path: pathlib.Path) -> None:
    uri, _ = artifact.publish(small_model(tmp_path), f"{s3}/models", "price-mlp")
    store = objectstore.open_s3(uri)
    data = bytearray(store.get_bytes("model.pt"))
    data[len(data) // 2] ^= 0x01                      # one flipped bit in the stored object
    store.put_bytes("model.pt", bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(model.ModelCorrupt, match=r"model\.pt: sha256 .* != .* in the manifest"):
        model.load_uri(uri, cache=cache)
    assert not list(cache.rglob("model.pt")), "a corrupt download must not stay in the cache"

    store.put_bytes("model.pt", bytes(data[:-10]))   # truncated
    with pytest.raises(model.ModelCorrupt, match="bytes != "):
        model.load_uri(uri, cache=cache)
    store.delete(["model.pt"])                        # gone
    with pytest.raises(model.ModelCorrupt, match="missing"):
        model.load_uri(uri, cache=cache)


def test_a_cached_copy_is_checked_again(s3: str, tmp_path: pathlib.Path) -> None:
    uri, manifest = artifact.publish(small_model(tmp_path), f"{s3}/models", "price-mlp")
    cache = tmp_path / "cache"
    first = artifact.fetch(uri, cache)
    first.path.write_bytes(b"tampered")               # the cached file changed on disk
    again = artifact.fetch(uri, cache)                # fetched anew, not trusted
    assert again.sha256 == manifest.sha256 and objectstore.sha256_file(again.path) == manifest.sha256


def test_versions_are_immutable_and_unfinished_ones_are_not_served(s3: str, tmp_path: pathlib.Path) -> None:
    source = small_model(tmp_path)
    _, manifest = artifact.publish(source, f"{s3}/models", "price-mlp")
    with pytest.raises(artifact.ArtifactError, match="never rewritten"):
        artifact.publish(source, f"{s3}/models", "price-mlp", version=manifest.version)
    objectstore.open_s3(f"{s3}/models/price-mlp/v-unfinished").put_file("model.pt", source)
    with pytest.raises(artifact.ArtifactError, match=r"no manifest\.json"):
        model.load_uri(f"{s3}/models/price-mlp/v-unfinished", cache=tmp_path / "cache")


def test_wrong_credentials_are_an_error_not_a_model(s3: str, tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    uri, _ = artifact.publish(small_model(tmp_path), f"{s3}/models", "price-mlp")
    monkeypatch.setenv(objectstore.ENV_SECRET_KEY, "wrong-secret")
    with pytest.raises(artifact.ArtifactError, match=uri.replace(".", r"\.")):
        model.load_uri(uri, cache=tmp_path / "other-cache")


def test_pvc_and_file_versions_are_verified_bare_files_are_not(tmp_path: pathlib.Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifact.ENV_MODEL_ROOT, str(tmp_path / "mnt"))
    source = small_model(tmp_path)
    uri, manifest = artifact.publish(source, "pvc://models/published", "price-mlp")
    assert uri == f"pvc://models/published/price-mlp/{manifest.version}"
    loaded = model.load_uri(uri)
    assert loaded.verified and loaded.version == manifest.version
    stored = tmp_path / "mnt" / "models" / "published" / "price-mlp" / manifest.version / "model.pt"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(model.ModelCorrupt):
        model.load_uri(uri)
    bare = model.load_uri(f"file://{source}")
    assert not bare.verified and bare.version == f"sha256:{objectstore.sha256_file(source)[:12]}"
    builtin = model.load_uri("builtin://default")
    assert builtin.verified and builtin.version.startswith("builtin-default-")


# ---------------------------------------------------------------- the inference worker serves only what verifies

class ReportingRuntime(StandInRuntime):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.models: list[ModelStatus] = []

    async def report_model(self, status: ModelStatus) -> None:
        self.models.append(status)


def metric(name: str, **labels: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, labels)


async def test_the_worker_serves_a_verified_s3_version_and_reports_it(s3: str, tmp_path: pathlib.Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifact.ENV_MODEL_CACHE, str(tmp_path / "cache"))
    uri, manifest = artifact.publish(model.builtin_path(), f"{s3}/models", "price-mlp", metrics={"valAccuracy": 0.57})
    spec = {"uri": uri, "maxLatencyMs": 10_000, "s3": {"credentialsSecretRef": {"name": "k"}}}
    runtime = ReportingRuntime(session_config(spec), quote_stream(300))
    await worker.run(runtime)
    [status] = runtime.models
    assert status.state == ModelState.SERVING and status.reason == Reason.MODEL_VERIFIED
    assert status.version == manifest.version and status.sha256 == manifest.sha256 and status.verified
    assert runtime.ready is True and runtime.signals and {s.model for s in runtime.signals} == {uri}
    assert metric("trading_inference_model_info", uri=uri, version=manifest.version, verified="true") == 1


async def test_the_worker_refuses_a_corrupt_s3_version_and_serves_nothing(s3: str, tmp_path: pathlib.Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifact.ENV_MODEL_CACHE, str(tmp_path / "cache"))
    uri, _ = artifact.publish(model.builtin_path(), f"{s3}/models", "price-mlp")
    store = objectstore.open_s3(uri)
    data = bytearray(store.get_bytes("model.pt"))
    data[-100] ^= 0x10
    store.put_bytes("model.pt", bytes(data))
    before = metric("trading_inference_model_refused_total", reason="ModelCorrupt") or 0.0
    runtime = ReportingRuntime(session_config({"uri": uri, "s3": {"credentialsSecretRef": {"name": "k"}}}),
                               quote_stream(300))
    await worker.run(runtime)                       # returns when the quotes end: it drained them, scoring none
    [status] = runtime.models
    assert status.state == ModelState.REFUSED and status.reason == Reason.MODEL_CORRUPT
    assert "sha256" in (status.message or "") and "in the manifest" in (status.message or "")
    assert runtime.ready is not True and runtime.signals == [] and runtime.reduce_requests == []
    assert metric("trading_inference_model_refused_total", reason="ModelCorrupt") == before + 1
