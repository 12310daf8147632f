"""Versioned model artifacts: a model file and its manifest, published to a bucket or a directory.

The format (``trading-workers/model-artifact/v1``; docs/model-artifacts.md is the reference):

    <base>/<name>/<version>/model.pt        the weights (``model.FORMAT``, weights-only torch file)
    <base>/<name>/<version>/manifest.json   what it is and how to check it (below)

A model is named by the URI of its **version directory**: ``s3://bucket/models/price-mlp/v20261201T150000Z-1a2b3c4d``,
``pvc://claim/models/price-mlp/v…``, ``file:///dir/price-mlp/v…``; ``builtin://default`` is the model shipped
with the workers. A version is never rewritten: :func:`publish` refuses an existing version, so a URI
always means the same bytes, and a rollout (or a rollback) is a change of URI.

``manifest.json``::

    {"format": "trading-workers/model-artifact/v1",
     "name": "price-mlp", "version": "v20261201T150000Z-1a2b3c4d",
     "createdAt": "2026-12-01T15:00:00Z",
     "file": "model.pt", "sha256": "<hex of model.pt>", "sizeBytes": 12345,
     "modelFormat": "trading-workers/price-mlp/v1",
     "trainingData": {"start": "...", "end": "...", "rows": 100000, "symbols": ["AAPL"], "source": "..."},
     "metrics": {"valAccuracy": 0.58, "valMse": 0.97},
     "parent": "<URI of the version it was trained from, or null>",
     "labels": {}}

``version`` is ``v<UTC time>-<first 8 hex of sha256>``: sortable by time, unique per content.
``trainingData`` and ``metrics`` are free-form objects (numbers and strings); the keys above are the
ones the platform's trainer writes and the rollout reads.

**Verification before serving** (:func:`fetch`): the manifest is read, the model file is copied to a
local cache, its size and sha256 are compared with the manifest's, and only then is it loaded
(``model.load``: weights-only, shapes checked). Any mismatch raises :class:`ArtifactCorrupt` naming the
file and both digests; the inference worker does not serve it and says so in the session's status.
A bare model file URI (``file:///x.pt``, ``pvc://claim/x.pt``: the form before versioned artifacts)
still loads; it has no manifest, so its version is ``sha256:<first 12 hex>`` and ``verified`` is
False.

Pure apart from files and the object store: no runtime, no bus, no clocks but ``createdAt``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.resources
import json
import os
import pathlib
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from trading_workers import objectstore

FORMAT = "trading-workers/model-artifact/v1"
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
MODEL_FORMAT = "trading-workers/price-mlp/v1"        # == inference.model.FORMAT (kept torch-free here)
ENV_MODEL_CACHE = "TRADING_MODEL_CACHE"               # where fetched artifacts are kept (default: a tmp dir)
ENV_MODEL_ROOT = "TRADING_MODEL_ROOT"                 # where pvc:// claims are mounted (default /models)
DEFAULT_MODEL_ROOT = "/models"


class ArtifactError(ValueError):
    """The URI cannot be resolved, or the artifact or its manifest cannot be read."""


class ArtifactCorrupt(ArtifactError):
    """The model file does not match its manifest (size or sha256): it must not be served."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    sha256: str
    size_bytes: int
    created_at: str
    file: str = MODEL_FILE
    model_format: str = MODEL_FORMAT
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "version": self.version, "createdAt": self.created_at,
                "file": self.file, "sha256": self.sha256, "sizeBytes": self.size_bytes,
                "modelFormat": self.model_format, "trainingData": self.training_data, "metrics": self.metrics,
                "parent": self.parent, "labels": self.labels}

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ArtifactError(f"{where}: manifest is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ArtifactError(f"{where}: not a {FORMAT} manifest")
        try:
            sha, size, file = str(doc["sha256"]), int(doc["sizeBytes"]), str(doc.get("file") or MODEL_FILE)
            name, version = str(doc["name"]), str(doc["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: manifest lacks {exc}") from exc
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ArtifactError(f"{where}: manifest sha256 is not 64 hex digits")
        if "/" in file or file in ("", ".", ".."):
            raise ArtifactError(f"{where}: manifest file must be a plain name, not {file!r}")
        return cls(name=name, version=version, sha256=sha, size_bytes=size, file=file,
                   created_at=str(doc.get("createdAt") or ""), model_format=str(doc.get("modelFormat") or MODEL_FORMAT),
                   training_data=dict(doc.get("trainingData") or {}), metrics=dict(doc.get("metrics") or {}),
                   parent=doc.get("parent"), labels=dict(doc.get("labels") or {}))


@dataclass(frozen=True)
class Fetched:
    """A model file on local disk, checked against its manifest (or a bare file, ``verified`` False)."""

    uri: str
    path: pathlib.Path
    version: str
    sha256: str
    verified: bool
    manifest: Manifest | None = None


def new_version(sha256: str, now: dt.datetime | None = None) -> str:
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"v{now:%Y%m%dT%H%M%SZ}-{sha256[:8]}"


def _sha256(path: pathlib.Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def store_for(uri: str) -> objectstore.Store:
    """The store a ``s3://``, ``pvc://`` or ``file://`` URI names (the URI's path is the store's root)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "s3":
        try:
            return objectstore.open_s3(uri)
        except objectstore.ObjectStoreError as exc:
            raise ArtifactError(str(exc)) from exc
    return objectstore.DirStore(local_path(uri), uri.rstrip("/"))


_BUILTIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def builtin_path(name: str = "default") -> pathlib.Path:
    """Path of a model shipped inside the package (``trading_workers/models/<name>.pt``)."""
    if not _BUILTIN_NAME.match(name):
        raise ArtifactError(f"invalid builtin model name {name!r}")
    return pathlib.Path(str(importlib.resources.files("trading_workers") / "models" / f"{name}.pt"))


def local_file(uri: str) -> pathlib.Path:
    """Where a ``builtin://``, ``file://`` or ``pvc://`` model URI is on this machine: the one parser of model
    URIs for the inference worker (``model.resolve_uri``), :func:`fetch` and backups, none of which needs
    torch for it. ``s3://`` and other schemes name no local file (:class:`ArtifactError`)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "builtin":
        return builtin_path(parsed.netloc + parsed.path.rstrip("/"))
    if parsed.scheme in ("file", "pvc"):
        return local_path(uri)
    raise ArtifactError(f"{uri} names no local file (builtin://, file:// and pvc:// do)")


def local_path(uri: str) -> pathlib.Path:
    """``file:///abs`` → ``/abs``; ``pvc://CLAIM/path`` → ``$TRADING_MODEL_ROOT/CLAIM/path`` (the mount)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ArtifactError(f"file URI must be local (file:///path): {uri}")
        path = pathlib.Path(urllib.parse.unquote(parsed.path))
        if not path.is_absolute():
            raise ArtifactError(f"file URI must hold an absolute path: {uri}")
        return path
    if parsed.scheme == "pvc":
        if not parsed.netloc or not parsed.path.strip("/"):
            raise ArtifactError(f"pvc URI must be pvc://CLAIM/path: {uri}")
        rel = pathlib.PurePosixPath(urllib.parse.unquote(parsed.path.lstrip("/")))
        if ".." in rel.parts:
            raise ArtifactError(f"pvc URI must not leave its claim: {uri}")
        root = pathlib.Path(os.environ.get(ENV_MODEL_ROOT, DEFAULT_MODEL_ROOT))
        return root / parsed.netloc / rel
    raise ArtifactError(f"not a file:// or pvc:// URI: {uri}")


def publish(model_file: pathlib.Path, base_uri: str, name: str, *, training_data: dict[str, Any] | None = None,
            metrics: dict[str, Any] | None = None, parent: str | None = None, labels: dict[str, str] | None = None,
            version: str | None = None, now: dt.datetime | None = None) -> tuple[str, Manifest]:
    """Write ``model_file`` as a new version under ``base_uri/name/`` and return ``(version URI, manifest)``.

    The model file goes first, the manifest last: a version directory without a manifest never
    finished and cannot be served. An existing version is refused (versions are immutable).
    """
    if not name or "/" in name or name in (".", ".."):
        raise ArtifactError(f"invalid model name {name!r}")
    sha, size = _sha256(model_file)
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    version = version or new_version(sha, created)
    store = store_for(base_uri).child(f"{name}/{version}")
    if any(o.key == MANIFEST_FILE for o in store.objects()):
        raise ArtifactError(f"{store.uri} already exists: a version is never rewritten")
    manifest = Manifest(name=name, version=version, sha256=sha, size_bytes=size,
                        created_at=created.strftime("%Y-%m-%dT%H:%M:%SZ"), training_data=dict(training_data or {}),
                        metrics=dict(metrics or {}), parent=parent, labels=dict(labels or {}))
    store.put_file(MODEL_FILE, model_file)
    store.put_bytes(MANIFEST_FILE, manifest.dumps())
    return store.uri, manifest


def read_manifest(uri: str) -> Manifest:
    store = store_for(uri)
    try:
        return Manifest.parse(store.get_bytes(MANIFEST_FILE), f"{store.uri}/{MANIFEST_FILE}")
    except objectstore.ObjectNotFound as exc:
        raise ArtifactError(f"{uri}: no {MANIFEST_FILE} (not a published version, or it never finished)") from exc
    except objectstore.ObjectStoreError as exc:
        raise ArtifactError(str(exc)) from exc


def list_versions(base_uri: str, name: str) -> list[str]:
    """The URIs of ``name``'s published versions under ``base_uri``, oldest first (by version id)."""
    store = store_for(base_uri).child(name)
    versions = sorted({o.key.split("/")[0] for o in store.objects() if o.key.endswith("/" + MANIFEST_FILE)})
    return [f"{store.uri}/{v}" for v in versions]


def _cache_dir() -> pathlib.Path:
    root = os.environ.get(ENV_MODEL_CACHE)
    return pathlib.Path(root) if root else pathlib.Path(tempfile.gettempdir()) / "trading-model-cache"


def fetch(uri: str, cache: pathlib.Path | None = None) -> Fetched:
    """Make the model of ``uri`` a verified local file (see the module's docstring).

    ``builtin://NAME`` is the file shipped in the package (its version: ``builtin-NAME-<sha12>``;
    the package itself is the trust root). ``s3://`` versions are downloaded into ``cache``
    (``$TRADING_MODEL_CACHE``), ``pvc://`` and ``file://`` ones are read in place. Raises
    :class:`ArtifactCorrupt` when the file does not match the manifest, :class:`ArtifactError` for
    anything else that prevents serving.
    """
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "builtin":
        path = local_file(uri)
        if not path.is_file():
            raise ArtifactError(f"no builtin model {uri}")
        sha, _ = _sha256(path)
        return Fetched(uri=uri, path=path, version=f"builtin-{parsed.netloc}-{sha[:12]}", sha256=sha, verified=True)
    if parsed.scheme in ("file", "pvc"):
        path = local_path(uri)
        if path.is_file():                                  # a bare model file: the pre-manifest form
            sha, _ = _sha256(path)
            return Fetched(uri=uri, path=path, version=f"sha256:{sha[:12]}", sha256=sha, verified=False)
        manifest = read_manifest(uri)
        target = path / manifest.file
        if not target.is_file():
            raise ArtifactCorrupt(f"{uri}/{manifest.file}: missing (the manifest names it)")
        _check(uri, manifest, *_sha256(target))
        return Fetched(uri=uri, path=target, version=manifest.version, sha256=manifest.sha256, verified=True,
                       manifest=manifest)
    if parsed.scheme == "s3":
        manifest = read_manifest(uri)
        bucket, prefix = objectstore.parse_s3_uri(uri)
        cache = cache or _cache_dir()
        target = cache / bucket / prefix / manifest.file
        if target.is_file():
            sha, size = _sha256(target)
            if sha == manifest.sha256 and size == manifest.size_bytes:
                return Fetched(uri=uri, path=target, version=manifest.version, sha256=sha, verified=True,
                               manifest=manifest)
        try:
            sha = objectstore.open_s3(uri).get_file(manifest.file, target)
        except objectstore.ObjectNotFound as exc:
            raise ArtifactCorrupt(f"{uri}/{manifest.file}: missing (the manifest names it)") from exc
        except objectstore.ObjectStoreError as exc:
            raise ArtifactError(str(exc)) from exc
        try:
            _check(uri, manifest, sha, target.stat().st_size)
        except ArtifactCorrupt:
            target.unlink(missing_ok=True)                  # never leave a corrupt copy in the cache
            raise
        return Fetched(uri=uri, path=target, version=manifest.version, sha256=sha, verified=True, manifest=manifest)
    raise ArtifactError(f"unsupported model URI scheme {parsed.scheme!r} in {uri!r} (s3, pvc, file, builtin)")


def _check(uri: str, manifest: Manifest, sha: str, size: int) -> None:
    if size != manifest.size_bytes:
        raise ArtifactCorrupt(f"{uri}/{manifest.file}: {size} bytes != {manifest.size_bytes} in the manifest")
    if sha != manifest.sha256:
        raise ArtifactCorrupt(f"{uri}/{manifest.file}: sha256 {sha[:12]}… != {manifest.sha256[:12]}… in the manifest")
