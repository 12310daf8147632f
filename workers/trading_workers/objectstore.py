"""S3-compatible object storage for model artifacts and backups, through obstore.

One small interface (:class:`Store`) over two kinds of place, so the model artifacts
(``trading_workers.inference.artifact``) and the backups (``trading_workers.backup``) are written
the same way whether they go to a bucket or a directory:

- :class:`S3Store` — an S3-compatible bucket (AWS S3, the embedded versitygw of local runs and
  tests, any other S3 API), by obstore (Apache Arrow's Rust ``object_store`` under a typed Python
  API; docs/decisions/0012-object-store-versitygw-obstore.md says why not boto3). Streams files in
  and out in parts (multipart upload above 8 MiB), never whole in memory.
- :class:`DirStore` — a local directory (a mounted PVC, ``file://``), the same keys as paths.

Where the bucket is and who we are comes from the environment, the names the operator sets on
every pod that uses object storage — the credentials always from a Secret (``secretKeyRef``),
never inline:

``TRADING_S3_ENDPOINT``  the S3 API's URL (``http://127.0.0.1:PORT`` for the embedded server;
                         absent: AWS S3 of ``TRADING_S3_REGION``)
``TRADING_S3_REGION``    region (default ``us-east-1``)
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``  the credentials (from the Secret)

This module is the only one that imports obstore.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pathlib
import shutil
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

ENV_S3_ENDPOINT = "TRADING_S3_ENDPOINT"
ENV_S3_REGION = "TRADING_S3_REGION"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
DEFAULT_REGION = "us-east-1"
CHUNK = 8 * 1024 * 1024          # multipart part size and streaming read size
_HASH_BLOCK = 1024 * 1024


class ObjectStoreError(RuntimeError):
    """The object store refused or failed an operation (the message names the key)."""


class ObjectNotFound(ObjectStoreError):
    """No object at that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str          # relative to the store's prefix
    size: int


