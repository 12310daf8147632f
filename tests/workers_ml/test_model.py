"""The price model, its artifact, the training command and the batched predictor with its guard."""

from __future__ import annotations

import itertools
import pathlib
import re

import numpy as np
import pytest
import torch

from trading_operator.api.session import ModelSpec
from trading_workers.inference import model, predictor, synthetic, train

SMALL = train.TrainConfig(samples=4096, val_samples=1024, epochs=1, batch_size=512)


@pytest.fixture(scope="module")
def default() -> model.Artifact:
    return model.load_uri("builtin://default")


def windows(n: int, seed: int = 3, width: int = 33) -> np.ndarray:
    return synthetic.price_windows(n, width - 1, seed=seed).prices


# ---------------------------------------------------------------- the model and its artifact

def test_forward_maps_price_windows_to_one_score_each() -> None:
    net = model.PriceMLP(window=16, hidden=(8,))
    out = net(torch.from_numpy(windows(7, width=17)))
    assert out.shape == (7,) and out.dtype == torch.float32
    assert net.input_width == 17


def test_features_ignore_price_level_and_volatility_scale() -> None:
    # Normalized returns: the same shape at 10x the price, or with 3x the moves, gives the same features.
    x = torch.from_numpy(windows(5).astype(np.float64))
    base = model.normalized_returns(x)
    assert torch.allclose(model.normalized_returns(x * 10), base, atol=1e-9)
    log_x = torch.log(x)
    stretched = torch.exp(log_x[:, :1] + 3 * (log_x - log_x[:, :1]))
    assert torch.allclose(model.normalized_returns(stretched), base, atol=1e-6)
    flat = torch.full((1, 33), 50.0, dtype=torch.float64)
    assert torch.equal(model.normalized_returns(flat), torch.zeros(1, 32, dtype=torch.float64))


def test_the_shipped_model_loads_and_is_small(default: model.Artifact) -> None:
    path = model.resolve_uri("builtin://default")
    assert path.name == "default.pt" and path.parent.name == "models" and path.is_file()
    assert path.stat().st_size < 1_000_000
    assert default.model.window == model.DEFAULT_WINDOW and default.model.hidden == model.DEFAULT_HIDDEN
    assert default.meta["config"]["seed"] == train.TrainConfig().seed
    assert default.source == "builtin://default"


def test_the_shipped_model_beats_predicting_zero_on_unseen_data(default: model.Artifact) -> None:
    fresh = synthetic.price_windows(20_000, default.model.window, seed=20_240_318)
    mse, baseline, accuracy = train.evaluate(default.model, fresh)
    assert mse < 0.985 * baseline
    assert accuracy > 0.54


def test_file_and_pvc_uris(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = model.PriceMLP(window=8, hidden=(4,))
    target = tmp_path / "claim" / "models" / "m.pt"
    model.save(net, target, {"note": "test"})
    from_file = model.load_uri(f"file://{target}")
    assert from_file.model.window == 8 and from_file.meta == {"note": "test"}
    monkeypatch.setenv(model.ENV_MODEL_ROOT, str(tmp_path))
    assert model.resolve_uri("pvc://claim/models/m.pt") == target
    for k, v in net.state_dict().items():
        assert torch.equal(from_file.model.state_dict()[k], v)


@pytest.mark.parametrize("uri", ["s3:///m.pt", "s3://bucket/../x", "file://host/m.pt", "file://relative.pt",
                                 "pvc://claim/../../etc/passwd", "pvc://claim", "builtin://../x",
                                 "builtin://no-such-model", "file:///nonexistent/m.pt"])
def test_bad_uris_are_refused_with_a_reason(uri: str) -> None:
    with pytest.raises(model.ModelLoadError):
        model.load_uri(uri)


@pytest.mark.parametrize(("uri", "reason"), [
    ("file://host/m.pt", "must be local"), ("file:relative.pt", "absolute path"),
    ("pvc://claim/../../etc/passwd", "must not leave its claim"), ("pvc://claim", "pvc://CLAIM/path"),
    ("s3://bucket/v1", "no local path"), ("ftp://host/m.pt", "unsupported model URI scheme")])
def test_resolve_uri_refuses_with_the_reason(uri: str, reason: str) -> None:
    # file:// and pvc:// are parsed by artifact.local_path (one parser); its error is a ModelLoadError
    with pytest.raises(model.ModelLoadError, match=re.escape(reason)):
        model.resolve_uri(uri)


def test_foreign_or_corrupt_files_are_refused(tmp_path: pathlib.Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else"}, foreign)
    mismatched = tmp_path / "mismatched.pt"
    torch.save({"format": model.FORMAT, "window": 32, "hidden": [64],
                "state_dict": model.PriceMLP(window=32, hidden=(16,)).state_dict()}, mismatched)
    for path in (garbage, foreign, mismatched):
        with pytest.raises(model.ModelLoadError):
            model.load(path)


# ---------------------------------------------------------------- training

def test_training_is_deterministic() -> None:
    first, report_a = train.train(SMALL)
    second, report_b = train.train(SMALL)
    other, _ = train.train(train.TrainConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])
    assert report_a.val_mse == report_b.val_mse
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())


