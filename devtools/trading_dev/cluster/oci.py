"""Write a container image as a docker-archive tarball, with the standard library only.

No registry and no Docker here: an image is a root filesystem (one layer) plus a
config, packed in the format ``docker save`` writes, which ``ctr images import``
reads. The layer is written deterministically (sorted names, zero times, owners
as given), so the same inputs give the same image digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config the tooling sets (the Dockerfile's ENTRYPOINT, USER, ...)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    workdir: str = ""
    exposed_ports: list[int] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uname = info.gname = ""
    return info


def _add_tree(tar: tarfile.TarFile, root: pathlib.Path) -> None:
    """Every entry under ``root``, paths relative to ``/``, sorted; sockets skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames.sort()
        for d in dirnames:
            tar.add(os.path.join(dirpath, d), arcname=os.path.normpath(os.path.join(rel_dir, d)),
                    recursive=False, filter=_reset)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            if stat.S_ISSOCK(os.lstat(full).st_mode):
                continue
            tar.add(full, arcname=os.path.normpath(os.path.join(rel_dir, f)), recursive=False, filter=_reset)


def layer_from_dir(root: pathlib.Path, out: pathlib.Path) -> None:
    """Tar a root filesystem into ``out`` (uncompressed), paths relative to ``/``."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, root)


def layer_from_files(files: dict[str, tuple[bytes, int]], out: pathlib.Path, dirs: Iterable[str] = ()) -> None:
    """A layer of a few files: {path: (content, mode)}, owned by root, plus empty directories."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d.strip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d.strip("/") == "tmp" else 0o755
            tar.addfile(info)
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _image_config(config: ImageConfig, diff_id: str) -> bytes:
    container_config: dict[str, object] = {"Env": config.env}
    if config.entrypoint:
        container_config["Entrypoint"] = config.entrypoint
    if config.cmd:
        container_config["Cmd"] = config.cmd
    if config.user:
        container_config["User"] = config.user
    if config.workdir:
        container_config["WorkingDir"] = config.workdir
    if config.exposed_ports:
        container_config["ExposedPorts"] = {f"{p}/tcp": {} for p in config.exposed_ports}
    if config.labels:
        container_config["Labels"] = config.labels
    image_config = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "trading_dev.cluster.oci"}],
    }
    return json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _reset(tarfile.TarInfo(name))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _finish(tar: tarfile.TarFile, config: ImageConfig, reference: str, diff_id: str) -> str:
    config_bytes = _image_config(config, diff_id)
    image_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [reference], "Layers": [f"{diff_id}/layer.tar"]}]
    _add_bytes(tar, f"{image_id}.json", config_bytes)
    _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    return image_id


def write_archive(layer: pathlib.Path, config: ImageConfig, reference: str, out: pathlib.Path) -> str:
    """Pack one layer file and its config as a docker archive tagged ``reference``; returns the image id."""
    diff_id = _sha256(layer)
    partial = out.with_name(out.name + ".partial")
    try:
        with tarfile.open(partial, "w") as tar:
            tar.add(layer, arcname=f"{diff_id}/layer.tar", filter=_reset)
            image_id = _finish(tar, config, reference, diff_id)
    except BaseException:
        partial.unlink(missing_ok=True)  # an interrupted build left a workers archive's several GB behind
        raise
    partial.rename(out)
    return image_id


class _Hashing(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: io.BufferedWriter) -> None:
        self.target, self.digest, self.size = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.target.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def archive_from_dir(root: pathlib.Path, config: ImageConfig, reference: str, out: pathlib.Path) -> str:
    """Like ``layer_from_dir`` + ``write_archive``, streaming the layer straight into the archive.

    A multi-gigabyte root filesystem is written once, not as a layer file and then a copy of it:
    a placeholder header, the layer streamed after it while it is hashed, then the real header
    (its name is the layer's digest) written over the placeholder.
    """
    partial = out.with_name(out.name + ".partial")
    try:
        image_id = _stream_archive(root, config, reference, partial)
    except BaseException:
        partial.unlink(missing_ok=True)  # an interrupted build left a workers archive's several GB behind
        raise
    partial.rename(out)
    return image_id


def _stream_archive(root: pathlib.Path, config: ImageConfig, reference: str, partial: pathlib.Path) -> str:
    with open(partial, "w+b") as fh:
        fh.write(b"\0" * tarfile.BLOCKSIZE)
        sink = _Hashing(fh)  # type: ignore[arg-type]
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as layer:  # type: ignore[call-overload]
            _add_tree(layer, root)
        size, diff_id = sink.size, sink.digest.hexdigest()
        fh.write(b"\0" * (-size % tarfile.BLOCKSIZE))
        end = fh.tell()
        info = _reset(tarfile.TarInfo(f"{diff_id}/layer.tar"))
        info.size = size
        fh.seek(0)
        fh.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        fh.seek(end)
        with tarfile.open(fileobj=fh, mode="w") as tar:
            return _finish(tar, config, reference, diff_id)