class Store(Protocol):
    """Keys are ``/``-separated, relative to the store's root (bucket prefix or directory)."""

    @property
    def uri(self) -> str: ...

    def put_file(self, key: str, path: pathlib.Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, path: pathlib.Path) -> str:
        """Write the object to ``path`` (atomically: a ``.partial`` file renamed) and return its sha256."""
        ...

    def objects(self, prefix: str = "") -> list[ObjectInfo]: ...

    def digest(self, key: str) -> tuple[str, int]:
        """sha256 and size of the stored object, read back (streamed) from the store."""
        ...

    def delete(self, keys: list[str]) -> None: ...

    def child(self, prefix: str) -> Store:
        """The same place under ``prefix/``."""
        ...


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _check_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ObjectStoreError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 API is and the credentials, as the operator passes them to a pod."""

    endpoint: str | None = None
    region: str = DEFAULT_REGION
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        return cls(endpoint=env.get(ENV_S3_ENDPOINT) or None, region=env.get(ENV_S3_REGION) or DEFAULT_REGION,
                   access_key_id=env.get(ENV_ACCESS_KEY) or None, secret_access_key=env.get(ENV_SECRET_KEY) or None)


class S3Store:
    """A bucket (and a prefix in it) of an S3-compatible server."""

    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None) -> None:
        from obstore.store import S3Store as _S3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.settings = settings or S3Settings.from_env()
        s = self.settings
        config: dict[str, object] = {"region": s.region}
        if s.endpoint:
            config["endpoint"] = s.endpoint
            config["virtual_hosted_style_request"] = False
        if s.access_key_id and s.secret_access_key:
            config["access_key_id"] = s.access_key_id
            config["secret_access_key"] = s.secret_access_key
        allow_http = bool(s.endpoint and s.endpoint.startswith("http://"))
        self._store = _S3(bucket, config=config,  # type: ignore[arg-type]
                          client_options={"allow_http": allow_http, "timeout": "120s", "connect_timeout": "10s"},
                          retry_config={"max_retries": 3, "retry_timeout": dt.timedelta(seconds=60)})

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return _join(self.prefix, _check_key(key))

    def _fail(self, op: str, key: str, exc: Exception) -> ObjectStoreError:
        from obstore.exceptions import NotFoundError

        where = f"{self.uri}/{key.strip('/')}"
        if isinstance(exc, (NotFoundError, FileNotFoundError)):
            return ObjectNotFound(f"{op} {where}: no such object")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ObjectStoreError(f"{op} {where}: {first}")

    def put_file(self, key: str, path: pathlib.Path) -> None:
        import obstore

        try:
            with open(path, "rb") as fh:
                obstore.put(self._store, self._key(key), fh, chunk_size=CHUNK, max_concurrency=4)
        except Exception as exc:
            raise self._fail("put", key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        try:
            obstore.put(self._store, self._key(key), data)
        except Exception as exc:
            raise self._fail("put", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self._store, self._key(key)).bytes())
        except Exception as exc:
            raise self._fail("get", key, exc) from exc

    def get_file(self, key: str, path: pathlib.Path) -> str:
        import obstore

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        digest = hashlib.sha256()
        try:
            result = obstore.get(self._store, self._key(key))
            with open(partial, "wb") as out:
                for chunk in result.stream(min_chunk_size=CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise self._fail("get", key, exc) from exc
        partial.replace(path)
        return digest.hexdigest()

    def digest(self, key: str) -> tuple[str, int]:
        import obstore

        digest, size = hashlib.sha256(), 0
        try:
            for chunk in obstore.get(self._store, self._key(key)).stream(min_chunk_size=CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except Exception as exc:
            raise self._fail("get", key, exc) from exc
        return digest.hexdigest(), size

    def objects(self, prefix: str = "") -> list[ObjectInfo]:
        import obstore

        base = _join(self.prefix, prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[ObjectInfo] = []
        try:
            for batch in obstore.list(self._store, prefix=base or None, chunk_size=1000):
                out.extend(ObjectInfo(key=m["path"][strip:], size=int(m["size"])) for m in batch)
        except Exception as exc:
            raise self._fail("list", prefix or "/", exc) from exc
        return sorted(out, key=lambda o: o.key)

    def delete(self, keys: list[str]) -> None:
        import obstore

        if not keys:
            return
        try:
            obstore.delete(self._store, [self._key(k) for k in keys])
        except Exception as exc:
            raise self._fail("delete", keys[0], exc) from exc

    def child(self, prefix: str) -> S3Store:
        return S3Store(self.bucket, _join(self.prefix, prefix), self.settings)


class DirStore:
    """A local directory as a store (a mounted PVC, a ``file://`` URI, a test's tmp dir)."""

    def __init__(self, root: pathlib.Path, uri: str | None = None) -> None:
        self.root = pathlib.Path(root)
        self._uri = uri or f"file://{self.root}"

    @property
    def uri(self) -> str:
        return self._uri

    def _path(self, key: str) -> pathlib.Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: pathlib.Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        partial.replace(target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"get {self.uri}/{key}: no such object") from exc
        except OSError as exc:
            raise ObjectStoreError(f"get {self.uri}/{key}: {exc}") from exc

    def get_file(self, key: str, path: pathlib.Path) -> str:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(f"get {self.uri}/{key}: no such object")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(path)
        return sha256_file(path)

    def digest(self, key: str) -> tuple[str, int]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"get {self.uri}/{key}: no such object")
        return sha256_file(path), path.stat().st_size

    def objects(self, prefix: str = "") -> list[ObjectInfo]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted((ObjectInfo(key=str(p.relative_to(self.root)), size=p.stat().st_size)
                       for p in _walk(base) if not p.name.endswith(".partial")), key=lambda o: o.key)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> DirStore:
        return DirStore(self.root / prefix.strip("/"), f"{self.uri.rstrip('/')}/{prefix.strip('/')}")


def _walk(base: pathlib.Path) -> Iterator[pathlib.Path]:
    for path in base.rglob("*"):
        if path.is_file():
            yield path


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> ``(bucket, prefix)``."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ObjectStoreError(f"not an s3://BUCKET/path URI: {uri!r}")
    prefix = urllib.parse.unquote(parsed.path).strip("/")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise ObjectStoreError(f"s3 URI must not contain . or .. segments: {uri!r}")
    return parsed.netloc, prefix


def open_s3(uri: str, settings: S3Settings | None = None) -> S3Store:
    bucket, prefix = parse_s3_uri(uri)
    return S3Store(bucket, prefix, settings)
