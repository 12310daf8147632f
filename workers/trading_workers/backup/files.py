"""The models and resources targets: plain files copied or rendered into the run directory.

Models: the artifact the session's inference workers load —
``spec.strategy.model.uri``, or the shipped ``builtin://default`` when the
session names none. URIs resolve as for the inference worker
(``builtin://``, ``file:///``, ``pvc://CLAIM/path`` under
``$TRADING_MODEL_ROOT``), by ``inference.artifact.local_file``, which imports
no torch (a backup never does: the workers image may be built without it).

Resources: the TradingSession and its RiskPolicy as the API server holds
them (``managedFields`` dropped: bookkeeping, not configuration), as YAML,
so ``kubectl apply -f`` puts them back.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import yaml

from trading_workers.errors import PermanentError
from trading_workers.inference import artifact

MODEL_DIR = "models"
RESOURCE_DIR = "resources"
DEFAULT_MODEL_URI = "builtin://default"


class FileBackupError(PermanentError):
    """A model or resource could not be backed up."""


def resolve_model(uri: str) -> pathlib.Path:
    """The local file or version directory of a ``builtin://``, ``file://`` or ``pvc://`` model URI."""
    try:
        return artifact.local_file(uri)
    except artifact.ArtifactError as exc:
        raise FileBackupError(f"model {uri} cannot be copied: {exc}") from exc


def model_uri(session: dict[str, Any]) -> str:
    model = ((session.get("spec") or {}).get("strategy") or {}).get("model") or {}
    return str(model.get("uri") or DEFAULT_MODEL_URI)


def copy_models(session: dict[str, Any], run_dir: pathlib.Path) -> tuple[list[pathlib.Path], dict[str, Any]]:
    """Copy the session's model: a file, or a published version (its model file and manifest.json).

    An ``s3://`` version is not copied: published versions are immutable objects in their bucket
    (docs/model-artifacts.md), so the run records its URI; the bucket's own retention keeps it.
    """
    uri = model_uri(session)
    if uri.startswith("s3://"):
        return [], {"uri": uri, "copied": False,
                    "reason": "an s3:// model version is immutable in its bucket; recorded by URI"}
    source = resolve_model(uri)
    if source.is_dir() and (source / "manifest.json").is_file():   # a published version directory
        dest_dir = run_dir / MODEL_DIR / source.name
        dest_dir.mkdir(parents=True, exist_ok=True)
        copied = []
        for item in sorted(p for p in source.iterdir() if p.is_file()):
            shutil.copyfile(item, dest_dir / item.name)
            copied.append(dest_dir / item.name)
        return copied, {"uri": uri, "path": dest_dir.relative_to(run_dir).as_posix()}
    if not source.is_file():
        raise FileBackupError(f"model {uri} not found at {source}")
    dest = run_dir / MODEL_DIR / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return [dest], {"uri": uri, "path": dest.relative_to(run_dir).as_posix()}


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def write_resources(session: dict[str, Any], policy: dict[str, Any] | None,
                    run_dir: pathlib.Path) -> tuple[list[pathlib.Path], dict[str, Any]]:
    directory = run_dir / RESOURCE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, obj in (("tradingsession", session), ("riskpolicy", policy)):
        if obj is None:
            continue
        path = directory / f"{kind}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(clean(obj), sort_keys=False))
        written.append(path)
    details = {"tradingSession": session["metadata"]["name"],
               "riskPolicy": policy["metadata"]["name"] if policy is not None else None}
    if policy is None:
        details["warning"] = "the session's RiskPolicy does not exist"
    return written, details
