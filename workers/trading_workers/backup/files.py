"""The models and resources targets: plain files copied or rendered into the run directory.

Models: the artifact the session's inference workers load —
``spec.strategy.model.uri``, or the shipped ``builtin://default`` when the
session names none. URIs resolve as in ``trading_workers.inference.model``
(``builtin://``, ``file:///``, ``pvc://CLAIM/path`` under
``$TRADING_MODEL_ROOT``), re-implemented here in a few lines so a backup
never imports torch (the workers image may be built without it).

Resources: the TradingSession and its RiskPolicy as the API server holds
them (``managedFields`` dropped: bookkeeping, not configuration), as YAML,
so ``kubectl apply -f`` puts them back.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
import shutil
import urllib.parse
from typing import Any

import yaml

from trading_workers.errors import PermanentError

MODEL_DIR = "models"
RESOURCE_DIR = "resources"
DEFAULT_MODEL_URI = "builtin://default"
ENV_MODEL_ROOT = "TRADING_MODEL_ROOT"
DEFAULT_MODEL_ROOT = "/models"


class FileBackupError(PermanentError):
    """A model or resource could not be backed up."""


def resolve_model(uri: str) -> pathlib.Path:
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "builtin":
        name = (parsed.netloc + parsed.path).strip("/")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise FileBackupError(f"invalid builtin model name {name!r}")
        return pathlib.Path(str(importlib.resources.files("trading_workers") / "models" / f"{name}.pt"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FileBackupError(f"file URI must be local (file:///path): {uri}")
        return pathlib.Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "pvc":
        rel = pathlib.PurePosixPath(urllib.parse.unquote(parsed.path.lstrip("/")))
        if not parsed.netloc or not rel.parts or ".." in rel.parts:
            raise FileBackupError(f"pvc URI must be pvc://CLAIM/path: {uri}")
        return pathlib.Path(os.environ.get(ENV_MODEL_ROOT, DEFAULT_MODEL_ROOT)) / parsed.netloc / rel
    raise FileBackupError(f"model URI scheme {parsed.scheme!r} cannot be copied ({uri})")


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