def test_the_documented_command_reproduces_the_shipped_model(tmp_path: pathlib.Path, default: model.Artifact,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "default.pt"
    assert train.main(["--out", str(out)]) == 0          # the exact command in train.py's docstring
    assert '"val_mse"' in capsys.readouterr().out
    rebuilt = model.load(out)
    assert rebuilt.meta["config"] == default.meta["config"]
    assert "seconds" not in rebuilt.meta["report"]       # wall time would make the file differ per run
    # Same torch build and CPU: identical. Elsewhere, float kernels may differ in the last bits, so
    # the contract is the quality the shipped file records, not its bytes.
    for key in ("val_mse", "baseline_mse"):
        assert rebuilt.meta["report"][key] == pytest.approx(default.meta["report"][key], rel=5e-3)


# ---------------------------------------------------------------- predictor

def test_inference_is_deterministic(default: model.Artifact) -> None:
    p = predictor.Predictor(default.model, batch_size=128)
    x = windows(300)
    a, b = p.predict(x), p.predict(x)
    assert np.array_equal(a.scores, b.scores) and a.valid.all()
    assert a.batches == 3 and a.verdict == predictor.OK


def test_batched_inference_matches_unbatched(default: model.Artifact) -> None:
    x = windows(517, seed=11)
    batched = predictor.Predictor(default.model, batch_size=256).predict(x)
    one_by_one = predictor.Predictor(default.model, batch_size=1)
    singles = np.concatenate([one_by_one.predict(x[i:i + 1]).scores for i in range(len(x))])
    with torch.inference_mode():
        direct = default.model(torch.from_numpy(x)).numpy()
    assert batched.batches == 3
    np.testing.assert_allclose(batched.scores, singles, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched.scores, direct, rtol=1e-5, atol=1e-6)


def test_float64_input_is_accepted(default: model.Artifact) -> None:
    x = windows(10)
    p = predictor.Predictor(default.model, batch_size=16)
    np.testing.assert_allclose(p.predict(x.astype(np.float64)).scores, p.predict(x).scores, atol=1e-6)


def test_the_wrong_window_width_is_an_error(default: model.Artifact) -> None:
    with pytest.raises(ValueError, match="shape"):
        predictor.Predictor(default.model).predict(np.ones((4, 10)))


def test_nan_outputs_trip_the_guard(default: model.Artifact) -> None:
    broken = model.PriceMLP()
    broken.load_state_dict(default.model.state_dict())
    first = broken.net[0]
    assert isinstance(first, torch.nn.Linear)
    with torch.no_grad():
        first.weight[0, 0] = float("nan")     # e.g. a corrupt artifact
    p = predictor.Predictor(broken, batch_size=64)
    result = p.predict(windows(100))
    assert result.verdict.reduce and result.verdict.reason == predictor.REASON_NAN
    assert not result.valid.any() and not result.scores.any()      # NaN never leaves the predictor
    assert p.guard.trips[predictor.REASON_NAN] == 2                # both batches


def test_a_slow_batch_trips_the_guard(default: model.Artifact) -> None:
    ticks = itertools.count()
    slow = predictor.Predictor(default.model, batch_size=64, max_latency_ms=50.0,
                               clock=lambda: next(ticks) * 0.080)   # every batch "takes" 80 ms
    result = slow.predict(windows(10))
    assert result.verdict.reduce and result.verdict.reason == predictor.REASON_LATENCY
    assert result.latency_ms == pytest.approx(80.0)
    assert result.valid.all()           # the scores are fine, just late: the worker still decides

    ticks = itertools.count()
    fast = predictor.Predictor(default.model, batch_size=64, max_latency_ms=50.0,
                               clock=lambda: next(ticks) * 0.010)
    assert fast.predict(windows(10)).verdict == predictor.OK


def test_bad_price_rows_are_masked_without_tripping_the_guard(default: model.Artifact) -> None:
    x = windows(6).astype(np.float64)
    x[1, 5] = 0.0
    x[3, 0] = np.nan
    x[4, -1] = np.inf
    result = predictor.Predictor(default.model, batch_size=8).predict(x)
    assert result.verdict == predictor.OK
    assert result.invalid_inputs == 3
    assert result.valid.tolist() == [True, False, True, False, False, True]
    assert result.scores[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]


def test_from_spec_uses_the_spec_and_falls_back_to_cpu_without_a_gpu() -> None:
    p = predictor.Predictor.from_spec(ModelSpec(uri="builtin://default", device="cuda", batch_size=64,
                                                max_latency_ms=5.0))
    assert p.batch_size == 64 and p.guard.max_latency_ms == 5.0
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert p.device.type == expected
    assert predictor.select_device("cpu").type == "cpu"


def test_the_fused_forward_matches_the_module_for_other_shapes() -> None:
    torch.manual_seed(0)
    net = model.PriceMLP(window=8, hidden=(5, 4, 3))
    x = windows(40, width=9)
    with torch.inference_mode():
        direct = net(torch.from_numpy(x)).numpy()
    fused = predictor.Predictor(net, batch_size=16).predict(x)
    assert fused.batches == 3
    np.testing.assert_allclose(fused.scores, direct, rtol=1e-5, atol=1e-6)
