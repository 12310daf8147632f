"""Images for the real node, built here without a registry and cached keyed by their inputs.

The sandbox ("pause") image is a small static Go program (``pause/main.go``), built
with the same toolchain as the control plane and packed by ``oci``. Each image is
a docker archive under ``~/.cache/trading-platform/images/``, named by a hash of
everything that went into it, and imported into the node's containerd with ``ctr``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import tempfile

from trading_dev.cluster import oci
from trading_dev.controlplane import build

PAUSE_IMAGE = "trading.dev/pause:1"
_PAUSE_SOURCE = pathlib.Path(__file__).with_name("pause") / "main.go"


def images_dir() -> pathlib.Path:
    path = build.cache_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def pause_binary() -> pathlib.Path:
    """The pause program, statically linked (no libc in its image)."""
    source = _PAUSE_SOURCE.read_bytes()
    target = build.cache_dir() / "bin" / f"pause-{_key(source, build.RECIPE)}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-pause-") as tmp:
        work = pathlib.Path(tmp)
        (work / "main.go").write_bytes(source)
        (work / "go.mod").write_text("module trading.dev/pause\n\ngo 1.22\n")
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        proc = subprocess.run([build._go(), "build", "-trimpath", "-ldflags=-s -w", "-o", str(work / "pause"), "."],
                              cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise build.BuildError(f"building the pause program failed:\n{proc.stderr[-2000:]}")
        partial = target.with_name(target.name + ".partial")
        (work / "pause").rename(partial)
        partial.rename(target)
    return target


def pause_archive() -> pathlib.Path:
    """The sandbox image: /pause, run as an unprivileged user (65532), as upstream's pause image."""
    binary = pause_binary()
    content = binary.read_bytes()
    out = images_dir() / f"pause-{_key(content, PAUSE_IMAGE)}.tar"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="image-pause-") as tmp:
        layer = pathlib.Path(tmp) / "layer.tar"
        oci.layer_from_files({"pause": (content, 0o755)}, layer, dirs=["tmp"])
        oci.write_archive(layer, oci.ImageConfig(entrypoint=["/pause"], user="65532:65532"), PAUSE_IMAGE, out)
    return out


def import_archive(archive: pathlib.Path, address: str) -> None:
    """Load a docker archive into containerd's ``k8s.io`` namespace (the one the CRI plugin uses), then
    drop the image's layer blobs from the content store: once unpacked into snapshots they are not read
    again (the CRI plugin's ``discard_unpacked_layers`` does the same for pulled images). Kept, they
    double the node's disk use (the workers image: 5.8 GB unpacked and 5.8 GB of blob), and a node whose
    disk runs short is tainted ``disk-pressure`` and schedules nothing."""
    ctr = ["ctr", "--address", address, "-n", "k8s.io"]
    proc = subprocess.run([*ctr, "images", "import", str(archive)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive.name} failed: {proc.stderr.strip()[-1500:]}")
    layers = [layer for target in re.findall(r"\((sha256:[0-9a-f]{64})\)", proc.stdout)
              for layer in _layers(ctr, target)]
    if layers:
        rm = subprocess.run([*ctr, "content", "rm", *layers], capture_output=True, text=True)
        if rm.returncode != 0:
            raise RuntimeError(f"ctr content rm (the layers of {archive.name}) failed: {rm.stderr.strip()[-1500:]}")


def _layers(ctr: list[str], digest: str) -> list[str]:
    """The layer digests of a manifest (or of every manifest of an index) in the content store."""
    proc = subprocess.run([*ctr, "content", "get", digest], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr content get {digest} failed: {proc.stderr.strip()[-1500:]}")
    document = json.loads(proc.stdout)
    if "manifests" in document:
        return [layer for m in document["manifests"] for layer in _layers(ctr, m["digest"])]
    return [layer["digest"] for layer in document.get("layers", [])]
