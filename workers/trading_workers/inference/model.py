"""The price-window MLP, its artifact format, and where artifacts come from.

Why an MLP over *normalized* returns: the strategy needs a score that means
the same thing for a $5 stock and a $500 one, in a calm hour and a volatile
one. Log returns over the window are divided by their own RMS, so the model
sees shape, not scale, and outputs the expected next return in units of the
window's volatility (a z-score). The normalization lives inside ``forward``
so training and serving can never disagree about features (no skew), and the
artifact alone is enough to serve.

Why this artifact format: a plain dict of tensors and primitives, read with
``torch.load(weights_only=True)``, so loading a model from a PVC cannot run
code the way unpickling a whole ``nn.Module`` could.

This module is pure: no runtime, no bus, no clocks.
"""

from __future__ import annotations

import pathlib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trading_workers.inference import artifact as artifact_mod

FORMAT = "trading-workers/price-mlp/v1"
DEFAULT_WINDOW = 32
DEFAULT_HIDDEN: tuple[int, ...] = (64, 32)
Z_CLIP = 8.0     # normalized returns beyond ±8 RMS are clipped: one bad print must not dominate
EPS = 1e-12      # keeps a flat window (all returns 0) finite: its features are all 0
ENV_MODEL_ROOT = artifact_mod.ENV_MODEL_ROOT          # where pvc:// claims are mounted (artifact.local_path)
DEFAULT_MODEL_ROOT = artifact_mod.DEFAULT_MODEL_ROOT


# The model URI cannot be resolved, or the artifact is not a valid price-MLP artifact
# (``ModelCorrupt``: it does not match its manifest's sha256 and must not be served).
ModelLoadError = artifact_mod.ArtifactError
ModelCorrupt = artifact_mod.ArtifactCorrupt
builtin_path = artifact_mod.builtin_path      # the shipped models (kept here for the trainer and the tests)


def normalized_returns(prices: torch.Tensor) -> torch.Tensor:
    """``[B, W+1]`` prices (oldest first) → ``[B, W]`` log returns divided by their RMS, clipped.

    Non-positive or non-finite prices produce NaN/inf here on purpose: the predictor
    screens inputs before they reach the model, so a NaN *output* means the model
    itself is broken, which is what the guard is for.
    """
    returns = torch.log(prices[:, 1:] / prices[:, :-1])  # ratio first: float32 is most precise near 1
    scale = torch.sqrt(torch.mean(returns * returns, dim=1, keepdim=True) + EPS)
    return torch.clamp(returns / scale, -Z_CLIP, Z_CLIP)


class PriceMLP(nn.Module):
    """``[B, window+1]`` prices → ``[B]`` expected next log return, in units of the window's RMS return."""

    def __init__(self, window: int = DEFAULT_WINDOW, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        if window < 2:
            raise ValueError("window must be at least 2 returns")
        self.window = int(window)
        self.hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        width = self.window
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    @property
    def input_width(self) -> int:
        """Prices per row: ``window`` returns need ``window + 1`` prices."""
        return self.window + 1

    def forward(self, prices: torch.Tensor) -> torch.Tensor:
        return self.net(normalized_returns(prices)).squeeze(-1)


@dataclass
class Artifact:
    """A loaded model and the metadata it was saved with (training seed, losses, ...)."""

    model: PriceMLP
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    version: str = ""          # the manifest's version (``sha256:<12 hex>`` for a bare file)
    sha256: str = ""
    verified: bool = False     # checked against a manifest (or shipped in the package)
    manifest: artifact_mod.Manifest | None = None


def save(model: PriceMLP, path: pathlib.Path | str, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` as a weights-only artifact (tensors and primitives, no pickled code)."""
    payload = {
        "format": FORMAT,
        "window": model.window,
        "hidden": list(model.hidden),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load(path: pathlib.Path | str) -> Artifact:
    """Read an artifact written by :func:`save`; refuse anything else with a clear reason."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model artifact not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, foreign pickle, ...: one error type for the caller
        raise ModelLoadError(f"cannot read model artifact {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not a {FORMAT} artifact")
    window, hidden = payload.get("window"), payload.get("hidden")
    if not isinstance(window, int) or not 2 <= window <= 4096:
        raise ModelLoadError(f"{path}: invalid window {window!r}")
    if not isinstance(hidden, list) or not all(isinstance(h, int) and 0 < h <= 65536 for h in hidden):
        raise ModelLoadError(f"{path}: invalid hidden sizes {hidden!r}")
    model = PriceMLP(window=window, hidden=hidden)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: weights do not match the declared shape: {exc}") from exc
    model.eval()
    meta = payload.get("meta") or {}
    return Artifact(model=model, meta=dict(meta), source=str(path))


def resolve_uri(uri: str) -> pathlib.Path:
    """Map a ``ModelSpec.uri`` to a local file.

    - ``builtin://NAME`` → the file shipped with the package (``builtin://default``);
    - ``file:///abs/path`` → that path;
    - ``pvc://CLAIM/path`` → ``$TRADING_MODEL_ROOT/CLAIM/path`` (default root ``/models``): the
      claim is expected to be mounted there by the Deployment;
    - ``s3://`` names no local file: :func:`load_uri` fetches and verifies it (``artifact.fetch``).
    """
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("builtin", "file", "pvc"):
        return artifact_mod.local_file(uri)     # the one parser of model URIs: ModelLoadError is ArtifactError
    if scheme == "s3":
        raise ModelLoadError(f"{uri} has no local path: load_uri fetches and verifies s3:// artifacts")
    raise ModelLoadError(f"unsupported model URI scheme {scheme!r} in {uri!r} (builtin, file, pvc and s3 are supported)")


def load_uri(uri: str, cache: pathlib.Path | None = None) -> Artifact:
    """Fetch ``uri``, verify it against its manifest, then load it (``artifact.fetch``, then :func:`load`).

    Raises ``ModelCorrupt`` (before anything is unpickled) when the file does not match its manifest.
    """
    fetched = artifact_mod.fetch(uri, cache)
    loaded = load(fetched.path)
    loaded.source, loaded.version, loaded.sha256 = uri, fetched.version, fetched.sha256
    loaded.verified, loaded.manifest = fetched.verified, fetched.manifest
    return loaded
